// How values read in the console: ids, times, risk scores, context labels, JSON.

export const shortId = (id) => (id.length > 13 ? `${id.slice(0, 8)}…` : id);
export const time = (ms) => (typeof ms === 'number' ? new Date(ms).toLocaleTimeString() : '—');
export const dateTime = (ms) => (typeof ms === 'number' ? new Date(ms).toLocaleString() : '—');
export const risk = (n) => (typeof n === 'number' ? n.toFixed(2) : '—');

/** `confidential · financial, pii · trusted`; `compact` leaves out the usual case, trusted, where space is short. */
export function formatLabel(label, compact = false) {
  const parts = [label.level];
  if (label.categories.length) parts.push(label.categories.join(', '));
  if (!compact || label.integrity === 'untrusted') parts.push(label.integrity);
  return parts.join(' · ');
}

export function relative(ms) {
  const s = Math.round((ms - Date.now()) / 1000);
  const abs = Math.abs(s);
  const span = abs < 90 ? `${abs} s` : abs < 5400 ? `${Math.round(abs / 60)} min` : `${Math.round(abs / 3600)} h`;
  return s >= 0 ? `in ${span}` : `${span} ago`;
}

/** Pretty-prints JSON text when it is JSON; anything else is shown as it came. */
export function prettyJson(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}
