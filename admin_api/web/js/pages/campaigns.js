// Business: campaigns (list, create, detail, edit, fund, lifecycle), applications, links, set-up.

import { ApiError, get, id, patch, post, query } from '../api.js';
import { cardStep, poll } from '../cardpay.js';
import { button, copyButton, dl, focusHeading, h, loadMore, person, rowAdder, secretBox, section, table, toast } from '../dom.js';
import * as features from '../features.js';
import { form, localInput, parse } from '../forms.js';
import { money, when } from '../format.js';
import { go, link, page } from '../router.js';
import * as session from '../session.js';
import { loadStripe } from '../stripe.js';

const OBJECTIVES = [['click', 'Pay per click'], ['conversion', 'Pay per conversion'], ['sale', 'Pay per sale']];
const STATUSES = ['draft', 'active', 'paused', 'completed'];
// The lifecycle moves the API offers; which ones a status allows is the API's rule (409 otherwise).
const MOVES = {
  draft: [['activate', 'Activate']], paused: [['activate', 'Resume'], ['complete', 'End campaign']],
  active: [['pause', 'Pause'], ['complete', 'End campaign']], completed: [],
};
const KNOWN = new Set(['id', 'business_id', 'title', 'description', 'hashtags', 'objective', 'payout_per_action',
  'destination_url', 'total_budget', 'remaining_budget', 'funded_budget', 'status', 'start_date', 'end_date',
  'created_at', 'updated_at']);

export function statusBadge(value) {
  return h('span', { class: `badge ${value}` }, value);
}

function campaignFields(c = {}) {
  return [
    { name: 'title', label: 'Title', required: true, value: c.title },
    { name: 'description', label: 'Description', type: 'textarea', value: c.description, keepEmpty: Boolean(c.id) },
    { name: 'hashtags', label: 'Hashtags', value: (c.hashtags || []).join(', '), parse: parse.tags,
      keepEmpty: Boolean(c.id), help: 'Comma separated; creators search by them.' },
    { name: 'destination_url', label: 'Landing page (destination URL)', type: 'url', required: true,
      value: c.destination_url, help: "Creators' links may deep-link only inside this host." },
    { name: 'payout_per_action', label: 'Payout per action (USD)', required: true, inputmode: 'decimal',
      value: c.payout_per_action, placeholder: '0.50' },
    { name: 'total_budget', label: 'Total budget (USD)', required: true, inputmode: 'decimal', value: c.total_budget,
      placeholder: '100.00' },
    { name: 'start_date', label: 'Starts', type: 'datetime-local', value: localInput(c.start_date), parse: parse.instant },
    { name: 'end_date', label: 'Ends', type: 'datetime-local', value: localInput(c.end_date), parse: parse.instant },
  ];
}

// Fields other work adds to campaigns (e.g. pixel_billable, allowed_hosts) are edited by their type.
function extraFields(c) {
  return Object.entries(c).filter(([key]) => !KNOWN.has(key)).flatMap(([key, value]) => {
    if (typeof value === 'boolean') return [{ name: key, label: key.replace(/_/g, ' '), type: 'checkbox', value }];
    if (Array.isArray(value)) {
      return [{ name: key, label: key.replace(/_/g, ' '), value: value.join(', '), keepEmpty: true, parse: parse.tags }];
    }
    return [];
  });
}

page({
  path: '/campaigns', title: 'Campaigns', roles: ['business'], nav: { label: 'Campaigns' },
  render: async ({ query: q }) => {
    const status = q.get('status') || '';
    const list = await get(`/v1/campaigns${query({ mine: 'true', status, limit: 100 })}`);
    const filter = h('select', { id: 'campaign-status-filter', onchange: (e) => go(`/campaigns${query({ status: e.target.value })}`) },
      h('option', { value: '' }, 'All'), STATUSES.map((s) => h('option', { value: s, selected: s === status }, s)));
    return h('div', {},
      h('div', { class: 'titlebar' }, h('h1', {}, 'Your campaigns'), link('/campaigns/new', 'New campaign', { class: 'btn primary' })),
      h('div', { class: 'filters' }, h('label', { for: 'campaign-status-filter' }, 'Status '), filter),
      section('Campaigns', table([
        { label: 'Title', value: (c) => link(`/campaigns/${c.id}`, c.title) },
        { label: 'Status', value: (c) => statusBadge(c.status) },
        { label: 'Objective', value: (c) => c.objective },
        { label: 'Payout', value: (c) => money(c.payout_per_action), class: 'num' },
        { label: 'Remaining / total', value: (c) => `${money(c.remaining_budget)} / ${money(c.total_budget)}`, class: 'num' },
        { label: 'Created', value: (c) => when(c.created_at) },
      ], list.items, { empty: 'No campaigns yet: create your first one.' })));
  },
});

