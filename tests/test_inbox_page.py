"""The inbox page's features in a real browser (Debian's headless Chromium,
selenium, chromium-driver), each against a running inbox with mail sent
over SMTP: the list's facts, hash routing with Back/Forward, text-only
messages, selection and bulk actions, tags, Release, the check tabs,
thumbnails, device widths, the HTML source, the header filter,
notifications, and the page mounted under a prefix with nothing fetched
from elsewhere. Layout and colours: test_inbox_page_layout.py.
"""
from __future__ import annotations

import http.server
import json
import shutil
import threading
from email.headerregistry import Address

import pytest

from inbox_helpers import (Http, InboxProcess, InboxThread, WsgiThread, chromium, list_subjects,
                           mounted, open_page, page_errors, retrying, send, wait)
from rspamd_private import PrivateRspamd
from spamd_private import GTUBE
from smtp_stack.inbox.api_extra import NOT_HERE
from smtp_stack.testing import MailSink

from selenium.webdriver.common.action_chains import ActionChains         # noqa: E402
from selenium.webdriver.common.by import By                              # noqa: E402
from selenium.webdriver.common.keys import Keys                          # noqa: E402


@pytest.fixture(scope='module')
def browser():
    driver, profile = chromium()
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def inbox(tmp_path):
    with InboxThread(tmp_path / 'inbox.db') as running:
        yield running


@pytest.fixture(autouse=True)
def no_script_errors(browser):
    """Every test ends without a script error or CSP violation on the page."""
    page_errors(browser)
    yield
    assert page_errors(browser) == []


def js(driver, script, *args):
    return driver.execute_script(script, *args)


def text(driver, selector):
    return js(driver, 'const e = document.querySelector(arguments[0]); return e ? e.textContent : null',
              selector)


def click(driver, selector):
    """Click the element (again, if the list was re-rendered meanwhile)."""
    retrying(driver, lambda d: d.find_element(By.CSS_SELECTOR, selector).click(),
             f'a click on {selector}')


def click_message(driver, subject):
    js(driver, 'for (const li of document.querySelectorAll("#list li.message"))'
               '  if (li.querySelector(".subject").textContent === arguments[0]) {'
               '    li.querySelector(".subject").click(); return; }', subject)
    wait(driver, lambda d: text(d, '#subject') == subject, f'{subject!r} open')


def api(inbox):
    return Http(inbox.url)


def by_subject(inbox):
    return {m['Subject']: m for m in api(inbox).json('GET', '/api/v1/messages')['messages']}


def size_text(size):
    """The list's size, as util.js writes it."""
    if size < 1024:
        return f'{size} B'
    if size < 1 << 20:
        return f'{size / 1024:.1f} kB'
    return f'{size / (1 << 20):.1f} MB'


# -- the list -------------------------------------------------------------------------------

def test_list_shows_to_paperclip_size_and_relative_times(browser, inbox):
    send(inbox.smtp, subject='With a file', to='ann@example.com, bo@example.com, cy@example.com',
         attachments=[('report.pdf', 'application/pdf', b'%PDF-1.4 ' * 200)])
    send(inbox.smtp, subject='Plain', to='dee@example.com')
    open_page(browser, inbox.url, ['Plain', 'With a file'])
    rows = js(browser, '''return [...document.querySelectorAll("#list li.message")].map(li => ({
        to: li.querySelector(".to").textContent,
        clip: li.querySelector("svg.clip") ? li.querySelector("svg.clip").getAttribute("aria-label") : null,
        size: li.querySelector(".size .bytes").textContent,
        when: li.querySelector("time.when").textContent,
        title: li.querySelector("time.when").title,
        label: li.getAttribute("aria-label")}))''')
    stored = by_subject(inbox)
    assert [r['to'] for r in rows] == ['To: dee@example.com', 'To: ann@example.com [+2]']
    assert [r['clip'] for r in rows] == [None, '1 attachment']
    assert [r['size'] for r in rows] == [size_text(stored['Plain']['Size']),
                                         size_text(stored['With a file']['Size'])]
    assert {r['when'] for r in rows} == {'just now'}
    for row in rows:            # the absolute time on hover: the date as the browser writes it
        assert row['title'] == js(browser, 'return new Date(arguments[0]).toLocaleString()',
                                  stored['Plain']['Created'] if row['to'].endswith('dee@example.com')
                                  else stored['With a file']['Created'])
    assert rows[1]['label'].endswith('with attachments')
    # Older times, as the list writes them (util.js's relative(), run in the page).
    now = 1_760_000_000_000
    ago = {'30 s': 30_000, '5 min': 300_000, '3 h': 3 * 3_600_000, '1 day': 86_400_000,
           '3 days': 3 * 86_400_000, '2 months': 61 * 86_400_000}
    written = browser.execute_async_script('''
        const [now, ago, done] = arguments;
        import('./static/util.js').then((util) => done(Object.fromEntries(Object.entries(ago).map(
            ([k, ms]) => [k, util.relative(new Date(now - ms).toISOString(), now)]))));''', now, ago)
    assert written == {'30 s': 'just now', '5 min': '5 minutes ago', '3 h': '3 hours ago',
                       '1 day': 'yesterday', '3 days': '3 days ago', '2 months': '2 months ago'}


