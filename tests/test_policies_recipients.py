"""The recipients policy over real SMTP sessions, and its file of
addresses: read again when it changes, in the hub's thread pool."""
from __future__ import annotations

import pytest

from smtp_stack.policies import recipients

from policy_services import rcpt, serve  # noqa: F401 (fixtures)


def test_recipients_relay_denied_unknown_user_and_catch_all(serve):
    server = serve(recipients(domains=['catchall.test'], addresses=['alice@example.test']))
    assert rcpt(server, '192.0.2.5', 'a@x.test', 'alice@example.test')[0] == 250
    assert rcpt(server, '192.0.2.5', 'a@x.test', 'Alice+news@EXAMPLE.test')[0] == 250
    assert rcpt(server, '192.0.2.5', 'a@x.test', 'bob@example.test') == \
        (550, b'5.1.1 No such user here')
    assert rcpt(server, '192.0.2.5', 'a@x.test', 'anyone@catchall.test')[0] == 250
    assert rcpt(server, '192.0.2.5', 'a@x.test', 'x@elsewhere.test') == \
        (554, b'5.7.1 Relay access denied')


def test_recipients_lookup_and_authenticated_relay(serve):
    users = {'carol@lookup.test'}
    server = serve(recipients(domains=['lookup.test'], lookup=users.__contains__),
                   on_auth=lambda session: {'name': session.auth.username})
    assert rcpt(server, '192.0.2.5', 'a@x.test', 'carol@lookup.test')[0] == 250
    assert rcpt(server, '192.0.2.5', 'a@x.test', 'dave@lookup.test')[0] == 550
    # an authenticated client (XCLIENT LOGIN) may send anywhere
    assert rcpt(server, '192.0.2.5', 'a@x.test', 'x@elsewhere.test', login='carol')[0] == 250


def test_recipients_file_is_read_again_when_it_changes(serve, tmp_path):
    path = tmp_path / 'rcpts'
    path.write_text('# users\nerin@file.test\n')
    policy = recipients(addresses_file=str(path))
    server = serve(policy)
    assert rcpt(server, '192.0.2.5', 'a@x.test', 'erin@file.test')[0] == 250
    assert rcpt(server, '192.0.2.5', 'a@x.test', 'frank@file.test')[0] == 550
    path.write_text('erin@file.test\nfrank@file.test  # new\n')
    policy.file.reload()
    assert rcpt(server, '192.0.2.5', 'a@x.test', 'frank@file.test')[0] == 250


def test_recipients_needs_something_to_accept():
    with pytest.raises(ValueError):
        recipients()
