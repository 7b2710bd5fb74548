// One message: its facts, its tags, and the tabs that show it. The mail's
// HTML is shown only in the sandboxed frame, loaded from view/ID.html
// (served with its own CSP); everything else goes in with textContent.
import { $, api, el, state, absolute, people, person, relayEnabled, say, size } from './util.js';
import { refresh } from './list.js';
import { go } from './router.js';
import { highlightHtml } from './htmlsource.js';
import { loadCheck, resetChecks, showThumbnails } from './checks.js';

let opening = 0;        // the latest open(); an older answer arriving late is dropped

export async function open(id) {
  const ticket = ++opening;
  let message;
  try {
    message = await api('GET', `api/v1/message/${encodeURIComponent(id)}`);
  } catch (error) {
    if (ticket === opening) say(`Cannot open the message: ${error.detail || error.message}`);
    return;
  }
  if (ticket !== opening) return;
  state.current = message;
  state.currentId = message.ID;
  document.body.classList.add('viewing');
  $('view-pane').hidden = false;
  $('subject').textContent = message.Subject || '(no subject)';
  const meta = [['From', person(message.From)], ['To', people(message.To)],
                ['Cc', people(message.Cc)], ['Bcc', people(message.Bcc)],
                ['Reply-To', people(message.ReplyTo)], ['Date', absolute(message.Date)],
                ['Size', size(message.Size)]];
  $('meta').replaceChildren(...meta.filter(([, v]) => v).flatMap(([k, v]) =>
    [el('dt', { text: k }), el('dd', { text: v })]));
  $('toggle-read').textContent = 'Mark unread';
  $('release').hidden = !relayEnabled();
  $('download').href = `api/v1/message/${message.ID}/raw?dl=1`;
  $('text').textContent = message.Text || '';
  renderTags();
  const hasHtml = Boolean(message.HTML);
  for (const id of ['tab-html', 'tab-html-source', 'tab-html-check']) $(id).hidden = !hasHtml;
  $('html-source').replaceChildren();
  $('html-source').dataset.done = '';
  showHtml();
  const files = [...(message.Attachments || []), ...(message.Inline || [])];
  $('tab-attachments').textContent = `Attachments (${files.length})`;
  $('attachments').replaceChildren(...files.map((file) => el('li', { 'data-part': file.PartID },
    el('a', { href: `api/v1/message/${message.ID}/part/${encodeURIComponent(file.PartID)}`,
              download: file.FileName || `part-${file.PartID}`,
              text: file.FileName || `part ${file.PartID}` }),
    ` ${file.ContentType}, ${size(file.Size)}`)));
  $('headers').tBodies[0].replaceChildren();
  $('header-filter').value = '';
  $('source').textContent = '';
  resetChecks();
  // A text-only message opens on Text (there is no HTML to show).
  selectTab($(hasHtml ? 'tab-html' : 'tab-text'), false);
  loadDetails(message.ID);
  showThumbnails(message, files);
  for (const li of $('list').querySelectorAll('li.current')) li.classList.remove('current');
  const item = $('list').querySelector(`li[data-id="${CSS.escape(message.ID)}"]`);
  if (item) { item.classList.add('current'); item.classList.remove('unread'); }
  refresh();
}

