// Outgoing webhooks (issue 17, docs/webhooks.md), for businesses and creators: subscribe endpoints to
// event types, keep the signing secret (shown once), rotate it, delete an endpoint, and follow each
// delivery with its attempts; a failed delivery can be sent again.

import { del, get, id, post, query } from '../api.js';
import { button, dl, h, loadMore, secretBox, section, table, toast } from '../dom.js';
import * as features from '../features.js';
import { form } from '../forms.js';
import { when } from '../format.js';
import { go, link, page } from '../router.js';
import * as session from '../session.js';
import { statusBadge } from './campaigns.js';

const FEATURE = ['get', '/v1/webhook-endpoints'];
const DELIVERIES_PATH = '/v1/webhook-endpoints/{id}/deliveries';
const PAGE_SIZE = 20;
// At most 16 enabled endpoints per user (the API's limit): one page lists them all.
const ENDPOINTS_LIMIT = 50;
// What each event type announces and whose it is, for the form: a copy of oros/webhooks.py's EVENT_TYPES
// (tests/test_webapp.py checks they agree). The types offered are those /openapi.json lists; one the app
// does not know is offered to everyone, and the API refuses a type the caller's roles cannot receive.
const EVENT_TYPES = {
  'conversion.recorded': ['business', 'a conversion or sale was paid'],
  'event.rejected': ['business', 'a conversion, sale or refund was rejected, with the reason'],
  'settlement.completed': ['business', 'a settlement run decided events of your campaigns'],
  'earning.credited': ['creator', 'money was credited to your wallet'],
  'withdrawal.paid': ['creator', 'a withdrawal was paid out'],
  'withdrawal.failed': ['creator', 'a withdrawal failed and its money is back in your wallet'],
};
const GRACE = [['86400', '24 hours'], ['3600', '1 hour'], ['0', 'No time: it stops signing now']];
const EXCERPT_CHARS = 200;

function endpointTable(items) {
  return h('div', { id: 'webhook-endpoints' }, table([
    { label: 'Endpoint', value: (e) => link(`/webhooks/${e.id}`, e.url, { class: 'mono' }), header: true },
    { label: 'Events', value: (e) => e.events.join(', ') },
    { label: 'Created', value: (e) => when(e.created_at) },
  ], items, { caption: 'Your endpoints; open one for its deliveries', empty: 'No endpoints yet.' }));
}

page({
  path: '/webhooks', title: 'Webhooks', roles: ['business', 'creator'], nav: { label: 'Webhooks' }, feature: FEATURE,
  render: async () => {
    const [endpoints, served] = await Promise.all([get(`/v1/webhook-endpoints${query({ limit: ENDPOINTS_LIMIT })}`),
      features.bodyOptions('post', '/v1/webhook-endpoints', 'events')]);
    const mine = session.roles();
    const offered = (served || Object.keys(EVENT_TYPES)).filter((type) => !EVENT_TYPES[type] || mine.has(EVENT_TYPES[type][0]));
    const shown = h('div', { id: 'new-endpoint' });
    const create = form({
      id: 'webhook', submit: 'Add endpoint', resetOnSuccess: true,
      fields: [
        { name: 'url', label: 'Endpoint URL', type: 'url', required: true, placeholder: 'https://hooks.example.com/oros',
          help: 'An https address on the internet. Each event is POSTed there as JSON, signed, and retried for a day until it answers 2xx.' },
        { name: 'events', label: 'Events to send', type: 'checkboxes', required: true,
          options: offered.map((type) => [type, type, EVENT_TYPES[type] ? EVENT_TYPES[type][1] : null]) },
      ],
      onSubmit: async (values) => {
        const made = await post('/v1/webhook-endpoints', values);
        shown.replaceChildren(secretBox(`Signing secret for ${made.url}`, made.secret,
          'This is the only time it is shown: store it with your receiver now. Verify each delivery\'s OROS-Signature with it.'),
        h('p', {}, link(`/webhooks/${made.id}`, 'See its deliveries')));
        document.getElementById('webhook-endpoints').replaceWith(
          endpointTable((await get(`/v1/webhook-endpoints${query({ limit: ENDPOINTS_LIMIT })}`)).items));
      },
    });
    return h('div', {}, h('h1', {}, 'Webhooks'),
      section('New endpoint', h('p', {}, 'OROS tells your server what happens to your money as it happens. Each request carries ',
        h('code', {}, 'OROS-Signature: t=…,v1=…'), ': the HMAC-SHA256 of "t." and the body under the secret. ',
        'The same event may arrive twice: deduplicate by its ', h('code', {}, 'id'), '.'),
      offered.length ? create.el : h('p', { class: 'empty' }, 'No event reaches your roles.'), shown),
      section('Your endpoints', endpointTable(endpoints.items)));
  },
});

// ---- One endpoint: its secret, deleting it, and its deliveries -------------------------------

function outcome(a) {
  return a.error || `HTTP ${a.status_code}`;
}

