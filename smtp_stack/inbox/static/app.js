// The inbox page: a client of the Mailpit-style API beside it, in modules
// (no build step): util (state, API, formatting), router (the URL hash),
// list (the list, tags, selection), message (one message and its tabs),
// checks, htmlsource (the highlighter), dialogs, live (websocket, polling,
// notifications), mailboxes (the picker). theme.js runs before them, in
// <head>, and early.js, which asks for the first list before these load.
// Every path is relative to the page, so the inbox works mounted under a
// prefix, and each mailbox is this page under its own.
import { $, api, relayEnabled, state, say } from './util.js';
import { go, startRouting } from './router.js';
import { loaded, refresh, setUnread, toggleFocused, wireList } from './list.js';
import { connect, wireLive } from './live.js';
import { wireMailboxes } from './mailboxes.js';

const THEMES = ['auto', 'dark', 'light'];

// What one message needs (its view and tabs, the checks, the dialogs) is
// not needed to draw the list: those modules load beside the first list,
// not before it, and are wired once; opening a message waits for them.
let messageModules = null;

function messageParts() {
  if (!messageModules) {
    messageModules = Promise.all([import('./message.js'), import('./checks.js'),
                                  import('./dialogs.js')])
      .then(([message, checks, dialogs]) => {
        message.wireMessage();
        checks.wireChecks();
        dialogs.wireDialogs();
        return message;
      });
  }
  return messageModules;
}

const open = (id) => messageParts().then((message) => message.open(id));
const close = () => messageParts().then((message) => message.close());
const onMessage = (action) => messageParts().then((message) => message[action]());

function renderThemeButton() {
  const choice = window.inboxTheme.chosen();
  const shown = document.documentElement.getAttribute('data-theme');
  $('theme').textContent = choice === 'auto' ? `Theme: auto (${shown})` : `Theme: ${choice}`;
  $('theme').title = 'Switch between the system\'s colours, dark and light';
}

function nextTheme() {
  const choice = window.inboxTheme.chosen();
  window.inboxTheme.choose(THEMES[(THEMES.indexOf(choice) + 1) % THEMES.length]);
}

async function deleteAll() {
  const question = state.query ? `Delete the messages matching "${state.query}"?`
    : 'Delete all messages?';
  if (!confirm(question)) return;
  if (state.query) await api('DELETE', `api/v1/search?query=${encodeURIComponent(state.query)}`);
  else await api('DELETE', 'api/v1/messages');
  state.selected.clear();
  go({ m: '', start: 0 });
  refresh();
}

async function markAllRead() {
  const body = state.query ? { Read: true, Search: state.query } : { Read: true };
  await api('PUT', 'api/v1/messages', body);
  refresh();
}

function moveFocus(step) {
  const items = [...$('list').querySelectorAll('li.message')];
  if (!items.length) return;
  const current = document.activeElement && document.activeElement.closest('li.message');
  const at = items.indexOf(current);
  items[Math.max(0, Math.min(items.length - 1, at < 0 ? 0 : at + step))].focus();
}

function onKey(event) {
  if (document.querySelector('dialog[open]')) return;       // the dialog has the keys
  const typing = ['INPUT', 'TEXTAREA', 'SELECT'].includes(event.target.tagName);
  if (event.key === '/' && !typing) { event.preventDefault(); $('q').focus(); return; }
  if (typing || event.target.getAttribute('role') === 'tab') return;
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.key === 'j' || event.key === 'ArrowDown') { event.preventDefault(); moveFocus(1); }
  if (event.key === 'k' || event.key === 'ArrowUp') { event.preventDefault(); moveFocus(-1); }
  if (event.key === 'x') toggleFocused();
  if (event.key === 'Escape' && state.current) go({ m: '' });
  if (event.key === 'u' && state.current) onMessage('toggleRead');
  if (event.key === 'Delete' && state.current) onMessage('deleteCurrent');
}

async function loadSettings() {
  try {
    state.webui = await api('GET', 'api/v1/webui');
  } catch (error) {
    state.webui = null;
  }
  if (state.current) $('release').hidden = !relayEnabled();
  $('delete-all').hidden = Boolean(state.webui && state.webui.HideDeleteAllButton);
}

document.addEventListener('DOMContentLoaded', () => {
  $('search').addEventListener('submit', (event) => {
    event.preventDefault();
    go({ q: $('q').value.trim(), start: 0, m: '' });
  });
  $('delete-all').addEventListener('click', deleteAll);
  $('mark-all-read').addEventListener('click', markAllRead);
  $('theme').addEventListener('click', nextTheme);
  document.addEventListener('inbox-theme', renderThemeButton);    // the toggle, the system, a tab
  renderThemeButton();
  wireList();
  wireLive();
  document.addEventListener('inbox-mailbox', () => setUnread(state.unread));
  wireMailboxes();
  document.addEventListener('keydown', onKey);
  startRouting({ refresh, open, close });     // the list first: the settings are not needed for it
  loadSettings();
  // The rest once the first list is drawn; "Live" (the websocket) says the
  // whole page is wired.
  loaded().then(messageParts).finally(connect);
  say('');
});
