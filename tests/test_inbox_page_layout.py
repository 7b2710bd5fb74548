"""The inbox page's looks in a real browser (Debian's headless Chromium):
dark mode (the system's choice followed live, the toggle, remembered), a
390 px wide phone viewport with nothing wider than the screen, and every
piece of text at least 4.5:1 against its background (WCAG 2 AA, 1.4.3) in
both themes, in every state of the page: the list, each tab of a message,
the check results, the dialogs and their errors.
"""
from __future__ import annotations

import base64
import http.server
import shutil
import struct
import threading

import pytest

from inbox_helpers import (InboxThread, chromium, list_subjects, open_page, page_errors, retrying,
                           send, wait)
from smtp_stack.inbox import api_extra
from smtp_stack.inbox.release import Relay
from smtp_stack.testing import MailSink

from selenium.webdriver.common.by import By       # noqa: E402
from selenium.webdriver.common.keys import Keys   # noqa: E402

AA = 4.5
PHONE = {'width': 390, 'height': 844}


class Links(http.server.BaseHTTPRequestHandler):
    """The link check's answers: one of each colour (ok, redirect, bad)."""

    def do_HEAD(self):
        status = {'/ok': 200, '/moved': 301}.get(self.path, 404)
        self.send_response(status)
        if status == 301:
            self.send_header('Location', '/ok')
        self.end_headers()

    def log_message(self, *args):
        pass


PNG = bytes.fromhex('89504e470d0a1a0a0000000d4948445200000001000000010806000000'
                    '1f15c4890000000d49444154789c6360f80f000001010000ff0bd4f5'
                    '0000000049454e44ae426082')
SOURCE = ('<!DOCTYPE html><!-- a comment --><html><body><p class="x" data-y=\'1\'>Hi '
          '<a href="{base}/ok">ok</a> <a href="{base}/moved">moved</a> '
          '<a href="{base}/gone">gone</a></p></body></html>')
SUBJECTS = ['Read, no tags', 'A subject long enough to be cut short at the end of its line in the '
            'list' + 'x' * 60, 'Unread, tagged, with a file']


@pytest.fixture(scope='module')
def browser():
    driver, profile = chromium()
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope='module')
def links():
    site = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Links)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{site.server_port}'
    site.shutdown()
    site.server_close()


@pytest.fixture(scope='module')
def inbox(tmp_path_factory, links):
    """One inbox for the module (its mail is only read), with a relay that
    has an allowlist, and the test's own links allowed to be checked."""
    with MailSink() as sink, InboxThread(
            tmp_path_factory.mktemp('layout') / 'inbox.db',
            relay=Relay(*sink.address, allowed_recipients=r'@example\.net$')) as running:
        running.inbox.app.link_checker.allow_internal = True
        send(running.smtp, subject=SUBJECTS[2], html=SOURCE.format(base=links),
             to='ann+signup@example.com', extra_headers={'X-Tags': 'alpha, beta'},
             attachments=[('photo.png', 'image/png', PNG)])
        send(running.smtp, subject=SUBJECTS[1],
             sender='x' * 60 + '@' + 'an-unbroken-subdomain.' * 4 + 'example',
             to=', '.join(f'person{i}@example.com' for i in range(12)))
        send(running.smtp, subject=SUBJECTS[0], text='Just text.\n' + 'y' * 300 + '\n')
        yield running


@pytest.fixture(autouse=True)
def clean_page(browser):
    """Every test starts with the system's theme and no emulation, and ends
    without a script error or CSP violation."""
    page_errors(browser)
    yield
    browser.execute_cdp_cmd('Emulation.clearDeviceMetricsOverride', {})
    browser.execute_cdp_cmd('Emulation.setEmulatedMedia', {'features': []})
    browser.execute_script('try { localStorage.clear(); } catch (e) {}')
    assert page_errors(browser) == []


def js(driver, script, *args):
    return driver.execute_script(script, *args)


def text(driver, selector):
    return js(driver, 'const e = document.querySelector(arguments[0]);'
                      'return e ? e.textContent : null', selector)


