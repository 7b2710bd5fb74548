// The inbox page: a client of the Mailpit-style API beside it.
// Every value that comes from a mail is put into the page with textContent
// (or as an attribute value), never parsed as HTML; the mail's own HTML is
// shown only in the sandboxed frame, from /view/ID.html.
'use strict';

const PAGE_SIZE = 50;
const POLL_MS = 2000;        // when the websocket is not available
const state = { start: 0, query: '', total: 0, messages: [], current: null, currentId: null,
                socket: null, poller: null, refreshing: false, again: false };
const $ = (id) => document.getElementById(id);

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key.startsWith('data-')) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

async function api(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers['Content-Type'] = 'application/json';
  }
  const response = await fetch(path, init);
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${await response.text()}`);
  const type = response.headers.get('Content-Type') || '';
  return type.startsWith('application/json') ? response.json() : response.text();
}

function person(address) {
  if (!address) return '';
  return address.Name ? `${address.Name} <${address.Address}>` : address.Address;
}

function people(list) { return (list || []).map(person).join(', '); }

function when(iso) {
  const date = new Date(iso);
  return isNaN(date) ? '' : date.toLocaleString();
}

function size(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1 << 20) return `${(bytes / 1024).toFixed(1)} kB`;
  return `${(bytes / (1 << 20)).toFixed(1)} MB`;
}

// -- the list ---------------------------------------------------------------

async function refresh() {
  if (state.refreshing) { state.again = true; return; }
  state.refreshing = true;
  try {
    const paging = `start=${state.start}&limit=${PAGE_SIZE}`;
    const data = state.query
      ? await api('GET', `api/v1/search?query=${encodeURIComponent(state.query)}&${paging}`)
      : await api('GET', `api/v1/messages?${paging}`);
    if (data.messages.length === 0 && state.start > 0 && data.messages_count > 0) {
      state.start = Math.max(0, state.start - PAGE_SIZE);
      state.again = true;
      return;
    }
    state.total = data.messages_count;
    state.messages = data.messages;
    renderList(data);
  } catch (error) {
    $('live').textContent = `Cannot load messages: ${error.message}`;
  } finally {
    state.refreshing = false;
    if (state.again) { state.again = false; refresh(); }
  }
}

function renderList(data) {
  const list = $('list');
  const focused = document.activeElement && document.activeElement.dataset
    ? document.activeElement.dataset.id : null;
  list.replaceChildren(...data.messages.map((m) => {
    const item = el('li', { class: 'message' + (m.Read ? '' : ' unread'), tabIndex: 0,
                            'data-id': m.ID },
      el('span', { class: 'row' },
        el('span', { class: 'from', text: m.From ? (m.From.Name || m.From.Address) : '(no sender)' }),
        el('span', { class: 'when', text: when(m.Created) })),
      el('span', { class: 'subject', text: m.Subject || '(no subject)' }),
      el('span', { class: 'snippet', text: m.Snippet || '' }),
      m.Read ? null : el('span', { class: 'hidden', text: 'unread' }));
    if (m.ID === state.currentId) item.classList.add('current');
    item.setAttribute('aria-label', `${m.Read ? '' : 'Unread. '}${m.Subject || '(no subject)'}, from ${person(m.From)}`);
    item.addEventListener('click', () => open(m.ID));
    item.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' || event.key === ' ') { event.preventDefault(); open(m.ID); }
    });
    return item;
  }));
  if (focused) {
    const again = list.querySelector(`li[data-id="${CSS.escape(focused)}"]`);
    if (again) again.focus();
  }
  $('empty').hidden = data.messages.length > 0;
  const first = data.messages.length ? state.start + 1 : 0;
  $('range').textContent = `${first}-${state.start + data.messages.length} of ${data.messages_count}`;
  $('newer').disabled = state.start === 0;
  $('older').disabled = state.start + data.messages.length >= data.messages_count;
  setUnread(data.unread);
}

function setUnread(count) {
  $('unread-count').textContent = String(count);
  document.title = count ? `(${count}) Inbox - smtp-stack` : 'Inbox - smtp-stack';
}

// -- one message ---------------------------------------------------------------

async function open(id) {
  let message;
  try {
    message = await api('GET', `api/v1/message/${encodeURIComponent(id)}`);
  } catch (error) {
    $('live').textContent = `Cannot open the message: ${error.message}`;
    return;
  }
  state.current = message;
  state.currentId = message.ID;
  if (location.hash !== `#${message.ID}`) history.replaceState(null, '', `#${message.ID}`);
  document.body.classList.add('viewing');
  $('view-pane').hidden = false;
  $('subject').textContent = message.Subject || '(no subject)';
  const meta = [['From', person(message.From)], ['To', people(message.To)],
                ['Cc', people(message.Cc)], ['Bcc', people(message.Bcc)],
                ['Reply-To', people(message.ReplyTo)], ['Date', when(message.Date)],
                ['Size', size(message.Size)]];
  $('meta').replaceChildren(...meta.filter(([, v]) => v).flatMap(([k, v]) =>
    [el('dt', { text: k }), el('dd', { text: v })]));
  $('toggle-read').textContent = 'Mark unread';
  $('download').href = `api/v1/message/${message.ID}/raw?dl=1`;
  $('text').textContent = message.Text || '';
  showHtml();
  const files = [...(message.Attachments || []), ...(message.Inline || [])];
  $('tab-attachments').textContent = `Attachments (${files.length})`;
  $('attachments').replaceChildren(...files.map((file) => el('li', {},
    el('a', { href: `api/v1/message/${message.ID}/part/${encodeURIComponent(file.PartID)}`,
              download: file.FileName || `part-${file.PartID}`,
              text: file.FileName || `part ${file.PartID}` }),
    ` ${file.ContentType}, ${size(file.Size)}`)));
  $('headers').tBodies[0].replaceChildren();
  $('source').textContent = '';
  loadDetails(message.ID);
  const item = $('list').querySelector(`li[data-id="${CSS.escape(message.ID)}"]`);
  for (const li of $('list').querySelectorAll('li.current')) li.classList.remove('current');
  if (item) { item.classList.add('current'); item.classList.remove('unread'); }
  refresh();
}

