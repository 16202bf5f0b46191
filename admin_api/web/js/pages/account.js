// Everyone's account: profile, roles, creator and business profiles; a business's API keys.

import { del, get, id, patch, post, put } from '../api.js';
import { button, dl, focusHeading, h, secretBox, section, table, toast } from '../dom.js';
import { form, parse } from '../forms.js';
import { when } from '../format.js';
import { page } from '../router.js';
import * as session from '../session.js';

const SELF_ROLES = ['creator', 'business', 'supporter'];

function profileForm(me, refresh) {
  return form({
    id: 'profile', submit: 'Save profile',
    fields: [
      { name: 'display_name', label: 'Display name', value: me.display_name, keepEmpty: false },
      { name: 'username', label: 'Username', value: me.username },
      { name: 'bio', label: 'Bio', type: 'textarea', value: me.bio, keepEmpty: true },
      { name: 'profile_image_url', label: 'Profile image URL', type: 'url', value: me.profile_image_url },
    ],
    onSubmit: async (values) => {
      const user = await patch('/v1/me', values);
      session.state.user = { ...session.state.user, ...user };
      toast('Profile saved');
      refresh();
    },
  }).el;
}

function rolesCard(me) {
  const missing = SELF_ROLES.filter((role) => !me.roles.includes(role));
  return section('Roles',
    h('p', {}, 'You are: ', h('strong', { id: 'my-roles' }, me.roles.join(', ') || 'no role yet')),
    missing.length ? h('div', { class: 'actions' }, missing.map((role) => button(`Become a ${role}`, async () => {
      const user = await post('/v1/me/roles', { role });
      session.state.user = { ...session.state.user, ...user };
      toast(`You are now a ${role}`);
      window.dispatchEvent(new Event('oros:session'));
    }))) : null);
}

function creatorProfile(profile, refresh) {
  return section('Creator profile', form({
    id: 'creator-profile', submit: 'Save creator profile',
    fields: [
      { name: 'hashtags', label: 'Hashtags', value: (profile.hashtags || []).join(', '), parse: parse.tags,
        help: 'Comma separated, e.g. sneakers, running' },
      { name: 'stripe_account_id', label: 'Stripe Connect account (payouts)', value: profile.stripe_account_id,
        placeholder: 'acct_…', help: 'Withdrawals are paid to this account.' },
    ],
    onSubmit: async (values) => {
      await put('/v1/me/creator-profile', values);
      toast('Creator profile saved');
      refresh();
    },
  }).el, dl([['Verified', profile.verified ? 'yes' : 'no']]));
}

function businessProfile(profile, refresh) {
  return section('Business profile', form({
    id: 'business-profile', submit: 'Save business profile',
    fields: [
      { name: 'company_name', label: 'Company name', value: profile.company_name },
      { name: 'website', label: 'Website', type: 'url', value: profile.website },
      { name: 'industry', label: 'Industry', value: profile.industry },
    ],
    onSubmit: async (values) => {
      await put('/v1/me/business-profile', values);
      toast('Business profile saved');
      refresh();
    },
  }).el);
}

page({
  path: '/account', title: 'Account', nav: { label: 'Account' }, roles: null,
  render: async ({ refresh, session: state }) => {
    if (!state.user) return h('p', {}, 'Log in first.');
    const me = await get('/v1/me');
    return h('div', {},
      h('h1', {}, 'Your account'),
      section('Profile', dl([['Email', me.email], ['KYC', me.kyc_status], ['Member since', when(me.created_at)]]),
        profileForm(me, refresh)),
      rolesCard(me),
      me.creator_profile ? creatorProfile(me.creator_profile, refresh) : null,
      me.business_profile ? businessProfile(me.business_profile, refresh) : null);
  },
});

page({
  path: '/api-keys', title: 'API keys', roles: ['business'], nav: { label: 'API keys' },
  render: async ({ refresh }) => {
    const keys = await get('/v1/api-keys');
    const shown = h('div', { id: 'new-key' });
    const create = form({
      id: 'api-key', submit: 'Create key', resetOnSuccess: true,
      fields: [{ name: 'name', label: 'Key name', required: true, help: 'Where it is used, e.g. "checkout server".' }],
      onSubmit: async (values) => {
        const key = await post('/v1/api-keys', values);
        shown.replaceChildren(secretBox(`API key "${key.name}"`, key.key,
          'This is the only time the key is shown: store it in your server now.'));
        const list = document.getElementById('api-keys-list');
        list.replaceWith(keyTable((await get('/v1/api-keys')).items, refresh));
      },
    });
    return h('div', {}, h('h1', {}, 'API keys'),
      section('New key', h('p', {}, 'Your server sends conversions and sales to the tracker with a key: ',
        h('code', {}, 'Authorization: Bearer oros_live_…')), create.el, shown),
      h('section', { class: 'card' }, h('h2', { id: 'your-keys' }, 'Your keys'), keyTable(keys.items, refresh)));
  },
});

function keyTable(items, refresh) {
  return h('div', { id: 'api-keys-list' }, table([
    { label: 'Name', value: (k) => k.name },
    { label: 'Starts with', value: (k) => h('code', {}, `${k.key_prefix}…`) },
    { label: 'Created', value: (k) => when(k.created_at) },
    { label: 'Last used', value: (k) => when(k.last_used_at) },
    { label: 'Status', value: (k) => (k.revoked_at ? `revoked ${when(k.revoked_at)}` : 'active') },
    { label: 'Actions', value: (k) => (k.revoked_at ? '' : button('Revoke', async () => {
      if (!window.confirm(`Revoke the key "${k.name}"? Requests using it fail at once.`)) return;
      await del(`/v1/api-keys/${id(k.id)}`);
      toast('Key revoked');
      await refresh();
      focusHeading('your-keys');  // the pressed button left with the re-render
    }, { kind: 'danger', 'aria-label': `Revoke key ${k.name}` })) },
  ], items, { empty: 'No API keys yet.' }));
}
