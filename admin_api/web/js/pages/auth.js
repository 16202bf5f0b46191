// Log in, sign up, and the home route that sends each user to their main page.

import { post } from '../api.js';
import { h } from '../dom.js';
import { form } from '../forms.js';
import { go, link, page } from '../router.js';
import * as session from '../session.js';

const SELF_ROLES = [['creator', 'Creator: promote campaigns and earn'], ['business', 'Business: run campaigns'],
  ['supporter', 'Supporter: tip and follow creators']];

function home() {
  const mine = session.roles();
  if (!session.state.user) return '/login';
  if (mine.has('admin')) return '/finance';
  if (mine.has('business')) return '/campaigns';
  if (mine.has('creator')) return '/browse';
  if (mine.has('supporter')) return '/communities';
  return '/account';
}

function afterLogin(result, query) {
  session.set(result);
  const next = query.get('next');
  // Only our own routes: "next" is a hash path, never a URL to another site.
  go(next && next.startsWith('/') && !next.startsWith('//') ? next : home());
  window.dispatchEvent(new Event('oros:session'));
}

page({
  path: '/', title: 'Home',
  render: () => {
    go(home());
    return h('p', {}, 'Loading…');
  },
});

page({
  path: '/login', title: 'Log in', nav: { label: 'Log in', anonymous: true },
  render: ({ query }) => {
    const login = form({
      id: 'login', submit: 'Log in',
      fields: [
        { name: 'email', label: 'Email', type: 'email', required: true, autocomplete: 'username' },
        { name: 'password', label: 'Password', type: 'password', required: true, autocomplete: 'current-password' },
      ],
      onSubmit: async (values) => afterLogin(await post('/v1/auth/session', values), query),
    });
    return h('section', { class: 'card narrow' }, h('h1', {}, 'Log in to OROS'), login.el,
      h('p', {}, 'No account yet? ', link('/signup', 'Sign up')));
  },
});

page({
  path: '/signup', title: 'Sign up', nav: { label: 'Sign up', anonymous: true },
  render: ({ query }) => {
    const roleBoxes = SELF_ROLES.map(([role, label]) => h('div', { class: 'check' },
      h('input', { type: 'checkbox', id: `signup-role-${role}`, name: 'roles', value: role }),
      h('label', { for: `signup-role-${role}` }, label)));
    const roleError = h('p', { class: 'field-error', id: 'signup-roles-error', role: 'alert' });
    const roles = h('fieldset', { class: 'field', 'aria-describedby': 'signup-roles-error' },
      h('legend', {}, 'I am a… (pick at least one)'), roleBoxes, roleError);
    const signup = form({
      id: 'signup', submit: 'Create account',
      fields: [
        { name: 'email', label: 'Email', type: 'email', required: true, autocomplete: 'email' },
        { name: 'password', label: 'Password', type: 'password', required: true, autocomplete: 'new-password',
          help: 'At least 8 characters.' },
        { name: 'display_name', label: 'Display name', autocomplete: 'name' },
        { name: 'username', label: 'Username', autocomplete: 'nickname', help: '3 to 50 letters, digits, _ . -' },
      ],
      extra: roles,
      onSubmit: async (values) => {
        roleError.textContent = '';
        const chosen = [...roles.querySelectorAll('input:checked')].map((box) => box.value);
        try {
          afterLogin(await post('/v1/auth/session/signup', { ...values, roles: chosen }), query);
        } catch (err) {
          if (err.field === 'roles') {
            roleError.textContent = err.message;
            roles.querySelector('input').focus();
            return;
          }
          throw err;
        }
      },
    });
    return h('section', { class: 'card narrow' }, h('h1', {}, 'Create your OROS account'), signup.el,
      h('p', {}, 'Already registered? ', link('/login', 'Log in')));
  },
});
