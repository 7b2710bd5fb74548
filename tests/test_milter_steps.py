"""A MilterServer asks the MTA only for the steps its chain needs
(smtp_stack/milter/steps.py): the plan from the declared stages and the
hooks, the negotiation it gives, and what a real Postfix then sends."""
import email
import logging
import smtplib

import pytest

from postfix_private import MtaClient, milter_address, milter_thread, private_postfix
from log_lines import kept_lines
from smtp_stack import LogLevels, SmtpError, policies
from smtp_stack.middleware import STAGES, stages, stages_of
from smtp_stack.milter import MilterServer
from smtp_stack.milter import protocol as P
from smtp_stack.milter import steps as S
from smtp_stack.options import Options
from smtp_stack.policies.authentication import Authenticate

POSTFIX_OFFER = 0x1FFFFF       # every SMFIP_* flag up to HDR_LEADSPC, SKIP included
EVERY_SKIP = (P.NOCONNECT | P.NOHELO | P.NOMAIL | P.NORCPT | P.NODATA | P.NOHDRS | P.NOEOH
              | P.NOBODY | P.NOUNKNOWN)


@stages()      # no step of its own: the DATA decision at the end reaches every middleware
def add_header(ctx, next):
    next()
    if ctx.command_name == 'DATA':
        ctx.session.envelope.add_header('X-Client', ctx.session.remote_address or '-')


@stages('DATA')
def reads_the_message(ctx, next):
    next()


@stages('RCPT')
def refuse_nobody(ctx, next):
    if ctx.command_name == 'RCPT' and ctx.address.address.startswith('nobody@'):
        raise SmtpError(550, 'No such user (declared RCPT)', '5.1.1')
    next()


def everything(ctx, next):
    next()


def flags_for(*middleware, offer=POSTFIX_OFFER, **hooks):
    plan = S.plan(S.needs_of(middleware), Options(**hooks), bool(offer & P.SKIP_OK))
    return S.negotiate(P.Negotiation(6, 0x1FF, offer), plan, {
        P.STAGE_CONNECT: '{client_addr}', P.STAGE_MAIL: 'i {auth_authen}',
        P.STAGE_RCPT: 'i', P.STAGE_EOM: 'i'})


# -- the declaration ------------------------------------------------------------------

def test_a_declaration_is_read_and_checked():
    assert stages_of(add_header) == frozenset()
    assert stages_of(reads_the_message) == {'DATA'}
    assert stages_of(everything) is None
    assert stages('rcpt', 'Mail')(everything) is everything
    assert stages_of(everything) == {'RCPT', 'MAIL'}
    del everything.stages
    with pytest.raises(ValueError, match='unknown stage CONECT'):
        stages('CONECT')
    server = MilterServer()

    class Odd:
        stages = frozenset({'EOM'})

        def __call__(self, ctx, next):
            next()
    with pytest.raises(ValueError, match='unknown stage EOM'):
        server.use(Odd())


def test_the_policies_declare_their_stages():
    assert stages_of(policies.Recipients) == {'RCPT'}
    assert stages_of(policies.Greylist) == {'MAIL', 'RCPT'}
    assert stages_of(policies.RateLimit) == {'MAIL', 'RCPT'}
    assert stages_of(policies.Dnsbl) == {'RCPT'}
    assert stages_of(Authenticate) >= {'MAIL', 'DATA', 'HEADER', 'BODY'}
    assert S.needs_of([refuse_nobody, add_header]) == {'RCPT'}
    # DATA is the message, as in SMTP: its header and its body come with it
    assert S.needs_of([refuse_nobody, reads_the_message]) == {'RCPT', 'DATA', 'HEADER', 'BODY'}
    assert S.needs_of([refuse_nobody, everything]) == STAGES


# -- the plan and the negotiation ---------------------------------------------------------

def test_a_chain_that_needs_the_end_of_the_message_asks_for_nothing_else():
    answer = flags_for(add_header)
    assert answer.protocol & EVERY_SKIP == EVERY_SKIP
    # the MTA sends a stage's macros even when it skips the stage's event
    assert dict(answer.macros) == {P.STAGE_CONNECT: '{client_addr}', P.STAGE_MAIL:
                                   'i {auth_authen}', P.STAGE_RCPT: 'i', P.STAGE_EOM: 'i'}