def test_text_only_opens_on_text_and_html_on_html(browser, inbox):
    send(inbox.smtp, subject='Only text', text='Just words.\n')
    send(inbox.smtp, subject='Both', html='<p id="p">In HTML</p>')
    open_page(browser, inbox.url, ['Both', 'Only text'])
    click_message(browser, 'Only text')
    wait(browser, lambda d: d.find_element(By.ID, 'panel-text').is_displayed(), 'the Text tab')
    assert js(browser, 'return document.getElementById("tab-text").getAttribute("aria-selected")') == 'true'
    assert 'Just words.' in browser.find_element(By.ID, 'text').text
    hidden = js(browser, 'return ["tab-html", "tab-html-source", "tab-html-check"]'
                         '.map(id => document.getElementById(id).hidden)')
    assert hidden == [True, True, True]         # nothing to show there
    click_message(browser, 'Both')
    wait(browser, lambda d: d.find_element(By.ID, 'panel-html').is_displayed(), 'the HTML tab')
    assert not browser.find_element(By.ID, 'panel-text').is_displayed()


def test_hash_follows_message_and_search_with_back_and_forward(browser, inbox):
    for subject in ('Alpha report', 'Beta report', 'Gamma note'):
        send(inbox.smtp, subject=subject)
    ids = {s: m['ID'] for s, m in by_subject(inbox).items()}
    everything = ['Gamma note', 'Beta report', 'Alpha report']
    open_page(browser, inbox.url, everything)

    def showing():
        return js(browser, 'return document.getElementById("view-pane").hidden ? null : '
                           'document.getElementById("subject").textContent')
    click_message(browser, 'Alpha report')
    assert browser.current_url.endswith(f'#m={ids["Alpha report"]}')
    click_message(browser, 'Gamma note')
    browser.back()
    wait(browser, lambda d: showing() == 'Alpha report', 'Back to the first message')
    browser.back()
    wait(browser, lambda d: showing() is None, 'Back to the list')
    browser.forward()
    wait(browser, lambda d: showing() == 'Alpha report', 'Forward to the message again')
    browser.find_element(By.ID, 'q').send_keys('report', Keys.ENTER)
    wait(browser, lambda d: list_subjects(d) == ['Beta report', 'Alpha report'], 'the search')
    assert browser.current_url.endswith('#q=report') and showing() is None
    click_message(browser, 'Beta report')
    assert browser.current_url.endswith(f'#q=report&m={ids["Beta report"]}')
    browser.back()
    wait(browser, lambda d: showing() is None, 'Back: the search, no message')
    browser.back()
    wait(browser, lambda d: list_subjects(d) == everything, 'Back: no search')
    assert browser.find_element(By.ID, 'q').get_attribute('value') == ''
    # A link with the hash opens the page there; an old-style #ID link too.
    browser.get(f'{inbox.url}#q=report&m={ids["Alpha report"]}')
    wait(browser, lambda d: showing() == 'Alpha report'
         and list_subjects(d) == ['Beta report', 'Alpha report'], 'the shared link')
    assert browser.find_element(By.ID, 'q').get_attribute('value') == 'report'
    browser.get(f'{inbox.url}#{ids["Gamma note"]}')
    wait(browser, lambda d: showing() == 'Gamma note', 'an #ID link')


# -- selection and bulk actions -----------------------------------------------------------------

