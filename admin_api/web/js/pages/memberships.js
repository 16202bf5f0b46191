// Memberships (oros/tiers.py, docs/supporters.md): the tiers with their price and effect
// (GET /v1/membership-tiers), subscribing to one the caller's roles allow, the caller's memberships and
// cancelling. A membership is a Stripe subscription, pending until its first invoice is paid: the page pays
// it by card right after subscribing (the card step of every payment; the API confirms the invoice's
// PaymentIntent) and waits for the webhook to make it active. Where the server's Stripe has no Billing
// the API answers 502/503, shown next to the tier chosen.

import { ApiError, get, id, post, query } from '../api.js';
import { cardStep, poll } from '../cardpay.js';
import { button, dl, h, loadMore, rowAdder, section, table, toast } from '../dom.js';
import { form } from '../forms.js';
import { money, tierName, when } from '../format.js';
import { page } from '../router.js';
import * as session from '../session.js';
import { loadStripe } from '../stripe.js';

const PAGE_SIZE = 20;
const FOR_ROLE = { creator: 'Creators', supporter: 'Supporters', business: 'Businesses' };

function effect(t, base) {
  if (t.fee_pct_cap != null) return `Your platform fee on earnings and tips is at most ${t.fee_pct_cap}%.`;
  if (t.max_active_campaigns != null) return `Up to ${t.max_active_campaigns} active campaigns at once (instead of ${base}).`;
  if (t.unlocks_supporter_posts) return 'Opens the member-only posts of the communities you belong to.';
  return '';
}

function tierList(tiers, base) {
  return h('ul', { class: 'plain items', id: 'tiers' }, tiers.map((t) => h('li', { class: 'item' },
    h('h3', {}, tierName(t.name)),
    dl([['Price', h('span', { class: 'tier-price' }, `${money(t.monthly_price)} a month`)], ['For', FOR_ROLE[t.role] || t.role],
      ['What it does', effect(t, base)]]))));
}

// The first invoice, paid by card; the membership applies once Stripe's webhook says it was paid.
function payStep(stripe, made, refresh) {
  return cardStep(stripe, {
    amount: made.price, clientSecret: made.client_secret, statusId: 'membership-status',
    confirm: (method) => post(`/v1/memberships/${id(made.id)}/confirm`, { payment_method: method }),
    settled: async (outcome) => {
      outcome.textContent = 'Pending: payment confirmed, waiting for Stripe to confirm the first month…';
      const active = await poll(async () => (await get(`/v1/me/memberships${query({ limit: PAGE_SIZE })}`))
        .items.find((m) => m.id === made.id && m.status === 'active'));
      if (!active) {
        outcome.textContent = 'Pending: the payment is confirmed; the membership applies once Stripe notifies us.';
        return;
      }
      toast(`${tierName(active.membership_type)} is active`);
      refresh();
    },
  });
}

function subscribeForm(tiers, refresh) {
  const mine = session.roles();
  const open = tiers.filter((t) => mine.has(t.role));
  if (!open.length) return h('p', { class: 'muted' }, 'No tier is offered to your roles.');
  const idempotencyKey = crypto.randomUUID();
  const holder = h('div', { id: 'membership-step' });
  const subscribe = form({
    id: 'membership', submit: 'Subscribe',
    fields: [{ name: 'membership_type', label: 'Tier', type: 'select', required: true, value: open[0].name,
      options: open.map((t) => [t.name, `${tierName(t.name)}: ${money(t.monthly_price)} a month`]) }],
    onSubmit: async (values) => {
      let made;
      let stripe;
      try {
        stripe = await loadStripe();
        made = await post('/v1/memberships', values, { headers: { 'Idempotency-Key': idempotencyKey } });
      } catch (err) {
        // 502 (Stripe refused) and 503 (no Stripe) name no field: they are about subscribing to this tier.
        if (err instanceof ApiError && (err.status === 502 || err.status === 503) && !err.field) err.field = 'membership_type';
        throw err;
      }
      subscribe.el.remove();  // subscribed: the tier and its price stay on the page, the card step follows
      holder.replaceChildren(h('p', { id: 'membership-opened' },
        `${tierName(made.membership_type)}: ${money(made.price)} a month, pending until its first month is paid.`),
      payStep(stripe, made, refresh));
      holder.querySelector('#card-element input, #card-element iframe')?.focus();
    },
  });
  return h('div', {}, subscribe.el, holder);
}

const STATUS_NOTE = {
  pending: 'waiting for the first payment', active: 'in effect', canceled: 'ended', expired: 'ended (not paid)',
};

function actions(m, refresh, payLater) {
  if (!['pending', 'active'].includes(m.status) || m.cancel_at_period_end) return m.cancel_at_period_end ? `Ends ${when(m.ends_at)}` : '—';
  return [m.status === 'pending' ? button('Pay first month', () => payLater(m),
    { 'aria-label': `Pay the first month of ${tierName(m.membership_type)}`, kind: 'primary' }) : null, ' ',
  button('Cancel', async () => {
    const done = await post(`/v1/memberships/${id(m.id)}/cancel`);
    toast(done.status === 'canceled' ? 'Membership canceled' : `Membership ends ${when(done.ends_at)}`);
    refresh();
  }, { 'aria-label': `Cancel ${tierName(m.membership_type)} membership`, kind: 'danger' })];
}

const memberColumns = (refresh, payLater) => [
  { label: 'Tier', value: (m) => tierName(m.membership_type), header: true },
  { label: 'Status', value: (m) => [h('span', { class: `badge ${m.status}` }, m.status), ` ${STATUS_NOTE[m.status] || ''}`] },
  { label: 'Price', value: (m) => money(m.price), class: 'num' },
  { label: 'Since', value: (m) => when(m.started_at || m.created_at) },
  { label: 'Paid until', value: (m) => when(m.current_period_end) },
  { label: 'Actions', value: (m) => actions(m, refresh, payLater) },
];

page({
  path: '/memberships', title: 'Memberships', nav: { label: 'Memberships' }, roles: ['supporter', 'creator', 'business'],
  feature: ['get', '/v1/membership-tiers'],
  render: async ({ refresh }) => {
    const fetchPage = (cursor) => get(`/v1/me/memberships${query({ cursor, limit: PAGE_SIZE })}`);
    const [tiers, mine] = await Promise.all([get('/v1/membership-tiers'), fetchPage()]);
    // A pending membership (its card step left unfinished) is paid from its row: the same card step.
    const payHolder = h('div', { id: 'membership-pay' });
    const payLater = async (m) => {
      const stripe = await loadStripe();
      payHolder.replaceChildren(h('h3', {}, `${tierName(m.membership_type)}: the first month`),
        payStep(stripe, { ...m, client_secret: null }, refresh));
      payHolder.querySelector('#card-element input, #card-element iframe')?.focus();
    };
    const columns = memberColumns(refresh, payLater);
    const shown = table(columns, mine.items, { caption: 'Your memberships, newest first', id: 'memberships',
      empty: 'You have no membership.' });
    const add = rowAdder(shown, columns);
    return h('div', {}, h('h1', {}, 'Memberships'),
      section('Tiers', h('p', { class: 'muted' }, 'Billed monthly by Stripe; a tier applies once its first payment is confirmed.'),
        tierList(tiers.items, tiers.base_active_campaigns)),
      section('Subscribe', subscribeForm(tiers.items, refresh)),
      section('Yours', shown, loadMore(mine.next_cursor, fetchPage, add, { label: 'Load more memberships', id: 'more-memberships' }),
        payHolder));
  },
});