page({
  path: '/campaigns/new', title: 'New campaign', roles: ['business'],
  render: () => {
    const fields = campaignFields();
    fields.splice(3, 0, { name: 'objective', label: 'Objective', type: 'select', options: OBJECTIVES, value: 'click', required: true });
    const create = form({
      id: 'campaign', submit: 'Create draft', fields,
      onSubmit: async (values) => {
        const campaign = await post('/v1/campaigns', values);
        toast('Draft created: fund it, then activate it');
        go(`/campaigns/${campaign.id}`);
      },
    });
    return h('section', { class: 'card' }, h('h1', {}, 'New campaign'),
      h('p', {}, 'A campaign starts as a draft. Fund it, then activate it so creators can apply.'), create.el);
  },
});

function lifecycle(c, refresh) {
  return h('div', { class: 'actions', id: 'lifecycle' }, MOVES[c.status].map(([move, label]) => button(label, async () => {
    if (move === 'complete' && !window.confirm('End this campaign for good? Events after this are not paid.')) return;
    await post(`/v1/campaigns/${id(c.id)}/${move}`);
    toast(`Campaign ${move === 'complete' ? 'ended' : `${move}d`}`);
    await refresh();
    // The pressed button is gone: focus the next move the new status offers (Resume after Pause), else the title.
    const next = document.querySelector('#lifecycle button');
    if (next) next.focus();
    else focusHeading('campaign-title');
  }, { kind: move === 'complete' ? 'danger' : 'primary', id: `campaign-${move}` })));
}

function facts(c) {
  const extra = Object.entries(c).filter(([key]) => !KNOWN.has(key))
    .map(([key, value]) => [key.replace(/_/g, ' '), Array.isArray(value) ? value.join(', ') || '—' : String(value)]);
  return dl([
    ['Status', statusBadge(c.status)], ['Objective', c.objective], ['Payout per action', money(c.payout_per_action)],
    ['Total budget', money(c.total_budget)], ['Funded', h('span', { id: 'funded-budget' }, money(c.funded_budget))],
    ['Remaining', h('span', { id: 'remaining-budget' }, money(c.remaining_budget))],
    ['Landing page', c.destination_url ? h('a', { href: c.destination_url, rel: 'noopener noreferrer', target: '_blank' }, c.destination_url) : '—'],
    ['Hashtags', (c.hashtags || []).map((t) => `#${t}`).join(' ') || '—'],
    ['Starts', when(c.start_date)], ['Ends', when(c.end_date)], ['Created', when(c.created_at)], ...extra,
  ]);
}

function editForm(c, refresh) {
  const fields = [...campaignFields(c), ...extraFields(c)];
  const original = new Map(fields.map((f) => [f.name, f.type === 'checkbox' ? f.value : String(f.value ?? '')]));
  return form({
    id: 'campaign-edit', submit: 'Save changes', fields,
    onSubmit: async (values, { controls }) => {
      // Only what changed: the API decides what may change in this status and names a refused field.
      const changed = Object.fromEntries(Object.entries(values).filter(([name]) => {
        const input = controls[name];
        const now = input.type === 'checkbox' ? input.checked : input.value.trim();
        return now !== original.get(name);
      }));
      if (!Object.keys(changed).length) return toast('Nothing changed');
      await patch(`/v1/campaigns/${id(c.id)}`, changed);
      toast('Campaign saved');
      refresh();
    },
  }).el;
}

