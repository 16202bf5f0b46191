// Tips (docs/supporters.md): a supporter tips a creator by card, once or monthly, optionally naming a
// locked post, which the tip unlocks when it is at least the post's price. A tip is shown as sent only
// once Stripe's webhook has booked it (the page waits for it in GET /v1/tips); until then it is pending.
// A monthly tip is a Stripe subscription whose first invoice is paid here by card, the same card step (the
// API confirms the invoice's PaymentIntent); it is listed and canceled from GET /v1/tips/monthly. Where
// the server's Stripe has no Billing the API answers 502/503, shown next to the frequency.
// docs/webapp.md, "Tips, memberships, boosts".

import { ApiError, get, id, post, query } from '../api.js';
import { cardStep, poll } from '../cardpay.js';
import { button, dl, h, loadMore, rowAdder, section, table, toast } from '../dom.js';
import * as features from '../features.js';
import { form } from '../forms.js';
import { money, when } from '../format.js';
import { link, page } from '../router.js';
import * as session from '../session.js';
import { loadStripe } from '../stripe.js';

const FEATURE = ['get', '/v1/tips'];
const PAGE_SIZE = 20;
const FREQUENCIES = { one_time: 'Once', monthly: 'Every month' };
const MONTHLY_NOTE = { pending: 'first month not paid yet', active: 'charged every month', canceled: 'stopped' };

// The API's 502 (Stripe refused) and 503 (no Stripe) name no field: they concern how the tip is paid,
// so they are shown under the frequency chosen.
function onFrequency(err) {
  if (err instanceof ApiError && (err.status === 502 || err.status === 503) && !err.field) err.field = 'frequency';
  return err;
}

page({
  path: '/tips/new', title: 'Send a tip', roles: ['supporter'], feature: FEATURE,
  render: async ({ query: q }) => {
    const frequencies = (await features.bodyOptions('post', '/v1/tips', 'frequency')) || Object.keys(FREQUENCIES);
    const community = q.get('community');
    const postId = q.get('post');
    const holder = h('div', { id: 'tip-step' });
    const idempotencyKey = crypto.randomUUID();  // one per form: a retried click never opens a second tip
    const start = form({
      id: 'tip', submit: 'Continue to card',
      fields: [
        { name: 'to_creator_id', label: 'Creator (user id)', required: true, value: q.get('to') },
        { name: 'amount', label: 'Amount (USD)', required: true, inputmode: 'decimal', value: q.get('amount'),
          placeholder: '5.00', help: postId ? 'At least the post\'s unlock price to unlock it.' : null },
        { name: 'frequency', label: 'How often', type: 'select', required: true, value: 'one_time',
          options: frequencies.map((f) => [f, FREQUENCIES[f] || f]),
          help: 'A monthly tip is charged every month until you cancel it.' },
        postId ? { name: 'post_id', label: 'Unlocks the post', required: true, value: postId } : null,
        { name: 'message', label: 'Message (optional)', type: 'textarea' },
      ].filter(Boolean),
      onSubmit: async (values) => {
        const stripe = await loadStripe();
        let intent;
        try {
          intent = await post('/v1/tips', values, { headers: { 'Idempotency-Key': idempotencyKey } });
        } catch (err) {
          throw onFrequency(err);
        }
        start.el.remove();  // the tip is opened: what it is stays on the page, the card step follows
        holder.replaceChildren(dl([['To creator', h('code', {}, intent.to_creator_id)],
          ['Amount', money(intent.amount)], ['How often', FREQUENCIES[intent.frequency] || intent.frequency],
          ...(intent.post_id ? [['Unlocks the post', h('code', {}, intent.post_id)]] : []),
          ...(intent.message ? [['Message', intent.message]] : [])]),
        intent.frequency === 'monthly' ? monthlyOpened(intent) : null, payStep(stripe, intent, community));
        holder.querySelector('#card-element input, #card-element iframe')?.focus();
      },
    });
    return h('div', {}, h('h1', {}, 'Send a tip'),
      h('p', {}, community ? link(`/communities/${community}`, '← Back to the community') : link('/tips', '← Your tips')),
      section('Tip', h('p', {}, 'Paid by card through Stripe. The tip is sent once Stripe confirms the payment.'),
        start.el, holder));
  },
});

function payStep(stripe, intent, community) {
  return cardStep(stripe, {
    amount: intent.amount, clientSecret: intent.client_secret, statusId: 'tip-status',
    confirm: (method) => post(`/v1/tips/${id(intent.id)}/confirm`, { payment_method: method }),
    settled: async (outcome) => {
      outcome.textContent = 'Pending: payment confirmed, waiting for Stripe to confirm the tip…';
      const tip = await poll(async () => (await get(`/v1/tips${query({ direction: 'sent', limit: PAGE_SIZE })}`))
        .items.find((t) => t.intent_id === intent.id));
      if (!tip) {
        outcome.textContent = 'Pending: the payment is confirmed; the tip shows in your tips once Stripe notifies us.';
        return;
      }
      const what = tip.frequency === 'monthly' ? 'Monthly tip started: the first month is sent' : 'Tip sent';
      outcome.replaceChildren(`${what}: ${money(tip.amount)}${tip.post_id ? ', and the post is unlocked' : ''}. `,
        community ? link(`/communities/${community}`, tip.post_id ? 'Read the post' : 'Back to the community')
          : link('/tips', 'Your tips'));
      toast('Tip sent');
    },
  });
}

