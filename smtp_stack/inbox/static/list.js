// The list: a page of messages (or of a search's matches), the tag bar,
// and the selection with its bulk actions.
import { $, api, el, state, PAGE_SIZE, absolute, person, relative, say, size,
         tagQuery } from './util.js';
import { go } from './router.js';

let running = null;      // the load under way: callers share it
let again = false;      // asked for while one ran: load once more after it

// Load the list as state says; resolves when the page shows it (and any
// refresh asked for meanwhile), so a caller can read what it loaded.
// Resolves when no load of the list is under way (the current one done).
export function loaded() {
  return running || Promise.resolve();
}

export function refresh() {
  if (running) { again = true; return running; }
  running = (async () => {
    try {
      do { again = false; await load(); } while (again);
    } finally {
      running = null;
    }
  })();
  return running;
}

// The answer to the request early.js made as the page began, for the
// first load only, and only when it asked for this path.
function earlyAnswer(path) {
  const early = window.inboxEarly;
  window.inboxEarly = null;
  return early && early.path === path ? early.response : null;
}

async function load() {
  try {
    const paging = `start=${state.start}&limit=${PAGE_SIZE}`;
    const path = state.query
      ? `api/v1/search?query=${encodeURIComponent(state.query)}&${paging}`
      : `api/v1/messages?${paging}`;
    const data = await api('GET', path, undefined, earlyAnswer(path));
    if (data.messages.length === 0 && state.start > 0 && data.messages_count > 0) {
      go({ start: Math.max(0, state.start - PAGE_SIZE) }, true);    // the page emptied
      return;
    }
    state.total = data.messages_count;
    state.listed = { total: data.total, unread: data.unread };
    state.messages = data.messages;
    state.tags = data.tags || [];
    renderList(data);
    renderTagBar();
    document.dispatchEvent(new CustomEvent('inbox-listed'));    // the mailbox picker follows
  } catch (error) {
    say(`Cannot load messages: ${error.message}`);
  }
}

const SVG = 'http://www.w3.org/2000/svg';

function paperclip(count) {
  const icon = document.createElementNS(SVG, 'svg');
  icon.setAttribute('viewBox', '0 0 16 16');
  icon.setAttribute('class', 'clip');
  icon.setAttribute('role', 'img');
  icon.setAttribute('aria-label', count === 1 ? '1 attachment' : `${count} attachments`);
  const title = document.createElementNS(SVG, 'title');
  title.textContent = count === 1 ? '1 attachment' : `${count} attachments`;
  const path = document.createElementNS(SVG, 'path');
  path.setAttribute('d', 'M10.5 4v6.5a2.5 2.5 0 0 1-5 0V3.5a1.6 1.6 0 0 1 3.2 0v6.8'
                         + 'a.7.7 0 0 1-1.4 0V5');
  icon.append(title, path);
  return icon;
}

function tagButton(tag) {
  const button = el('button', { type: 'button', class: 'tag', text: tag,
                                title: `Show the messages tagged ${tag}` });
  button.addEventListener('click', (event) => {
    event.stopPropagation();
    go({ q: tagQuery(tag), start: 0, m: '' });
  });
  return button;
}

function sender(m) {
  return (m.From && (m.From.Name || m.From.Address)) || '(no sender)';
}

function recipient(m) {
  const to = m.To || [];
  if (!to.length) return 'To: (undisclosed recipients)';
  return `To: ${to[0].Address}` + (to.length > 1 ? ` [+${to.length - 1}]` : '');
}

function listItem(m) {
  const subject = m.Subject || '(no subject)';
  const box = el('input', { type: 'checkbox', class: 'select', checked: state.selected.has(m.ID),
                            tabIndex: -1, 'aria-label': `Select: ${subject}` });
  box.addEventListener('click', (event) => {
    event.stopPropagation();
    toggle(m.ID, event.shiftKey);
  });
  const when = el('time', { class: 'when', text: relative(m.Created), title: absolute(m.Created),
                            dateTime: m.Created });
  const item = el('li', { class: 'message', tabIndex: 0, 'data-id': m.ID },
    box,
    el('span', { class: 'summary' },
      el('span', { class: 'row' },
        el('span', { class: 'from', text: sender(m),
                     title: m.From ? `From: ${m.From.Address}` : '' }),
        when),
      el('span', { class: 'to', text: recipient(m) }),
      el('span', { class: 'subject', text: subject }),
      m.Snippet ? el('span', { class: 'snippet', text: m.Snippet }) : null,
      el('span', { class: 'row facts' },
        el('span', { class: 'tags' }, ...(m.Tags || []).map(tagButton)),
        el('span', { class: 'size' }, m.Attachments ? paperclip(m.Attachments) : null,
           el('span', { class: 'bytes', text: size(m.Size) }))),
      m.Read ? null : el('span', { class: 'hidden', text: 'unread' })));
  if (!m.Read) item.classList.add('unread');
  if (state.selected.has(m.ID)) item.classList.add('selected');
  if (m.ID === state.currentId) item.classList.add('current');
  item.setAttribute('aria-label', `${m.Read ? '' : 'Unread. '}${subject}, from ${person(m.From)}`
    + (m.Attachments ? ', with attachments' : ''));
  item.addEventListener('click', (event) => {
    if (event.ctrlKey || event.metaKey || event.shiftKey) {
      event.preventDefault();
      toggle(m.ID, event.shiftKey);
    } else go({ m: m.ID });
  });
  item.addEventListener('keydown', (event) => {
    if (event.target !== item) return;
    if (event.key === 'Enter' || event.key === ' ') { event.preventDefault(); go({ m: m.ID }); }
  });
  return item;
}

