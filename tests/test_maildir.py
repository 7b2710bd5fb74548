"""Maildir delivery: durable, complete, never half a message, never litter."""
import errno
import mailbox
import os
import smtplib
import threading

import pytest

from smtp_stack import SmtpError
from smtp_stack.delivery import MaildirDelivery

from conftest import WAIT

MESSAGE = (b'From: a@b.example\r\nTo: c@d.example\r\nSubject: hello\r\n\r\n'
           b'first line\r\n.leading dot\r\n..two dots\r\nlast\r\n')


def files(maildir, sub):
    path = os.path.join(maildir, sub)
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


def closed_event():
    """An on_close hook and the event it sets: the server has finished the session."""
    done = threading.Event()
    return done, (lambda session: done.set())


def send(server, body=MESSAGE, rcpt=('c@d.example',), sender='a@b.example'):
    with smtplib.SMTP(*server.address, timeout=WAIT) as c:
        return c.sendmail(sender, list(rcpt), body)


def test_message_lands_in_new_and_parses_back(serve, tmp_path):
    box = str(tmp_path / 'mail')
    server = serve(middleware=[MaildirDelivery(box)])
    send(server)
    assert files(box, 'tmp') == [] and files(box, 'cur') == []
    [name] = files(box, 'new')
    assert ',S=' in name
    messages = list(mailbox.Maildir(box, create=False))
    assert len(messages) == 1
    msg = messages[0]
    assert msg['Subject'] == 'hello'
    assert msg['Return-Path'] == '<a@b.example>'
    received = ' '.join(msg['Received'].split())
    assert received.startswith('from ')
    assert '[127.0.0.1])' in received
    assert ' by mx.test with ESMTP id ' in received
    assert ' for <c@d.example>; ' in received
    assert msg.get_payload() == 'first line\n.leading dot\n..two dots\nlast\n'


def test_file_has_lf_line_ends_and_the_exact_body(serve, client, tmp_path):
    box = str(tmp_path / 'mail')
    c = client(serve(middleware=[MaildirDelivery(box)]))
    c.expect(250, 'EHLO client.example')
    c.expect(250, 'MAIL FROM:<>')
    c.expect(250, 'RCPT TO:<c@d.example>')
    c.expect(354, 'DATA')
    c.send(b'Subject: x\r\n\r\n..dot\r\n' + b'y' * 200000 + b'\r\n.\r\n')
    code, text = c.reply()
    assert code == 250 and 'queued as' in text
    [name] = files(box, 'new')
    data = open(os.path.join(box, 'new', name), 'rb').read()
    assert b'\r' not in data
    assert data.startswith(b'Return-Path: <>\nReceived: from client.example ([127.0.0.1])\n\tby mx.test')
    assert data.endswith(b'>; ' + data.split(b'>; ', 1)[1].split(b'\n', 1)[0]
                         + b'\nSubject: x\n\n.dot\n' + b'y' * 200000 + b'\n')


def test_several_messages_get_several_files(serve, tmp_path):
    box = str(tmp_path / 'mail')
    server = serve(middleware=[MaildirDelivery(box)])
    with smtplib.SMTP(*server.address, timeout=WAIT) as c:
        for _ in range(3):
            c.sendmail('a@b.example', ['c@d.example'], MESSAGE)
    assert len(files(box, 'new')) == 3


def test_tmp_replaced_by_a_file_gives_451_never_250(serve, tmp_path):
    box = str(tmp_path / 'mail')
    server = serve(middleware=[MaildirDelivery(box)])
    os.rmdir(os.path.join(box, 'tmp'))
    open(os.path.join(box, 'tmp'), 'w').close()
    with pytest.raises(smtplib.SMTPDataError) as err:
        send(server)
    assert err.value.smtp_code == 451
    assert files(box, 'new') == []


def test_fsync_failure_gives_452_and_leaves_nothing(serve, tmp_path, monkeypatch):
    box = str(tmp_path / 'mail')
    server = serve(middleware=[MaildirDelivery(box)])

    def no_space(fd):
        raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(os, 'fsync', no_space)
    with pytest.raises(smtplib.SMTPDataError) as err:
        send(server)
    assert err.value.smtp_code == 452
    assert files(box, 'new') == [] and files(box, 'tmp') == []