def test_a_declared_data_stage_asks_for_the_whole_message():
    answer = flags_for(reads_the_message)
    assert not answer.protocol & (P.NODATA | P.NOHDRS | P.NOEOH | P.NOBODY | P.NR_DATA)
    assert answer.protocol & P.NR_HDR and answer.protocol & P.NR_EOH
    assert answer.protocol & (P.NOCONNECT | P.NOHELO | P.NOMAIL | P.NORCPT) == (
        P.NOCONNECT | P.NOHELO | P.NOMAIL | P.NORCPT)


def test_a_declared_rcpt_step_is_answered():
    answer = flags_for(refuse_nobody, add_header)
    assert not answer.protocol & (P.NORCPT | P.NR_RCPT)
    assert answer.protocol & P.NOMAIL and answer.protocol & P.NOCONNECT


def test_hooks_ask_for_their_steps():
    answer = flags_for(add_header, on_connect=print, on_mail_from=print, on_data=print)
    assert not answer.protocol & (P.NOCONNECT | P.NR_CONN | P.NOMAIL | P.NODATA | P.NR_DATA)
    assert answer.protocol & P.NORCPT


@pytest.mark.parametrize('offer, body_flags', [
    (POSTFIX_OFFER, P.SKIP_OK),                     # chunks answered: SKIP possible
    (POSTFIX_OFFER & ~P.SKIP_OK, P.NR_BODY),        # no SKIP: chunks unanswered
], ids=['skip offered', 'no skip'])
def test_an_undeclared_middleware_gets_every_step(offer, body_flags):
    answer = flags_for(everything, offer=offer)
    assert answer.protocol & EVERY_SKIP == P.NOUNKNOWN
    # CONNECT unanswered without on_connect: nothing in the chain can refuse it
    assert answer.protocol & (P.NR_CONN | P.NR_HDR | P.NR_EOH) == P.NR_CONN | P.NR_HDR | P.NR_EOH
    assert not answer.protocol & (P.NR_HELO | P.NR_MAIL | P.NR_RCPT | P.NR_DATA)
    assert answer.protocol & (P.SKIP_OK | P.NR_BODY) == body_flags


# -- over loopback, packet by packet ---------------------------------------------------------

def test_without_connect_the_session_opens_from_the_macros_at_the_end():
    server = MilterServer(name='milter.test')
    server.use(add_header)
    with milter_thread(server):
        client = MtaClient(server)
        client.negotiate()
        client.send(P.command(P.MACRO, P.CONNECT, ['{client_addr}', '192.0.2.9']),
                    P.command(P.MACRO, P.EOB, ['i', 'QID1']), P.command(P.EOB, b''))
        inserted, verdict = client.reply(), client.reply()
        assert (inserted.command, verdict.command) == (P.INSHEADER, P.CONTINUE)
        assert P.read_reply(inserted) == [0, 'X-Client', ' 192.0.2.9']
        client.send(P.command(P.QUIT))
        assert client.reply() is None


def test_without_macro_lists_the_client_comes_from_the_underscore_macro():
    """Protocol 2 (Postfix milter_protocol = 2): no SMFIR_SETSYMLIST; the
    client is in `_`, Postfix's default connect macro."""
    server = MilterServer(name='milter.test')
    server.use(add_header)
    with milter_thread(server):
        client = MtaClient(server)
        client.negotiate(version=2, actions=0x3F, protocol=0x7F)
        client.send(P.command(P.MACRO, P.CONNECT, ['_', 'client.example [192.0.2.10]']),
                    P.command(P.EOB, b''))
        inserted, verdict = client.reply(), client.reply()
        assert P.read_reply(inserted) == [0, 'X-Client', '192.0.2.10']
        assert verdict.command == P.CONTINUE
        client.close()


@pytest.fixture
def trace():
    with kept_lines('smtp_stack.test_milter_steps') as lines:
        yield lines


