"""The page's mailbox picker in a real browser (Debian's headless Chromium,
selenium, chromium-driver): shown when there is more than one mailbox,
it loads the chosen mailbox's page (/mailbox/NAME/), whose list, unread
count, title and live updates are that mailbox's; a UI user is offered the
default mailbox and their own; with one mailbox there is no picker."""
from __future__ import annotations

import base64
import shutil
import smtplib
from urllib.parse import urlsplit

import pytest

from inbox_helpers import (WAIT, Http, InboxThread, chromium, list_subjects, make_mail, open_page,
                           page_errors, retrying, send, wait)
from smtp_stack.users import hash_password
from test_inbox_page_layout import PHONE, fits, readable

from selenium.webdriver.common.by import By                           # noqa: E402
from selenium.webdriver.support.ui import Select                      # noqa: E402


@pytest.fixture(scope='module')
def browser():
    driver, profile = chromium()
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(autouse=True)
def no_script_errors(browser):
    """Every test ends without a script error or CSP violation on the page."""
    page_errors(browser)
    yield
    assert page_errors(browser) == []


def send_as(address, user, subject):
    with smtplib.SMTP(address[0], address[1], timeout=WAIT) as client:
        client.login(user, 'any password')
        client.send_message(make_mail(subject=subject))


def picker(driver):
    """(shown, [option texts], the chosen option's value), read in one script."""
    return tuple(driver.execute_script(
        'const p = document.getElementById("mailbox-picker");'
        'const s = document.getElementById("mailbox");'
        'return [!p.hidden, [...s.options].map(o => o.textContent), s.value];'))


def choose(driver, how):
    """Choose in the picker as a user does (again, should the choices be
    replaced meanwhile: new mail changes their counts)."""
    retrying(driver, lambda d: how(Select(d.find_element(By.ID, 'mailbox'))), 'a choice')


def test_the_picker_moves_between_mailboxes_and_each_page_is_its_own(tmp_path, browser):
    with InboxThread(tmp_path / 'inbox.db', mailboxes='by-user', accept_any_auth=True) as inbox:
        send(inbox.smtp, subject='for everyone')
        send_as(inbox.smtp, 'ann', subject='ann one')
        send_as(inbox.smtp, 'ann', subject='ann two')
        send_as(inbox.smtp, 'bob', subject='for bob')
        open_page(browser, inbox.url, ['for everyone'])
        wait(browser, lambda d: picker(d) == (
            True, ['Default mailbox (1 unread)', 'ann (2 unread)', 'bob (1 unread)'], ''),
            'the picker with the three mailboxes')
        choose(browser, lambda select: select.select_by_value('ann'))
        wait(browser, lambda d: urlsplit(d.current_url).path == '/mailbox/ann/',
             "ann's page")
        wait(browser, lambda d: list_subjects(d) == ['ann two', 'ann one'], "ann's list")
        wait(browser, lambda d: d.execute_script(
            'return document.getElementById("live").textContent') == 'Live', 'the websocket')
        wait(browser, lambda d: picker(d)[2] == 'ann', 'ann chosen in the picker')
        assert browser.execute_script(
            'return document.getElementById("unread-count").textContent') == '2'
        wait(browser, lambda d: d.title == '(2) ann - Inbox - smtp-stack', "ann's title")
        # Live: ann's new mail appears; mail for bob, sent first, does not.
        send_as(inbox.smtp, 'bob', subject='bob again')
        send_as(inbox.smtp, 'ann', subject='ann three')
        wait(browser, lambda d: list_subjects(d) == ['ann three', 'ann two', 'ann one'],
             "ann's new mail, and only hers")
        # Opening a message there reads it from ann's mailbox.
        browser.execute_script(
            'for (const li of document.querySelectorAll("#list li.message"))'
            '  if (li.querySelector(".subject").textContent === "ann one") li.click();')
        wait(browser, lambda d: d.execute_script(
            'return document.getElementById("subject").textContent') == 'ann one', 'it opened')
        wait(browser, lambda d: '(3 unread)' not in ' '.join(picker(d)[1])
             and 'ann (2 unread)' in picker(d)[1], 'the picker counts it read')
        # Back to the default mailbox through the picker.
        choose(browser, lambda select: select.select_by_value(''))
        wait(browser, lambda d: urlsplit(d.current_url).path == '/', 'the default page')
        wait(browser, lambda d: list_subjects(d) == ['for everyone'], "the default's list")
        wait(browser, lambda d: d.title == '(1) Inbox - smtp-stack', "the default's title")
        web = Http(inbox.url)
        assert web.json('GET', '/mailbox/bob/api/v1/info')['Unread'] == 2   # untouched


