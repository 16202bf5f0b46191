// Boot: configuration and session, then the hash router renders one page module at a time.

import { ApiError, del, whenUnauthorized } from './api.js';
import { append, button, clear, h } from './dom.js';
import * as features from './features.js';
import * as router from './router.js';
import * as session from './session.js';
import './pages/index.js';

const main = document.getElementById('main');
let renderSeq = 0;

// Routes whose optional API operation (route.feature) this server does not serve: set once at boot.
const unavailable = new Set();

async function checkFeatures() {
  await Promise.all(router.all().filter((route) => route.feature).map(async (route) => {
    if (!(await features.has(...route.feature))) unavailable.add(route);
  }));
}

function navItems() {
  const mine = session.roles();
  return router.all().filter((route) => !unavailable.has(route) && route.nav && (route.nav.anonymous
    ? !session.state.user
    : session.state.user && (!route.roles || route.roles.some((role) => mine.has(role)))));
}

function renderNav(currentPath) {
  const nav = document.getElementById('nav');
  const list = h('ul', {}, navItems().map((route) => {
    const current = currentPath === route.path || currentPath.startsWith(`${route.path}/`);
    return h('li', {}, router.link(route.path, route.nav.label, { 'aria-current': current ? 'page' : null }));
  }));
  clear(nav).append(list);
  const who = clear(document.getElementById('whoami'));
  if (session.state.user) {
    append(who, [
      h('span', { class: 'muted' }, session.state.user.display_name || session.state.user.email),
      button('Log out', logOut, { id: 'logout' }),
    ]);
  }
}

async function logOut() {
  try {
    await del('/v1/auth/session');
  } finally {
    session.set(null);
    document.getElementById('toast').classList.remove('shown');
    router.go('/login');
  }
}

function errorCard(err) {
  const message = err instanceof ApiError ? err.message : 'Something went wrong on this page.';
  if (!(err instanceof ApiError)) console.error(err);
  return h('section', { class: 'card' }, h('h1', {}, err.status === 404 ? 'Not found' : 'Could not load this page'),
    h('p', { role: 'alert' }, message));
}

async function render({ keepFocus = false } = {}) {
  const seq = ++renderSeq;
  const found = router.match(location.hash);
  renderNav(found ? found.path : '');
  if (!found) {
    clear(main).append(errorCard({ status: 404, message: 'No such page.' }));
    return;
  }
  const { route } = found;
  if (unavailable.has(route)) {
    clear(main).append(errorCard({ status: 404, message: 'This server does not offer this page yet.' }));
    return;
  }
  if (route.roles && !session.state.user) {
    router.go(`/login?next=${encodeURIComponent(found.path)}`);
    return;
  }
  let node;
  if (!session.may(route.roles)) {
    node = h('section', { class: 'card' }, h('h1', {}, 'Not available'),
      h('p', {}, `This page is for the role ${route.roles.join(' or ')}. Add a role on your account page.`));
  } else {
    main.setAttribute('aria-busy', 'true');
    try {
      node = await route.render({ ...found, session: session.state, refresh: () => render({ keepFocus: true }) });
    } catch (err) {
      node = errorCard(err);
    }
  }
  if (seq !== renderSeq) return;  // a newer navigation won
  main.removeAttribute('aria-busy');
  clear(main).append(node);
  document.title = `${route.title} · OROS`;
  if (!keepFocus) {
    const heading = main.querySelector('h1');
    if (heading) {
      heading.tabIndex = -1;
      heading.focus();
    }
  }
}

whenUnauthorized(() => {
  session.set(null);
  if (!location.hash.startsWith('#/login')) router.go(`/login?next=${encodeURIComponent(location.hash.slice(1))}`);
});

// The skip link's "#main" is not a route: moving there would change the hash and route to "Not found".
// It moves the focus to the page's content instead, as a same-page anchor does in a site without hash routes.
document.querySelector('a.skip').addEventListener('click', (event) => {
  event.preventDefault();
  main.focus();
});

window.addEventListener('hashchange', () => render());
window.addEventListener('oros:session', () => render());

Promise.all([session.load(), checkFeatures()]).then(() => render(), (err) => {
  clear(main).append(errorCard(err));
});