def test_directory_fsync_failure_takes_the_message_back(serve, tmp_path, monkeypatch):
    """The 250 waits for the fsync of new/: if that fails, so does the reply."""
    box = str(tmp_path / 'mail')
    server = serve(middleware=[MaildirDelivery(box)])
    real_fsync = os.fsync

    def fail_on_directories(fd):
        import stat
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EIO, 'I/O error')
        real_fsync(fd)
    monkeypatch.setattr(os, 'fsync', fail_on_directories)
    with pytest.raises(smtplib.SMTPDataError) as err:
        send(server)
    assert err.value.smtp_code == 451
    assert files(box, 'new') == [] and files(box, 'tmp') == []


def test_client_disconnecting_mid_data_leaves_no_litter(serve, client, tmp_path):
    box = str(tmp_path / 'mail')
    done, on_close = closed_event()
    c = client(serve(middleware=[MaildirDelivery(box)], on_close=on_close))
    c.expect(250, 'EHLO x')
    c.expect(250, 'MAIL FROM:<a@b.example>')
    c.expect(250, 'RCPT TO:<c@d.example>')
    c.expect(354, 'DATA')
    c.send(b'Subject: half\r\n\r\n' + b'z' * 100000)
    c.close()
    assert done.wait(WAIT)
    assert files(box, 'new') == [] and files(box, 'tmp') == []


@pytest.mark.parametrize('options, body, code', [
    ({'size': 1000}, b'x' * 5000 + b'\r\n', 552),
    ({}, b'bare\nnewline\r\n', 554),
])
def test_refused_bodies_are_not_stored(serve, client, tmp_path, options, body, code):
    box = str(tmp_path / 'mail')
    c = client(serve(middleware=[MaildirDelivery(box)], **options))
    c.expect(250, 'EHLO x')
    c.expect(250, 'MAIL FROM:<a@b.example>')
    c.expect(250, 'RCPT TO:<c@d.example>')
    c.expect(354, 'DATA')
    c.send(body + b'.\r\n')
    assert c.reply()[0] == code
    assert files(box, 'new') == [] and files(box, 'tmp') == []
    assert c.cmd('NOOP')[0] == 250