def prefer(driver, scheme):
    driver.execute_cdp_cmd('Emulation.setEmulatedMedia', {
        'features': [{'name': 'prefers-color-scheme', 'value': scheme}]})


def click_message(driver, subject):
    js(driver, 'for (const li of document.querySelectorAll("#list li.message"))'
               '  if (li.querySelector(".subject").textContent === arguments[0]) {'
               '    li.querySelector(".subject").click(); return; }', subject)
    wait(driver, lambda d: text(d, '#subject') == subject, f'{subject!r} open')


def tab(driver, name, ready):
    """Select a tab and wait until `ready` (a CSS selector) shows in it."""
    driver.find_element(By.ID, f'tab-{name}').click()
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ready), f'the {name} tab')


# -- dark mode --------------------------------------------------------------------------------

def colours(driver):
    return js(driver, 'const s = getComputedStyle(document.body);'
                      'return [document.documentElement.dataset.theme, s.backgroundColor, s.color,'
                      ' document.getElementById("theme").textContent]')


def test_dark_mode_follows_the_system_and_the_toggle_and_is_remembered(browser, inbox):
    prefer(browser, 'dark')
    open_page(browser, inbox.url, SUBJECTS)
    assert colours(browser) == ['dark', 'rgb(11, 17, 32)', 'rgb(229, 231, 235)',
                                'Theme: auto (dark)']
    prefer(browser, 'light')                            # followed live, no reload
    wait(browser, lambda d: colours(d)[0] == 'light', 'the light theme')
    assert colours(browser) == ['light', 'rgb(246, 247, 249)', 'rgb(17, 17, 17)',
                                'Theme: auto (light)']
    button = browser.find_element(By.ID, 'theme')
    button.click()                                      # auto -> dark, against the system's choice
    assert colours(browser)[::3] == ['dark', 'Theme: dark']
    browser.refresh()                                   # remembered
    wait(browser, lambda d: list_subjects(d) == SUBJECTS, 'the list')
    assert colours(browser)[::3] == ['dark', 'Theme: dark']
    # Before the first paint: theme.js runs in <head> (a classic script the
    # parser waits for), before the stylesheet's first use.
    assert js(browser, 'return document.head.querySelector('
                       '"script[src$=\'static/theme.js\']:not([type]):not([async]):not([defer])")'
                       ' !== null')
    browser.find_element(By.ID, 'theme').click()         # dark -> light
    prefer(browser, 'dark')
    assert colours(browser)[::3] == ['light', 'Theme: light']
    browser.find_element(By.ID, 'theme').click()         # light -> auto: the system's again
    assert colours(browser)[::3] == ['dark', 'Theme: auto (dark)']
    assert js(browser, 'return localStorage.getItem("inbox-theme")') is None
    # Another tab of the inbox: a choice made there is followed here.
    first = browser.current_window_handle
    browser.switch_to.new_window('tab')
    try:
        open_page(browser, inbox.url, SUBJECTS)
        browser.find_element(By.ID, 'theme').click()     # auto -> dark
        browser.find_element(By.ID, 'theme').click()     # dark -> light
        assert colours(browser)[::3] == ['light', 'Theme: light']
    finally:
        browser.close()
        browser.switch_to.window(first)
    wait(browser, lambda d: colours(d)[::3] == ['light', 'Theme: light'], 'this tab to follow')


# -- every text readable, in both themes --------------------------------------------------------

