// The URL's hash follows the page: `#q=<search>&start=<n>&m=<message ID>`.
// Every move (open a message, close it, search, page) sets the hash, so it
// is one history entry: Back and Forward, a reload and a shared link all
// come back here, to route(), which brings the page to what the hash says.
import { $, state } from './util.js';

let handlers = null;    // {refresh, open, close}: set by app.js

export function startRouting(actions) {
  handlers = actions;
  window.addEventListener('hashchange', () => route());
  route(true);
}

export function wanted() {
  const hash = location.hash.slice(1);
  if (hash && !hash.includes('=')) return { q: '', start: 0, m: hash };   // #ID, as links once were
  const params = new URLSearchParams(hash);
  const start = parseInt(params.get('start') || '0', 10);
  return { q: params.get('q') || '', start: start > 0 ? start : 0, m: params.get('m') || '' };
}

function hashOf({ q, start, m }) {
  const params = new URLSearchParams();
  if (q) params.set('q', q);
  if (start) params.set('start', String(start));
  if (m) params.set('m', m);
  return '#' + params.toString();
}

// Go somewhere: `changes` over what the hash says now. `replace` makes no
// new history entry (after a delete, Back must not lead to the deleted mail).
export function go(changes, replace = false) {
  const target = hashOf({ ...wanted(), ...changes });
  if (target === (location.hash || '#')) { route(); return; }
  if (replace) location.replace(target);
  else location.hash = target;
}

export function route(first = false) {
  const want = wanted();
  if (first || want.q !== state.query || want.start !== state.start) {
    if (want.q !== state.query) state.selected.clear();
    state.query = want.q;
    state.start = want.start;
    $('q').value = want.q;
    handlers.refresh();
  }
  if (want.m && want.m !== state.currentId) handlers.open(want.m);
  else if (!want.m && state.currentId) handlers.close();
}
