// Creator: browse and search active campaigns by hashtag, apply, make links, earnings.

import { get, id, post, query } from '../api.js';
import { button, copyButton, dl, h, loadMore, section, table, toast } from '../dom.js';
import { barChart, timeChart } from '../charts.js';
import * as features from '../features.js';
import { form, localInput, parse } from '../forms.js';
import { day, money, when } from '../format.js';
import { go, link, page } from '../router.js';
import { statusBadge } from './campaigns.js';
import { report } from './stats.js';

page({
  path: '/browse', title: 'Find campaigns', roles: ['creator'], nav: { label: 'Find campaigns' },
  render: async ({ query: q }) => {
    const tags = q.getAll('hashtag');
    const list = await get(`/v1/campaigns${query({ hashtag: tags, cursor: q.get('cursor'), limit: 50 })}`);
    const search = form({
      id: 'search', submit: 'Search',
      fields: [{ name: 'hashtag', label: 'Hashtags', value: tags.join(', '), parse: parse.tags,
        help: 'Campaigns carrying all of these, e.g. sneakers, running' }],
      onSubmit: async (values) => {
        // The API validates the tags (422 naming "hashtag"); ask it before navigating.
        await get(`/v1/campaigns${query({ hashtag: values.hashtag || [], limit: 1 })}`);
        go(`/browse${query({ hashtag: values.hashtag || [] })}`);
      },
    });
    return h('div', {}, h('h1', {}, 'Find campaigns'), section('Search', search.el),
      section(tags.length ? `Active campaigns tagged ${tags.map((t) => `#${t}`).join(' ')}` : 'Active campaigns',
        table([
          { label: 'Campaign', value: (c) => link(`/browse/${c.id}`, c.title) },
          { label: 'Pays', value: (c) => `${money(c.payout_per_action)} per ${c.objective}`, class: 'num' },
          { label: 'Budget left', value: (c) => money(c.remaining_budget), class: 'num' },
          { label: 'Hashtags', value: (c) => c.hashtags.map((t) => `#${t}`).join(' ') },
        ], list.items, { empty: 'No active campaign matches.' }),
        list.next_cursor ? link(`/browse${query({ hashtag: tags, cursor: list.next_cursor })}`, 'More campaigns →') : null));
  },
});

const LINKS_PAGE_SIZE = 50;  // a creator's links on a campaign per page

function linkRow(l, qr) {
  return h('li', { class: 'linkrow' },
    h('div', { class: 'copyrow' }, h('input', { type: 'text', readonly: true, value: l.url, class: 'mono', 'aria-label': 'Your link' }),
      copyButton(l.url, 'Copy link')),
    h('p', { class: 'muted' }, 'Goes to ', l.destination_url, ' · made ', when(l.created_at)),
    qr ? h('img', { src: `/v1/links/${encodeURIComponent(l.code)}/qr.svg`, alt: `QR code for ${l.url}`, width: 128, height: 128 }) : null);
}

async function linksCard(c, refresh) {
  const linksPage = (cursor) => get(`/v1/campaigns/${id(c.id)}/links${query({ cursor, limit: LINKS_PAGE_SIZE })}`);
  const [links, qr] = await Promise.all([linksPage(), features.has('get', '/v1/links/{code}/qr.svg')]);
  const list = h('ul', { id: 'my-links', class: 'plain' }, links.items.map((l) => linkRow(l, qr)));
  const make = form({
    id: 'link', submit: 'Create link',
    fields: [{ name: 'destination_url', label: 'Deep link (optional)', type: 'url', placeholder: c.destination_url,
      help: 'A page inside the campaign\'s site; empty means its landing page.' }],
    onSubmit: async (values) => {
      const made = await post(`/v1/campaigns/${id(c.id)}/links`, values);
      toast('Link created');
      document.getElementById('my-links').prepend(linkRow(made, qr));
    },
  });
  return section('Your links', make.el, list, loadMore(links.next_cursor, linksPage,
    (items) => items.map((l) => list.appendChild(linkRow(l, qr))), { label: 'Load more links', id: 'more-my-links' }));
}

page({
  path: '/browse/:id', title: 'Campaign', roles: ['creator'],
  render: async ({ params, refresh }) => {
    const c = await get(`/v1/campaigns/${id(params.id)}`);
    const mine = (await get(`/v1/campaigns/${id(c.id)}/creators`)).items[0];
    let action;
    if (!mine) {
      action = button('Apply to this campaign', async () => {
        await post(`/v1/campaigns/${id(c.id)}/creators`);
        toast('Applied: the business will review it');
        refresh();
      }, { kind: 'primary', id: 'apply' });
    } else {
      action = [h('p', { id: 'application-status' }, 'Your application: ', statusBadge(mine.status),
        mine.status === 'accepted' ? ` · earned ${money(mine.total_earned)}` : ''),
      mine.status === 'accepted' && c.status === 'active' && await features.has('post', '/v1/live-events')
        ? h('p', {}, link(`/live/new${query({ campaign: c.id })}`, 'Schedule a live event for it')) : null];
    }
    return h('div', {},
      h('h1', {}, c.title), h('p', {}, link('/browse', '← Find campaigns')),
      c.description ? h('p', { class: 'description' }, c.description) : null,
      section('Terms', dl([
        ['Pays', `${money(c.payout_per_action)} per ${c.objective}`], ['Budget left', money(c.remaining_budget)],
        ['Status', statusBadge(c.status)], ['Landing page', c.destination_url || '—'],
        ['Hashtags', c.hashtags.map((t) => `#${t}`).join(' ') || '—'], ['Ends', when(c.end_date)],
      ]), action),
      mine && mine.status === 'accepted' ? await linksCard(c, refresh) : null);
  },
});

