// Supporters (issue 14, docs/supporters.md): communities and their posts. Anyone signed in browses,
// joins and leaves; a creator creates communities and posts in them, optionally locked. A locked post
// the caller has not unlocked arrives without its content (the API leaves it out): the page shows its
// type and what unlocks it. Posts are creators' words and URLs: shown as text, links only to http(s),
// images only from https (docs/webapp.md, "Communities and posts").

import { get, id, post, query } from '../api.js';
import { button, dl, h, loadMore, rowAdder, section, table, toast } from '../dom.js';
import * as features from '../features.js';
import { form } from '../forms.js';
import { count, money, tierName, when } from '../format.js';
import { go, link, page } from '../router.js';
import * as session from '../session.js';

const FEATURE = ['get', '/v1/communities'];
const POSTS_PATH = '/v1/communities/{id}/posts';
const PAGE_SIZE = 20;
const TYPES = { text: 'Text', image: 'Image', video: 'Video', link: 'Link' };
// Creators' links are user-generated: no opener, no referrer, and marked as such for crawlers.
const UGC_REL = 'noopener noreferrer ugc';
const EXCERPT_CHARS = 240;

const typeName = (type) => TYPES[type] || type;

// An absolute http(s) URL from a post, or null: relative or other-scheme addresses are never followed.
function webUrl(raw) {
  try {
    const url = new URL(raw);
    return url.protocol === 'https:' || url.protocol === 'http:' ? url : null;
  } catch {
    return null;
  }
}

// ---- The list of communities ------------------------------------------------------------------

function views() {
  const mine = session.roles();
  if (!session.state.user) return [['', 'All']];
  return [['', 'All'], ['joined', 'Joined'], ...(mine.has('creator') ? [['mine', 'Yours']] : [])];
}

function communityItem(c) {
  const description = c.description && c.description.length > EXCERPT_CHARS
    ? `${c.description.slice(0, EXCERPT_CHARS)}…` : c.description;
  return h('li', { class: 'item' },
    h('h3', {}, link(`/communities/${c.id}`, c.name)),
    h('p', { class: 'muted' }, `${count(c.member_count)} ${c.member_count === 1 ? 'member' : 'members'}`,
      c.membership ? ' · you are a member' : ''),
    description ? h('p', { class: 'description' }, description) : null);
}

page({
  path: '/communities', title: 'Communities', nav: { label: 'Communities' }, feature: FEATURE,
  render: async ({ query: q, session: state }) => {
    const view = q.get('show') || '';
    const filter = view === 'joined' ? { joined: 'true' } : view === 'mine' && state.user ? { creator_id: state.user.id } : {};
    const fetchPage = (cursor) => get(`/v1/communities${query({ ...filter, cursor, limit: PAGE_SIZE })}`);
    const first = await fetchPage();
    const list = h('ul', { class: 'plain items', id: 'communities' });
    const add = (items) => {
      const nodes = items.map(communityItem);
      list.append(...nodes);
      return nodes;
    };
    add(first.items);
    const empty = { '': 'No communities yet.', joined: 'You have not joined a community yet.',
      mine: 'You have no community yet: create one.' }[view];
    return h('div', {},
      h('div', { class: 'titlebar' }, h('h1', {}, 'Communities'),
        session.roles().has('creator') ? link('/communities/new', 'New community', { class: 'btn primary' }) : null),
      h('nav', { class: 'tabs', 'aria-label': 'Which communities' }, h('ul', {}, views().map(([key, label]) =>
        h('li', {}, link(`/communities${query({ show: key })}`, label, { 'aria-current': key === view ? 'page' : null }))))),
      section('Communities', first.items.length ? list : h('p', { class: 'empty' }, empty),
        loadMore(first.next_cursor, fetchPage, add, { label: 'Load more communities', id: 'more-communities' })));
  },
});

page({
  path: '/communities/new', title: 'New community', roles: ['creator'], feature: FEATURE,
  render: () => {
    const create = form({
      id: 'community', submit: 'Create community',
      fields: [
        { name: 'name', label: 'Name', required: true },
        { name: 'description', label: 'Description', type: 'textarea', help: 'What members get here.' },
      ],
      onSubmit: async (values) => {
        const made = await post('/v1/communities', values);
        toast('Community created');
        go(`/communities/${made.id}`);
      },
    });
    return h('div', {}, h('h1', {}, 'New community'), h('p', {}, link('/communities', '← Communities')),
      section('Community', create.el));
  },
});