def test_select_several_and_act_on_them(browser, inbox):
    for subject in ('One', 'Two', 'Three', 'Four'):
        send(inbox.smtp, subject=subject)
    open_page(browser, inbox.url, ['Four', 'Three', 'Two', 'One'])

    def check(subject, **keys):
        def tick(d):
            box = js(d, 'for (const li of document.querySelectorAll("#list li.message"))'
                        '  if (li.querySelector(".subject").textContent === arguments[0])'
                        '    return li.querySelector("input.select");', subject)
            chain = ActionChains(d)
            if keys.get('shift'):
                chain.key_down(Keys.SHIFT).click(box).key_up(Keys.SHIFT).perform()
            else:
                chain.click(box).perform()
        retrying(browser, tick, f'a tick on {subject}')

    def selected():
        return js(browser, 'return [...document.querySelectorAll("#list li.selected .subject")]'
                           '.map(e => e.textContent)')
    check('Four')
    check('Two', shift=True)           # a range: Four, Three, Two
    wait(browser, lambda d: selected() == ['Four', 'Three', 'Two'], 'a range selected')
    assert text(browser, '#selected-count') == '3 selected'
    assert browser.find_element(By.ID, 'view-pane').is_displayed() is False   # nothing opened
    browser.find_element(By.ID, 'bulk-read').click()
    wait(browser, lambda d: [s for s, m in sorted(by_subject(inbox).items()) if m['Read']]
         == ['Four', 'Three', 'Two'], 'marked read')
    browser.find_element(By.ID, 'bulk-unread').click()
    wait(browser, lambda d: not any(m['Read'] for m in by_subject(inbox).values()), 'unread again')
    # Tag the selection, then take the tag off one of them.
    browser.find_element(By.ID, 'bulk-tag').click()
    browser.find_element(By.ID, 'bulk-tag-name').send_keys('urgent', Keys.ENTER)
    wait(browser, lambda d: {s: m['Tags'] for s, m in by_subject(inbox).items()}
         == {'One': [], 'Two': ['urgent'], 'Three': ['urgent'], 'Four': ['urgent']}, 'tagged')
    browser.find_element(By.ID, 'bulk-clear').click()
    wait(browser, lambda d: selected() == [], 'cleared')
    # The keyboard: x selects the focused message.
    js(browser, '[...document.querySelectorAll("#list li.message")][1].focus()')
    ActionChains(browser).send_keys('x').perform()
    wait(browser, lambda d: selected() == ['Three'], '"x" to select')
    browser.find_element(By.ID, 'bulk-tag').click()
    browser.find_element(By.ID, 'bulk-tag-name').send_keys('urgent')
    browser.find_element(By.ID, 'bulk-untag').click()
    wait(browser, lambda d: by_subject(inbox)['Three']['Tags'] == [], 'the tag taken off')
    assert by_subject(inbox)['Two']['Tags'] == ['urgent']
    # Select all of the page, then delete them but one.
    browser.find_element(By.ID, 'select-all').click()
    wait(browser, lambda d: len(selected()) == 4, 'all selected')
    check('One')
    wait(browser, lambda d: selected() == ['Four', 'Three', 'Two'], 'one left out')
    assert js(browser, 'return document.getElementById("select-all").indeterminate') is True
    browser.find_element(By.ID, 'bulk-delete').click()
    wait(browser, lambda d: list_subjects(d) == ['One'], 'deleted')
    assert list(by_subject(inbox)) == ['One']
    assert text(browser, '#selected-count') == ''


def test_mark_all_read_and_delete_all_or_the_matches(browser, inbox):
    for subject in ('Keep me', 'Drop one', 'Drop two'):
        send(inbox.smtp, subject=subject)
    open_page(browser, inbox.url, ['Drop two', 'Drop one', 'Keep me'])
    # ctrl-click selects without opening.
    retrying(browser, lambda d: ActionChains(d).key_down(Keys.CONTROL).click(
        d.find_element(By.CSS_SELECTOR, '#list li.message:last-child .subject'))
        .key_up(Keys.CONTROL).perform(), 'a ctrl-click')
    wait(browser, lambda d: text(d, '#selected-count') == '1 selected', 'ctrl-click selects')
    assert not browser.find_element(By.ID, 'view-pane').is_displayed()
    browser.find_element(By.ID, 'mark-all-read').click()
    wait(browser, lambda d: text(d, '#unread-count') == '0', 'all read')
    assert all(m['Read'] for m in by_subject(inbox).values())
    browser.find_element(By.ID, 'q').send_keys('drop', Keys.ENTER)
    wait(browser, lambda d: list_subjects(d) == ['Drop two', 'Drop one'], 'the search')
    browser.find_element(By.ID, 'delete-all').click()
    alert = wait(browser, lambda d: d.switch_to.alert, 'the question')
    assert alert.text == 'Delete the messages matching "drop"?'
    alert.dismiss()                                         # no: nothing deleted
    assert len(by_subject(inbox)) == 3
    browser.find_element(By.ID, 'delete-all').click()
    wait(browser, lambda d: d.switch_to.alert, 'the question').accept()
    wait(browser, lambda d: list(by_subject(inbox)) == ['Keep me'], 'the matches deleted')
    wait(browser, lambda d: list_subjects(d) == [], 'the search shows none')
    browser.find_element(By.ID, 'q').clear()
    browser.find_element(By.ID, 'q').send_keys(Keys.ENTER)
    wait(browser, lambda d: list_subjects(d) == ['Keep me'], 'every message again')
    browser.find_element(By.ID, 'delete-all').click()
    alert = wait(browser, lambda d: d.switch_to.alert, 'the question')
    assert alert.text == 'Delete all messages?'
    alert.accept()
    wait(browser, lambda d: d.find_element(By.ID, 'empty').is_displayed(), 'the empty inbox')
    assert by_subject(inbox) == {}


def test_the_delete_all_button_hidden(browser, tmp_path):
    """--hide-delete-all-button (Mailpit's): the page has no Delete all."""
    with InboxThread(tmp_path / 'inbox.db', hide_delete_all_button=True) as inbox:
        send(inbox.smtp, subject='kept')
        open_page(browser, inbox.url, ['kept'])
        wait(browser, lambda d: not d.find_element(By.ID, 'delete-all').is_displayed(),
             'Delete all hidden')
        assert browser.find_element(By.ID, 'mark-all-read').is_displayed()