function renderList(data) {
  const list = $('list');
  const focused = document.activeElement && document.activeElement.closest
    ? document.activeElement.closest('li.message') : null;
  const focusedId = focused ? focused.dataset.id : null;
  const shown = new Set(data.messages.map((m) => m.ID));
  for (const id of [...state.selected]) if (!shown.has(id)) state.selected.delete(id);
  list.replaceChildren(...data.messages.map(listItem));
  if (focusedId) {
    const again = list.querySelector(`li[data-id="${CSS.escape(focusedId)}"]`);
    if (again) again.focus();
  }
  $('empty').textContent = state.query ? `No messages match ${state.query}.` : 'No messages.';
  $('empty').hidden = data.messages.length > 0;
  const first = data.messages.length ? state.start + 1 : 0;
  const last = state.start + data.messages.length;
  $('range').textContent = `${first}-${last} of ${data.messages_count}`;
  $('newer').disabled = state.start === 0;
  $('older').disabled = state.start + data.messages.length >= data.messages_count;
  setUnread(data.unread);
  renderSelection();
}

export function setUnread(count) {
  state.unread = count;
  $('unread-count').textContent = String(count);
  const name = state.mailbox ? `${state.mailbox} - Inbox - smtp-stack` : 'Inbox - smtp-stack';
  document.title = count ? `(${count}) ${name}` : name;
}

export function updateTimes() {
  for (const when of document.querySelectorAll('#list time.when')) {
    when.textContent = relative(when.dateTime);
  }
}

// -- tags -----------------------------------------------------------------------------

function renderTagBar() {
  const bar = $('tag-list');
  bar.replaceChildren(...state.tags.map((tag) => {
    const button = tagButton(tag);
    const active = state.query === tagQuery(tag);
    button.setAttribute('aria-pressed', String(active));
    if (active) {
      button.title = 'Show all messages';
      button.onclick = (event) => { event.stopPropagation(); go({ q: '', start: 0, m: '' }); };
    }
    return button;
  }));
  $('tag-bar').hidden = state.tags.length === 0;
  $('tag-names').replaceChildren(...state.tags.map((tag) => el('option', { value: tag })));
  document.dispatchEvent(new CustomEvent('inbox-tags'));     // the tag editor follows
}

// -- the selection and its bulk actions -----------------------------------------------

function toggle(id, range) {
  const ids = state.messages.map((m) => m.ID);
  if (range && state.lastSelected && ids.includes(state.lastSelected)) {
    const [a, b] = [ids.indexOf(state.lastSelected), ids.indexOf(id)].sort((x, y) => x - y);
    for (const each of ids.slice(a, b + 1)) state.selected.add(each);
  } else if (state.selected.has(id)) state.selected.delete(id);
  else state.selected.add(id);
  state.lastSelected = id;
  renderSelection();
}

export function toggleFocused() {
  const item = document.activeElement && document.activeElement.closest('li.message');
  if (item) toggle(item.dataset.id, false);
}

function renderSelection() {
  for (const item of $('list').querySelectorAll('li.message')) {
    const on = state.selected.has(item.dataset.id);
    item.classList.toggle('selected', on);
    item.querySelector('input.select').checked = on;
  }
  const count = state.selected.size;
  const all = $('select-all');
  all.checked = count > 0 && count === state.messages.length;
  all.indeterminate = count > 0 && count < state.messages.length;
  $('selected-count').textContent = count ? `${count} selected` : '';
  for (const button of $('bulk').querySelectorAll('button')) button.hidden = count === 0;
}

function selectAll() {
  if (state.selected.size === state.messages.length) state.selected.clear();
  else for (const m of state.messages) state.selected.add(m.ID);
  renderSelection();
}

async function bulk(action) {
  const ids = [...state.selected];
  if (!ids.length) return;
  try {
    if (action === 'read' || action === 'unread') {
      await api('PUT', 'api/v1/messages', { IDs: ids, Read: action === 'read' });
    } else if (action === 'delete') {
      await api('DELETE', 'api/v1/messages', { IDs: ids });
      state.selected.clear();
      if (ids.includes(state.currentId)) go({ m: '' }, true);
    }
    const done = action === 'delete' ? 'deleted' : `marked ${action}`;
    say(`${ids.length} ${ids.length === 1 ? 'message' : 'messages'}: ${done}`);
  } catch (error) {
    say(`Cannot change the messages: ${error.detail || error.message}`);
  }
  refresh();
}

// Tags added to (or taken from) every selected message. PUT /api/v1/tags
// sets a message's whole list, so messages that end with the same list
// share one request.
export async function tagSelected(tag, add) {
  const groups = new Map();
  for (const m of state.messages) {
    if (!state.selected.has(m.ID)) continue;
    const before = m.Tags || [];
    const after = add
      ? (before.some((t) => t.toLowerCase() === tag.toLowerCase()) ? before : [...before, tag])
      : before.filter((t) => t.toLowerCase() !== tag.toLowerCase());
    const key = JSON.stringify(after);
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(m.ID);
  }
  for (const [key, ids] of groups) {
    await api('PUT', 'api/v1/tags', { IDs: ids, Tags: JSON.parse(key) });
  }
  refresh();
}

export function wireList() {
  $('select-all').addEventListener('change', selectAll);
  $('bulk-read').addEventListener('click', () => bulk('read'));
  $('bulk-unread').addEventListener('click', () => bulk('unread'));
  $('bulk-delete').addEventListener('click', () => bulk('delete'));
  $('bulk-clear').addEventListener('click', () => { state.selected.clear(); renderSelection(); });
  $('newer').addEventListener('click', () => go({ start: Math.max(0, state.start - PAGE_SIZE) }));
  $('older').addEventListener('click', () => go({ start: state.start + PAGE_SIZE }));
  setInterval(updateTimes, 30000);
}
