// The one way the app talks to the server: the public /v1 API with the session cookie.
// Requests that may change state carry X-OROS-CSRF (the session's token), which a page of
// another origin can neither read nor send.

let csrfToken = null;
let onUnauthorized = () => {};

export function setCsrf(token) {
  csrfToken = token;
}

export function whenUnauthorized(callback) {
  onUnauthorized = callback;
}

export class ApiError extends Error {
  constructor(status, error) {
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code;
    this.field = error.field;
  }
}

const SAFE = new Set(['GET', 'HEAD']);

export async function api(method, path, body, { headers = {}, quiet401 = false } = {}) {
  const sent = { Accept: 'application/json', ...headers };
  if (body !== undefined) sent['Content-Type'] = 'application/json';
  // Opening a session has no token yet: any value proves the request came from a page, not a form.
  if (!SAFE.has(method)) sent['X-OROS-CSRF'] = csrfToken || 'page';
  let response;
  try {
    response = await fetch(path, {
      method, headers: sent, credentials: 'same-origin', cache: 'no-store',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw new ApiError(0, { code: 'network', message: 'The server could not be reached. Check your connection.' });
  }
  const isJson = (response.headers.get('Content-Type') || '').includes('application/json');
  const data = isJson ? await response.json() : await response.text();
  if (!response.ok) {
    const error = new ApiError(response.status, (isJson && data && data.error) || { code: `http_${response.status}` });
    if (response.status === 401 && !quiet401) onUnauthorized(error);
    throw error;
  }
  return data;
}

export const get = (path, options) => api('GET', path, undefined, options);
export const post = (path, body = {}, options) => api('POST', path, body, options);
export const patch = (path, body, options) => api('PATCH', path, body, options);
export const put = (path, body, options) => api('PUT', path, body, options);
export const del = (path, options) => api('DELETE', path, undefined, options);

// A query string from an object; arrays repeat their key (hashtag=a&hashtag=b); empty values are left out.
export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    for (const one of [].concat(value)) {
      if (one !== undefined && one !== null && one !== '') search.append(key, one);
    }
  }
  const text = search.toString();
  return text ? `?${text}` : '';
}

export const id = (value) => encodeURIComponent(value);