// ---- One community: membership, its feed, and (for its creator) posting and members ----------

// What unlocks a locked post: a tip of at least its price, a membership tier, or either.
function unlockTerms(p) {
  const ways = [];
  if (p.min_tip_to_unlock != null) {
    ways.push(['a tip of ', h('strong', { class: 'unlock-price' }, money(p.min_tip_to_unlock)), ' or more that names it']);
  }
  if (p.unlock_tier) ways.push(['a ', h('strong', {}, tierName(p.unlock_tier)), ' membership, for members of this community']);
  return ways.flatMap((way, i) => (i ? [' or ', way] : [way]));
}

function externalLink(url, text) {
  return h('a', { href: url.href, rel: UGC_REL }, text);
}

function content(p) {
  const caption = p.body ? h('p', { class: 'post-body' }, p.body) : null;
  if (p.content_type === 'text') return caption;
  const url = webUrl(p.content_url);
  if (!url) return [h('p', { class: 'muted' }, 'Its address is not a web address: ', h('code', {}, p.content_url)), caption];
  if (p.content_type === 'image') {
    // Only https images are drawn (the CSP allows no others): one over http is a link.
    if (url.protocol !== 'https:') {
      return [h('p', {}, 'An image not served over https, so not shown here: ', externalLink(url, url.href)), caption];
    }
    return h('figure', { class: 'post-image' },
      h('img', { src: url.href, alt: 'The image posted', loading: 'lazy', decoding: 'async', referrerpolicy: 'no-referrer' }),
      h('figcaption', {}, p.body ? [p.body, ' '] : null, externalLink(url, 'Open the image')));
  }
  return [h('p', {}, `${p.content_type === 'video' ? 'Video' : 'Link'}: `, externalLink(url, url.href)), caption];
}

// The tip form (pages/tips.js), filled in for this creator, and for a post with its unlock price.
function tipPath(c, p) {
  return `/tips/new${query({ to: c.creator_id, community: c.id, post: p && p.id, amount: p && p.min_tip_to_unlock })}`;
}

function lockedNotice(c, p) {
  const supporter = session.roles().has('supporter');
  return h('div', { class: 'locked-note' },
    h('p', {}, h('strong', {}, `This ${typeName(p.content_type).toLowerCase()} post is locked.`), ' It opens with ',
      unlockTerms(p), '.'),
    p.min_tip_to_unlock == null ? null
      : supporter ? h('p', {}, link(tipPath(c, p), `Unlock for ${money(p.min_tip_to_unlock)}`,
        { class: 'btn primary', id: `unlock-${p.id}` }))
        : h('p', { class: 'muted' }, 'Supporters unlock it with a tip (add the supporter role on your account page).'));
}

function postView(c, p) {
  const status = !p.is_locked ? null : p.unlocked ? 'Locked · you can read it' : 'Locked';
  return h('li', {}, h('article', { class: `post${p.unlocked ? '' : ' post-locked'}`, id: `post-${p.id}`,
    'aria-label': `${typeName(p.content_type)} post of ${when(p.created_at)}` },
  h('p', { class: 'post-meta' }, h('span', { class: 'badge' }, typeName(p.content_type)),
    status ? [' ', h('span', { class: 'badge locked' }, status)] : null,
    ' ', h('time', { datetime: p.created_at }, when(p.created_at))),
  p.unlocked ? content(p) : lockedNotice(c, p),
  p.unlocked && p.is_locked ? h('p', { class: 'muted' }, 'Others unlock it with ', unlockTerms(p), '.') : null));
}

function membership(c, refresh) {
  const me = session.state.user;
  if (!me) return h('p', {}, link(`/login?next=${encodeURIComponent(`/communities/${c.id}`)}`, 'Log in'), ' to join.');
  if (c.creator_id === me.id) return h('p', { id: 'membership' }, 'This is your community: you post here, members read.');
  const tip = session.roles().has('supporter') ? link(tipPath(c), 'Tip the creator', { id: 'tip-creator' }) : null;
  if (!c.membership) {
    return h('div', { class: 'actions' }, tip, button('Join community', async () => {
      await post(`/v1/communities/${id(c.id)}/join`);
      toast(`You joined ${c.name}`);
      refresh();
    }, { kind: 'primary', id: 'join' }));
  }
  return h('div', { class: 'actions' },
    h('p', { id: 'membership' }, `You joined ${when(c.membership.joined_at)} as a `,
      h('span', { class: 'badge' }, c.membership.role), c.membership.role === 'supporter' ? ' (you have tipped its creator)' : ''),
    button('Leave community', async () => {
      await post(`/v1/communities/${id(c.id)}/leave`);
      toast(`You left ${c.name}`);
      refresh();
    }, { id: 'leave' }), tip);
}