function showHtml() {
  const message = state.current;
  const frame = $('html-frame');
  const remote = $('remote-images').checked ? '&remote=1' : '';
  if (message && message.HTML) {
    frame.hidden = false;
    $('no-html').hidden = true;
    frame.src = `view/${message.ID}.html?embed=1${remote}`;
  } else {
    frame.hidden = true;
    frame.removeAttribute('src');
    $('no-html').hidden = false;
  }
}

async function loadDetails(id) {
  try {
    const [headers, source] = await Promise.all([
      api('GET', `api/v1/message/${id}/headers`), api('GET', `api/v1/message/${id}/raw`)]);
    if (state.currentId !== id) return;
    $('headers').tBodies[0].replaceChildren(...Object.entries(headers).flatMap(([name, values]) =>
      values.map((value) => el('tr', {}, el('th', { text: name }), el('td', { text: value })))));
    $('source').textContent = source;
  } catch (error) {
    $('live').textContent = `Cannot load the source: ${error.message}`;
  }
}

function closeView() {
  state.current = null;
  state.currentId = null;
  document.body.classList.remove('viewing');
  $('view-pane').hidden = true;
  $('html-frame').removeAttribute('src');
  history.replaceState(null, '', location.pathname + location.search);
  const first = $('list').querySelector('li.current') || $('list').querySelector('li');
  for (const li of $('list').querySelectorAll('li.current')) li.classList.remove('current');
  if (first) first.focus();
}

function selectTab(tab) {
  for (const other of document.querySelectorAll('[role=tab]')) {
    const selected = other === tab;
    other.setAttribute('aria-selected', String(selected));
    other.tabIndex = selected ? 0 : -1;
    $(other.getAttribute('aria-controls')).hidden = !selected;
  }
  tab.focus();
}

// -- actions ----------------------------------------------------------------------

async function toggleRead() {
  if (!state.current) return;
  const read = $('toggle-read').textContent === 'Mark read';
  await api('PUT', 'api/v1/messages', { IDs: [state.current.ID], Read: read });
  $('toggle-read').textContent = read ? 'Mark unread' : 'Mark read';
  refresh();
}