# -- tags -----------------------------------------------------------------------------------------

def test_tags_shown_filtered_added_removed_renamed_deleted(browser, inbox):
    send(inbox.smtp, subject='Signed up', to='ann+signup@example.com',
         extra_headers={'X-Tags': 'alpha'})
    send(inbox.smtp, subject='Untagged')
    open_page(browser, inbox.url, ['Untagged', 'Signed up'])
    bar = js(browser, 'return [...document.querySelectorAll("#tag-list .tag")].map(e => e.textContent)')
    assert bar == ['alpha', 'signup']
    chips = js(browser, 'return [...document.querySelectorAll("#list li.message")].map(li =>'
                        ' [...li.querySelectorAll(".tags .tag")].map(e => e.textContent))')
    assert chips == [[], ['alpha', 'signup']]
    click(browser, '#tag-list .tag')                      # filter by alpha
    wait(browser, lambda d: list_subjects(d) == ['Signed up'], 'filtered by the tag')
    assert browser.current_url.endswith('#q=tag%3Aalpha')
    assert js(browser, 'return document.querySelector("#tag-list .tag").getAttribute("aria-pressed")') == 'true'
    click(browser, '#tag-list .tag')                      # pressed again: every message
    wait(browser, lambda d: list_subjects(d) == ['Untagged', 'Signed up'], 'the filter off')
    # On the message: add one, remove one.
    click_message(browser, 'Untagged')
    browser.find_element(By.ID, 'add-tag').send_keys('beta', Keys.ENTER)
    wait(browser, lambda d: by_subject(inbox)['Untagged']['Tags'] == ['beta'], 'beta added')
    wait(browser, lambda d: text(d, '#message-tags') == 'beta\u00d7', 'beta shown on the message')
    click_message(browser, 'Signed up')
    browser.find_element(By.CSS_SELECTOR, '#message-tags button[aria-label="Remove the tag alpha"]').click()
    wait(browser, lambda d: by_subject(inbox)['Signed up']['Tags'] == ['signup'], 'alpha removed')
    wait(browser, lambda d: js(d, 'return [...document.querySelectorAll("#tag-list .tag")]'
                                  '.map(e => e.textContent)') == ['beta', 'signup'], 'the bar follows')
    # Edit tags: rename beta to gamma, a clash is refused with the server's words, delete signup.
    browser.find_element(By.ID, 'manage-tags').click()
    field = browser.find_element(By.CSS_SELECTOR, '#tag-editor li[data-tag="beta"] input')
    field.clear()
    field.send_keys('half-typed')
    # Mail arriving while the editor is open refreshes the page's tags: what
    # is being typed stays (the editor is drawn again only if the tags change).
    send(inbox.smtp, subject='Meanwhile')
    wait(browser, lambda d: 'Meanwhile' in list_subjects(d), 'the new message listed')
    assert field.get_attribute('value') == 'half-typed'
    field.clear()
    field.send_keys('Signup', Keys.ENTER)
    wait(browser, lambda d: text(d, '#tags-error') != '', 'the clash refused')
    assert by_subject(inbox)['Untagged']['Tags'] == ['beta']
    field.clear()
    field.send_keys('gamma', Keys.ENTER)
    wait(browser, lambda d: by_subject(inbox)['Untagged']['Tags'] == ['gamma'], 'renamed')
    wait(browser, lambda d: text(d, '#tags-error') == '', 'the error gone')
    click(browser, '#tag-editor li[data-tag="signup"] button.danger')
    wait(browser, lambda d: api(inbox).json('GET', '/api/v1/tags') == ['gamma'], 'signup deleted')
    assert list(by_subject(inbox)) == ['Meanwhile', 'Untagged', 'Signed up']    # the messages stay
    wait(browser, lambda d: js(d, 'return [...document.querySelectorAll("#tag-editor li")]'
                                  '.map(e => e.dataset.tag)') == ['gamma'], 'the editor follows')
    browser.find_element(By.ID, 'tags-close').click()


# -- release --------------------------------------------------------------------------------------