function monthlyOpened(intent) {
  return h('div', { id: 'monthly-opened' },
    h('p', {}, `Monthly tip of ${money(intent.amount)} opened: pay its first month below; it is charged every month until you cancel it.`),
    cancelMonthly(intent.id));
}

function cancelMonthly(intentId) {
  return button('Cancel monthly tip', async (event) => {
    const done = await post(`/v1/tips/monthly/${id(intentId)}/cancel`);
    event.target.replaceWith(h('span', { class: 'badge' }, done.status));
    toast(`Monthly tip ${done.status}`);
  }, { 'aria-label': `Cancel monthly tip ${intentId}` });
}

const tipColumns = (direction) => [
  { label: 'When', value: (t) => when(t.created_at), header: true },
  { label: direction === 'sent' ? 'To creator' : 'From', value: (t) => h('code', {}, direction === 'sent' ? t.to_creator_id : t.from_user_id) },
  { label: 'Amount', value: (t) => money(t.amount, t.currency), class: 'num' },
  direction === 'received' ? { label: 'Yours after fee', value: (t) => money(t.net_amount, t.currency), class: 'num' } : null,
  { label: 'How often', value: (t) => FREQUENCIES[t.frequency] || t.frequency },
  { label: 'Post', value: (t) => (t.post_id ? h('code', {}, t.post_id) : '—') },
  { label: 'Message', value: (t) => t.message || '' },
  { label: 'Refunded', value: (t) => (t.reversed_amount !== '0.00' ? money(t.reversed_amount, t.currency) : '—'), class: 'num' },
].filter(Boolean);

function directions() {
  const mine = session.roles();
  return [...(mine.has('supporter') ? [['sent', 'Sent']] : []), ...(mine.has('creator') ? [['received', 'Received']] : [])];
}

page({
  path: '/tips', title: 'Tips', roles: ['supporter', 'creator'], nav: { label: 'Tips' }, feature: FEATURE,
  render: async ({ query: q }) => {
    const tabs = directions();
    const direction = tabs.some(([key]) => key === q.get('direction')) ? q.get('direction') : (tabs[0] || ['sent'])[0];
    const fetchPage = (cursor) => get(`/v1/tips${query({ direction, cursor, limit: PAGE_SIZE })}`);
    const first = await fetchPage();
    const columns = tipColumns(direction);
    const shown = table(columns, first.items, { caption: `Tips ${direction}, newest first`, id: 'tips',
      empty: direction === 'sent' ? 'You have not sent a tip yet.' : 'No tips received yet.' });
    const add = rowAdder(shown, columns);
    // The monthly tips as asked for: a pending one (first month not paid yet) has no row among the tips.
    const monthly = direction === 'sent' ? (await get(`/v1/tips/monthly${query({ limit: PAGE_SIZE })}`)).items : [];
    // A pending monthly tip (its card step left unfinished) is paid from its row: the same card step.
    const payHolder = h('div', { id: 'monthly-pay' });
    const payLater = async (t) => {
      const stripe = await loadStripe();
      payHolder.replaceChildren(h('h3', {}, `Monthly tip of ${money(t.amount)}: the first month`),
        payStep(stripe, { ...t, client_secret: null }, null));
      payHolder.querySelector('#card-element input, #card-element iframe')?.focus();
    };
    return h('div', {},
      h('div', { class: 'titlebar' }, h('h1', {}, 'Tips'),
        session.roles().has('supporter') ? link('/tips/new', 'Send a tip', { class: 'btn primary' }) : null),
      tabs.length > 1 ? h('nav', { class: 'tabs', 'aria-label': 'Which tips' }, h('ul', {}, tabs.map(([key, label]) =>
        h('li', {}, link(`/tips${query({ direction: key })}`, label, { 'aria-current': key === direction ? 'page' : null }))))) : null,
      section(direction === 'sent' ? 'Tips you sent' : 'Tips you received',
        h('p', { class: 'muted' }, 'A tip appears here once Stripe has confirmed its payment.'),
        shown, loadMore(first.next_cursor, fetchPage, add, { label: 'Load more tips', id: 'more-tips' })),
      monthly.length ? section('Monthly tips', table([
        { label: 'To creator', value: (t) => h('code', {}, t.to_creator_id), header: true },
        { label: 'Amount a month', value: (t) => money(t.amount, t.currency), class: 'num' },
        { label: 'Status', value: (t) => [h('span', { class: `badge ${t.status}` }, t.status), ` ${MONTHLY_NOTE[t.status] || ''}`] },
        { label: 'Opened', value: (t) => when(t.created_at) },
        { label: 'Actions', value: (t) => (['pending', 'active'].includes(t.status) ? [
          t.status === 'pending' ? button('Pay first month', () => payLater(t),
            { 'aria-label': `Pay the first month of monthly tip ${t.id}`, kind: 'primary' }) : null, ' ', cancelMonthly(t.id)]
          : `ended ${when(t.ended_at)}`) },
      ], monthly, { id: 'monthly-tips', caption: 'Monthly tips, newest first' }), payHolder) : null);
  },
});
