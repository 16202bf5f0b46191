// Stats: a campaign's (business, GET /v1/campaigns/{id}/stats) and a creator's own links across
// campaigns (creator, GET /v1/me/stats). One request per page: totals with unique visitors, dense
// buckets over time, and the groups of one breakdown (group_by) under any filters, aggregated by
// the server, so a campaign with millions of events sends at most a few hundred buckets and 200
// groups. The breakdowns offered are the ones the API's OpenAPI document lists for group_by.

import { get, id, query } from '../api.js';
import { dl, h, section, table } from '../dom.js';
import { barChart, timeChart } from '../charts.js';
import * as features from '../features.js';
import { form, localInput, parse } from '../forms.js';
import { count, money } from '../format.js';
import { go, link, page } from '../router.js';

const DIMENSION_LABELS = {
  country: 'Country', device: 'Device', browser: 'Browser', os: 'OS', referrer: 'Referrer', link: 'Link',
  creator: 'Creator', campaign: 'Campaign',
};
const TOP_BARS = 10;

let regionNames = null;
function countryName(code) {
  try {
    regionNames ??= new Intl.DisplayNames(undefined, { type: 'region' });
    return `${regionNames.of(code)} (${code})`;
  } catch {
    return code;
  }
}

// What the page shows for a group's key; ids are named through `names` when the page knows them.
function keyLabel(dimension, key, names) {
  if (key === '') return '(unknown)';
  if (dimension === 'country') return countryName(key);
  return names.get(key) || key;
}

function tiles(t, spendLabel) {
  return dl([
    ['Clicks', h('span', { id: 'stats-clicks' }, count(t.clicks.all))],
    ['Unique visitors', h('span', { id: 'stats-unique' }, count(t.clicks.unique))],
    ['Billable clicks', h('span', { id: 'stats-billable' }, count(t.clicks.billable))], ['Bot clicks', count(t.clicks.bot)],
    ['Duplicate clicks', count(t.clicks.duplicate)], ['Conversions', `${count(t.conversions.billable)} billable of ${count(t.conversions.all)}`],
    ['Sales', `${count(t.sales.billable)} billable of ${count(t.sales.all)} (${count(t.sales.refunded)} refunded)`],
    ['Sales value', money(t.sales.value)], [spendLabel, h('span', { id: 'stats-spend' }, money(t.spend))],
  ]);
}

function overTime(stats, spendLabel) {
  const x = stats.buckets.map((b) => new Date(b.start));
  const pick = (f) => stats.buckets.map(f);
  return section('Over time',
    timeChart({ title: 'Clicks', x, series: [
      { label: 'all', values: pick((b) => b.clicks.all) }, { label: 'unique', values: pick((b) => b.clicks.unique) },
      { label: 'billable', values: pick((b) => b.clicks.billable) }, { label: 'bot', values: pick((b) => b.clicks.bot) },
      { label: 'duplicate', values: pick((b) => b.clicks.duplicate) }] }),
    timeChart({ title: 'Conversions and sales', x, series: [
      { label: 'conversions', values: pick((b) => b.conversions.all) },
      { label: 'billable conversions', values: pick((b) => b.conversions.billable) },
      { label: 'sales', values: pick((b) => b.sales.all) }, { label: 'billable sales', values: pick((b) => b.sales.billable) }] }),
    // Plotted as numbers; the table shows the API's exact decimal strings.
    timeChart({ title: `${spendLabel} (USD)`, x, valueLabel: 'USD', series: [
      { label: spendLabel.toLowerCase(), values: pick((b) => Number(b.spend)), display: pick((b) => b.spend) }] }));
}

// The page's state in its hash query: the period, the breakdown, and filters named like the dimensions.
function readState(q, dimensions) {
  const range = { granularity: q.get('granularity'), from: q.get('from'), to: q.get('to') };
  const filters = Object.fromEntries((dimensions || []).filter((d) => q.get(d) !== null).map((d) => [d, q.get(d)]));
  const groupBy = dimensions && dimensions.length ? (dimensions.includes(q.get('group_by')) ? q.get('group_by') : dimensions[0]) : null;
  return { range, filters, groupBy };
}

function periodForm(base, apiPath, stats, kept) {
  return form({
    id: 'stats-range', submit: 'Show',
    fields: [
      { name: 'granularity', label: 'By', type: 'select', options: [['day', 'day'], ['hour', 'hour']], value: stats.granularity },
      { name: 'from', label: 'From', type: 'datetime-local', value: localInput(stats.from), parse: parse.instant },
      { name: 'to', label: 'To', type: 'datetime-local', value: localInput(stats.to), parse: parse.instant },
    ],
    onSubmit: async (values) => {
      // Checked by the API (span limits, order): shown next to the field it names.
      await get(`${apiPath}${query(values)}`);
      go(`${base}${query({ ...kept, ...values })}`);
    },
  }).el;
}

