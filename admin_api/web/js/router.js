// Hash routes ("#/campaigns/<id>"): the server serves one page at "/", and every route is a
// page module's registration, so a new area (Phase 2 supporters, analytics) is one new module.

import { h } from './dom.js';

const routes = [];

// def: {path: '/campaigns/:id', title, roles?: [...], nav?: {label, group}, render(ctx) -> Node | Promise<Node>,
//       feature?: [method, path]}: a page whose API is optional (e.g. Phase 2's supporter endpoints)
//       names the operation it needs; it is in the menu, and opens, only when /openapi.json lists it.
// Routes are matched in registration order: a literal path before a parameter in the same place.
export function page(def) {
  const names = [];
  const pattern = def.path.replace(/:([a-z_]+)/g, (_, name) => {
    names.push(name);
    return '([^/]+)';
  });
  routes.push({ ...def, names, regex: new RegExp(`^${pattern}$`) });
}

export function all() {
  return routes;
}

export function match(hash) {
  const [path, search = ''] = (hash.replace(/^#/, '') || '/').split('?');
  for (const route of routes) {
    const found = route.regex.exec(path);
    if (found) {
      const params = Object.fromEntries(route.names.map((name, i) => [name, decodeURIComponent(found[i + 1])]));
      return { route, params, query: new URLSearchParams(search), path };
    }
  }
  return null;
}

export function go(path) {
  if (location.hash === `#${path}`) window.dispatchEvent(new HashChangeEvent('hashchange'));
  else location.hash = path;
}

export function link(path, label, props = {}) {
  return h('a', { href: `#${path}`, ...props }, label);
}
