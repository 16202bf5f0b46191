// Live shopping (docs/live.md): a creator schedules a live event for a campaign it is accepted on, starts
// and ends it, and shares its live link; the campaign's business sets the commission percent while the
// event is scheduled and reports the sales made during it (with its API key, as its shop's server would).
// Both see the event's numbers as GET /v1/live-events/{id} gives them: viewers and reported sales from
// ClickHouse as they happen, paid sales, GMV and commission once the settler paid them. The paid sales are
// listed (GET /v1/live-events/{id}/sales) and the business refunds one whole from its session
// (POST …/sales/{sale_id}/refund); the next settlement reverses it while its commission is held.

import { ApiError, get, id, patch, post, query } from '../api.js';
import { button, copyButton, dl, h, loadMore, person, rowAdder, section, table, toast } from '../dom.js';
import * as features from '../features.js';
import { form, localInput, parse } from '../forms.js';
import { count, money, when } from '../format.js';
import { go, link, page } from '../router.js';
import * as session from '../session.js';

const FEATURE = ['get', '/v1/live-events'];
const PAGE_SIZE = 20;
// The creator's moves by status; which ones are allowed is the API's rule (409 invalid_state otherwise).
const MOVES = { scheduled: [['start', 'Go live'], ['cancel', 'Cancel event']], live: [['end', 'End live event']] };
const MOVED = { start: 'You are live', end: 'Live event ended', cancel: 'Live event canceled' };

const badge = (value) => h('span', { class: `badge ${value}` }, value);

const EVENT_COLUMNS = [
  { label: 'Event', value: (e) => link(`/live/${e.id}`, e.title), header: true },
  { label: 'Status', value: (e) => badge(e.status) },
  { label: 'Scheduled', value: (e) => when(e.scheduled_at) },
  { label: 'Started', value: (e) => when(e.started_at) },
  { label: 'Ended', value: (e) => when(e.ended_at) },
  { label: 'Campaign', value: (e) => (e.campaign_id ? h('code', {}, e.campaign_id) : '—') },
];

page({
  path: '/live', title: 'Live events', roles: ['creator', 'business'], nav: { label: 'Live' }, feature: FEATURE,
  render: async () => {
    const fetchPage = (cursor) => get(`/v1/live-events${query({ cursor, limit: PAGE_SIZE })}`);
    const first = await fetchPage();
    const shown = table(EVENT_COLUMNS, first.items, { caption: 'Live events, newest first', id: 'live-events',
      empty: session.roles().has('creator') ? 'No live event yet: schedule one for a campaign you are accepted on.'
        : 'No live event on your campaigns yet.' });
    const add = rowAdder(shown, EVENT_COLUMNS);
    return h('div', {},
      h('div', { class: 'titlebar' }, h('h1', {}, 'Live events'),
        session.roles().has('creator') ? link('/live/new', 'Schedule a live event', { class: 'btn primary' }) : null),
      h('p', {}, 'Sell live: viewers arrive through the event\'s live link, and the sales made while it is live pay the creator a commission.'),
      section('Your live events', shown, loadMore(first.next_cursor, fetchPage, add, { label: 'Load more live events', id: 'more-live' })));
  },
});

// The API's 403 (not accepted on it) and 409 (not active) are about the campaign chosen.
function onCampaign(err) {
  if (err instanceof ApiError && (err.status === 403 || err.status === 409) && !err.field) err.field = 'campaign_id';
  return err;
}

page({
  path: '/live/new', title: 'Schedule a live event', roles: ['creator'], feature: FEATURE,
  render: async ({ query: q }) => {
    // Active campaigns to choose from; whether the creator is accepted on one is the API's answer.
    const active = await get(`/v1/campaigns${query({ limit: 100 })}`);
    const chosen = q.get('campaign');
    const options = active.items.map((c) => [c.id, c.title]);
    if (chosen && !options.some(([value]) => value === chosen)) options.unshift([chosen, chosen]);
    const inAnHour = new Date(Date.now() + 3600 * 1000).toISOString();
    const made = form({
      id: 'live', submit: 'Schedule',
      fields: [
        { name: 'campaign_id', label: 'Campaign', type: 'select', required: true, value: chosen, options,
          help: 'An active campaign you are accepted on.' },
        { name: 'title', label: 'Title', required: true, placeholder: 'Spring range, live' },
        { name: 'starts_at', label: 'Starts', type: 'datetime-local', required: true, value: localInput(inAnHour),
          parse: parse.instant },
      ],
      onSubmit: async (values) => {
        let event;
        try {
          event = await post('/v1/live-events', values);
        } catch (err) {
          throw onCampaign(err);
        }
        toast('Live event scheduled');
        go(`/live/${event.id}`);
      },
    });
    return h('div', {}, h('h1', {}, 'Schedule a live event'), h('p', {}, link('/live', '← Live events')),
      options.length ? section('Event', made.el) : h('p', { class: 'empty' }, 'No active campaign to go live for.'));
  },
});

