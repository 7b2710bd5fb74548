// The mailbox picker, shown when there is more than one mailbox
// (--mailboxes by-user or by-recipient). Every mailbox is this same page
// under a path of its own (mailbox/NAME/ beside the default one's), with
// its own list, search, tags and websocket, so choosing one loads its page.
// The choices and their unread counts come from api/v1/mailboxes: when the
// list is loaded, and every few seconds for the other mailboxes' mail.
import { $, api, el, state } from './util.js';

const EVERY_MS = 10000;

let loading = null;
let shown = '';           // the choices on the page now: they are replaced only when they change

// The path of a mailbox's page, relative to this one (a mount's prefix,
// or a proxy's, stays in front of it).
export function mailboxHref(name) {
  const root = state.mailbox ? '../../' : './';
  return name ? `${root}mailbox/${encodeURIComponent(name)}/` : root;
}

function label(box) {
  const name = box.Name || 'Default mailbox';
  return box.Unread ? `${name} (${box.Unread} unread)` : name;
}

async function load() {
  let data;
  try {
    data = await api('GET', 'api/v1/mailboxes');
  } catch (error) {
    return;      // an older inbox, or a passing failure: no picker
  }
  state.mailbox = data.Mailbox || '';
  const boxes = data.Mailboxes || [];
  const choices = JSON.stringify([state.mailbox, boxes.map(label)]);
  if (choices !== shown) {    // a list the user has open is not pulled from under them
    shown = choices;
    $('mailbox').replaceChildren(...boxes.map((box) => el('option', {
      value: box.Name, text: label(box), selected: box.Name === state.mailbox,
    })));
  }
  $('mailbox-picker').hidden = boxes.length < 2;
  document.dispatchEvent(new CustomEvent('inbox-mailbox'));    // the title follows
}

// Load the choices once at a time; callers share a load under way.
export function loadMailboxes() {
  if (!loading) loading = load().finally(() => { loading = null; });
  return loading;
}

export function wireMailboxes() {
  $('mailbox').addEventListener('change', (event) => {
    location.assign(mailboxHref(event.target.value));
  });
  document.addEventListener('inbox-listed', loadMailboxes);
  setInterval(loadMailboxes, EVERY_MS);
  return loadMailboxes();
}
