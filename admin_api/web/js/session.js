// Who is logged in (from GET /v1/auth/session) and the public configuration (GET /v1/config).

import { get, setCsrf } from './api.js';

export const state = { user: null, config: null };

export async function load() {
  state.config = await get('/v1/config');
  try {
    set(await get('/v1/auth/session', { quiet401: true }));
  } catch (err) {
    if (err.status !== 401) throw err;
    set(null);
  }
}

export function set(session) {
  state.user = session ? session.user : null;
  setCsrf(session ? session.csrf_token : null);
}

export function roles() {
  return new Set(state.user ? state.user.roles : []);
}

// Admins pass every role check on the server; the app follows the same rule for access (not for menus).
export function may(required) {
  if (!required) return true;
  const mine = roles();
  return mine.has('admin') || required.some((role) => mine.has(role));
}