function liveLink(e, qr) {
  return h('div', { id: 'live-link' },
    h('div', { class: 'copyrow' },
      h('input', { type: 'text', readonly: true, value: e.link.url, class: 'mono', 'aria-label': 'Live link' }),
      copyButton(e.link.url, 'Copy live link')),
    qr ? h('img', { src: `/v1/links/${encodeURIComponent(e.link.code)}/qr.svg`, alt: `QR code for ${e.link.url}`,
      width: 128, height: 128 }) : null);
}

// The event's numbers as the API reports them (the party's view); money stays the API's strings.
function numbers(e) {
  const span = (name, value) => h('span', { id: `live-${name}` }, value);
  return [
    section('Viewers', dl([['Clicks through the live link', span('clicks', count(e.viewers.clicks))],
      ['Unique visitors (once the settler decided the clicks)', span('unique', count(e.viewers.unique))],
      ['Bot clicks', span('bot', count(e.viewers.bot))]])),
    section('Sales', dl([
      ['Reported (before settlement)', span('reported', count(e.sales.reported))],
      ['Reported value', span('reported-value', money(e.sales.reported_value))],
      ['Paid by the settler', span('paid', count(e.sales.paid))],
      ['Refunded whole', span('refunded', count(e.sales.refunded))],
      ['GMV (paid sales)', span('gmv', money(e.sales.gmv))],
      ['Commission (refunds deducted)', span('commission', money(e.sales.commission))],
      ['The creator\'s part, after the platform fee', span('creator-net', money(e.sales.creator_net))],
    ])),
  ];
}

function moves(e, refresh) {
  return h('div', { class: 'actions', id: 'live-moves' }, (MOVES[e.status] || []).map(([move, label]) =>
    button(label, async () => {
      await post(`/v1/live-events/${id(e.id)}/${move}`);
      toast(MOVED[move]);
      refresh();
    }, { kind: move === 'cancel' ? 'danger' : 'primary', id: `live-${move}` })));
}

function commissionForm(e, refresh) {
  return form({
    id: 'commission', submit: 'Set commission',
    fields: [{ name: 'commission_pct', label: 'Commission (% of each sale)', inputmode: 'decimal',
      value: e.commission_pct, placeholder: '10', keepEmpty: true,
      help: 'Empty pays the campaign\'s payout per sale. Only while the event is scheduled.' }],
    onSubmit: async (values) => {
      await patch(`/v1/live-events/${id(e.id)}`, { commission_pct: values.commission_pct || null });
      toast('Commission set');
      refresh();
    },
  }).el;
}

// A sale is reported with the business's API key, as its shop's server does (the API takes no login for
// it); the key is sent with this one request and never kept. A 401/403 is about the key.
function saleForm(e, refresh) {
  const idempotencyKey = crypto.randomUUID();  // one per form: a retried click reports the sale once
  return form({
    id: 'sale', submit: 'Report sale',
    fields: [
      { name: 'api_key', label: 'Your API key', type: 'password', required: true, autocomplete: 'off',
        help: 'The secret of one of your API keys; used for this request only.' },
      { name: 'order_id', label: 'Order id', required: true },
      { name: 'amount', label: 'Amount (USD)', required: true, inputmode: 'decimal', placeholder: '40.00' },
      { name: 'click_id', label: 'Buyer\'s click id (optional)', help: 'The oros_cid the live link added, if your shop kept it.' },
    ],
    onSubmit: async ({ api_key: key, ...sale }, { controls }) => {
      let done;
      try {
        done = await post(`/v1/live-events/${id(e.id)}/sales`, sale, { quiet401: true,
          headers: { Authorization: `Bearer ${key}`, 'Idempotency-Key': idempotencyKey } });
      } catch (err) {
        if (err instanceof ApiError && (err.status === 401 || err.status === 403) && !err.field) err.field = 'api_key';
        throw err;
      }
      controls.api_key.value = '';
      toast(done.duplicate ? 'That order was already paid as a sale of this event' : 'Sale reported: the settler pays it');
      refresh();
    },
  }).el;
}

