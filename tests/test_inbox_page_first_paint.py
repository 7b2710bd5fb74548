"""What makes the page's first paint fast (issue 24), pinned: the first
list is asked for once, by early.js, before the modules run (and the
search or page of the URL's hash is that request); what a message needs
loads after the list; the page's files are kept by the browser and
revalidated (ETag, `Cache-Control: no-cache`, 304) while the API's answers
are never stored; every module the list needs is preloaded. In headless
Chromium and over http.client against a running inbox."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from inbox_helpers import Http, InboxThread, chromium, open_page, page_errors, send, wait

STATIC = Path(__file__).resolve().parent.parent / 'smtp_stack' / 'inbox' / 'static'
IMPORT = re.compile(r"^import [^;]*? from '\./([\w-]+\.js)';", re.MULTILINE | re.DOTALL)

ENTRIES = """
return performance.getEntriesByType('resource').map((e) => ({
  path: new URL(e.name).pathname + new URL(e.name).search, start: e.startTime,
  end: e.responseEnd, transfer: e.transferSize, body: e.encodedBodySize }));
"""


@pytest.fixture(scope='module')
def browser():
    driver, profile = chromium()
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(autouse=True)
def no_script_errors(browser):
    page_errors(browser)
    yield
    assert page_errors(browser) == []


@pytest.fixture
def inbox(tmp_path):
    with InboxThread(tmp_path / 'inbox.db') as running:
        for n in range(3):
            send(running.smtp, subject=f'mail {n}')
        yield running


def resources(driver):
    return driver.execute_script(ENTRIES)


def asked(driver, prefix):
    return [e for e in resources(driver) if e['path'].startswith(prefix)]


def test_the_first_list_is_asked_once_before_the_modules_run(browser, inbox):
    open_page(browser, inbox.url, ['mail 2', 'mail 1', 'mail 0'])
    [listed] = asked(browser, '/api/v1/messages')         # the websocket's stats: no second
    assert listed['path'] == '/api/v1/messages?start=0&limit=50'
    ready = browser.execute_script(
        'return performance.getEntriesByType("navigation")[0].domContentLoadedEventStart')
    assert listed['start'] < ready          # before the modules ran (they run before this event)


def test_the_hash_search_and_page_are_the_early_request(browser, inbox):
    for n in range(3, 55):
        send(inbox.smtp, subject=f'mail {n}')
    open_page(browser, inbox.url + '#q=subject%3A%22mail+1%22', ['mail 19', 'mail 18', 'mail 17',
                                                                  'mail 16', 'mail 15', 'mail 14',
                                                                  'mail 13', 'mail 12', 'mail 11',
                                                                  'mail 10', 'mail 1'])
    assert [e['path'] for e in asked(browser, '/api/v1/')
            if '/search' in e['path'] or '/messages' in e['path']] == [
        '/api/v1/search?query=subject%3A%22mail%201%22&start=0&limit=50']
    browser.get('about:blank')
    open_page(browser, inbox.url + '#start=50', ['mail 4', 'mail 3', 'mail 2', 'mail 1', 'mail 0'])
    assert [e['path'] for e in asked(browser, '/api/v1/messages')] == [
        '/api/v1/messages?start=50&limit=50']


def test_what_a_message_needs_loads_after_the_list_and_works(browser, inbox):
    open_page(browser, inbox.url, ['mail 2', 'mail 1', 'mail 0'])
    [message] = asked(browser, '/static/message.js')
    first = asked(browser, '/api/v1/messages')[0]
    assert message['start'] >= first['end']              # not in the list's way
    listed = Http(inbox.url).json('GET', '/api/v1/messages')['messages']
    browser.get('about:blank')
    open_page(browser, f'{inbox.url}#m={listed[1]["ID"]}', ['mail 2', 'mail 1', 'mail 0'])
    wait(browser, lambda d: d.execute_script(
        'return document.getElementById("subject").textContent') == 'mail 1', 'the message')
    browser.execute_script('document.getElementById("back").click()')   # wired: back to the list
    wait(browser, lambda d: d.execute_script(
        'return document.getElementById("view-pane").hidden'), 'the list')


def test_a_reload_revalidates_the_page_files_instead_of_downloading_them(browser, inbox):
    open_page(browser, inbox.url, ['mail 2', 'mail 1', 'mail 0'])
    browser.get('about:blank')
    open_page(browser, inbox.url, ['mail 2', 'mail 1', 'mail 0'])
    files = asked(browser, '/static/')
    assert {Path(e['path']).name for e in files} >= {'app.css', 'app.js', 'list.js', 'util.js'}
    for entry in files:             # a 304: headers only, the body from the cache
        assert entry['transfer'] < entry['body'], entry


def test_static_files_carry_an_etag_and_the_api_is_never_stored(inbox):
    web = Http(inbox.url)
    first = web.get('/static/list.js')
    assert first.status == 200 and first.headers['cache-control'] == 'no-cache'
    etag = first.headers['etag']
    assert re.fullmatch(r'"[0-9a-f]{20}"', etag)
    for header in (etag, f'W/{etag}', f'"other", {etag}', '*'):
        again = web.get('/static/list.js', headers={'If-None-Match': header})
        assert (again.status, again.body) == (304, b''), header
        assert again.headers['etag'] == etag and 'content-length' not in again.headers
    changed = web.get('/static/list.js', headers={'If-None-Match': '"other"'})
    assert changed.status == 200 and changed.body == first.body
    assert web.get('/').headers['etag'] != etag                  # the page's own tag
    assert web.get('/api/v1/messages').headers['cache-control'] == 'no-store'
    web.close()


def static_imports(name, seen=None):
    """The modules `name` imports statically, and theirs."""
    seen = set() if seen is None else seen
    for imported in IMPORT.findall((STATIC / name).read_text()):
        if imported not in seen:
            seen.add(imported)
            static_imports(imported, seen)
    return seen


def test_the_page_preloads_exactly_the_modules_the_list_needs():
    page = (STATIC / 'index.html').read_text()
    preloaded = set(re.findall(r'<link rel="modulepreload" href="static/([\w-]+\.js)">', page))
    assert preloaded == static_imports('app.js')
    assert not {'message.js', 'checks.js', 'dialogs.js', 'htmlsource.js'} & preloaded