def test_release_through_the_relay_with_its_allowlist(browser, tmp_path):
    """The real command, with --relay and --relay-allowed-recipients: the
    dialog shows the relay and its allowlist, the server's refusal in its
    own words, then releases and deletes."""
    with MailSink() as sink, InboxProcess(
            tmp_path, '--relay', f'{sink.address[0]}:{sink.address[1]}',
            '--relay-allowed-recipients', r'@example\.net$') as inbox:
        relay = api(inbox).json('GET', '/api/v1/webui')['MessageRelay']
        assert (relay['Enabled'], relay['SMTPServer'], relay['AllowedRecipients'],
                relay['RecipientAllowlist']) == (
            True, f'{sink.address[0]}:{sink.address[1]}', r'@example\.net$', r'@example\.net$')
        send(inbox.smtp, subject='Release me', to='Bob <bob@example.com>', cc='cc@example.net')
        open_page(browser, inbox.url, ['Release me'])
        click_message(browser, 'Release me')
        wait(browser, lambda d: d.find_element(By.ID, 'release').is_displayed(), 'the Release button')
        browser.find_element(By.ID, 'release').click()
        assert browser.find_element(By.ID, 'release-dialog').is_displayed()
        to = browser.find_element(By.ID, 'release-to')
        assert to.get_attribute('value') == 'bob@example.com, cc@example.net'   # To, Cc, Bcc
        assert browser.find_element(By.ID, 'release-allowlist').is_displayed()
        assert text(browser, '#allowlist') == r'@example\.net$'
        assert text(browser, '#relay-name') == f'{sink.address[0]}:{sink.address[1]}'
        assert text(browser, '#release-bounce') == 'alice@example.com'
        browser.find_element(By.ID, 'release-send').click()      # bob@example.com: off the list
        wait(browser, lambda d: text(d, '#release-error')
             == 'Failed: Address do not match the allowlist: bob@example.com', 'refused')
        assert browser.find_element(By.ID, 'release-dialog').is_displayed()
        to.clear()
        to.send_keys('real@example.net')
        browser.find_element(By.ID, 'release-delete').click()
        browser.find_element(By.ID, 'release-send').click()
        [released] = sink.wait_for(1)
        assert [a.address for a in released.envelope.rcpt_to] == ['real@example.net']
        assert released['Subject'] == 'Release me'
        wait(browser, lambda d: not d.find_element(By.ID, 'release-dialog').is_displayed(), 'closed')
        wait(browser, lambda d: list_subjects(d) == [], 'deleted after release')
        assert api(inbox).json('GET', '/api/v1/messages')['total'] == 0
    with InboxThread(tmp_path / 'none.db') as plain:      # no relay: no Release button
        send(plain.smtp, subject='Stays')
        open_page(browser, plain.url, ['Stays'])
        click_message(browser, 'Stays')
        assert not browser.find_element(By.ID, 'release').is_displayed()


# -- the check tabs, thumbnails -------------------------------------------------------------------

class Links(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self):
        self.send_response(200 if self.path == '/ok' else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


PNG = bytes.fromhex('89504e470d0a1a0a0000000d4948445200000001000000010806000000'
                    '1f15c4890000000d49444154789c6360f80f000001010000ff0bd4f5'
                    '0000000049454e44ae426082')


def test_check_tabs_show_results_or_why_not(browser, inbox):
    site = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Links)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    inbox.inbox.app.link_checker.allow_internal = True      # the test's links are on 127.0.0.1
    try:
        base = f'http://127.0.0.1:{site.server_port}'
        send(inbox.smtp, subject='Links', html=f'<a href="{base}/ok">ok</a> <a href="{base}/gone">gone</a>',
             attachments=[('photo.png', 'image/png', PNG)])
        open_page(browser, inbox.url, ['Links'])
        click_message(browser, 'Links')
        browser.find_element(By.ID, 'tab-link-check').click()
        assert text(browser, '#link-check-result') == ''          # asked for, not run on its own
        browser.find_element(By.ID, 'link-check-run').click()
        wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, '#link-check-result tbody tr')) == 2,
             'the link check')
        rows = js(browser, 'return [...document.querySelectorAll("#link-check-result tbody tr")].map('
                           'tr => [tr.className, tr.cells[0].textContent, tr.cells[1].textContent])')
        assert rows == [['status-ok', '200 OK', f'{base}/ok'],
                        ['status-bad', '404 Not Found', f'{base}/gone']]
        assert text(browser, '#tab-link-check') == 'Link check (1 error)'
        # The HTML check (the caniemail data): its summary of the features found.
        browser.find_element(By.ID, 'tab-html-check').click()
        wait(browser, lambda d: text(d, '#html-check-result .summary') is not None,
             'the html-check tab')
        assert 'features tested' in text(browser, '#html-check-result .summary')
        # The spam check, without spamd here: its tab says why (the server's 501 reason).
        browser.find_element(By.ID, 'tab-spam-check').click()
        wait(browser, lambda d: text(d, '#sa-check-result .unavailable') is not None,
             'the sa-check tab')
        assert text(browser, '#sa-check-result') == f"Not available here: {NOT_HERE['sa-check']}."
        # Thumbnails (Pillow, of the inbox extra): Mailpit's 180x120 JPEG beside the file.
        browser.find_element(By.ID, 'tab-attachments').click()
        wait(browser, lambda d: js(d, 'const i = document.querySelector("#attachments img.thumb");'
                                      ' return !!i && i.complete && i.naturalWidth > 0'),
             'the thumbnail')
        assert js(browser, 'const i = document.querySelector("#attachments img.thumb");'
                           ' return [i.naturalWidth, i.naturalHeight]') == [180, 120]
        assert not browser.find_element(By.ID, 'thumb-note').is_displayed()
    finally:
        site.shutdown()
        site.server_close()


