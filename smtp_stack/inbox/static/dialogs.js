// The dialogs: release a message to the relay, manage the tags, tag the
// selected messages. Native <dialog> elements: modal, Esc closes them,
// focus stays inside while they are open.
import { $, api, el, state, say } from './util.js';
import { refresh, tagSelected } from './list.js';
import { go } from './router.js';

function openDialog(dialog, first) {
  for (const error of dialog.querySelectorAll('.failed')) error.textContent = '';
  dialog.showModal();
  if (first) first.focus();
}

// -- release -------------------------------------------------------------------------------

function openRelease() {
  const message = state.current;
  const relay = (state.webui && state.webui.MessageRelay) || {};
  if (!message || !relay.Enabled) return;
  const addresses = new Map();
  for (const who of [...(message.To || []), ...(message.Cc || []), ...(message.Bcc || [])]) {
    if (who.Address && !addresses.has(who.Address.toLowerCase())) {
      addresses.set(who.Address.toLowerCase(), who.Address);
    }
  }
  $('relay-name').textContent = relay.SMTPServer || '';
  $('release-from').textContent = message.From ? message.From.Address : '';
  $('release-subject').textContent = message.Subject || '(no subject)';
  $('release-to').value = [...addresses.values()].join(', ');
  $('release-delete').checked = false;
  const allowlist = relay.AllowedRecipients || '';
  $('release-allowlist').hidden = !allowlist;
  $('allowlist').textContent = allowlist;
  $('release-bounce').textContent = relay.ReturnPath || message.ReturnPath || '(none)';
  openDialog($('release-dialog'), $('release-to'));
}

async function release(event) {
  event.preventDefault();
  const message = state.current;
  if (!message) return;
  const to = $('release-to').value.split(/[,;\s]+/).map((a) => a.trim()).filter(Boolean);
  if (!to.length) { $('release-error').textContent = 'Give at least one address.'; return; }
  $('release-send').disabled = true;
  try {
    await api('POST', `api/v1/message/${message.ID}/release`, { To: to });
    $('release-dialog').close();
    say(`Released to ${to.join(', ')}`);
    if ($('release-delete').checked) {
      await api('DELETE', 'api/v1/messages', { IDs: [message.ID] });
      go({ m: '' }, true);
      refresh();
    }
  } catch (error) {
    $('release-error').textContent = error.detail || error.message;
  } finally {
    $('release-send').disabled = false;
  }
}

// -- managing the tags: rename, delete ------------------------------------------------------

function tagRow(tag) {
  const input = el('input', { type: 'text', value: tag, maxLength: 100, required: true,
                              'aria-label': `New name for ${tag}` });
  const form = el('form', { class: 'tag-row' }, input,
    el('button', { type: 'submit', text: 'Rename' }),
    el('button', { type: 'button', class: 'danger', text: 'Delete',
                   title: `Take ${tag} off every message (the messages stay)`,
                   onclick: () => changeTag('DELETE', tag) }));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const name = input.value.trim();
    if (name && name !== tag) changeTag('PUT', tag, { Name: name });
  });
  return el('li', { 'data-tag': tag }, form);
}

// Drawn afresh when opened; while open, only when the tags themselves
// changed (a rename, a delete, mail with a new tag): every refresh says
// "inbox-tags", and drawing then would drop what the user is typing.
function renderTagEditor(opening = false) {
  const shown = [...$('tag-editor').children].map((li) => li.dataset.tag);
  const same = shown.length === state.tags.length && shown.every((tag, i) => tag === state.tags[i]);
  if (!opening && same) return;
  $('tag-editor').replaceChildren(...state.tags.map(tagRow));
  $('no-tags').hidden = state.tags.length > 0;
}

async function changeTag(method, tag, body) {
  try {
    await api(method, `api/v1/tags/${encodeURIComponent(tag)}`, body);
    $('tags-error').textContent = '';
  } catch (error) {
    $('tags-error').textContent = error.detail || error.message;
    return;
  }
  await refresh();       // the editor follows the new list of tags (wireDialogs)
}

// -- tagging the selection ------------------------------------------------------------------

async function tagSelection(event, add) {
  event.preventDefault();
  const tag = $('bulk-tag-name').value.trim();
  if (!tag) { $('bulk-tag-error').textContent = 'Give a tag.'; return; }
  try {
    await tagSelected(tag, add);
    $('bulk-tag-dialog').close();
  } catch (error) {
    $('bulk-tag-error').textContent = error.detail || error.message;
  }
}

export function wireDialogs() {
  $('release').addEventListener('click', openRelease);
  $('release-form').addEventListener('submit', release);
  $('release-cancel').addEventListener('click', () => $('release-dialog').close());
  $('manage-tags').addEventListener('click', () => {
    renderTagEditor(true);
    openDialog($('tags-dialog'), $('tags-close'));
  });
  $('tags-close').addEventListener('click', () => $('tags-dialog').close());
  document.addEventListener('inbox-tags', () => { if ($('tags-dialog').open) renderTagEditor(); });
  $('bulk-tag').addEventListener('click', () => {
    $('bulk-tag-name').value = '';
    openDialog($('bulk-tag-dialog'), $('bulk-tag-name'));
  });
  $('bulk-tag-form').addEventListener('submit', (event) => tagSelection(event, true));
  $('bulk-untag').addEventListener('click', (event) => tagSelection(event, false));
  $('bulk-tag-cancel').addEventListener('click', () => $('bulk-tag-dialog').close());
}
