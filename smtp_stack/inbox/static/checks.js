// The check tabs (link check, HTML check, spam check) and the attachments'
// thumbnails. A check the inbox cannot run answers 501 with its reason:
// the tab stays and shows that reason, rather than vanishing.
import { $, api, el, state } from './util.js';

const loaded = {};          // kind -> the message ID its panel shows

export function resetChecks() {
  for (const kind of Object.keys(loaded)) delete loaded[kind];
  for (const id of ['link-check-result', 'html-check-result', 'sa-check-result']) {
    $(id).replaceChildren();
  }
  $('tab-link-check').textContent = 'Link check';
  $('thumb-note').hidden = true;
}

function unavailable(error) {
  const reason = error.detail || error.message;
  return el('p', { class: error.status === 501 ? 'unavailable' : 'failed',
                   text: error.status === 501 ? `Not available here: ${reason}.`
                     : `The check failed: ${reason}` });
}

// -- link check: asked for (it makes requests to every link of the mail) -----------------

function statusClass(code) {
  if (code === 0 || code >= 400) return 'status-bad';
  if (code >= 300) return 'status-redirect';
  return 'status-ok';
}

async function runLinkCheck() {
  const message = state.current;
  if (!message) return;
  const target = $('link-check-result');
  const follow = $('link-follow').checked ? '?follow=1' : '';
  target.replaceChildren(el('p', { class: 'pending', text: 'Checking the links\u2026' }));
  $('link-check-run').disabled = true;
  try {
    const result = await api('GET', `api/v1/message/${message.ID}/link-check${follow}`);
    if (state.currentId !== message.ID) return;
    const links = result.Links || [];
    const errors = `${result.Errors} ${result.Errors === 1 ? 'error' : 'errors'}`;
    $('tab-link-check').textContent = `Link check (${errors})`;
    target.replaceChildren(
      el('p', { class: 'summary', text: links.length
        ? `${links.length} ${links.length === 1 ? 'link' : 'links'}, ${result.Errors} with errors.`
        : 'This message has no links.' }),
      links.length ? el('table', { class: 'checks' },
        el('thead', {}, el('tr', {}, el('th', { text: 'Status' }), el('th', { text: 'Link' }))),
        el('tbody', {}, ...links.map((link) => el('tr', { class: statusClass(link.StatusCode) },
          el('td', { class: 'status', text: `${link.StatusCode || ''} ${link.Status}`.trim() }),
          el('td', { class: 'url', text: link.URL }))))) : null);
  } catch (error) {
    if (state.currentId === message.ID) target.replaceChildren(unavailable(error));
  } finally {
    $('link-check-run').disabled = false;
  }
}

// -- HTML check and spam check: asked for when their tab is opened -------------------------

export async function loadCheck(kind) {
  const message = state.current;
  if (!message || loaded[kind] === message.ID) return;
  loaded[kind] = message.ID;
  const target = $(`${kind}-result`);
  target.replaceChildren(el('p', { class: 'pending', text: 'Checking\u2026' }));
  try {
    const result = await api('GET', `api/v1/message/${message.ID}/${kind}`);
    if (state.currentId !== message.ID) return;
    target.replaceChildren(...(kind === 'html-check' ? htmlCheck(result) : spamCheck(result)));
  } catch (error) {
    if (state.currentId === message.ID) target.replaceChildren(unavailable(error));
  }
}

function percent(value) { return `${Math.round(value || 0)}%`; }

// Mailpit's HTML check: the HTML/CSS features found and the mail clients that lack them.
function htmlCheck(result) {
  const warnings = result.Warnings || [];
  const total = result.Total || {};
  return [
    el('p', { class: 'summary', text: `${warnings.length} of ${total.Tests || 0} features tested `
      + `need care (${total.Nodes || 0} HTML elements).` }),
    el('ul', { class: 'checks' }, ...warnings.map((warning) => {
      const score = warning.Score || {};
      const lacking = (warning.Results || []).filter((r) => r.Support !== 'yes')
        .map((r) => `${r.Name}: ${r.Support}`);     // Mailpit's Name holds the version
      return el('li', {},
        el('strong', { text: warning.Title || warning.Slug || '' }),
        ` (${warning.Category || 'feature'}): supported ${percent(score.Supported)}, `
          + `partly ${percent(score.Partial)}, not ${percent(score.Unsupported)}`,
        lacking.length ? el('span', { class: 'clients', text: lacking.join(', ') }) : null);
    })),
  ];
}

// Mailpit's spam check: SpamAssassin's score and the rules that made it.
function spamCheck(result) {
  if (result.Error) {
    return [el('p', { class: 'failed', text: `The check failed: ${result.Error}` })];
  }
  const rules = result.Rules || [];
  return [
    el('p', { class: result.IsSpam ? 'summary status-bad' : 'summary status-ok',
              text: `Score ${result.Score}: ${result.IsSpam ? 'spam' : 'not spam'}.` }),
    rules.length ? el('table', { class: 'checks' },
      el('thead', {}, el('tr', {}, el('th', { text: 'Score' }), el('th', { text: 'Rule' }),
                                   el('th', { text: 'Description' }))),
      el('tbody', {}, ...rules.map((rule) => el('tr', {},
        el('td', { text: String(rule.Score) }), el('td', { text: rule.Name }),
        el('td', { text: rule.Description || '' }))))) : null,
  ];
}

// -- thumbnails of image attachments ------------------------------------------------------

export async function showThumbnails(message, files) {
  const images = files.filter((file) => (file.ContentType || '').startsWith('image/'));
  if (!images.length) return;
  const url = (file) =>
    `api/v1/message/${message.ID}/part/${encodeURIComponent(file.PartID)}/thumb`;
  let response;
  try {
    response = await fetch(url(images[0]));
  } catch (error) {
    return;
  }
  if (state.currentId !== message.ID) return;
  if (!response.ok) {
    let reason = response.statusText;
    try { reason = (await response.json()).Error || reason; } catch (error) { /* not JSON */ }
    $('thumb-note').textContent = `No thumbnails: ${reason}.`;
    $('thumb-note').hidden = false;
    return;
  }
  for (const file of images) {
    const item = $('attachments').querySelector(`li[data-part="${CSS.escape(file.PartID)}"]`);
    if (item) item.prepend(el('img', { class: 'thumb', src: url(file), alt: '' }));
  }
}

export function wireChecks() {
  $('link-check-run').addEventListener('click', runLinkCheck);
}