@stages('DATA', 'HEADER', 'BODY')
def reads_the_start(ctx, next):
    next()
    if ctx.command_name == 'DATA':
        ctx.session.envelope.add_header('X-Start', ctx.data_stream.read(7).decode())


def test_the_rest_of_a_body_nobody_reads_is_skipped():
    server = MilterServer(name='milter.test')
    server.use(reads_the_start)
    with milter_thread(server):
        client = MtaClient(server)
        client.negotiate()
        client.send(P.command(P.DATA))
        assert client.reply().command == P.CONTINUE
        client.send(P.command(P.HEADER, 'Subject', ' big'), P.command(P.EOH),
                    P.command(P.BODY, b'x' * 60000))
        assert client.reply().command == P.SKIP        # the MTA sends no more chunks
        client.send(P.command(P.EOB, b''))
        inserted, verdict = client.reply(), client.reply()
        assert P.read_reply(inserted) == [0, 'X-Start', ' Subject']
        assert verdict.command == P.CONTINUE
        client.close()


def test_with_a_size_limit_the_body_is_read_to_its_end_and_counted():
    server = MilterServer(name='milter.test', size=1000)
    server.use(reads_the_start)
    with milter_thread(server):
        client = MtaClient(server)
        client.negotiate()
        client.send(P.command(P.DATA))
        assert client.reply().command == P.CONTINUE
        client.send(P.command(P.HEADER, 'Subject', ' big'), P.command(P.EOH),
                    P.command(P.BODY, b'x' * 600))
        assert client.reply().command == P.CONTINUE
        client.send(P.command(P.BODY, b'x' * 600))     # counted, past the size
        assert client.reply().command == P.CONTINUE
        client.send(P.command(P.EOB, b''))
        refusal = client.reply()
        assert refusal.command == P.REPLYCODE and P.read_reply(refusal)[0].startswith('552 ')
        client.close()


# -- behind a real Postfix ---------------------------------------------------------------------

SEEN = []


@stages('DATA')
def records(ctx, next):
    SEEN.append(ctx.command_name)
    next()


@pytest.fixture(scope='module')
def declared_postfix():
    server = MilterServer(name='milter.test', log_level=LogLevels.TRACE,
                          log_backend=logging.getLogger('smtp_stack.test_milter_steps'))
    for fn in (records, refuse_nobody, add_header, reads_the_start):
        server.use(fn)
    with milter_thread(server) as running, \
            private_postfix(milter_address(running)) as instance:
        yield instance


def test_postfix_sends_only_the_declared_steps(declared_postfix, trace):
    SEEN.clear()
    body = 'line\r\n' * 100000      # 600 kB: ten chunks, all but the first skipped
    with smtplib.SMTP('127.0.0.1', declared_postfix.smtp_port, timeout=30) as smtp:
        smtp.ehlo('client.example')
        smtp.mail('sender@example.org')
        code, text = smtp.rcpt('nobody@test.example')
        assert (code, text) == (550, b'5.1.1 No such user (declared RCPT)')
        assert smtp.rcpt('rcpt@test.example')[0] == 250
        smtp.data(f'Subject: declared\r\n\r\n{body}'.encode())
    found = declared_postfix.wait_for_messages(1)
    stored = email.message_from_bytes(found[0])
    assert stored['X-Client'] == '127.0.0.1' and stored['X-Start']
    assert stored.get_payload().count('line') == 100000   # Postfix keeps what it skipped
    assert 'MAIL' not in SEEN and 'EHLO' not in SEEN
    assert SEEN.count('RCPT') == 2 and SEEN.count('DATA') == 1
    sent = [line for line in trace.lines if ': MTA: ' in line]
    assert sum(': MTA: SMFIC_BODY ' in line for line in sent) == 1
    assert not any(kind in line for line in sent
                   for kind in ('SMFIC_CONNECT', 'SMFIC_HELO', 'SMFIC_MAIL'))
    assert any("milter: b'\\x00\\x00\\x00\\x01s'" in line for line in trace.lines)