async function postForm(c, publish) {
  const [types, tiers] = await Promise.all([features.bodyOptions('post', POSTS_PATH, 'content_type'),
    features.bodyOptions('post', POSTS_PATH, 'unlock_tier')]);
  return form({
    id: 'post', submit: 'Publish post', resetOnSuccess: true,
    fields: [
      { name: 'content_type', label: 'Type', type: 'select', required: true, value: 'text',
        options: (types || Object.keys(TYPES)).map((type) => [type, typeName(type)]) },
      { name: 'body', label: 'Text', type: 'textarea', help: 'The post itself for a text post; a caption for the others.' },
      { name: 'content_url', label: 'Address (URL)', type: 'url', placeholder: 'https://…',
        help: 'Image, video and link posts: where it is. Images are shown when served over https.' },
      { name: 'is_locked', label: 'Locked: only those who unlock it can read it', type: 'checkbox' },
      { name: 'min_tip_to_unlock', label: 'Unlock price (USD)', inputmode: 'decimal', placeholder: '5.00',
        help: 'For a locked post: a tip of at least this much that names the post unlocks it for the tipper.' },
      tiers && tiers.length ? { name: 'unlock_tier', label: 'Or unlocked by a membership', type: 'select',
        options: [['', 'No membership'], ...tiers.map((tier) => [tier, `${tierName(tier)} members of this community`])] } : null,
    ].filter(Boolean),
    onSubmit: async (values) => {
      publish(await post(`/v1/communities/${id(c.id)}/posts`, values));
      toast('Post published');
    },
  }).el;
}

const MEMBER_COLUMNS = [
  { label: 'Member', value: (m) => h('code', {}, m.user_id), header: true },
  { label: 'Role', value: (m) => h('span', { class: 'badge' }, m.role) },
  { label: 'Joined', value: (m) => when(m.joined_at) },
];

function membersCard(c, first, fetchPage) {
  const shown = table(MEMBER_COLUMNS, first.items, { caption: 'Members, newest first', id: 'members', empty: 'No members yet.' });
  const add = rowAdder(shown, MEMBER_COLUMNS);
  return section('Members', h('p', { class: 'muted' },
    'A supporter has tipped you; a member has not. Only you see this list.'),
  shown, loadMore(first.next_cursor, fetchPage, add, { label: 'Load more members', id: 'more-members' }));
}

page({
  path: '/communities/:id', title: 'Community', feature: FEATURE,
  render: async ({ params, refresh }) => {
    const c = await get(`/v1/communities/${id(params.id)}`);
    const me = session.state.user;
    const owner = Boolean(me && c.creator_id === me.id);
    const postsPage = (cursor) => get(`/v1/communities/${id(c.id)}/posts${query({ cursor, limit: PAGE_SIZE })}`);
    const membersPage = (cursor) => get(`/v1/communities/${id(c.id)}/members${query({ cursor, limit: PAGE_SIZE })}`);
    const [posts, members] = await Promise.all([postsPage(), owner ? membersPage() : null]);

    const feed = h('ol', { class: 'plain feed', id: 'feed' });
    const empty = h('p', { class: 'empty', id: 'feed-empty', hidden: posts.items.length > 0 }, 'No posts yet.');
    const add = (items) => {
      const nodes = items.map((p) => postView(c, p));
      feed.append(...nodes);
      return nodes;
    };
    add(posts.items);
    const publish = (made) => {
      empty.hidden = true;
      feed.prepend(postView(c, made));
    };
    return h('div', {},
      h('h1', {}, c.name), h('p', {}, link('/communities', '← Communities')),
      c.description ? h('p', { class: 'description' }, c.description) : null,
      section('About', dl([['Members', h('span', { id: 'member-count' }, count(c.member_count))],
        ['Since', when(c.created_at)]]), membership(c, refresh)),
      owner ? section('New post', await postForm(c, publish)) : null,
      section('Posts', h('p', { class: 'muted' }, 'Newest first.'), empty, feed,
        loadMore(posts.next_cursor, postsPage, add, { label: 'Load more posts', id: 'more-posts' })),
      owner ? membersCard(c, members, membersPage) : null);
  },
});