HTML_CHECK = {      # Mailpit's HTML check answer, trimmed (its swagger's HTMLCheckResponse)
    'Platforms': {'outlook-com': ['Outlook.com']},
    'Total': {'Nodes': 12, 'Partial': 1, 'Supported': 10, 'Tests': 163, 'Unsupported': 1},
    'Warnings': [{
        'Category': 'css', 'Description': '', 'Keywords': '', 'NotesByNumber': {},
        'Results': [{'Family': 'outlook', 'Name': 'Outlook Windows (2019)', 'NoteNumber': '',
                     'Platform': 'windows',
                     'Support': 'no', 'Version': '2019'},
                    {'Family': 'apple-mail', 'Name': 'Apple Mail macOS (16)', 'NoteNumber': '',
                     'Platform': 'macos', 'Support': 'yes', 'Version': '16'}],
        'Score': {'Found': 1, 'Partial': 0, 'Supported': 50, 'Unsupported': 50},
        'Slug': 'css-display-flex', 'Tags': [], 'Title': 'display:flex',
        'URL': 'https://www.caniemail.com/features/css-display-flex/'}],
}
SPAM_CHECK = {'Error': '', 'IsSpam': False, 'Score': 1.3, 'Rules': [
    {'Name': 'HTML_MESSAGE', 'Score': 0.001, 'Description': 'BODY: HTML included in message'}]}


def test_check_tabs_render_mailpit_answers(browser, tmp_path):
    """When the server answers the HTML and spam checks (Mailpit's shapes),
    the tabs show every part of them, whatever the checker found (a real
    checker's answer: the test below). The two answers come from a stand-in
    in front of the real app."""
    from smtp_stack.inbox import wsgi_app
    db = tmp_path / 'checks.db'

    def make_app():
        app = wsgi_app(str(db))

        def answering(environ, start_response):
            path = environ.get('PATH_INFO', '')
            for kind, answer in (('html-check', HTML_CHECK), ('sa-check', SPAM_CHECK)):
                if path.endswith('/' + kind):
                    start_response('200 OK', [('Content-Type', 'application/json')])
                    return [json.dumps(answer).encode()]
            return app(environ, start_response)
        return answering
    with InboxThread(db) as receiver, WsgiThread(make_app) as web:
        send(receiver.smtp, subject='Checked', html='<div style="display:flex">x</div>')
        url = f'http://127.0.0.1:{web.port}/'
        open_page(browser, url, ['Checked'])
        click_message(browser, 'Checked')
        browser.find_element(By.ID, 'tab-html-check').click()
        wait(browser, lambda d: text(d, '#html-check-result .summary') is not None, 'the HTML check')
        assert text(browser, '#html-check-result .summary') == \
            '1 of 163 features tested need care (12 HTML elements).'
        assert text(browser, '#html-check-result li') == (
            'display:flex (css): supported 50%, partly 0%, not 50%Outlook Windows (2019): no')
        browser.find_element(By.ID, 'tab-spam-check').click()
        wait(browser, lambda d: text(d, '#sa-check-result .summary') is not None, 'the spam check')
        assert text(browser, '#sa-check-result .summary') == 'Score 1.3: not spam.'
        assert js(browser, 'return [...document.querySelectorAll("#sa-check-result tbody td")]'
                           '.map(e => e.textContent)') == \
            ['0.001', 'HTML_MESSAGE', 'BODY: HTML included in message']


def test_the_spam_tab_shows_a_real_checkers_verdict(browser, tmp_path):
    """The spam tab with a real checker behind sa-check: a private rspamd
    (`--enable-rspamd`) scoring GTUBE as spam, its symbol in the table."""
    rspamd = PrivateRspamd(tmp_path / 'rspamd')
    try:
        with InboxThread(tmp_path / 'inbox.db', rspamd=rspamd.url) as inbox:
            send(inbox.smtp, subject='Test pattern', text=f'{GTUBE}\n')
            open_page(browser, inbox.url, ['Test pattern'])
            click_message(browser, 'Test pattern')
            browser.find_element(By.ID, 'tab-spam-check').click()
            wait(browser, lambda d: text(d, '#sa-check-result .summary') is not None,
                 'the spam check')
            summary = text(browser, '#sa-check-result .summary')
            rows = js(browser, 'return [...document.querySelectorAll("#sa-check-result tbody tr")]'
                               '.map(r => [...r.cells].map(c => c.textContent))')
    finally:
        rspamd.stop()
    assert summary.startswith('Score ') and summary.endswith(': spam.'), summary
    assert ['0', 'GTUBE', ''] in rows, rows


# -- the views of a message -----------------------------------------------------------------------

