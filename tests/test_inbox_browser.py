"""The inbox page in a real browser: Debian's headless Chromium, driven by
selenium through Debian's chromium-driver. Mail arrives over SMTP.

    INBOX_SCREENSHOT=docs/inbox.png python -m pytest -q tests/test_inbox_browser.py -k screenshot

writes the screenshot kept in docs/ (the test makes one in a temporary
directory otherwise).
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile

import pytest

import peers
from inbox_helpers import Http, InboxThread, WAIT, send

from selenium import webdriver                                       # noqa: E402
from selenium.common.exceptions import (NoAlertPresentException,       # noqa: E402
                                        StaleElementReferenceException)
from selenium.webdriver.chrome.service import Service                # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains     # noqa: E402
from selenium.webdriver.common.by import By                          # noqa: E402
from selenium.webdriver.common.keys import Keys                      # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait              # noqa: E402

XSS = '<img src=x onerror="window.top.__xss=1"><script>window.top.__xss=2</script>'
XSS_NAME = '<img src=x onerror=window.top.__xss=8><script>window.top.__xss=9</script>'


@pytest.fixture(scope='module')
def browser():
    chromium = peers.program('chromium', 'chromium')
    driver_path = peers.program('chromedriver', 'chromium-driver')
    profile = tempfile.mkdtemp(prefix='inbox-chromium-')
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ('--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                 '--disable-background-networking', '--disable-component-update', '--disable-sync',
                 '--disable-dev-shm-usage', f'--user-data-dir={profile}', '--window-size=1280,800'):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(WAIT)
    driver.set_script_timeout(WAIT)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def inbox(tmp_path):
    with InboxThread(tmp_path / 'inbox.db') as running:
        yield running


def wait(driver, condition, what):
    return WebDriverWait(driver, WAIT).until(lambda d: condition(d), message=what)


def subjects(driver):
    """Read in one script: the list is re-rendered on every event."""
    return driver.execute_script(
        'return [...document.querySelectorAll("#list li.message .subject")].map(e => e.textContent)')


def text_of(driver, selector):
    return driver.execute_script('const e = document.querySelector(arguments[0]);'
                                 'return e ? e.textContent : null', selector)


def click_first(driver):
    """Click the first message of the list (again, if it was re-rendered meanwhile)."""
    def attempt(d):
        try:
            d.find_element(By.CSS_SELECTOR, '#list li.message').click()
            return True
        except StaleElementReferenceException:
            return False
    wait(driver, attempt, 'a click on the first message')


def load(driver, inbox, expected):
    driver.set_window_size(1280, 800)
    driver.get(inbox.url)
    wait(driver, lambda d: subjects(d) == expected, f'the list to show {expected}')
    wait(driver, lambda d: d.find_element(By.ID, 'live').text == 'Live', 'the websocket')


def test_lists_mail_and_shows_new_mail_without_reload(browser, inbox):
    send(inbox.smtp, subject='First mail')
    load(browser, inbox, ['First mail'])
    assert browser.find_element(By.ID, 'unread-count').text == '1'
    assert browser.execute_script(
        'return document.querySelector("#list li.message").classList.contains("unread")')
    browser.execute_script('window.__same_page = true')
    send(inbox.smtp, subject='Second mail')
    wait(browser, lambda d: subjects(d) == ['Second mail', 'First mail'], 'the new mail to appear')
    assert browser.execute_script('return window.__same_page') is True     # no reload
    assert browser.find_element(By.ID, 'unread-count').text == '2'
    assert browser.title == '(2) Inbox - smtp-stack'


def test_opens_html_in_a_sandbox_and_marks_read(browser, inbox):
    send(inbox.smtp, subject='Styled', html='<h1 id="hello">Hello in HTML</h1>')
    load(browser, inbox, ['Styled'])
    click_first(browser)
    frame = wait(browser, lambda d: d.find_element(By.ID, 'html-frame'), 'the frame')
    wait(browser, lambda d: 'view/' in (frame.get_attribute('src') or ''), 'the frame source')
    sandbox = frame.get_attribute('sandbox')
    assert 'allow-scripts' not in sandbox and 'allow-same-origin' not in sandbox
    browser.switch_to.frame(frame)
    try:
        heading = wait(browser, lambda d: d.find_element(By.ID, 'hello'), 'the HTML in the frame')
        assert heading.text == 'Hello in HTML'
    finally:
        browser.switch_to.default_content()
    assert browser.find_element(By.ID, 'subject').text == 'Styled'
    wait(browser, lambda d: d.find_element(By.ID, 'unread-count').text == '0', 'read')
    browser.find_element(By.ID, 'tab-text').click()
    assert 'Hello Bob' in browser.find_element(By.ID, 'text').text
    browser.find_element(By.ID, 'tab-headers').click()
    wait(browser, lambda d: 'Styled' in d.find_element(By.ID, 'headers').text, 'the headers')
    browser.find_element(By.ID, 'tab-source').click()
    wait(browser, lambda d: 'Subject: Styled' in d.find_element(By.ID, 'source').text, 'the source')
    browser.find_element(By.ID, 'toggle-read').click()
    wait(browser, lambda d: d.find_element(By.ID, 'unread-count').text == '1', 'unread again')


def test_hostile_mail_runs_no_script(browser, inbox):
    hostile_html = (
        '<p id="body">Body</p>'
        '<script>document.getElementById("body").textContent = "SCRIPT RAN";'
        'fetch("/api/v1/messages", {method: "DELETE"}); window.top.__xss = 3;</script>'
        '<img src="x" onerror="document.body.textContent=\'ONERROR RAN\'; window.top.__xss = 4">'
        '<svg onload="window.top.__xss = 5"></svg>'
        '<a href="javascript:window.top.__xss=6" id="js">click</a>')
    from email.headerregistry import Address
    send(inbox.smtp, subject='Evil ' + XSS, sender=Address(XSS_NAME, addr_spec='evil@example.com'),
         html=hostile_html, attachments=[(f'{XSS}.html', 'text/html',
                                          b'<script>window.top.__xss=7</script>')])
    load(browser, inbox, ['Evil ' + XSS])           # shown as text, literally
    assert text_of(browser, '#list li.message .from') == XSS_NAME
    click_first(browser)
    wait(browser, lambda d: d.find_element(By.ID, 'subject').text == 'Evil ' + XSS, 'the view')
    frame = browser.find_element(By.ID, 'html-frame')
    browser.switch_to.frame(frame)
    try:
        body = wait(browser, lambda d: d.find_element(By.ID, 'body'), 'the hostile HTML')
        browser.find_element(By.ID, 'js').click()
        assert body.text == 'Body'
        assert 'RAN' not in browser.find_element(By.TAG_NAME, 'body').text
    finally:
        browser.switch_to.default_content()
    browser.find_element(By.ID, 'tab-attachments').click()
    link = browser.find_element(By.CSS_SELECTOR, '#attachments a')
    assert link.text == f'{XSS}.html'
    assert XSS_NAME in browser.find_element(By.CSS_SELECTOR, '#meta').text
    browser.find_element(By.ID, 'tab-headers').click()
    browser.find_element(By.ID, 'tab-source').click()
    wait(browser, lambda d: 'SCRIPT RAN' in d.find_element(By.ID, 'source').text, 'the source')
    # Nothing the mail tried happened: no flag, no alert, no new element, nothing deleted.
    assert browser.execute_script('return window.__xss') is None
    with pytest.raises(NoAlertPresentException):
        _ = browser.switch_to.alert.text
    assert browser.execute_script(
        'return document.querySelectorAll("#list img, #meta img, #attachments img, script:not([src])").length') == 0
    assert Http(inbox.url).json('GET', '/api/v1/messages')['total'] == 1


def test_search_keyboard_delete_and_narrow_window(browser, inbox):
    for subject in ('Alpha report', 'Beta report', 'Gamma note'):
        send(inbox.smtp, subject=subject)
    load(browser, inbox, ['Gamma note', 'Beta report', 'Alpha report'])
    def keys(*k):       # to the focused element
        ActionChains(browser).send_keys(*k).perform()

    def focused():
        return browser.execute_script(
            'const e = document.activeElement; const s = e && e.querySelector(".subject");'
            'return s ? s.textContent : e.id')
    keys('/')
    wait(browser, lambda d: focused() == 'q', 'the search box focused by "/"')
    keys('report', Keys.ENTER)
    wait(browser, lambda d: subjects(d) == ['Beta report', 'Alpha report'], 'the search')
    browser.execute_script('document.querySelector("#list li.message").focus()')
    keys('j')
    wait(browser, lambda d: focused() == 'Alpha report', '"j" to move down')
    keys(Keys.ENTER)
    wait(browser, lambda d: text_of(d, '#subject') == 'Alpha report', 'Enter to open')
    keys(Keys.ESCAPE)
    wait(browser, lambda d: not d.find_element(By.ID, 'view-pane').is_displayed(), 'Esc to close')
    browser.execute_script('document.querySelector("#list li.message").focus()')
    keys(Keys.ENTER)
    wait(browser, lambda d: text_of(d, '#subject') == 'Beta report', 'opened again')
    keys(Keys.DELETE)
    wait(browser, lambda d: subjects(d) == ['Alpha report'], 'Del to delete')
    assert [m['Subject'] for m in Http(inbox.url).json('GET', '/api/v1/messages')['messages']] == \
        ['Gamma note', 'Alpha report']
    browser.set_window_size(420, 800)          # a narrow window: one pane at a time
    assert browser.find_element(By.ID, 'list-pane').is_displayed()
    click_first(browser)
    wait(browser, lambda d: not d.find_element(By.ID, 'list-pane').is_displayed(), 'one pane')
    assert browser.find_element(By.ID, 'view-pane').is_displayed()
    browser.find_element(By.ID, 'back').click()
    wait(browser, lambda d: d.find_element(By.ID, 'list-pane').is_displayed(), 'the list again')
    width = browser.execute_script('return document.documentElement.scrollWidth')
    assert width <= 420, 'nothing wider than the window'


def test_screenshot(browser, inbox, tmp_path):
    """The picture in docs/ (see the module doc for the command)."""
    for subject, sender, html, more in [
            ('Your order #1042 has shipped', 'Shop <orders@shop.example>',
             '<h2>On its way</h2><p>Your parcel left our warehouse today.</p>',
             {'extra_headers': {'X-Tags': 'orders'},
              'attachments': [('invoice.pdf', 'application/pdf', b'%PDF-1.4 ' * 200)]}),
            ('Reset your password', 'Accounts <no-reply@app.example>',
             '<p>Click <a href="https://app.example/reset">here</a> to reset.</p>',
             {'to': 'bob+signup@example.com'}),
            ('Welcome to the team', 'Ann Lee <ann@company.example>',
             '<p>Glad to have you, Bob!</p><ul><li>Laptop: Monday</li><li>Lunch: Tuesday</li></ul>',
             {})]:
        text = re.sub(r'<[^>]+>', ' ', html).strip() + '\n'
        send(inbox.smtp, subject=subject, sender=sender, html=html, text=text, **more)
    load(browser, inbox, ['Welcome to the team', 'Reset your password', 'Your order #1042 has shipped'])
    click_first(browser)
    frame = wait(browser, lambda d: d.find_element(By.ID, 'html-frame'), 'the frame')
    browser.switch_to.frame(frame)
    wait(browser, lambda d: 'Glad to have you' in d.find_element(By.TAG_NAME, 'body').text, 'HTML')
    browser.switch_to.default_content()
    target = os.environ.get('INBOX_SCREENSHOT') or str(tmp_path / 'inbox.png')
    assert browser.save_screenshot(target)
    with open(target, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_remote_images_load_only_when_asked(browser, inbox):
    """A tracker on another origin (a local HTTP server counting hits) is
    blocked by the frame's CSP until "Load remote images" is ticked; an
    inline cid: image shows either way."""
    import http.server
    import threading
    hits = []

    class Pixel(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(200)
            self.send_header('Content-Type', 'image/gif')
            self.end_headers()
            self.wfile.write(b'GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!'
                             b'\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00'
                             b'\x00\x02\x02D\x01\x00;')

        def log_message(self, *args):
            pass
    tracker = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Pixel)
    threading.Thread(target=tracker.serve_forever, daemon=True).start()
    try:
        from inbox_helpers import make_mail
        url = f'http://127.0.0.1:{tracker.server_port}/pixel.gif'
        msg = make_mail(subject='Tracked', html=f'<p id="p">Hi<img id="remote" src="{url}">'
                                                f'<img id="inline" src="cid:logo@x"></p>')
        png = bytes.fromhex('89504e470d0a1a0a0000000d4948445200000001000000010806000000'
                            '1f15c4890000000d49444154789c6360f80f000001010000ff0bd4f5'
                            '0000000049454e44ae426082')
        msg.get_payload()[1].add_related(png, 'image', 'png', cid='<logo@x>')
        send(inbox.smtp, msg)
        load(browser, inbox, ['Tracked'])
        click_first(browser)

        def frame_images():
            frame = browser.find_element(By.ID, 'html-frame')
            browser.switch_to.frame(frame)
            try:
                wait(browser, lambda d: d.execute_script(
                    'return document.readyState === "complete" && !!document.getElementById("p")'),
                     'the frame loaded')
                return browser.execute_script(
                    'return [document.getElementById("remote").naturalWidth,'
                    ' document.getElementById("inline").naturalWidth]')
            finally:
                browser.switch_to.default_content()
        wait(browser, lambda d: 'view/' in (d.find_element(By.ID, 'html-frame').get_attribute('src') or ''),
             'the frame')
        assert frame_images() == [0, 1]         # remote blocked, inline shown
        assert hits == []
        browser.find_element(By.ID, 'remote-images').click()
        wait(browser, lambda d: 'remote=1' in d.find_element(By.ID, 'html-frame').get_attribute('src'),
             'the frame with remote images')
        wait(browser, lambda d: frame_images() == [1, 1], 'the remote image')
        assert hits == ['/pixel.gif']
        browser.find_element(By.ID, 'remote-images').click()    # off again for the next tests
    finally:
        tracker.shutdown()
        tracker.server_close()