CONTRAST = r'''
// Every visible piece of text, its colour over its background (the
// background colours of it and its ancestors, composited), and the WCAG 2
// contrast ratio. Disabled controls are left out (WCAG 1.4.3 exempts them).
const parse = (c) => {
  const m = /rgba?\(([^)]+)\)/.exec(c);
  if (!m) return null;
  const p = m[1].split(/[\s,\/]+/).filter(Boolean).map(Number);
  return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
};
const over = (top, under) =>
  [0, 1, 2].map((i) => top[i] * top[3] + under[i] * (1 - top[3])).concat([1]);
const luminance = (c) => {
  const [r, g, b] = c.slice(0, 3).map((v) => {
    v /= 255;
    return v <= 0.04045 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
  });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
};
const ratio = (a, b) => {
  const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
  return (hi + 0.05) / (lo + 0.05);
};
function background(node) {
  const layers = [];
  for (let e = node; e; e = e.parentElement) {
    const c = parse(getComputedStyle(e).backgroundColor);
    if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
  }
  return layers.reverse().reduce((under, layer) => over(layer, under), [255, 255, 255, 1]);
}
function opacity(node) {
  let alpha = 1;
  for (let e = node; e; e = e.parentElement) alpha *= parseFloat(getComputedStyle(e).opacity);
  return alpha;
}
const limit = arguments[0];
const checked = [];
const failed = [];
function check(node, colour, what) {
  const bg = background(node);
  const fg = parse(colour);
  fg[3] *= opacity(node);
  const r = ratio(over(fg, bg), bg);
  checked.push(what);
  if (r < limit) {
    failed.push({ what, ratio: Math.round(r * 100) / 100, fg: colour,
                  bg: `rgb(${bg.slice(0, 3).map(Math.round)})` });
  }
}
for (const node of document.querySelectorAll('body *')) {
  if (!node.checkVisibility({ opacityProperty: true, visibilityProperty: true })) continue;
  const box = node.getBoundingClientRect();
  if (box.width <= 1 || box.height <= 1) continue;          // the screen-reader-only text
  if (node.matches(':disabled') || node.closest(':disabled')) continue;
  const classes = typeof node.className === 'string' && node.className.trim()
    ? '.' + node.className.trim().replace(/\s+/g, '.') : '';
  const where = `${node.tagName.toLowerCase()}${node.id ? '#' + node.id : ''}${classes}`;
  const own = [...node.childNodes].filter((n) => n.nodeType === 3)
    .map((n) => n.textContent).join('').trim();
  if (own) check(node, getComputedStyle(node).color, `${where} "${own.slice(0, 30)}"`);
  if (node.matches('select') && node.selectedOptions.length) {
    check(node, getComputedStyle(node).color, `${where} value`);
  }
  if (node.matches('input[type=text], input[type=search]')) {
    if (node.value) check(node, getComputedStyle(node).color, `${where} value`);
    else if (node.placeholder) {
      check(node, getComputedStyle(node, '::placeholder').color, `${where} placeholder`);
    }
  }
}
return { checked, failed };
'''


def readable(driver, state, seen):
    """Every text of the page as it is now is at least AA, in each theme
    (chosen as the toggle chooses, against what the system prefers);
    remembers what was checked, per theme."""
    for theme in ('light', 'dark'):
        js(driver, 'window.inboxTheme.choose(arguments[0])', theme)
        assert js(driver, 'return document.documentElement.dataset.theme') == theme
        found = js(driver, CONTRAST, AA)
        assert found['failed'] == [], (theme, state, found['failed'])
        seen[theme].update(found['checked'])