def test_phone_and_tablet_widths_of_the_html(browser, inbox):
    send(inbox.smtp, subject='Responsive', html='<p id="p">Hi</p>')
    open_page(browser, inbox.url, ['Responsive'])
    click_message(browser, 'Responsive')
    frame = wait(browser, lambda d: d.find_element(By.ID, 'html-frame'), 'the frame')
    wait(browser, lambda d: 'view/' in (frame.get_attribute('src') or ''), 'the frame source')

    def inner_width():
        browser.switch_to.frame(frame)
        try:
            wait(browser, lambda d: d.execute_script('return !!document.getElementById("p")'),
                 'the HTML in the frame')
            return browser.execute_script('return window.innerWidth')
        finally:
            browser.switch_to.default_content()
    pane = js(browser, 'return document.getElementById("frame-box").clientWidth')
    assert inner_width() == pane            # desktop: the whole pane
    for device, width in (('tablet', 768), ('phone', 322), ('desktop', pane)):
        browser.find_element(By.CSS_SELECTOR, f'[data-device-choice={device}]').click()
        assert js(browser, 'return document.querySelector("[aria-pressed=true][data-device-choice]")'
                           '.dataset.deviceChoice') == device
        wait(browser, lambda d, width=width: inner_width() == width, f'the frame {width} px wide')


def test_html_source_is_highlighted_text(browser, inbox):
    html = ('<!DOCTYPE html><!-- a comment --><html><head><style>p > b { color: red }</style></head>'
            '<body><p class="x" data-y=\'1\' hidden>Hi &amp; <b>bye</b></p>'
            '<img src=x onerror="window.top.__xss=1"><script>window.top.__xss=2; if (1 < 2) {}</script>'
            '</body></html>')
    send(inbox.smtp, subject='Source', html=html)
    open_page(browser, inbox.url, ['Source'])
    click_message(browser, 'Source')
    browser.find_element(By.ID, 'tab-html-source').click()
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '#html-source span'), 'the highlighted source')
    stored = api(inbox).json('GET', '/api/v1/message/latest')['HTML']
    assert html in stored
    assert text(browser, '#html-source') == stored         # exactly the source, as text
    pieces = js(browser, 'return [...document.querySelectorAll("#html-source span")]'
                         '.map(s => [s.className, s.textContent])')
    for piece in (['hl-doctype', '<!DOCTYPE html>'], ['hl-comment', '<!-- a comment -->'],
                  ['hl-tag', '<p'], ['hl-attr', 'class'], ['hl-value', '"x"'], ['hl-attr', 'data-y'],
                  ['hl-value', "'1'"], ['hl-attr', 'hidden'], ['hl-tag', '>'], ['hl-tag', '<img'],
                  ['hl-attr', 'onerror'], ['hl-value', '"window.top.__xss=1"'], ['hl-tag', '</script']):
        assert piece in pieces, piece
    # The style and script contents are text, not tags; nothing of the mail became an element.
    assert ['hl-tag', '<b'] not in pieces[:pieces.index(['hl-tag', '</style'])]
    assert js(browser, 'return document.querySelectorAll("#html-source *:not(span)").length') == 0
    assert js(browser, 'return window.__xss') is None


def test_header_filter(browser, inbox):
    send(inbox.smtp, subject='Many fields', extra_headers={'X-Mailer': 'Tester 1.0',
                                                           'X-Campaign': 'spring'})
    open_page(browser, inbox.url, ['Many fields'])
    click_message(browser, 'Many fields')
    browser.find_element(By.ID, 'tab-headers').click()
    wait(browser, lambda d: 'Tester 1.0' in d.find_element(By.ID, 'headers').text, 'the headers')

    def shown():
        return js(browser, 'return [...document.querySelectorAll("#headers tr")].filter(r => !r.hidden)'
                           '.map(r => r.cells[0].textContent)')
    every = shown()
    assert {'Subject', 'X-Mailer', 'X-Campaign', 'Received', 'Return-Path'} <= set(every)
    box = browser.find_element(By.ID, 'header-filter')
    box.send_keys('x-')
    wait(browser, lambda d: shown() == ['X-Mailer', 'X-Campaign'], 'filtered by name')
    assert text(browser, '#header-count') == f'2 of {len(every)} fields'
    box.clear()
    box.send_keys('SPRING')                               # by value, any case
    wait(browser, lambda d: shown() == ['X-Campaign'], 'filtered by value')
    box.clear()
    box.send_keys(Keys.SPACE, Keys.BACKSPACE)
    wait(browser, lambda d: shown() == every, 'no filter')


# -- notifications --------------------------------------------------------------------------------

SPY = '''
window.__notes = [];
const Real = window.Notification;
window.Notification = class extends Real {
  constructor(title, options) {
    super(title, options);
    window.__notes.push([title, options.body]);
    window.__last = this;
  }
};'''