function attemptsTable(attempts) {
  return table([
    { label: 'Attempt', value: (a) => String(a.attempt), header: true, class: 'num' },
    { label: 'Started', value: (a) => when(a.started_at) },
    { label: 'Result', value: (a) => h('span', { class: a.error ? 'bad' : 'ok' }, outcome(a)) },
    { label: 'Took', value: (a) => `${a.duration_ms} ms`, class: 'num' },
    { label: 'Answer', value: (a) => (a.response_excerpt
      ? h('span', { class: 'mono' }, a.response_excerpt.length > EXCERPT_CHARS ? `${a.response_excerpt.slice(0, EXCERPT_CHARS)}…` : a.response_excerpt)
      : '—') },
  ], attempts, { caption: 'Attempts, first to last' });
}

function deliveryView(endpointId, d, refresh) {
  const last = d.attempts[d.attempts.length - 1];
  const pending = d.status === 'pending';
  return h('li', { class: 'delivery', id: `delivery-${d.id}` },
    h('h3', {}, h('code', {}, d.event_type), ' ', statusBadge(d.status)),
    dl([
      ['Event id', h('code', {}, d.event_id)],
      ['Created', when(d.created_at)],
      ['Attempts', String(d.attempt_count)],
      ['Last attempt', last ? `${outcome(last)}, ${when(last.started_at)}` : 'none yet'],
      pending ? ['Next attempt', when(d.next_attempt_at)] : ['Finished', when(d.finished_at)],
      ...(pending ? [['Gives up', when(d.give_up_at)]] : []),
    ]),
    // Open unless delivered: why it has not arrived is what its owner came to see.
    d.attempts.length ? h('details', { class: 'attempts', open: d.status !== 'delivered' }, h('summary', {}, `Attempts (${d.attempts.length})`),
      attemptsTable(d.attempts)) : null,
    h('details', {}, h('summary', {}, 'The event\'s data'), h('pre', {}, JSON.stringify(d.payload, null, 2))),
    d.status === 'failed' ? h('div', { class: 'actions' }, button('Retry', async () => {
      await post(`/v1/webhook-endpoints/${id(endpointId)}/deliveries/${id(d.id)}/retry`);
      toast('Sent again from now, for another day');
      refresh();
    }, { kind: 'primary', 'aria-label': `Retry the ${d.event_type} delivery of ${when(d.created_at)}` })) : null);
}

function secretCard(e) {
  const shown = h('div', { id: 'rotated' });
  const rotate = form({
    id: 'rotate', submit: 'Rotate secret',
    fields: [{ name: 'grace_s', label: 'The current secret keeps signing for', type: 'select', value: '86400',
      options: GRACE, parse: Number, help: 'Meanwhile each delivery carries both signatures, so your receiver can switch over.' }],
    onSubmit: async (values) => {
      const rotated = await post(`/v1/webhook-endpoints/${id(e.id)}/rotate-secret`, values);
      shown.replaceChildren(secretBox('New signing secret', rotated.secret,
        rotated.previous_valid_until ? `Shown this once. The previous one signs too until ${when(rotated.previous_valid_until)}.`
          : 'Shown this once. The previous one no longer signs.'));
    },
  });
  return section('Signing secret', h('p', {}, 'The secret is never shown again after it is made. Rotate it if it may have leaked.'),
    rotate.el, shown);
}

page({
  path: '/webhooks/:id', title: 'Webhook endpoint', roles: ['business', 'creator'], feature: FEATURE,
  render: async ({ params, query: q, refresh }) => {
    const status = q.get('status') || '';
    const base = `/v1/webhook-endpoints/${id(params.id)}`;
    const deliveriesPage = (cursor) => get(`${base}/deliveries${query({ status, cursor, limit: PAGE_SIZE })}`);
    const [e, first, statuses] = await Promise.all([get(base), deliveriesPage(),
      features.parameterOptions('get', DELIVERIES_PATH, 'status')]);
    const list = h('ol', { class: 'plain items', id: 'deliveries' });
    const add = (items) => {
      const nodes = items.map((d) => deliveryView(e.id, d, refresh));
      list.append(...nodes);
      return nodes;
    };
    add(first.items);
    const filter = h('select', { id: 'delivery-status-filter', onchange: (event) => go(`/webhooks/${e.id}${query({ status: event.target.value })}`) },
      h('option', { value: '' }, 'All'), (statuses || []).map((s) => h('option', { value: s, selected: s === status }, s)));
    return h('div', {},
      h('h1', {}, 'Webhook endpoint'), h('p', {}, link('/webhooks', '← Webhooks')),
      section('Endpoint', dl([['URL', h('code', { id: 'endpoint-url' }, e.url)], ['Events', e.events.join(', ')],
        ['Created', when(e.created_at)]]),
      h('div', { class: 'actions' }, button('Delete endpoint', async () => {
        if (!window.confirm(`Delete the endpoint ${e.url}? It receives nothing more; its pending deliveries are canceled.`)) return;
        await del(base);
        toast('Endpoint deleted');
        go('/webhooks');
      }, { kind: 'danger', id: 'delete-endpoint' }))),
      secretCard(e),
      section('Deliveries',
        h('div', { class: 'filters' }, h('label', { for: 'delivery-status-filter' }, 'Status '), filter,
          button('Refresh', () => refresh(), { id: 'refresh-deliveries' })),
        first.items.length ? list : h('p', { class: 'empty' }, status ? `No ${status} deliveries.` : 'No deliveries yet: events you subscribed to will appear here.'),
        loadMore(first.next_cursor, deliveriesPage, add, { label: 'Load more deliveries', id: 'more-deliveries' })));
  },
});