function breakdown({ base, stats, dimensions, state, names, spendLabel }) {
  const { groupBy, filters, range } = state;
  const here = (changes) => `${base}${query({ ...range, group_by: groupBy, ...filters, ...changes })}`;
  const tabs = h('nav', { class: 'tabs', 'aria-label': 'Break down by' }, h('ul', {}, dimensions.map((d) =>
    h('li', {}, link(here({ group_by: d }), DIMENSION_LABELS[d] || d, { 'aria-current': d === groupBy ? 'true' : null })))));
  const active = Object.entries(filters);
  const chips = active.length ? h('p', { id: 'stats-filters' }, 'Only: ', active.map(([d, value]) => h('span', { class: 'chip' },
    `${DIMENSION_LABELS[d] || d} = ${keyLabel(d, value, names)} `,
    link(here({ [d]: undefined }), '×', { 'aria-label': `Remove the filter ${DIMENSION_LABELS[d] || d} = ${keyLabel(d, value, names)}` }))))
    : null;
  const groups = stats.groups || [];
  const label = DIMENSION_LABELS[groupBy] || groupBy;
  const keyCell = (g) => {
    const text = keyLabel(groupBy, g.key, names);
    // An empty key cannot be a filter: an empty query value means "no filter" to the page.
    if (filters[groupBy] !== undefined || g.key === '') return text;
    return link(here({ [groupBy]: g.key }), text, { title: `Only ${label.toLowerCase()} ${text}` });
  };
  return section(`By ${label.toLowerCase()}`, tabs, chips,
    barChart({ title: `Clicks by ${label.toLowerCase()} (top ${TOP_BARS})`,
      bars: groups.slice(0, TOP_BARS).map((g) => ({ label: keyLabel(groupBy, g.key, names), value: g.clicks.all })),
      empty: 'No events in this period.' }),
    table([
      { label, value: keyCell, header: true },
      { label: 'Clicks', value: (g) => count(g.clicks.all), class: 'num' },
      { label: 'Unique', value: (g) => count(g.clicks.unique), class: 'num' },
      { label: 'Billable', value: (g) => count(g.clicks.billable), class: 'num' },
      { label: 'Bot', value: (g) => count(g.clicks.bot), class: 'num' },
      { label: 'Duplicate', value: (g) => count(g.clicks.duplicate), class: 'num' },
      { label: 'Conversions', value: (g) => count(g.conversions.all), class: 'num' },
      { label: 'Sales', value: (g) => count(g.sales.all), class: 'num' },
      { label: spendLabel, value: (g) => money(g.spend), class: 'num' },
    ], groups, { caption: `Events by ${label.toLowerCase()}, most clicks first`, empty: 'No events in this period.', id: 'stats-groups' }),
    stats.groups_truncated ? h('p', { class: 'muted' }, `Only the ${groups.length} with the most clicks are listed.`) : null);
}

// The whole report; `names(dimension, keys)` resolves ids of a breakdown to what a person reads.
// `spec` is the operation's path in the OpenAPI document, which says which breakdowns the server has.
export async function report({ title, back, base, apiPath, spec, q, spendLabel, names = async () => new Map(), csv = null }) {
  const dimensions = await features.parameterOptions('get', spec, 'group_by');
  const state = readState(q, dimensions);
  const stats = await get(`${apiPath}${query({ ...state.range, group_by: state.groupBy, ...state.filters })}`);
  const ids = [...new Set([...(stats.groups || []).map((g) => g.key), ...Object.values(state.filters)].filter(Boolean))];
  const known = state.groupBy ? await names(state.groupBy, ids) : new Map();
  for (const [d, value] of Object.entries(state.filters)) if (d !== state.groupBy) for (const [k, v] of await names(d, [value])) known.set(k, v);
  const kept = { group_by: state.groupBy, ...state.filters };
  return h('div', {},
    h('div', { class: 'titlebar' }, h('h1', {}, title), csv ? csv(stats) : null),
    back,
    section('Period', periodForm(base, apiPath, stats, kept)),
    section('Totals', tiles(stats.totals, spendLabel)),
    overTime(stats, spendLabel),
    section('Rejections by reason', barChart({ title: 'Rejected events by reason',
      bars: Object.entries(stats.totals.rejections).map(([label, value]) => ({ label, value })),
      empty: 'No event was rejected in this period.' })),
    dimensions && dimensions.length ? breakdown({ base, stats, dimensions, state, names: known, spendLabel }) : null);
}

page({
  path: '/campaigns/:id/stats', title: 'Campaign stats', roles: ['business'],
  render: async ({ params, query: q }) => {
    const campaign = await get(`/v1/campaigns/${id(params.id)}`);
    const csvPath = '/v1/campaigns/{id}/events.csv';
    const hasCsv = await features.has('get', csvPath);
    // Links by their URL and creators by their name (the campaign's own lists) for those breakdowns.
    const names = async (dimension) => {
      if (dimension === 'link') {
        const links = await get(`/v1/campaigns/${id(campaign.id)}/links?limit=200`);
        return new Map(links.items.map((l) => [l.id, l.url]));
      }
      if (dimension !== 'creator') return new Map();
      const creators = await get(`/v1/campaigns/${id(campaign.id)}/creators?limit=200`);
      return new Map(creators.items.filter((a) => a.creator_name).map((a) => [a.creator_id, a.creator_name]));
    };
    return report({
      title: `Stats: ${campaign.title}`, back: h('p', {}, link(`/campaigns/${campaign.id}`, '← Campaign')),
      base: `/campaigns/${campaign.id}/stats`, apiPath: `/v1/campaigns/${id(campaign.id)}/stats`, spec: '/v1/campaigns/{id}/stats', q, spendLabel: 'Spend', names,
      csv: hasCsv ? (stats) => h('a', { class: 'btn secondary', id: 'export-csv', download: true,
        href: `${csvPath.replace('{id}', encodeURIComponent(campaign.id))}${query({ from: stats.from, to: stats.to })}` }, 'Export CSV') : null,
    });
  },
});