def test_notifications_are_opt_in_and_remembered(browser, inbox):
    send(inbox.smtp, subject='Before')
    open_page(browser, inbox.url, ['Before'])
    browser.execute_cdp_cmd('Browser.grantPermissions', {
        'origin': inbox.url.rstrip('/'), 'permissions': ['notifications']})
    js(browser, SPY)
    button = browser.find_element(By.ID, 'notify')
    assert button.get_attribute('aria-pressed') == 'false'
    send(inbox.smtp, subject='Not asked for', sender=Address('Shop', addr_spec='shop@example.com'))
    wait(browser, lambda d: list_subjects(d)[0] == 'Not asked for', 'the new mail')
    assert js(browser, 'return window.__notes') == []          # off until asked for
    button.click()
    wait(browser, lambda d: button.get_attribute('aria-pressed') == 'true', 'notifications on')
    browser.refresh()                                          # remembered
    wait(browser, lambda d: d.find_element(By.ID, 'live').text == 'Live', 'the websocket')
    assert browser.find_element(By.ID, 'notify').get_attribute('aria-pressed') == 'true'
    js(browser, SPY)
    send(inbox.smtp, subject='Your order', sender=Address('Shop', addr_spec='shop@example.com'))
    wait(browser, lambda d: js(d, 'return window.__notes').__len__() == 1, 'a notification')
    assert js(browser, 'return window.__notes') == [['New mail from shop@example.com', 'Your order']]
    js(browser, 'window.__last.dispatchEvent(new Event("click"))')     # as when it is clicked
    wait(browser, lambda d: text(d, '#subject') == 'Your order', 'the message opened')
    browser.find_element(By.ID, 'notify').click()
    wait(browser, lambda d: d.find_element(By.ID, 'notify').get_attribute('aria-pressed') == 'false',
         'notifications off')
    send(inbox.smtp, subject='Quiet again')
    wait(browser, lambda d: list_subjects(d)[0] == 'Quiet again', 'the new mail')
    assert len(js(browser, 'return window.__notes')) == 1


def test_polls_where_the_server_carries_no_websocket(browser, tmp_path):
    """Under a server without websockets (gunicorn: /api/events answers 501)
    the page says so and polls: new mail still shows without a reload."""
    from smtp_stack.inbox import wsgi_app
    db = tmp_path / 'polled.db'

    def make_app():
        app = wsgi_app(str(db))

        def no_websocket(environ, start_response):
            if environ.get('PATH_INFO', '').endswith('/api/events'):
                start_response('501 Not Implemented', [('Content-Type', 'text/plain')])
                return [b'no websocket here\n']
            return app(environ, start_response)
        return no_websocket
    with InboxThread(db) as receiver, WsgiThread(make_app) as web:
        send(receiver.smtp, subject='Before')
        browser.set_window_size(1280, 800)
        browser.get(f'http://127.0.0.1:{web.port}/')
        wait(browser, lambda d: list_subjects(d) == ['Before'], 'the list')
        wait(browser, lambda d: text(d, '#live') == 'Polling', 'the fallback')
        js(browser, 'window.__same_page = true')
        send(receiver.smtp, subject='After')
        wait(browser, lambda d: list_subjects(d) == ['After', 'Before'], 'the new mail, polled')
        assert js(browser, 'return window.__same_page') is True
        browser.get('about:blank')          # no more attempts from this page
    refused = page_errors(browser)          # the browser logs each refused handshake
    assert refused and all('api/events' in line and 'WebSocket' in line for line in refused), refused


# -- mounted under a prefix, nothing from elsewhere -----------------------------------------------

def test_mounted_under_a_prefix_and_self_contained(browser, tmp_path):
    """Every URL of the page is relative, so it works under /mnt/ (as beside a
    Flask app); everything it loads comes from the inbox itself (no CDN)."""
    from smtp_stack.inbox import wsgi_app
    db = tmp_path / 'mounted.db'
    with InboxThread(db) as receiver, \
            WsgiThread(lambda: mounted('/mnt', wsgi_app(str(db)))) as web:
        send(receiver.smtp, subject='Through the mount', html='<p id="p">Mounted</p>',
             to='ann+mounted@example.com')
        base = f'http://127.0.0.1:{web.port}/mnt/'
        open_page(browser, base, ['Through the mount'])
        click_message(browser, 'Through the mount')
        frame = browser.find_element(By.ID, 'html-frame')
        browser.switch_to.frame(frame)
        try:
            wait(browser, lambda d: d.find_element(By.ID, 'p').text == 'Mounted', 'the HTML')
        finally:
            browser.switch_to.default_content()
        browser.find_element(By.ID, 'tab-source').click()
        wait(browser, lambda d: 'Subject: Through the mount' in d.find_element(By.ID, 'source').text,
             'the source')
        click(browser, '#tag-list .tag')
        wait(browser, lambda d: d.current_url.endswith('/mnt/#q=tag%3Amounted'), 'the tag filter')
        loaded = js(browser, 'return performance.getEntriesByType("resource").map(e => e.name)'
                             '.concat([location.href])')
        assert loaded and all(url.startswith(base) or url.startswith(base.replace('http', 'ws'))
                              for url in loaded), loaded
        assert {u.rsplit('/', 1)[-1] for u in loaded if '/static/' in u} >= {
            'app.css', 'theme.js', 'app.js', 'util.js', 'list.js', 'message.js'}
