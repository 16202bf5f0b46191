// Building the page from API data. Every string becomes a text node or an attribute value, never
// markup: nothing in the app parses a string as HTML, so a campaign title such as
// "<img src=x onerror=alert(1)>" is shown as those characters. URLs from the API reach href/src
// only when they are http(s) or our own relative paths (a "javascript:" URL is dropped).

export function safeUrl(value) {
  const raw = String(value);
  if (raw.startsWith('#') || (raw.startsWith('/') && !raw.startsWith('//'))) return raw;
  try {
    const url = new URL(raw);
    return url.protocol === 'http:' || url.protocol === 'https:' ? url.href : null;
  } catch {
    return null;
  }
}

const URL_ATTRS = new Set(['href', 'src', 'action']);

export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value == null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'class') {
      el.className = value;
    } else if (key === 'value' || key === 'checked' || key === 'disabled' || key === 'selected') {
      el[key] = value;
    } else if (URL_ATTRS.has(key)) {
      const url = safeUrl(value);
      if (url !== null) el.setAttribute(key, url);
    } else {
      el.setAttribute(key, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

let toastTimer;
export function toast(message, { error = false } = {}) {
  const box = document.getElementById('toast');
  box.textContent = message;
  box.setAttribute('role', error ? 'alert' : 'status');
  box.classList.toggle('error', error);
  box.classList.add('shown');
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => box.classList.remove('shown'), 4000);
}

export function section(title, ...children) {
  return h('section', { class: 'card' }, h('h2', {}, title), ...children);
}

// A table of rows; each column is {label, value: row => Node|string, class?, header?} (a header
// column's cells name their row for screen readers: <th scope=row>).
export function table(columns, rows, { caption, empty = 'Nothing yet.', id } = {}) {
  if (!rows.length) return h('p', { class: 'empty', id }, empty);
  return h('div', { class: 'table-wrap' }, h('table', { id },
    caption ? h('caption', {}, caption) : null,
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col', class: c.class }, c.label)))),
    h('tbody', {}, rows.map((row) => tableRow(columns, row)))));
}

export function tableRow(columns, row) {
  return h('tr', {}, columns.map((c) => (c.header
    ? h('th', { scope: 'row', class: c.class }, c.value(row))
    : h('td', { class: c.class }, c.value(row)))));
}

// A person as the API names them (display name, else username), their id kept as a tooltip; the id when they
// have no name.
export function person(name, userId) {
  return name ? h('span', { class: 'person', title: userId }, name) : h('code', {}, userId);
}

export function dl(pairs) {
  return h('dl', { class: 'facts' }, pairs.map(([term, value]) => [h('dt', {}, term), h('dd', {}, value)]));
}

// A button whose (async) action runs once at a time; a failure is announced, never swallowed.
export function button(label, onclick, { kind = 'secondary', ...props } = {}) {
  const run = async (event) => {
    const el = event.currentTarget;
    el.disabled = true;
    try {
      await onclick(event);
    } catch (err) {
      toast(err.message || String(err), { error: true });
    } finally {
      el.disabled = false;
    }
  };
  return h('button', { type: 'button', class: `btn ${kind}`, onclick: run, ...props }, label);
}

// After an action re-renders the page, the button that was pressed is gone and focus would fall to the body:
// put it on a landmark the action belongs to (a section's heading), so keyboard users continue from there.
export function focusHeading(elementId) {
  const el = document.getElementById(elementId);
  if (!el) return;
  el.tabIndex = -1;
  el.focus();
}

// "Load more" under a list paged by cursor: a press fetches the page after the last one and hands its items
// to `add`, which returns the nodes it appended; focus moves to the first of them, so keyboard and screen
// reader users land on what is new. The button leaves after the last page (no next_cursor).
// loadMore's \`add\` for a table made by table(): appends the rows to its body (none when the first page was empty).
export function rowAdder(shown, columns) {
  return (items) => {
    const body = shown.querySelector('tbody');
    return body ? items.map((item) => body.appendChild(tableRow(columns, item))) : [];
  };
}

export function loadMore(cursor, fetchPage, add, { label = 'Load more', id } = {}) {
  if (!cursor) return null;
  let next = cursor;
  const el = button(label, async () => {
    const got = await fetchPage(next);
    const added = add(got.items);
    next = got.next_cursor;
    if (!next) el.remove();
    if (added.length) {
      added[0].tabIndex = -1;
      added[0].focus();
    }
  }, { id });
  return el;
}

// Copies text to the clipboard; falls back to selecting it where the clipboard API is unavailable.
export function copyButton(text, label = 'Copy') {
  return button(label, async (event) => {
    try {
      await navigator.clipboard.writeText(text);
      toast('Copied');
    } catch {
      const field = event.target.previousElementSibling;
      if (field && field.select) field.select();
      toast('Press Ctrl+C to copy');
    }
  }, { 'aria-label': `${label}: ${text}` });
}

export function secretBox(label, secret, note) {
  return h('div', { class: 'secret', role: 'alert' },
    h('p', {}, h('strong', {}, label), ' ', note),
    h('div', { class: 'copyrow' },
      h('input', { type: 'text', readonly: true, value: secret, 'aria-label': label, class: 'mono' }),
      copyButton(secret)));
}