// The refund of one sale: confirmed first, sent once (an Idempotency-Key per row), then the row says so.
// Offered only while the commission is held: after that the settler lets the commission stand.
function refundButton(e, sale, statusCell) {
  const idempotencyKey = crypto.randomUUID();
  const el = button('Refund', async () => {
    if (!window.confirm(`Refund order ${sale.order_id} (${money(sale.amount)}) in full? The creator's commission on it `
      + 'is taken back at the next settlement while it is still held; after the hold it stands.')) return;
    const done = await post(`/v1/live-events/${id(e.id)}/sales/${id(sale.id)}/refund`, {}, { headers: { 'Idempotency-Key': idempotencyKey } });
    statusCell.replaceChildren(badge('refund requested'));
    el.remove();
    toast(done.duplicate ? `Order ${sale.order_id}'s refund was already requested`
      : `Refund of order ${sale.order_id} requested: the next settlement reverses it`);
  }, { kind: 'danger', 'aria-label': `Refund order ${sale.order_id}` });
  return el;
}

// Held until released (the server's rule, sql/postgres/0190): held_until is null once the commission moved.
const refundable = (s) => s.status === 'paid' && s.held_until !== null;

function salesColumns(e, isBusiness) {
  const statusCells = new WeakMap();
  const statusCell = (s) => {
    if (!statusCells.has(s)) statusCells.set(s, h('span', {}, badge(s.status)));
    return statusCells.get(s);
  };
  return [
    { label: 'Order', value: (s) => s.order_id, header: true },
    { label: 'Paid', value: (s) => when(s.created_at) },
    { label: 'Amount', value: (s) => money(s.amount), class: 'num' },
    { label: 'Commission', value: (s) => money(s.commission), class: 'num' },
    { label: 'Status', value: statusCell },
    { label: 'Held until', value: (s) => (s.held_until ? when(s.held_until) : '—') },
    ...(isBusiness ? [{ label: 'Refund', value: (s) => (refundable(s) ? refundButton(e, s, statusCell(s)) : '—') }] : []),
  ];
}

async function salesList(e, isBusiness) {
  const fetchPage = (cursor) => get(`/v1/live-events/${id(e.id)}/sales${query({ cursor, limit: PAGE_SIZE })}`);
  const first = await fetchPage();
  const columns = salesColumns(e, isBusiness);
  const shown = table(columns, first.items, { caption: 'Paid sales, newest first', id: 'live-sales',
    empty: 'No paid sale yet: reported sales appear once the settler paid them.' });
  return section('Paid sales', shown,
    loadMore(first.next_cursor, fetchPage, rowAdder(shown, columns), { label: 'Load more sales', id: 'more-live-sales' }));
}

page({
  path: '/live/:id', title: 'Live event', feature: FEATURE,
  render: async ({ params, refresh }) => {
    const [e, qr, listsSales] = await Promise.all([get(`/v1/live-events/${id(params.id)}`),
      features.has('get', '/v1/links/{code}/qr.svg'), features.has('get', '/v1/live-events/{id}/sales')]);
    const me = session.state.user;
    const isCreator = me && me.id === e.creator_id;
    const party = Boolean(e.sales);  // the API shows the numbers to the event's creator and business only
    const isBusiness = party && !isCreator && session.roles().has('business');
    const sales = party && listsSales ? await salesList(e, isBusiness) : null;
    return h('div', {},
      h('div', { class: 'titlebar' }, h('h1', {}, e.title), party ? button('Refresh', refresh, { id: 'live-refresh' }) : null),
      me ? h('p', {}, link('/live', '← Live events')) : null,
      section('Event', dl([
        ['Status', h('span', { id: 'live-status' }, badge(e.status))], ['Scheduled', when(e.scheduled_at)],
        ['Started', when(e.started_at)], ['Ended', when(e.ended_at)],
        ['Creator', person(e.creator_name, e.creator_id)],
        ...(party ? [['Commission', h('span', { id: 'live-commission-pct' },
          e.commission_pct ? `${e.commission_pct}% of each sale` : 'the campaign\'s payout per sale')]] : []),
      ]), isCreator ? moves(e, refresh) : null),
      section('Live link', h('p', {}, 'Viewers arrive through this link; sales made through it while the event is live pay its creator.'),
        liveLink(e, party && qr)),
      party ? numbers(e) : null,
      sales,
      isBusiness && e.status === 'scheduled' ? section('Commission', commissionForm(e, refresh)) : null,
      isBusiness && ['live', 'ended'].includes(e.status) ? section('Report a sale', saleForm(e, refresh)) : null);
  },
});
