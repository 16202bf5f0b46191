// Forms whose errors come from the API: an error naming a `field` is shown next to that field
// (aria-invalid, described by the message, focused); any other error above the submit button.

import { ApiError } from './api.js';
import { h } from './dom.js';

function control(formId, field) {
  const id = `${formId}-${field.name}`;
  const common = {
    id, name: field.name, required: field.required, 'aria-describedby': `${id}-error${field.help ? ` ${id}-help` : ''}`,
    autocomplete: field.autocomplete, placeholder: field.placeholder, inputmode: field.inputmode,
  };
  if (field.type === 'textarea') return h('textarea', { ...common, rows: 4, value: field.value ?? '' });
  if (field.type === 'select') {
    return h('select', common, field.options.map(([value, label]) =>
      h('option', { value, selected: String(field.value ?? '') === String(value) }, label)));
  }
  if (field.type === 'checkbox') return h('input', { ...common, type: 'checkbox', checked: Boolean(field.value) });
  if (field.type === 'checkboxes') {
    // A group of choices sent as the list of those checked; its legend names it.
    return h('fieldset', { id, class: 'choices', 'aria-describedby': common['aria-describedby'] },
      h('legend', {}, field.label, field.required ? h('span', { class: 'req', 'aria-hidden': 'true' }, ' *') : null),
      field.options.map(([value, label, help]) => h('div', { class: 'check' },
        h('input', { type: 'checkbox', id: `${id}-${value}`, name: field.name, value,
          checked: (field.value || []).includes(value), 'aria-describedby': help ? `${id}-${value}-help` : null }),
        h('label', { for: `${id}-${value}` }, label),
        help ? h('span', { class: 'help', id: `${id}-${value}-help` }, help) : null)));
  }
  return h('input', { ...common, type: field.type || 'text', value: field.value ?? '', step: field.step, min: field.min });
}

// Field names the API uses for nested input ("legs[1].amount") belong to the field that holds them ("legs").
function owner(fieldNames, apiField) {
  if (!apiField) return null;
  return fieldNames.find((name) => apiField === name || apiField.startsWith(`${name}[`) || apiField.startsWith(`${name}.`))
    ?? null;
}

export function form({ id, fields, submit, onSubmit, extra = null, resetOnSuccess = false }) {
  const controls = {};
  const errors = {};
  const general = h('p', { class: 'form-error', id: `${id}-error`, role: 'alert' });
  const submitButton = h('button', { type: 'submit', class: 'btn primary' }, submit);
  const el = h('form', { id, class: 'form', novalidate: true },
    fields.map((field) => {
      controls[field.name] = control(id, field);
      errors[field.name] = h('p', { class: 'field-error', id: `${id}-${field.name}-error`, role: 'alert' });
      const label = field.type === 'checkboxes' ? null
        : h('label', { for: `${id}-${field.name}` }, field.label, field.required ? h('span', { class: 'req', 'aria-hidden': 'true' }, ' *') : null);
      const help = field.help ? h('p', { class: 'help', id: `${id}-${field.name}-help` }, field.help) : null;
      return h('div', { class: `field ${field.type === 'checkbox' ? 'check' : ''}` }, label, controls[field.name], help, errors[field.name]);
    }),
    extra, general, h('div', { class: 'actions' }, submitButton));

  // The inputs of a field: the control itself, or each box of a group.
  const inputs = (name) => (controls[name].matches('fieldset') ? [...controls[name].querySelectorAll('input')] : [controls[name]]);

  function clearErrors() {
    general.textContent = '';
    for (const name of Object.keys(errors)) {
      errors[name].textContent = '';
      for (const input of inputs(name)) input.removeAttribute('aria-invalid');
    }
  }

  function showError(err) {
    const name = err instanceof ApiError ? owner(Object.keys(controls), err.field) : null;
    if (name) {
      errors[name].textContent = err.message;
      for (const input of inputs(name)) input.setAttribute('aria-invalid', 'true');
      inputs(name)[0].focus();
    } else {
      general.textContent = err.message || String(err);
    }
  }

  function values() {
    const out = {};
    for (const field of fields) {
      const input = controls[field.name];
      if (field.type === 'checkboxes') {
        out[field.name] = inputs(field.name).filter((box) => box.checked).map((box) => box.value);
        continue;
      }
      const raw = field.type === 'checkbox' ? input.checked : input.value.trim();
      if (raw === '' && !field.keepEmpty) continue;
      out[field.name] = field.parse ? field.parse(raw) : raw;
    }
    return out;
  }

  el.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors();
    submitButton.disabled = true;  // one request per click: no double submit
    try {
      await onSubmit(values(), { controls, showError });
      if (resetOnSuccess) el.reset();
    } catch (err) {
      showError(err);
    } finally {
      submitButton.disabled = false;
    }
  });
  return { el, controls, showError };
}

// Parsers shared by forms.
export const parse = {
  tags: (raw) => raw.split(/[\s,]+/).map((t) => t.replace(/^#/, '')).filter(Boolean),
  // A datetime-local value (no zone) is the user's local time; the API wants an instant.
  instant: (raw) => new Date(raw).toISOString(),
};

// A datetime-local input's value for an ISO instant, in the user's time zone.
export function localInput(iso) {
  if (!iso) return '';
  const date = new Date(iso);
  const pad = (n) => String(n).padStart(2, '0');
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}