def test_a_ui_user_is_offered_the_default_mailbox_and_their_own(tmp_path, browser):
    users = {'ann': hash_password('ann pw'), 'bob': hash_password('bob pw')}
    with InboxThread(tmp_path / 'inbox.db', mailboxes='by-user', accept_any_auth=True,
                     users=users) as inbox:
        send(inbox.smtp, subject='for everyone')
        send_as(inbox.smtp, 'ann', subject='for ann')
        send_as(inbox.smtp, 'bob', subject='for bob')
        token = base64.b64encode(b'ann:ann pw').decode()
        browser.execute_cdp_cmd('Network.enable', {})
        browser.execute_cdp_cmd('Network.setExtraHTTPHeaders',
                                {'headers': {'Authorization': f'Basic {token}'}})
        try:
            open_page(browser, inbox.url + 'mailbox/ann/', ['for ann'])
            wait(browser, lambda d: picker(d) == (
                True, ['Default mailbox (1 unread)', 'ann (1 unread)'], 'ann'),
                'the default mailbox and ann\'s, not bob\'s')
        finally:
            browser.execute_cdp_cmd('Network.setExtraHTTPHeaders', {'headers': {}})
            browser.execute_cdp_cmd('Network.disable', {})


def test_the_picker_is_readable_and_fits_a_phone(tmp_path, browser):
    """AA contrast in both themes, and nothing wider than a 390 px screen
    (the measures of test_inbox_page_layout.py)."""
    with InboxThread(tmp_path / 'inbox.db', mailboxes='by-recipient') as inbox:
        send(inbox.smtp, subject='long', rcpt=['a-rather-long-recipient-address-for-a-phone'
                                                '@subdomain.example.com'])
        send(inbox.smtp, subject='short', rcpt=['ann@example.com'])
        browser.execute_cdp_cmd('Emulation.setDeviceMetricsOverride', {
            **PHONE, 'deviceScaleFactor': 1, 'mobile': True})
        try:
            open_page(browser, inbox.url, [])
            wait(browser, lambda d: picker(d)[0], 'the picker')
            choose(browser, lambda select: select.select_by_index(1))
            wait(browser, lambda d: list_subjects(d) == ['long'], 'the long-named mailbox')
            wait(browser, lambda d: picker(d)[0], 'the picker there')
            fits(browser, 'the picker on a phone')
            seen = {'light': set(), 'dark': set()}
            readable(browser, 'the picker', seen)
            for theme in seen:
                assert {'label "Mailbox"', 'select#mailbox value'} <= {
                    what.split('.mailbox-picker ')[-1] for what in seen[theme]}, seen[theme]
        finally:
            browser.execute_cdp_cmd('Emulation.clearDeviceMetricsOverride', {})


def test_one_mailbox_no_picker(tmp_path, browser):
    with InboxThread(tmp_path / 'inbox.db') as inbox:
        send(inbox.smtp, subject='alone')
        open_page(browser, inbox.url, ['alone'])
        wait(browser, lambda d: d.execute_script(
            'return document.getElementById("mailbox").options.length') == 1,
            'the mailboxes read')
        assert picker(browser) == (False, ['Default mailbox (1 unread)'], '')
        assert browser.title == '(1) Inbox - smtp-stack'