// Dense days for the chart: the API lists only days with earnings.
function daily(earnings) {
  const totals = new Map();
  for (const item of earnings.items) {
    totals.set(item.day, (totals.get(item.day) || 0) + Math.round(Number(item.earned) * 100));
  }
  const days = [];
  const last = earnings.to.slice(0, 10);
  for (let at = new Date(`${earnings.from.slice(0, 10)}T00:00:00Z`); ; at = new Date(at.getTime() + 86400000)) {
    const date = at.toISOString().slice(0, 10);
    days.push(date);
    if (date >= last) break;
  }
  return { x: days.map((d) => new Date(`${d}T00:00:00Z`)), cents: days.map((d) => totals.get(d) || 0) };
}

page({
  path: '/earnings', title: 'Earnings', roles: ['creator'], nav: { label: 'Earnings' },
  render: async ({ query: q }) => {
    const range = { from: q.get('from'), to: q.get('to') };
    const earnings = await get(`/v1/me/earnings${query(range)}`);
    const titles = new Map(earnings.items.map((i) => [i.campaign_id, i.campaign_title]));
    const { x, cents } = daily(earnings);
    const csv = await features.has('get', '/v1/me/earnings.csv')
      ? h('a', { class: 'btn secondary', id: 'export-earnings-csv', href: `/v1/me/earnings.csv${query({ from: earnings.from, to: earnings.to })}`, download: true }, 'Export CSV')
      : null;
    const period = form({
      id: 'earnings-range', submit: 'Show',
      fields: [
        { name: 'from', label: 'From', type: 'datetime-local', value: localInput(earnings.from), parse: parse.instant },
        { name: 'to', label: 'To', type: 'datetime-local', value: localInput(earnings.to), parse: parse.instant },
      ],
      onSubmit: async (values) => {
        await get(`/v1/me/earnings${query(values)}`);
        go(`/earnings${query(values)}`);
      },
    });
    return h('div', {}, h('div', { class: 'titlebar' }, h('h1', {}, 'Earnings'), csv),
      section('Period', period.el),
      section('Totals', dl([['Earned (net of the platform fee)', h('span', { id: 'total-earned' }, money(earnings.total_earned))],
        ['Reversed (refunds)', money(earnings.total_reversed)]]),
        h('p', {}, 'Earnings are held for a while before they become available: see ', link('/wallet', 'your wallet'), '.')),
      section('Over time', timeChart({ title: 'Earned per day (USD)', x, valueLabel: 'USD', series: [
        { label: 'earned', values: cents.map((c) => c / 100), display: cents.map((c) => (c / 100).toFixed(2)) }] })),
      section('By campaign', barChart({ title: 'Earned by campaign (USD)', empty: 'No earnings in this period yet.',
        bars: earnings.by_campaign.map((r) => ({ label: titles.get(r.campaign_id) || r.campaign_id, value: Number(r.earned), display: money(r.earned) })) }),
      table([
        { label: 'Campaign', value: (r) => link(`/browse/${r.campaign_id}`, titles.get(r.campaign_id) || r.campaign_id) },
        { label: 'Earned', value: (r) => money(r.earned), class: 'num' },
      ], earnings.by_campaign, { empty: 'No earnings in this period yet.', caption: 'Earned by campaign', id: 'earnings-by-campaign' })),
      section('By day', table([
        { label: 'Day', value: (r) => day(r.day) }, { label: 'Campaign', value: (r) => r.campaign_title || r.campaign_id },
        { label: 'Paid events', value: (r) => String(r.events), class: 'num' },
        { label: 'Earned', value: (r) => money(r.earned), class: 'num' }, { label: 'Reversed', value: (r) => money(r.reversed), class: 'num' },
      ], earnings.items, { empty: 'No earnings in this period yet.' })));
  },
});

// The creator's own stats: the campaign report over their links (registered here for the menu order).
page({
  path: '/my-stats', title: 'Your stats', roles: ['creator'], nav: { label: 'Stats' }, feature: ['get', '/v1/me/stats'],
  render: async ({ query: q }) => {
    // Campaign titles for the breakdown by campaign (a creator is on a handful; one read each).
    const names = async (dimension, keys) => {
      if (dimension !== 'campaign') return new Map();
      const found = await Promise.all(keys.slice(0, 50).map((key) => get(`/v1/campaigns/${id(key)}`).catch(() => null)));
      return new Map(found.filter(Boolean).map((c) => [c.id, c.title]));
    };
    return report({
      title: 'Your stats', base: '/my-stats', apiPath: '/v1/me/stats', spec: '/v1/me/stats', q, names,
      spendLabel: 'Paid for your events',
      back: h('p', {}, 'Clicks and sales on your links, across your campaigns. What you earned: ', link('/earnings', 'earnings'), '.'),
    });
  },
});
