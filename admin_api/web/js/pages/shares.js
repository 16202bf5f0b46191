// Share links (docs/supporters.md, "Share links"): a supporter makes its own link to a creator's link
// (POST /v1/links/{code}/shares; asking again answers the same link), shares it, and earns share_pct of
// each payout through it, out of the creator's net. Its share links, with their paid clicks and rewards:
// GET /v1/me/shares (when the API lists it); its share rewards: GET /v1/me/rewards?source=share.

import { ApiError, get, id, post, query } from '../api.js';
import { copyButton, dl, h, loadMore, person, rowAdder, section, table } from '../dom.js';
import * as features from '../features.js';
import { form } from '../forms.js';
import { count, money, when } from '../format.js';
import { link, page } from '../router.js';

const PAGE_SIZE = 20;

// A creator's link as a person has it (its URL) or its code: the code is the URL's last path segment.
function codeOf(raw) {
  const text = raw.trim();
  try {
    return new URL(text).pathname.split('/').filter(Boolean).pop() || text;
  } catch {
    return text;
  }
}

function shareBox(share, qr) {
  return h('div', { id: 'share-link' },
    h('div', { class: 'copyrow' },
      h('input', { type: 'text', readonly: true, value: share.url, class: 'mono', 'aria-label': 'Your share link' }),
      copyButton(share.url, 'Copy share link')),
    dl([['Earns you', h('span', { id: 'share-pct' }, `${share.share_pct}% of each payout through it (out of the creator's part)`)],
      ['Goes to', share.destination_url], ['Campaign', h('code', {}, share.campaign_id)],
      ['Creator', person(share.creator_name, share.creator_id)], ['Made', when(share.created_at)]]),
    qr ? h('img', { src: `/v1/links/${encodeURIComponent(share.code)}/qr.svg`, alt: `QR code for ${share.url}`,
      width: 128, height: 128 }) : null);
}

const SHARE_COLUMNS = [
  { label: 'Share link', header: true, value: (s) => h('span', { class: 'copyrow' },
    h('code', {}, s.url), copyButton(s.url, 'Copy share link')) },
  { label: 'Creator', value: (s) => person(s.creator_name, s.creator_id) },
  { label: 'Campaign', value: (s) => s.campaign_title || h('code', {}, s.campaign_id) },
  { label: 'Paid clicks', value: (s) => count(s.click_count), class: 'num' },
  { label: 'Paid sales and conversions', value: (s) => count(s.conversion_count), class: 'num' },
  { label: 'Rewards', value: (s) => count(s.rewards), class: 'num' },
  { label: 'Earned', value: (s) => money(s.rewards_amount), class: 'num' },
  { label: 'Made', value: (s) => when(s.created_at) },
];

// The supporter's share links, newest first with Load more; drawn again after a new one is made.
async function sharesList() {
  const fetchPage = (cursor) => get(`/v1/me/shares${query({ cursor, limit: PAGE_SIZE })}`);
  const first = await fetchPage();
  const shown = table(SHARE_COLUMNS, first.items, { caption: 'Your share links, newest first', id: 'my-shares',
    empty: 'No share link yet: paste a creator\'s link above.' });
  return [shown, loadMore(first.next_cursor, fetchPage, rowAdder(shown, SHARE_COLUMNS),
    { label: 'Load more share links', id: 'more-shares' })];
}

const REWARD_COLUMNS = [
  { label: 'Since', value: (r) => when(r.created_at), header: true },
  { label: 'Campaign', value: (r) => (r.campaign_id ? h('code', {}, r.campaign_id) : '—') },
  { label: 'Share link', value: (r) => (r.tracking_link_id ? h('code', {}, r.tracking_link_id) : '—') },
  { label: 'Status', value: (r) => h('span', { class: `badge ${r.status}` }, r.status) },
  { label: 'Reward', value: (r) => money(r.amount), class: 'num' },
  { label: 'Paid', value: (r) => when(r.paid_at) },
];

page({
  path: '/shares', title: 'Share links', roles: ['supporter'], nav: { label: 'Share' },
  feature: ['post', '/v1/links/{code}/shares'],
  render: async ({ query: q }) => {
    const fetchPage = (cursor) => get(`/v1/me/rewards${query({ source: 'share', cursor, limit: PAGE_SIZE })}`);
    const [first, qr, listed] = await Promise.all([fetchPage(), features.has('get', '/v1/links/{code}/qr.svg'),
      features.has('get', '/v1/me/shares')]);
    const holder = h('div', { id: 'share-made' });
    const mine = listed ? h('div', { id: 'shares-list' }, await sharesList()) : null;
    const make = form({
      id: 'share', submit: 'Get my share link',
      fields: [{ name: 'link', label: 'A creator\'s link (or its code)', required: true, value: q.get('code'),
        parse: codeOf, help: 'Paste the link a creator shared, e.g. https://go.example/AbC123.' }],
      onSubmit: async (values) => {
        if (!values.link) throw new ApiError(422, { code: 'required', message: 'Paste a creator\'s link or its code.', field: 'link' });
        let share;
        try {
          share = await post(`/v1/links/${id(values.link)}/shares`);
        } catch (err) {
          // Not found (an unknown or disabled link) and the refusals (own link, campaign not active…) are
          // about the link typed; a missing role is not.
          if (err instanceof ApiError && [404, 409].includes(err.status)) err.field = 'link';
          throw err;
        }
        holder.replaceChildren(shareBox(share, qr));
        if (mine) mine.replaceChildren(...(await sharesList()).filter(Boolean));
      },
    });
    const shown = table(REWARD_COLUMNS, first.items, { caption: 'Share rewards, newest first', id: 'share-rewards',
      empty: 'No share reward yet: each paid click or sale through your share links earns one.' });
    const add = rowAdder(shown, REWARD_COLUMNS);
    return h('div', {}, h('h1', {}, 'Share links'),
      h('p', {}, 'Share a creator\'s link as your own: the creator is paid as ever, and you earn a part of each payout through your link, paid into your ',
        link('/wallet', 'wallet'), '. Clicks from where you made the link earn you nothing.'),
      section('Share a link', make.el, holder),
      mine ? section('Your share links', mine) : null,
      section('Your share rewards', shown,
        loadMore(first.next_cursor, fetchPage, add, { label: 'Load more share rewards', id: 'more-share-rewards' })));
  },
});
