// Shared pieces of the page: the state, elements, the API, formatting.
// Every value that comes from a mail goes into the page with textContent
// (or as an attribute value), never parsed as HTML.

export const PAGE_SIZE = 50;

export const state = {
  start: 0, query: '', total: 0, messages: [], tags: [],
  current: null, currentId: null,
  selected: new Set(), lastSelected: null,
  webui: null,
  mailbox: '', unread: 0,       // this page's mailbox ('' the default one), its unread count
  listed: { total: -1, unread: -1 },   // the mailbox's counts as the list last loaded them
};

export const $ = (id) => document.getElementById(id);

export function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key.startsWith('data-') || key.startsWith('aria-') || key === 'role') {
      node.setAttribute(key, value);
    } else node[key] = value;
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

// An API call (paths relative to the page, so the inbox can be mounted
// under a prefix). A refusal throws an Error with `status` and `detail`:
// the server's own words (`{"Error": ...}` or its plain text). `asked`: a
// fetch of the same request already under way (early.js); when it failed,
// the request is made again.
export async function api(method, path, body, asked) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers['Content-Type'] = 'application/json';
  }
  const response = (asked && await asked) || await fetch(path, init);
  const type = response.headers.get('Content-Type') || '';
  const data = type.startsWith('application/json') ? await response.json() : await response.text();
  if (!response.ok) {
    const detail = (data && data.Error) || String(data).trim() || response.statusText;
    const error = new Error(`${method} ${path}: ${response.status} ${detail}`);
    error.status = response.status;
    error.detail = detail;
    throw error;
  }
  return data;
}

export function say(text) { $('live').textContent = text; }

// Whether the inbox has a relay to release messages to (api/v1/webui, read at start).
export function relayEnabled() {
  return Boolean(state.webui && state.webui.MessageRelay && state.webui.MessageRelay.Enabled);
}

// localStorage may be refused (a private window, a policy): settings then last one visit.
export function remembered(key) {
  try { return localStorage.getItem(key); } catch (error) { return null; }
}

export function remember(key, value) {
  try {
    if (value == null) localStorage.removeItem(key);
    else localStorage.setItem(key, value);
  } catch (error) { /* not kept */ }
}

// -- formatting --------------------------------------------------------------------

export function person(address) {
  if (!address) return '';
  return address.Name ? `${address.Name} <${address.Address}>` : address.Address;
}

export function people(list) { return (list || []).map(person).join(', '); }

export function absolute(iso) {
  const date = new Date(iso);
  return isNaN(date) ? '' : date.toLocaleString();
}

const relativeFormat = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });
const STEPS = [['second', 60], ['minute', 60], ['hour', 24], ['day', 7], ['week', 4.35],
               ['month', 12], ['year', Infinity]];

// "5 minutes ago", "yesterday": the list's times (the absolute one is the title).
export function relative(iso, now = Date.now()) {
  const date = new Date(iso);
  if (isNaN(date)) return '';
  let amount = (date.getTime() - now) / 1000;
  if (Math.abs(amount) < 45) return 'just now';
  for (const [unit, size] of STEPS) {
    if (Math.abs(amount) < size) return relativeFormat.format(Math.round(amount), unit);
    amount /= size;
  }
  return '';
}

export function size(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1 << 20) return `${(bytes / 1024).toFixed(1)} kB`;
  return `${(bytes / (1 << 20)).toFixed(1)} MB`;
}

// A tag as a search term (Mailpit's: quoted when it holds a space).
export function tagQuery(tag) { return /\s/.test(tag) ? `tag:"${tag}"` : `tag:${tag}`; }
