// Boosts and rewards (docs/supporters.md): a supporter adds money to an active campaign's budget by card
// and earns a reward on what the boost pays for, paid into the wallet when the campaign completes. A boost
// is credited only once Stripe's webhook confirms it; the page waits for that (GET /v1/boosts/{id}).

import { get, id, post, query } from '../api.js';
import { cardStep, poll } from '../cardpay.js';
import { dl, h, loadMore, rowAdder, section, table, toast } from '../dom.js';
import { form } from '../forms.js';
import { money, when } from '../format.js';
import { link, page } from '../router.js';
import { loadStripe } from '../stripe.js';

const FEATURE = ['post', '/v1/campaigns/{id}/boosts'];
const PAGE_SIZE = 20;

page({
  path: '/boosts', title: 'Boost a campaign', roles: ['supporter'], nav: { label: 'Boost' }, feature: FEATURE,
  render: async ({ query: q }) => {
    const list = await get(`/v1/campaigns${query({ cursor: q.get('cursor'), limit: 50 })}`);
    return h('div', {}, h('h1', {}, 'Boost a campaign'),
      h('p', {}, 'A boost adds to an active campaign\'s budget; you earn a share of what it pays for once the campaign completes (', link('/rewards', 'your rewards'), ').'),
      section('Active campaigns', table([
        { label: 'Campaign', value: (c) => link(`/boosts/${c.id}`, c.title), header: true },
        { label: 'Pays per action', value: (c) => money(c.payout_per_action), class: 'num' },
        { label: 'Remaining budget', value: (c) => money(c.remaining_budget), class: 'num' },
      ], list.items, { empty: 'No active campaign.', id: 'boost-campaigns' }),
      list.next_cursor ? link(`/boosts${query({ cursor: list.next_cursor })}`, 'More campaigns →') : null));
  },
});

function payStep(stripe, intent, c) {
  return cardStep(stripe, {
    amount: intent.amount, clientSecret: intent.client_secret, statusId: 'boost-status',
    confirm: (method) => post(`/v1/boosts/${id(intent.id)}/confirm`, { payment_method: method }),
    settled: async (outcome) => {
      outcome.textContent = 'Pending: payment confirmed, waiting for Stripe to confirm the boost…';
      const done = await poll(async () => {
        const seen = await get(`/v1/boosts/${id(intent.id)}`);
        return seen.status !== 'pending' ? seen : null;
      });
      if (!done) {
        outcome.textContent = 'Pending: the payment is confirmed; the boost is credited once Stripe notifies us.';
        return;
      }
      outcome.replaceChildren(done.status === 'succeeded'
        ? `Boost credited: ${money(done.amount)} added to ${c.title}. ` : `The boost ${done.status}: ${done.refusal_reason || ''} `,
      link('/rewards', 'Your boosts and rewards'));
      if (done.status === 'succeeded') toast('Boost credited');
    },
  });
}

page({
  path: '/boosts/:id', title: 'Boost', roles: ['supporter'], feature: FEATURE,
  render: async ({ params }) => {
    const c = await get(`/v1/campaigns/${id(params.id)}`);
    const holder = h('div', { id: 'boost-step' });
    const idempotencyKey = crypto.randomUUID();  // one per form: a retried click never opens a second boost
    const start = form({
      id: 'boost', submit: 'Continue to card',
      fields: [{ name: 'amount', label: 'Amount (USD)', required: true, inputmode: 'decimal', placeholder: '10.00' }],
      onSubmit: async (values) => {
        const stripe = await loadStripe();
        const intent = await post(`/v1/campaigns/${id(c.id)}/boosts`, values, { headers: { 'Idempotency-Key': idempotencyKey } });
        start.el.remove();  // the boost is opened: its amount is on the Pay button
        holder.replaceChildren(h('p', {}, `Your boost earns ${intent.reward_pct}% of what it pays for (the rate when Stripe confirms it).`),
          payStep(stripe, intent, c));
        holder.querySelector('#card-element input, #card-element iframe')?.focus();
      },
    });
    return h('div', {}, h('h1', {}, `Boost ${c.title}`), h('p', {}, link('/boosts', '← Campaigns')),
      c.description ? h('p', { class: 'description' }, c.description) : null,
      section('Campaign', dl([['Status', c.status], ['Pays per action', money(c.payout_per_action)],
        ['Remaining budget', h('span', { id: 'remaining-budget' }, money(c.remaining_budget))]])),
      section('Boost by card', h('p', {}, 'Paid through Stripe. The budget rises once Stripe confirms the payment.'),
        start.el, holder));
  },
});

const REWARD_COLUMNS = [
  { label: 'Since', value: (r) => when(r.created_at), header: true },
  { label: 'From', value: (r) => r.source },
  { label: 'Campaign', value: (r) => (r.campaign_id ? h('code', {}, r.campaign_id) : '—') },
  { label: 'Status', value: (r) => h('span', { class: `badge ${r.status}` }, r.status) },
  { label: 'Reward', value: (r) => money(r.amount), class: 'num' },
  { label: 'Boost unspent', value: (r) => money(r.unspent), class: 'num' },
  { label: 'Paid', value: (r) => when(r.paid_at) },
];

page({
  path: '/rewards', title: 'Your boosts and rewards', roles: ['supporter'], nav: { label: 'Rewards' },
  feature: ['get', '/v1/me/rewards'],
  render: async () => {
    const fetchPage = (cursor) => get(`/v1/me/rewards${query({ cursor, limit: PAGE_SIZE })}`);
    const first = await fetchPage();
    const shown = table(REWARD_COLUMNS, first.items, { caption: 'Rewards, newest first', id: 'rewards',
      empty: 'No boost or reward yet.' });
    const add = rowAdder(shown, REWARD_COLUMNS);
    return h('div', {}, h('h1', {}, 'Your boosts and rewards'),
      h('p', {}, 'Each credited boost has a reward: pending while its campaign runs (what it has earned so far, and what the boost still holds), paid into your ',
        link('/wallet', 'wallet'), ' when the campaign completes. Share rewards (from ', link('/shares', 'your share links'), ') are paid as each payout is made.'),
      section('Rewards', shown, loadMore(first.next_cursor, fetchPage, add, { label: 'Load more rewards', id: 'more-rewards' })));
  },
});