def test_every_text_has_aa_contrast_in_both_themes(browser, inbox, monkeypatch):
    # Thumbnails answer 501 here (as without Pillow), so the note saying why is measured too.
    monkeypatch.setattr(api_extra, 'thumbnails_available', lambda: False)
    seen = {'light': set(), 'dark': set()}
    prefer(browser, 'dark')
    open_page(browser, inbox.url, SUBJECTS)
    # The list: unread and read, selected, open (current), tags, the bulk bar.
    retrying(browser, lambda d: d.find_element(
        By.CSS_SELECTOR, '#list li.message:last-child input.select').click(), 'a tick')
    wait(browser, lambda d: text(d, '#selected-count') == '1 selected', 'one selected')
    click_message(browser, SUBJECTS[2])
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '#list li.current'), 'the current row')
    readable(browser, 'the list and the HTML tab', seen)
    # Each tab of the message, with what it shows.
    tab(browser, 'html-source', '#html-source .hl-comment')
    readable(browser, 'HTML source', seen)
    tab(browser, 'headers', '#headers tr')
    browser.find_element(By.ID, 'header-filter').send_keys('x-')
    wait(browser, lambda d: text(d, '#header-count'), 'the filter count')
    readable(browser, 'headers', seen)
    tab(browser, 'source', '#source:not(:empty)')
    readable(browser, 'source', seen)
    tab(browser, 'attachments', '#thumb-note:not([hidden])')
    readable(browser, 'attachments', seen)
    tab(browser, 'link-check', '#link-check-run')
    browser.find_element(By.ID, 'link-check-run').click()
    wait(browser, lambda d: len(d.find_elements(
        By.CSS_SELECTOR, '#link-check-result tbody tr')) == 3, 'the link check')
    assert js(browser, 'return [...document.querySelectorAll("#link-check-result tbody tr")]'
                       '.map(tr => tr.className)') == ['status-ok', 'status-redirect', 'status-bad']
    readable(browser, 'link check', seen)
    for name, result in (('html-check', 'html-check-result'), ('spam-check', 'sa-check-result')):
        tab(browser, name, f'#{result} p:not(.pending)')
        readable(browser, name, seen)
    click_message(browser, SUBJECTS[0])                    # a text-only message: the Text tab
    wait(browser, lambda d: d.find_element(By.ID, 'text').is_displayed(), 'the Text tab')
    readable(browser, 'text', seen)
    # The dialogs, with their errors shown.
    browser.find_element(By.ID, 'release').click()
    browser.find_element(By.ID, 'release-send').click()       # Bob is off the allowlist
    wait(browser, lambda d: text(d, '#release-error'), 'the refusal')
    readable(browser, 'the release dialog', seen)
    browser.find_element(By.ID, 'release-cancel').click()
    browser.find_element(By.ID, 'bulk-tag').click()
    browser.find_element(By.ID, 'bulk-tag-add').click()       # no tag given
    wait(browser, lambda d: text(d, '#bulk-tag-error') == 'Give a tag.', 'the bulk tag error')
    readable(browser, 'the bulk tag dialog', seen)
    browser.find_element(By.ID, 'bulk-tag-cancel').click()
    browser.find_element(By.ID, 'manage-tags').click()
    field = browser.find_element(By.CSS_SELECTOR, '#tag-editor li[data-tag="alpha"] input')
    field.clear()
    field.send_keys('Beta', Keys.ENTER)                       # taken
    wait(browser, lambda d: text(d, '#tags-error'), 'the clash refused')
    readable(browser, 'the tags dialog', seen)
    browser.find_element(By.ID, 'tags-close').click()
    # A tag pressed in the bar (a filter), then a search with no match.
    browser.find_element(By.CSS_SELECTOR, '#tag-list .tag').click()
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '#tag-list .tag[aria-pressed=true]'),
         'the tag filter')
    readable(browser, 'a tag filter', seen)
    browser.find_element(By.ID, 'q').clear()
    browser.find_element(By.ID, 'q').send_keys('nothing-matches-this', Keys.ENTER)
    wait(browser, lambda d: d.find_element(By.ID, 'empty').is_displayed(), 'the empty list')
    readable(browser, 'no match', seen)
    # What was measured, so that this test cannot pass by finding nothing.
    for piece in ('hl-attr', 'hl-value', 'hl-doctype', '"301 Moved Permanently"', 'release-error',
                  'bulk-tag-error', 'tags-error', 'span.to', 'span.snippet', 'time.when',
                  'button.tag', 'selected-count', 'header-count', 'thumb-note', 'p.unavailable',
                  'q placeholder', 'add-tag placeholder', 'release-to value', 'unread-count',
                  'p#live', 'footer.keys', 'kbd', 'dt', 'button#theme', 'a#download'):
        for theme in seen:
            assert any(piece in what for what in seen[theme]), (theme, piece)


# -- a phone: 390 px wide ------------------------------------------------------------------

OVERFLOW = r'''
// What reaches past the right edge of the screen: the document's own width,
// and each visible control (a button half off the screen cannot be pressed).
const width = document.documentElement.clientWidth;
const out = [];
for (const node of document.querySelectorAll('button, input, a, select, textarea, [role=tab]')) {
  if (!node.checkVisibility({ visibilityProperty: true })) continue;
  const box = node.getBoundingClientRect();
  if (box.width === 0 || (box.width <= 1 && box.height <= 1)) continue;
  if (box.left < -0.5 || box.right > width + 0.5) {
    const name = `${node.tagName.toLowerCase()}#${node.id}`;
    out.push(`${name} ${Math.round(box.left)}..${Math.round(box.right)}`);
  }
}
return { width, out, scroll: document.documentElement.scrollWidth,
         body: document.body.scrollWidth };
'''


