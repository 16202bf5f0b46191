// Display formats. Money stays the API's decimal string (never parsed into a float).

export function money(value, currency = 'USD') {
  if (value == null) return '—';
  return `${currency === 'USD' ? '$' : `${currency} `}${value}`;
}

export function when(iso) {
  if (!iso) return '—';
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}

export function day(iso) {
  if (!iso) return '—';
  return new Date(iso).toLocaleDateString(undefined, { timeZone: 'UTC' });
}

export function count(n) {
  return Number(n ?? 0).toLocaleString();
}

export function status(value) {
  return value == null ? '—' : String(value);
}

// "supporter_plus" → "Supporter Plus": a tier's name as the API spells it, made readable.
export const tierName = (tier) => tier.split('_').map((word) => word.charAt(0).toUpperCase() + word.slice(1)).join(' ');
