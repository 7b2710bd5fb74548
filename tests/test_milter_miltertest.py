"""MilterServer judged by miltertest (OpenDKIM's libmilter test driver, the
Debian package miltertest): Lua scripts play the MTA and check each reply
and the end-of-message requests."""
import subprocess

import pytest

import peers
from postfix_private import milter_thread
from smtp_stack import SmtpError
from smtp_stack.milter import MilterServer


def policy(ctx, next):
    if ctx.command_name == 'RCPT' and ctx.address.address.startswith('nobody@'):
        raise SmtpError(550, 'No such user', '5.1.1')
    if ctx.command_name == 'MAIL' and ctx.address.address.startswith('later@'):
        raise SmtpError(451, 'Try again later', '4.7.1')
    next()
    if ctx.command_name != 'DATA':
        return
    envelope = ctx.session.envelope
    body = ctx.data_stream.read()
    if b'spam' in body:
        raise SmtpError(554, 'Spam', '5.7.1')
    envelope.add_header('X-Checked', f'by smtp_stack for {ctx.session.milter.queue_id}')
    envelope.remove_header('X-Forged')
    if b'rewrite' in body:
        envelope.replace_body(b'rewritten\r\n')
        envelope.rcpt_to.append(type(envelope.rcpt_to[0])('copy@example.org', {}))
        del envelope.rcpt_to[0]
        envelope.quarantine('held for review')
    if b'drop' in body:
        envelope.drop('unwanted')


@pytest.fixture(scope='module')
def milter():
    server = MilterServer(name='milter.test')
    server.use(policy)
    with milter_thread(server) as running:
        yield running


PROLOGUE = """
local conn = mt.connect("inet:{port}@127.0.0.1", 10, 0.1)
if conn == nil then error("mt.connect() failed") end
local function expect(what, reply)
    if mt.getreply(conn) ~= reply then
        error(what .. ": unexpected reply " .. tostring(mt.getreply(conn)))
    end
end
if mt.conninfo(conn, "client.example", "192.0.2.7") ~= nil then error("conninfo") end
expect("connect", SMFIR_CONTINUE)
if mt.helo(conn, "client.example") ~= nil then error("helo") end
expect("helo", SMFIR_CONTINUE)
"""

SCRIPTS = {
    'refusals': """
mt.macro(conn, SMFIC_MAIL, "i", "QID1")
if mt.mailfrom(conn, "later@example.org") ~= nil then error("mail") end
expect("mail later", SMFIR_REPLYCODE)
mt.abort(conn)
if mt.mailfrom(conn, "sender@example.org", "SIZE=10") ~= nil then error("mail") end
expect("mail", SMFIR_CONTINUE)
if mt.rcptto(conn, "nobody@example.org") ~= nil then error("rcpt") end
expect("rcpt nobody", SMFIR_REPLYCODE)
if mt.rcptto(conn, "rcpt@example.org") ~= nil then error("rcpt") end
expect("rcpt", SMFIR_CONTINUE)
if mt.data(conn) ~= nil then error("data") end
expect("data", SMFIR_CONTINUE)
if mt.header(conn, "Subject", "offer") ~= nil then error("header") end
if mt.eoh(conn) ~= nil then error("eoh") end
if mt.bodystring(conn, "this is spam\\r\\n") ~= nil then error("body") end
if mt.eom(conn) ~= nil then error("eom") end
expect("eom", SMFIR_REPLYCODE)
mt.disconnect(conn)
""",
    'changes': """
mt.macro(conn, SMFIC_MAIL, "i", "QID2")
if mt.mailfrom(conn, "sender@example.org") ~= nil then error("mail") end
expect("mail", SMFIR_CONTINUE)
if mt.rcptto(conn, "rcpt@example.org") ~= nil then error("rcpt") end
expect("rcpt", SMFIR_CONTINUE)
if mt.header(conn, "X-Forged", "yes") ~= nil then error("header") end
if mt.header(conn, "Subject", "please rewrite") ~= nil then error("header") end
if mt.eoh(conn) ~= nil then error("eoh") end
if mt.bodystring(conn, "rewrite me\\r\\n") ~= nil then error("body") end
if mt.eom(conn) ~= nil then error("eom") end
expect("eom", SMFIR_CONTINUE)
if not mt.eom_check(conn, MT_HDRINSERT, "X-Checked") then error("no X-Checked") end
if not mt.eom_check(conn, MT_HDRDELETE, "X-Forged") then error("X-Forged kept") end
if not mt.eom_check(conn, MT_BODYCHANGE, "rewritten\\r\\n") then error("body kept") end
if not mt.eom_check(conn, MT_RCPTADD, "<copy@example.org>") then error("no rcpt added") end
-- deleted as the MTA sent it (here without angle brackets: libmilter smfi_delrcpt)
if not mt.eom_check(conn, MT_RCPTDELETE, "rcpt@example.org") then error("rcpt kept") end
if not mt.eom_check(conn, MT_QUARANTINE, "held for review") then error("no quarantine") end
mt.disconnect(conn)
""",
    'discard': """
if mt.mailfrom(conn, "sender@example.org") ~= nil then error("mail") end
expect("mail", SMFIR_CONTINUE)
if mt.rcptto(conn, "rcpt@example.org") ~= nil then error("rcpt") end
expect("rcpt", SMFIR_CONTINUE)
if mt.header(conn, "Subject", "x") ~= nil then error("header") end
if mt.bodystring(conn, "drop this\\r\\n") ~= nil then error("body") end
if mt.eom(conn) ~= nil then error("eom") end
expect("eom", SMFIR_DISCARD)
mt.disconnect(conn)
""",
}


@pytest.mark.parametrize('name', sorted(SCRIPTS))
def test_miltertest_script(milter, tmp_path, name):
    miltertest = peers.program('miltertest', 'miltertest')
    script = tmp_path / f'{name}.lua'
    script.write_text(PROLOGUE.format(port=milter.address[1]) + SCRIPTS[name])
    done = subprocess.run([miltertest, '-s', str(script)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