def png_width(data):
    assert data[:8] == b'\x89PNG\r\n\x1a\n' and data[12:16] == b'IHDR'
    return struct.unpack('>I', data[16:20])[0]


def fits(driver, state):
    """Nothing wider than the phone: the document, each control, and a
    screenshot of the whole page (as wide as its content)."""
    found = js(driver, OVERFLOW)
    assert found['width'] == PHONE['width'], state
    assert found['scroll'] <= PHONE['width'] and found['body'] <= PHONE['width'], (state, found)
    assert found['out'] == [], (state, found['out'])
    metrics = driver.execute_cdp_cmd('Page.getLayoutMetrics', {})
    content = metrics['cssContentSize']
    shot = driver.execute_cdp_cmd('Page.captureScreenshot', {
        'format': 'png', 'captureBeyondViewport': True,
        'clip': {'x': 0, 'y': 0, 'width': content['width'], 'height': min(content['height'], 2000),
                 'scale': 1}})
    assert png_width(base64.b64decode(shot['data'])) <= PHONE['width'], state


def test_a_phone_wide_screen_never_scrolls_sideways(browser, inbox):
    """(In one theme: the themes change colours only, the same sizes.)"""
    browser.execute_cdp_cmd('Emulation.setDeviceMetricsOverride', {
        **PHONE, 'deviceScaleFactor': 1, 'mobile': True})
    open_page(browser, inbox.url, SUBJECTS, width=1280, height=800)
    retrying(browser, lambda d: d.find_element(
        By.CSS_SELECTOR, '#list li.message:first-child input.select').click(), 'a tick')
    wait(browser, lambda d: d.find_element(By.ID, 'bulk-delete').is_displayed(), 'the bulk bar')
    fits(browser, 'the list, one selected')
    assert not browser.find_element(By.ID, 'view-pane').is_displayed()
    for subject in (SUBJECTS[1], SUBJECTS[2]):
        click_message(browser, subject)
        wait(browser, lambda d: not d.find_element(By.ID, 'list-pane').is_displayed(), 'one pane')
        fits(browser, f'{subject[:20]}: its first tab')
        assert browser.find_element(By.ID, 'back').is_displayed()
        for name in ('text', 'headers', 'source', 'attachments', 'link-check'):
            browser.find_element(By.ID, f'tab-{name}').click()
            wait(browser, lambda d, name=name: d.find_element(By.ID, f'panel-{name}')
                 .is_displayed(), f'the {name} tab')
            fits(browser, f'{subject[:20]}: {name}')
        browser.find_element(By.ID, 'back').click()
        wait(browser, lambda d: d.find_element(By.ID, 'list-pane').is_displayed(), 'the list')
    click_message(browser, SUBJECTS[2])
    browser.find_element(By.ID, 'tab-html-source').click()
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '#html-source span'), 'the source')
    fits(browser, 'HTML source')
    for name, shown in (('html-check', '#html-check-result .summary'),
                        ('spam-check', '#sa-check-result')):      # its reason: no spamd here
        browser.find_element(By.ID, f'tab-{name}').click()
        wait(browser, lambda d, shown=shown: text(d, shown), f'the {name} tab filled')
        fits(browser, name)
    browser.find_element(By.ID, 'release').click()
    browser.find_element(By.ID, 'release-send').click()
    wait(browser, lambda d: text(d, '#release-error'), 'the refusal')
    fits(browser, 'the release dialog')
    browser.find_element(By.ID, 'release-cancel').click()
    browser.find_element(By.ID, 'back').click()
    browser.find_element(By.ID, 'manage-tags').click()
    wait(browser, lambda d: d.find_element(By.ID, 'tags-dialog').is_displayed(), 'the tags dialog')
    fits(browser, 'the tags dialog')
    browser.find_element(By.ID, 'tags-close').click()