// Card funding: the API creates a PaymentIntent (a pending funding), Stripe.js turns the card into a
// PaymentMethod, the API confirms the intent with it (Stripe.js runs 3-D Secure when the bank asks),
// and the budget rises when Stripe's webhook reaches the API.
function fundCard(c, refresh) {
  const holder = h('div', { id: 'fund-step' });
  const idempotencyKey = crypto.randomUUID();  // one per form: a retried click never creates a second intent
  const start = form({
    id: 'fund', submit: 'Continue to card',
    fields: [{ name: 'amount', label: 'Amount (USD)', required: true, inputmode: 'decimal', placeholder: '100.00' }],
    onSubmit: async (values) => {
      const stripe = await loadStripe();
      const funding = await post(`/v1/campaigns/${id(c.id)}/fund`, values, { headers: { 'Idempotency-Key': idempotencyKey } });
      holder.replaceChildren(payStep(stripe, funding, c, refresh));
      holder.querySelector('#card-element input, #card-element iframe')?.focus();
    },
  });
  holder.append(start.el);
  return section('Fund with a card', h('p', {}, 'Paid through Stripe. The budget is credited once the payment is confirmed.'),
    holder);
}

function payStep(stripe, funding, c, refresh) {
  return cardStep(stripe, {
    amount: funding.amount, clientSecret: funding.client_secret, statusId: 'fund-status',
    confirm: (method) => post(`/v1/campaigns/${id(c.id)}/fundings/${id(funding.id)}/confirm`, { payment_method: method }),
    settled: async (outcome) => {
      outcome.textContent = 'Payment confirmed; waiting for Stripe to credit the budget…';
      const now = await poll(async () => {
        const seen = await get(`/v1/campaigns/${id(c.id)}`);
        return seen.funded_budget !== c.funded_budget ? seen : null;
      });
      if (!now) {
        outcome.textContent = 'The payment is confirmed; the budget will show once Stripe notifies us.';
        return;
      }
      toast(`Budget credited: ${money(now.remaining_budget)} remaining`);
      refresh();
    },
  });
}

// A completed campaign's unspent budget goes back: boosters' share pro rata, the rest to the business's card
// payments (docs/supporters.md). The API refuses it before completion or while settlement is due (409).
function refundUnspent(c) {
  const outcome = h('div', { id: 'refund-outcome', role: 'status' });
  const idempotencyKey = crypto.randomUUID();  // a retried press books nothing twice
  return section('Unspent budget',
    h('p', {}, 'Give back what this campaign did not spend: boosters\' unspent money to their cards, the rest to your card payments (payments made by other means are returned by finance).'),
    h('div', { class: 'actions' }, button('Refund unspent budget', async () => {
      let done;
      try {
        done = await post(`/v1/campaigns/${id(c.id)}/refund-unspent`, {}, { headers: { 'Idempotency-Key': idempotencyKey } });
      } catch (err) {  // e.g. 409 settlement_pending: said where the result would be, until the next press
        if (!(err instanceof ApiError)) throw err;
        outcome.replaceChildren(h('p', { class: 'form-error', role: 'alert' }, err.message));
        return;
      }
      outcome.replaceChildren(dl([['Refunded', h('span', { id: 'refunded-total' }, money(done.refunded))],
        ['To boosters', money(done.to_boosters)], ['To you', money(done.to_business)]]));
      toast(`Refunded ${money(done.refunded)}`);
    }, { id: 'refund-unspent' })), outcome);
}

const PAGE_SIZE = 50;  // applications and links per page on a campaign; "Load more" fetches the next

function applications(c, first, fetchPage, refresh) {
  const decide = (creatorId, verdict) => async () => {
    await post(`/v1/campaigns/${id(c.id)}/creators/${id(creatorId)}/${verdict}`);
    toast(`Creator ${verdict}ed`);
    await refresh();
    focusHeading('applications');  // the pressed button left with the re-render
  };
  const columns = [
    { label: 'Creator', value: (a) => person(a.creator_name, a.creator_id) },
    { label: 'Status', value: (a) => statusBadge(a.status) },
    { label: 'Applied', value: (a) => when(a.created_at) },
    { label: 'Earned', value: (a) => money(a.total_earned), class: 'num' },
    { label: 'Decision', value: (a) => h('div', { class: 'actions' },
      a.status !== 'accepted' ? button('Accept', decide(a.creator_id, 'accept'), { kind: 'primary', 'aria-label': `Accept creator ${a.creator_name || a.creator_id}` }) : null,
      a.status !== 'rejected' ? button('Reject', decide(a.creator_id, 'reject'), { kind: 'danger', 'aria-label': `Reject creator ${a.creator_name || a.creator_id}` }) : null) },
  ];
  const shown = table(columns, first.items, { id: 'applications-list', empty: 'No creator has applied yet.' });
  return h('section', { class: 'card' }, h('h2', { id: 'applications' }, 'Creator applications'), shown,
    loadMore(first.next_cursor, fetchPage, rowAdder(shown, columns), { label: 'Load more applications', id: 'more-applications' }));
}

