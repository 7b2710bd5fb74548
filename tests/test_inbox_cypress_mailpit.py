"""npm's `cypress-mailpit` (2.0.0, pinned in tests/cypress_mailpit/package-lock.json,
installed there with `npm ci` when missing) drives `smtp-stack inbox`: its
own command module, loaded unchanged by Node with a stand-in for the part
of Cypress it uses (tests/cypress_mailpit/cypress.mjs: `cy.request` is real
HTTP), so every command it registers runs against the real inbox process,
with basic auth on and a private spamd for its SpamAssassin summary."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import peers
from clirunner import Process, smtp_stack
from inbox_helpers import make_mail, send
from spamd_private import TEST_WORD, PrivateSpamd
from test_inbox_cli import LINE

HARNESS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'cypress_mailpit')
INSTALL = 'npm ci --prefix tests/cypress_mailpit'

# Every command cypress-mailpit 2.0.0 registers, and what every_command.mjs
# checked of its answer.
EVERY_COMMAND = {
    'mailpitGetAllMails': 'newest first; start and limit',
    'mailpitSearchEmails': 'from: and has:attachment',
    'mailpitGetEmailsBySubject': 'subject:Welcome Ann',
    'mailpitGetEmailsByTo': 'to:ann@example.com',
    'mailpitGetMail': 'latest by default; by ID, with its Text',
    'mailpitGetSubject': 'Subject',
    'mailpitGetFromAddress': 'From.Address',
    'mailpitGetRecipientAddress': 'each To Address',
    'mailpitGetAttachments': 'file names',
    'mailpitGetMailHTMlBody': 'the HTML part',
    'mailpitGetMailTextBody': 'the text part',
    'mailpitGetMailSpamAssassinSummary': "spamd's score and rules",
    'mailpitGetMailSpamAssainSummary': "spamd's score and rules",
    'mailpitSetAllEmailStatusAsRead': 'ok; none unread',
    'mailpitSetAllEmailStatusAsUnRead': 'ok; all unread',
    'mailpitSetStatusAsRead': 'ok; one message, then a list',
    'mailpitSetStatusAsUnRead': 'ok; is:unread finds it',
    'mailpitSendMail': 'ID; its defaults (Bcc as plain addresses), tags, attachment',
    'mailpitHasEmailsBySearch': 'tag:cypress',
    'mailpitNotHasEmailsBySearch': 'tag:nothing',
    'mailpitHasEmailsBySubject': 'waited for a message sent meanwhile',
    'mailpitHasEmailsByTo': 'to:late@example.com',
    'mailpitNotHasEmailsByTo': 'to:nobody@example.com',
    'mailpitNotHasEmailsBySubject': 'times out while one is there',
    'mailpitDeleteEmailsBySearch': 'the match only',
    'mailpitDeleteAllEmails': 'all; latest is then 404',
}
CHILD_COMMANDS = {'mailpitGetSubject', 'mailpitGetFromAddress', 'mailpitGetRecipientAddress',
                  'mailpitGetAttachments', 'mailpitGetMailHTMlBody', 'mailpitGetMailTextBody',
                  'mailpitGetMailSpamAssassinSummary', 'mailpitGetMailSpamAssainSummary',
                  'mailpitSetStatusAsRead', 'mailpitSetStatusAsUnRead'}
# They ask for `${MAILPIT_URL}//view/{ID}.html` (and .txt): the package
# builds non-API URLs as "/" + "" + "/view/...". Mailpit's router (gorilla/mux)
# answers a path with "//" with a 301 to the cleaned path, which cy.request
# follows; so does this inbox (app.clean_path_redirect).
DOUBLE_SLASH_VIEWS = {'mailpitGetMailHTMlBody', 'mailpitGetMailTextBody'}


def _not_installed(reason: str) -> None:
    message = f'npm cypress-mailpit is not installed ({INSTALL}; Debian nodejs for npm): {reason}'
    if peers.IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope='module')
def node():
    node, npm = peers.program('node', 'nodejs'), peers.program('npm', 'nodejs')
    if not os.path.isdir(os.path.join(HARNESS, 'node_modules', 'cypress-mailpit')):
        done = subprocess.run([npm, 'ci', '--no-audit', '--no-fund', '--loglevel=error'],
                              cwd=HARNESS, timeout=180, capture_output=True, text=True)
        if done.returncode != 0:
            _not_installed(f'npm ci failed: {done.stderr.strip()[-500:]}')
    return node


@pytest.fixture(scope='module')
def run_every_command(node, tmp_path_factory):
    """The inbox as a process (basic auth on, a private spamd), two messages
    over SMTP, then every_command.mjs; a third message is sent when it waits.
    Returns its RESULT: {'registered': {name: kind}, 'checked': {name: what}}."""
    workdir = tmp_path_factory.mktemp('cypress-mailpit')
    spamd = PrivateSpamd(workdir)
    hashed = smtp_stack('hash-password', '--scheme', 'pbkdf2-sha256', cwd=workdir,
                        input='secret\n').stdout.strip()
    (workdir / 'web-users').write_text(f'tester:{hashed}\n')
    inbox = Process([sys.executable, '-m', 'smtp_stack', 'inbox', '--smtp', '127.0.0.1:0',
                     '--http', '127.0.0.1:0', '--db', 'inbox.db', '--ui-auth-file', 'web-users',
                     '--enable-spamassassin', spamd.address], workdir)
    harness = None
    try:
        started = inbox.wait_line(LINE.pattern, 'stdout')
        smtp, url = (started[1], int(started[2])), started[3].rstrip('/')
        send(smtp, make_mail(
            subject='Welcome Ann', sender='Shop <shop@example.com>',
            to='Ann <ann@example.com>, Ben <ben@example.com>',
            text='Hello Ann,\nwelcome aboard.\n', html='<p>Hello <b>Ann</b></p>',
            attachments=[('terms.pdf', 'application/pdf', b'%PDF-1.4 terms')]))
        send(smtp, subject=f'Offer {TEST_WORD}', to='bob@example.com')
        harness = Process([node, 'every_command.mjs', url, 'tester', 'secret', TEST_WORD],
                          HARNESS)
        harness.wait_line('^WAITING$', 'stdout', timeout=60)
        send(smtp, subject='Late arrival', to='late@example.com')
        line = harness.wait_line('^RESULT ', 'stdout', timeout=30).string
        assert harness.wait(20) == 0, harness.seen
    finally:
        if harness is not None:
            harness.close()
        inbox.close()
        spamd.stop()
    return json.loads(line[len('RESULT '):])


def test_the_package_registers_the_commands_we_run(run_every_command):
    registered = run_every_command['registered']
    assert set(registered) == set(EVERY_COMMAND)
    assert {name for name, kind in registered.items() if kind == 'child'} == CHILD_COMMANDS


def test_every_command_against_the_inbox(run_every_command):
    checked = run_every_command['checked']
    expected = {name: what for name, what in EVERY_COMMAND.items()
                if name not in DOUBLE_SLASH_VIEWS}
    assert {name: checked[name] for name in expected} == expected


def test_html_and_text_bodies_through_the_double_slash_path(run_every_command):
    checked = run_every_command['checked']
    assert {name: checked[name] for name in DOUBLE_SLASH_VIEWS} == {
        name: EVERY_COMMAND[name] for name in DOUBLE_SLASH_VIEWS}