def test_a_refusal_by_inner_middleware_is_respected(serve, tmp_path):
    box = str(tmp_path / 'mail')

    def refuse(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            ctx.send(550, 'No thanks')
    server = serve(middleware=[MaildirDelivery(box), refuse])
    with pytest.raises(smtplib.SMTPDataError) as err:
        send(server)
    assert err.value.smtp_code == 550
    assert files(box, 'new') == [] and files(box, 'tmp') == []


def test_a_body_read_by_someone_else_is_refused_not_truncated(serve, tmp_path):
    box = str(tmp_path / 'mail')

    def peek(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            ctx.data_stream.readline()
    server = serve(middleware=[MaildirDelivery(box), peek])
    with pytest.raises(smtplib.SMTPDataError) as err:
        send(server)
    assert err.value.smtp_code == 451
    assert files(box, 'new') == []


def test_inspect_can_refuse_on_content(serve, tmp_path):
    box = str(tmp_path / 'mail')

    def no_viruses(ctx, chunk):
        if b'EICAR' in chunk:
            raise SmtpError(554, 'Infected', '5.7.1')
    server = serve(middleware=[MaildirDelivery(box, inspect=no_viruses)])
    with pytest.raises(smtplib.SMTPDataError) as err:
        send(server, MESSAGE + b'EICAR\r\n')
    assert err.value.smtp_code == 554
    assert files(box, 'new') == [] and files(box, 'tmp') == []
    send(server)
    assert len(files(box, 'new')) == 1


def test_per_recipient_maildirs_share_one_copy(serve, tmp_path):
    template = str(tmp_path / '{domain}' / '{local}')
    server = serve(middleware=[MaildirDelivery(template)])
    send(server, rcpt=['Ann@D.example', 'bob@d.example', 'cy@e.example'])
    names = [files(str(tmp_path / d / u), 'new') for d, u in
             [('d.example', 'ann'), ('d.example', 'bob'), ('e.example', 'cy')]]
    assert all(len(n) == 1 for n in names)
    stat = [os.stat(str(tmp_path / d / u / 'new' / n[0])) for (d, u), n in
            zip([('d.example', 'ann'), ('d.example', 'bob'), ('e.example', 'cy')], names, strict=True)]
    assert stat[0].st_ino == stat[1].st_ino == stat[2].st_ino    # hard links
    assert 'for <' not in open(str(tmp_path / 'e.example' / 'cy' / 'new' / names[2][0])).read()


def test_lmtp_gives_each_recipient_its_own_reply(serve, client, tmp_path):
    template = str(tmp_path / '{local}')
    (tmp_path / 'broken').write_text('a file where a Maildir should be')
    c = client(serve(lmtp=True, middleware=[MaildirDelivery(template)]))
    c.expect(250, 'LHLO x')
    c.expect(250, 'MAIL FROM:<a@b.example>')
    c.expect(250, 'RCPT TO:<good@d.example>')
    c.expect(250, 'RCPT TO:<broken@d.example>')
    c.expect(250, 'RCPT TO:<other@d.example>')
    c.expect(354, 'DATA')
    c.send(MESSAGE + b'.\r\n')
    assert [c.reply()[0] for _ in range(3)] == [250, 451, 250]
    assert len(files(str(tmp_path / 'good'), 'new')) == 1
    assert len(files(str(tmp_path / 'other'), 'new')) == 1


def test_over_smtp_one_failed_target_undoes_the_others(serve, tmp_path):
    template = str(tmp_path / '{local}')
    (tmp_path / 'broken').write_text('a file where a Maildir should be')
    server = serve(middleware=[MaildirDelivery(template)])
    with pytest.raises(smtplib.SMTPDataError) as err:
        send(server, rcpt=['good@d.example', 'broken@d.example'])
    assert err.value.smtp_code == 451
    assert files(str(tmp_path / 'good'), 'new') == []
    assert files(str(tmp_path / 'good'), 'tmp') == []


def test_a_maildir_under_a_regular_file_fails_at_construction(tmp_path):
    (tmp_path / 'file').write_text('x')
    with pytest.raises(OSError):
        MaildirDelivery(str(tmp_path / 'file' / 'mail'))


def test_bdat_chunks_are_stored_as_one_message(serve, client, tmp_path):
    box = str(tmp_path / 'mail')
    c = client(serve(middleware=[MaildirDelivery(box)]))
    c.expect(250, 'EHLO x')
    c.expect(250, 'MAIL FROM:<a@b.example>')
    c.expect(250, 'RCPT TO:<c@d.example>')
    first, last = b'Subject: chunks\r\n\r\n.one\r\n', b'two\r\n'
    c.send(b'BDAT %d\r\n' % len(first) + first)
    assert c.reply()[0] == 250
    c.send(b'BDAT %d LAST\r\n' % len(last) + last)
    code, text = c.reply()
    assert code == 250 and 'queued as' in text
    [msg] = mailbox.Maildir(box, create=False)
    assert msg.get_payload() == '.one\ntwo\n'       # BDAT is not dot-stuffed


def test_binarymime_is_stored_byte_for_byte(serve, client, tmp_path):
    box = str(tmp_path / 'mail')
    c = client(serve(middleware=[MaildirDelivery(box)]))
    c.expect(250, 'EHLO x')
    c.expect(250, 'MAIL FROM:<a@b.example> BODY=BINARYMIME')
    c.expect(250, 'RCPT TO:<c@d.example>')
    body = b'Content-Transfer-Encoding: binary\r\n\r\n\x00\r\n\xff\r'
    c.send(b'BDAT %d LAST\r\n' % len(body) + body)
    assert c.reply()[0] == 250
    [name] = files(box, 'new')
    data = open(os.path.join(box, 'new', name), 'rb').read()
    assert data.endswith(b'>; ' + data.split(b'>; ', 1)[1].split(b'\r\n', 1)[0] + b'\r\n' + body)