const LINK_COLUMNS = [
  { label: 'Link', value: (l) => h('code', {}, l.url) },
  { label: 'Creator', value: (l) => person(l.creator_name, l.creator_id) },
  { label: 'Goes to', value: (l) => l.destination_url },
  { label: 'Created', value: (l) => when(l.created_at) },
];

function linksList(first, fetchPage) {
  const shown = table(LINK_COLUMNS, first.items, { id: 'campaign-links', empty: 'No links yet.' });
  return [shown, loadMore(first.next_cursor, fetchPage, rowAdder(shown, LINK_COLUMNS), { label: 'Load more links', id: 'more-links' })];
}

async function setup(c) {
  const tracker = session.state.config.tracker_url;
  const conversion = [
    `curl -X POST ${tracker}/v1/conversions \\`,
    '  -H "Authorization: Bearer $OROS_API_KEY" -H "Content-Type: application/json" \\',
    `  -d '{"click_id": "<oros_cid from the landing URL>", "type": "${c.objective === 'sale' ? 'sale' : 'conversion'}", "order_id": "A-1001"${c.objective === 'sale' ? ', "value": "49.90", "currency": "USD"' : ''}}'`,
  ].join('\n');
  const pixel = `<img src="${tracker}/px.gif?cid=<oros_cid>&type=conversion&order_id=A-1001&sig=<signature>" width="1" height="1" alt="">`;
  const secretSlot = h('div', { id: 'pixel-secret' });
  const canMakeSecret = await features.has('post', '/v1/pixel-secret');
  return section('Set-up: track conversions',
    h('p', {}, 'A click on a creator\'s link lands on your page with ', h('code', {}, 'oros_cid'),
      ' in the URL. Keep it with the visitor\'s session and report the conversion with it.'),
    h('h3', {}, 'From your server (recommended)'),
    h('p', {}, 'With an API key (', link('/api-keys', 'create one'), '):'),
    h('div', { class: 'copyrow' }, h('pre', { class: 'mono' }, conversion), copyButton(conversion)),
    h('h3', {}, 'From the browser: the pixel'),
    h('div', { class: 'copyrow' }, h('pre', { class: 'mono' }, pixel), copyButton(pixel)),
    h('p', {}, h('code', {}, 'signature'), ' = hex HMAC-SHA256 of ', h('code', {}, 'cid|type|order_id|value'),
      ' under your pixel secret, computed on your server (a field left out is empty; value with two decimals).',
      ' Unsigned pixels are recorded but paid only where the campaign allows it.'),
    canMakeSecret ? button('Create a pixel secret', async () => {
      const answer = await post('/v1/pixel-secret');
      const previous = answer.previous_valid_until ? ` The previous secret still signs until ${when(answer.previous_valid_until)}.` : '';
      secretSlot.replaceChildren(secretBox('Pixel secret', answer.secret, `Shown once: keep it on your server.${previous}`));
    }, { id: 'make-pixel-secret' }) : null,
    secretSlot);
}

page({
  path: '/campaigns/:id', title: 'Campaign', roles: ['business'],
  render: async ({ params, refresh }) => {
    const c = await get(`/v1/campaigns/${id(params.id)}`);
    const creatorsPage = (cursor) => get(`/v1/campaigns/${id(c.id)}/creators${query({ cursor, limit: PAGE_SIZE })}`);
    const linksPage = (cursor) => get(`/v1/campaigns/${id(c.id)}/links${query({ cursor, limit: PAGE_SIZE })}`);
    const [creators, links] = await Promise.all([creatorsPage(), linksPage()]);
    return h('div', {},
      h('div', { class: 'titlebar' }, h('h1', { id: 'campaign-title' }, c.title), lifecycle(c, refresh)),
      h('p', {}, link('/campaigns', '← All campaigns'), ' · ', link(`/campaigns/${c.id}/stats`, 'Stats and charts')),
      c.description ? h('p', { class: 'description' }, c.description) : null,
      section('Overview', facts(c)),
      c.status !== 'completed' ? fundCard(c, refresh) : refundUnspent(c),
      applications(c, creators, creatorsPage, refresh),
      section('Links', linksList(links, linksPage)),
      await setup(c),
      c.status !== 'completed' ? section('Edit', editForm(c, refresh)) : null);
  },
});