async function deleteCurrent() {
  if (!state.current) return;
  const id = state.current.ID;
  await api('DELETE', 'api/v1/messages', { IDs: [id] });
  closeView();
  refresh();
}

async function deleteAll() {
  if (!confirm(state.query ? `Delete the messages matching "${state.query}"?` : 'Delete all messages?')) return;
  if (state.query) await api('DELETE', `api/v1/search?query=${encodeURIComponent(state.query)}`);
  else await api('DELETE', 'api/v1/messages');
  closeView();
  state.start = 0;
  refresh();
}

// -- live updates -------------------------------------------------------------------

function connect() {
  const url = new URL('api/events', location.href);
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  let socket;
  try { socket = new WebSocket(url); } catch (error) { poll(); return; }
  state.socket = socket;
  socket.addEventListener('open', () => {
    $('live').textContent = 'Live';
    if (state.poller) { clearInterval(state.poller); state.poller = null; }
  });
  socket.addEventListener('message', (event) => {
    let data;
    try { data = JSON.parse(event.data); } catch (error) { return; }
    if (data.Type === 'stats') setUnread(data.Data.Unread);
    if (data.Type === 'new' || data.Type === 'stats') refresh();
  });
  socket.addEventListener('close', () => {
    state.socket = null;
    $('live').textContent = 'Polling';
    poll();
    setTimeout(connect, 5000);
  });
}

function poll() {
  if (!state.poller) state.poller = setInterval(refresh, POLL_MS);
}

// -- wiring ---------------------------------------------------------------------------

function moveFocus(step) {
  const items = [...$('list').querySelectorAll('li.message')];
  if (!items.length) return;
  const at = items.indexOf(document.activeElement);
  const next = items[Math.max(0, Math.min(items.length - 1, at < 0 ? 0 : at + step))];
  next.focus();
}

document.addEventListener('DOMContentLoaded', () => {
  $('search').addEventListener('submit', (event) => {
    event.preventDefault();
    state.query = $('q').value.trim();
    state.start = 0;
    refresh();
  });
  $('newer').addEventListener('click', () => { state.start = Math.max(0, state.start - PAGE_SIZE); refresh(); });
  $('older').addEventListener('click', () => { state.start += PAGE_SIZE; refresh(); });
  $('back').addEventListener('click', closeView);
  $('toggle-read').addEventListener('click', toggleRead);
  $('delete-one').addEventListener('click', deleteCurrent);
  $('delete-all').addEventListener('click', deleteAll);
  $('mark-all-read').addEventListener('click', async () => {
    await api('PUT', 'api/v1/messages', state.query ? { Read: true, Search: state.query } : { Read: true });
    refresh();
  });
  $('remote-images').addEventListener('change', showHtml);
  const tabs = [...document.querySelectorAll('[role=tab]')];
  for (const tab of tabs) {
    tab.addEventListener('click', () => selectTab(tab));
    tab.addEventListener('keydown', (event) => {
      const at = tabs.indexOf(tab);
      if (event.key === 'ArrowRight') selectTab(tabs[(at + 1) % tabs.length]);
      if (event.key === 'ArrowLeft') selectTab(tabs[(at + tabs.length - 1) % tabs.length]);
    });
  }
  document.addEventListener('keydown', (event) => {
    const typing = ['INPUT', 'TEXTAREA'].includes(event.target.tagName);
    if (event.key === '/' && !typing) { event.preventDefault(); $('q').focus(); return; }
    if (typing || event.target.getAttribute('role') === 'tab') return;
    if (event.key === 'j' || event.key === 'ArrowDown') { event.preventDefault(); moveFocus(1); }
    if (event.key === 'k' || event.key === 'ArrowUp') { event.preventDefault(); moveFocus(-1); }
    if (event.key === 'Escape' && state.current) closeView();
    if (event.key === 'u' && state.current) toggleRead();
    if (event.key === 'Delete' && state.current) deleteCurrent();
  });
  refresh().then(() => {
    const id = location.hash.slice(1);
    if (id) open(id);
  });
  connect();
});
