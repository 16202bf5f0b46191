// A campaign's stats: totals, clicks (all / billable / bot / duplicate), conversions and sales,
// spend, and rejections by reason, from GET /v1/campaigns/{id}/stats (aggregated by the server:
// a campaign with millions of events sends at most a few hundred buckets).

import { get, id, query } from '../api.js';
import { dl, h, section } from '../dom.js';
import { barChart, timeChart } from '../charts.js';
import * as features from '../features.js';
import { form, localInput, parse } from '../forms.js';
import { count, money } from '../format.js';
import { go, link, page } from '../router.js';

// More panels (the analytics breakdowns: group_by=country|device|…, unique) register here:
// panels.push({render: async ({campaign, stats, range}) => Node}).
export const panels = [];

function tiles(t) {
  return dl([
    ['Clicks', count(t.clicks.all)], ['Billable clicks', count(t.clicks.billable)], ['Bot clicks', count(t.clicks.bot)],
    ['Duplicate clicks', count(t.clicks.duplicate)], ['Conversions', `${count(t.conversions.billable)} billable of ${count(t.conversions.all)}`],
    ['Sales', `${count(t.sales.billable)} billable of ${count(t.sales.all)} (${count(t.sales.refunded)} refunded)`],
    ['Sales value', money(t.sales.value)], ['Spend', h('span', { id: 'stats-spend' }, money(t.spend))],
  ]);
}

function rangeForm(params, range) {
  return form({
    id: 'stats-range', submit: 'Show',
    fields: [
      { name: 'granularity', label: 'By', type: 'select', options: [['day', 'day'], ['hour', 'hour']], value: range.granularity },
      { name: 'from', label: 'From', type: 'datetime-local', value: localInput(range.from), parse: parse.instant },
      { name: 'to', label: 'To', type: 'datetime-local', value: localInput(range.to), parse: parse.instant },
    ],
    onSubmit: async (values) => {
      // Checked by the API (span limits, order): shown next to the field it names.
      await get(`/v1/campaigns/${id(params.id)}/stats${query(values)}`);
      go(`/campaigns/${params.id}/stats${query(values)}`);
    },
  }).el;
}

page({
  path: '/campaigns/:id/stats', title: 'Campaign stats', roles: ['business'],
  render: async ({ params, query: q }) => {
    const wanted = { granularity: q.get('granularity'), from: q.get('from'), to: q.get('to') };
    const [campaign, stats] = await Promise.all([
      get(`/v1/campaigns/${id(params.id)}`), get(`/v1/campaigns/${id(params.id)}/stats${query(wanted)}`)]);
    const x = stats.buckets.map((b) => new Date(b.start));
    const pick = (f) => stats.buckets.map(f);
    const rejections = Object.entries(stats.totals.rejections).map(([label, value]) => ({ label, value }));
    const csvPath = '/v1/campaigns/{id}/events.csv';
    const csv = await features.has('get', csvPath)
      ? h('a', { class: 'btn secondary', href: `${csvPath.replace('{id}', encodeURIComponent(campaign.id))}${query({ from: stats.from, to: stats.to })}`, download: true }, 'Export CSV')
      : null;
    const extra = await Promise.all(panels.map((p) => p.render({ campaign, stats, range: wanted })));
    return h('div', {},
      h('div', { class: 'titlebar' }, h('h1', {}, `Stats: ${campaign.title}`), csv),
      h('p', {}, link(`/campaigns/${campaign.id}`, '← Campaign')),
      section('Period', rangeForm(params, stats)),
      section('Totals', tiles(stats.totals)),
      section('Over time',
        timeChart({ title: 'Clicks', x, series: [
          { label: 'all', values: pick((b) => b.clicks.all) }, { label: 'billable', values: pick((b) => b.clicks.billable) },
          { label: 'bot', values: pick((b) => b.clicks.bot) }, { label: 'duplicate', values: pick((b) => b.clicks.duplicate) }] }),
        timeChart({ title: 'Conversions and sales', x, series: [
          { label: 'conversions', values: pick((b) => b.conversions.all) },
          { label: 'billable conversions', values: pick((b) => b.conversions.billable) },
          { label: 'sales', values: pick((b) => b.sales.all) }, { label: 'billable sales', values: pick((b) => b.sales.billable) }] }),
        // Plotted as numbers; the table shows the API's exact decimal strings.
        timeChart({ title: 'Spend (USD)', x, valueLabel: 'USD', series: [
          { label: 'spend', values: pick((b) => Number(b.spend)), display: pick((b) => b.spend) }] })),
      section('Rejections by reason', barChart({ title: 'Rejected events by reason', bars: rejections, empty: 'No event was rejected in this period.' })),
      extra);
  },
});