export function showHtml() {
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

// Desktop, tablet or phone: the frame gets that width (so the mail's media
// queries see it): Mailpit's sizes, 768 x 1024 and 322 x 570, in app.css.
function setDevice(name) {
  $('frame-box').dataset.device = name;
  for (const button of document.querySelectorAll('[data-device-choice]')) {
    button.setAttribute('aria-pressed', String(button.dataset.deviceChoice === name));
  }
}

async function loadDetails(id) {
  try {
    const [headers, source] = await Promise.all([
      api('GET', `api/v1/message/${id}/headers`), api('GET', `api/v1/message/${id}/raw`)]);
    if (state.currentId !== id) return;
    $('headers').tBodies[0].replaceChildren(...Object.entries(headers).flatMap(([name, values]) =>
      values.map((value) => el('tr', {}, el('th', { text: name }), el('td', { text: value })))));
    filterHeaders();
    $('source').textContent = source;
  } catch (error) {
    say(`Cannot load the source: ${error.detail || error.message}`);
  }
}

function filterHeaders() {
  const words = $('header-filter').value.trim().toLowerCase();
  const rows = [...$('headers').tBodies[0].rows];
  let shown = 0;
  for (const row of rows) {
    row.hidden = Boolean(words) && !row.textContent.toLowerCase().includes(words);
    if (!row.hidden) shown += 1;
  }
  $('header-count').textContent = words ? `${shown} of ${rows.length} fields` : '';
}

export function close() {
  opening += 1;
  state.current = null;
  state.currentId = null;
  document.body.classList.remove('viewing');
  $('view-pane').hidden = true;
  $('html-frame').removeAttribute('src');
  const first = $('list').querySelector('li.current') || $('list').querySelector('li');
  for (const li of $('list').querySelectorAll('li.current')) li.classList.remove('current');
  if (first) first.focus();
}

// -- tabs (the ARIA tab pattern) -------------------------------------------------------

const LOADERS = {
  'tab-html-source': () => {
    const target = $('html-source');
    if (state.current && !target.dataset.done) {
      target.replaceChildren(highlightHtml(state.current.HTML || ''));
      target.dataset.done = '1';
    }
  },
  'tab-html-check': () => loadCheck('html-check'),
  'tab-spam-check': () => loadCheck('sa-check'),
};

export function selectTab(tab, focus = true) {
  for (const other of document.querySelectorAll('#tabs [role=tab]')) {
    const selected = other === tab;
    other.setAttribute('aria-selected', String(selected));
    other.tabIndex = selected ? 0 : -1;
    $(other.getAttribute('aria-controls')).hidden = !selected;
  }
  if (LOADERS[tab.id]) LOADERS[tab.id]();
  if (focus) tab.focus();
}

function wireTabs() {
  const tabs = () => [...document.querySelectorAll('#tabs [role=tab]')].filter((t) => !t.hidden);
  for (const tab of document.querySelectorAll('#tabs [role=tab]')) {
    tab.addEventListener('click', () => selectTab(tab));
    tab.addEventListener('keydown', (event) => {
      const shown = tabs();
      const at = shown.indexOf(tab);
      if (event.key === 'ArrowRight') selectTab(shown[(at + 1) % shown.length]);
      if (event.key === 'ArrowLeft') selectTab(shown[(at + shown.length - 1) % shown.length]);
      if (event.key === 'Home') selectTab(shown[0]);
      if (event.key === 'End') selectTab(shown[shown.length - 1]);
    });
  }
}

// -- the message's tags --------------------------------------------------------------

function renderTags() {
  const tags = state.current.Tags || [];
  $('message-tags').replaceChildren(...tags.map((tag) => el('li', { class: 'tag' },
    el('span', { text: tag }),
    el('button', { type: 'button', class: 'untag', text: '\u00d7', title: `Remove the tag ${tag}`,
                   'aria-label': `Remove the tag ${tag}`,
                   onclick: () => setTags(tags.filter((t) => t !== tag)) }))));
}

async function setTags(tags) {
  const message = state.current;
  if (!message) return;
  try {
    await api('PUT', 'api/v1/tags', { IDs: [message.ID], Tags: tags });
    const fresh = await api('GET', `api/v1/message/${message.ID}`);
    if (state.currentId !== message.ID) return;
    state.current.Tags = fresh.Tags;
    renderTags();
  } catch (error) {
    say(`Cannot tag the message: ${error.detail || error.message}`);
  }
  refresh();
}

function addTag(event) {
  event.preventDefault();
  const tag = $('add-tag').value.trim();
  if (!tag || !state.current) return;
  $('add-tag').value = '';
  const tags = state.current.Tags || [];
  if (!tags.some((t) => t.toLowerCase() === tag.toLowerCase())) setTags([...tags, tag]);
}

// -- actions on the open message -----------------------------------------------------

export async function toggleRead() {
  if (!state.current) return;
  const read = $('toggle-read').textContent === 'Mark read';
  await api('PUT', 'api/v1/messages', { IDs: [state.current.ID], Read: read });
  $('toggle-read').textContent = read ? 'Mark unread' : 'Mark read';
  refresh();
}

export async function deleteCurrent() {
  if (!state.current) return;
  const id = state.current.ID;
  await api('DELETE', 'api/v1/messages', { IDs: [id] });
  state.selected.delete(id);
  go({ m: '' }, true);       // Back must not lead to the deleted message
  refresh();
}

export function wireMessage() {
  wireTabs();
  $('back').addEventListener('click', () => go({ m: '' }));
  $('toggle-read').addEventListener('click', toggleRead);
  $('delete-one').addEventListener('click', deleteCurrent);
  $('remote-images').addEventListener('change', showHtml);
  $('header-filter').addEventListener('input', filterHeaders);
  $('tag-form').addEventListener('submit', addTag);
  for (const button of document.querySelectorAll('[data-device-choice]')) {
    button.addEventListener('click', () => setDevice(button.dataset.deviceChoice));
  }
  setDevice('desktop');
}
