// New mail without a reload: the websocket /api/events, or polling the API
// every 2 s where the server cannot carry a websocket (gunicorn). And the
// browser notifications for new mail, when the user asked for them.
import { $, remember, remembered, say, state } from './util.js';
import { loaded, refresh, setUnread } from './list.js';
import { go } from './router.js';

const POLL_MS = 2000;
const RECONNECT_MS = 5000;     // the first retry; each failed one doubles it, up to
const RECONNECT_MAX_MS = 60000; // a minute (a mount without websockets keeps polling quietly)
const NOTIFY_KEY = 'inbox-notifications';
const QUIET_MS = 2000;      // at most one notification in this time (a burst of mail is one)

let poller = null;
let retry = RECONNECT_MS;
let quietUntil = 0;

export function connect() {
  const url = new URL('api/events', location.href);
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  let socket;
  try { socket = new WebSocket(url); } catch (error) { poll(); return; }
  socket.addEventListener('open', () => {
    say('Live');
    retry = RECONNECT_MS;
    if (poller) { clearInterval(poller); poller = null; }
  });
  socket.addEventListener('message', (event) => {
    let data;
    try { data = JSON.parse(event.data); } catch (error) { return; }
    if (data.Type === 'stats' && data.Data) {
      // Sent on connecting and after each change (which has an event of its
      // own): counts that the list shows once it is loaded need no new load.
      const { Total, Unread } = data.Data;
      setUnread(Unread);
      loaded().then(() => {
        if (Total !== state.listed.total || Unread !== state.listed.unread) refresh();
      });
      return;
    }
    if (data.Type === 'new' && data.Data) notify(data.Data);
    refresh();      // new, update, delete, truncate, prune: the list follows
  });
  socket.addEventListener('close', () => {
    say('Polling');
    poll();
    setTimeout(connect, retry);
    retry = Math.min(retry * 2, RECONNECT_MAX_MS);
  });
}

function poll() {
  if (!poller) poller = setInterval(refresh, POLL_MS);
}

// -- notifications (opt-in; the permission is the browser's, the choice is kept here) ------

function supported() { return 'Notification' in window && window.isSecureContext; }

function enabled() {
  return supported() && Notification.permission === 'granted' && remembered(NOTIFY_KEY) === 'on';
}

function renderNotifyButton() {
  const button = $('notify');
  if (!supported()) {
    button.disabled = true;
    button.title = 'This browser offers no notifications here (they need https or localhost)';
  } else if (Notification.permission === 'denied') {
    button.disabled = true;
    button.title = 'Notifications are blocked for this page in the browser\'s settings';
  } else {
    button.disabled = false;
    button.title = enabled() ? 'Stop notifying of new mail' : 'Notify me of new mail';
  }
  button.setAttribute('aria-pressed', String(enabled()));
}

async function toggleNotifications() {
  if (enabled()) {
    remember(NOTIFY_KEY, null);
  } else {
    const answer = Notification.permission === 'granted'
      ? 'granted' : await Notification.requestPermission();
    remember(NOTIFY_KEY, answer === 'granted' ? 'on' : null);
    if (answer !== 'granted') say('Notifications were not allowed');
  }
  renderNotifyButton();
}

function notify(item) {
  if (!enabled() || Date.now() < quietUntil) return;
  quietUntil = Date.now() + QUIET_MS;
  const from = item.From && item.From.Address ? item.From.Address : '(unknown sender)';
  const note = new Notification(`New mail from ${from}`, {
    body: String(item.Subject || '(no subject)').slice(0, 100), tag: 'smtp-stack-inbox',
  });
  note.addEventListener('click', () => { window.focus(); go({ m: item.ID }); note.close(); });
}

export function wireLive() {
  $('notify').addEventListener('click', toggleNotifications);
  renderNotifyButton();
}
