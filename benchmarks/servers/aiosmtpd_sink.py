"""aiosmtpd as a benchmark sink: asyncio's default loop, or uvloop.

aiosmtpd reads the whole body into ``envelope.content`` before it calls
``handle_DATA``; the handler drops it and answers 250. No reverse DNS (aiosmtpd
does none), a fixed host name (so no getfqdn at start). With ``--tls``
(scenario e): STARTTLS with the harness's certificate, AUTH PLAIN only after
TLS, any password accepted.

With ``--maildir DIR`` (the durable scenarios) the handler stores each
message before its 250, with the same guarantee as smtp_stack's Maildir
delivery: the layout and unique names of ``mailbox.Maildir``, the file
written and fsync'd in tmp/, renamed into new/, and new/ fsync'd. The disk
work runs in the loop's default executor (threads), so one session's fsync
does not stall the others: what an aiosmtpd user who wants durability and
concurrency would write.
"""

import argparse
import asyncio
import mailbox
import os
import signal
import ssl
import sys

from aiosmtpd.smtp import SMTP, AuthResult


class DiscardHandler:
    async def handle_DATA(self, server, session, envelope):
        envelope.content = envelope.original_content = None
        return '250 OK'


class MaildirHandler:
    def __init__(self, path):
        self.box = mailbox.Maildir(path, create=True)
        self.new = os.path.join(path, 'new')

    def store(self, content):
        for attempt in range(5):        # a clash of two threads' names: try again
            try:
                tmp = self.box._create_tmp()    # mailbox's unique name, O_EXCL in tmp/
                break
            except mailbox.ExternalClashError:
                if attempt == 4:
                    raise
        try:
            tmp.write(content)
            tmp.flush()
            os.fsync(tmp.fileno())
        finally:
            tmp.close()
        os.rename(tmp.name, os.path.join(self.new, os.path.basename(tmp.name)))
        fd = os.open(self.new, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    async def handle_DATA(self, server, session, envelope):
        content, envelope.content = envelope.original_content, None
        envelope.original_content = None
        await asyncio.get_running_loop().run_in_executor(None, self.store, content)
        return '250 OK'


def accept_any(server, session, envelope, mechanism, auth_data):
    return AuthResult(success=True)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--host', default='127.0.0.1')
    p.add_argument('--port', type=int, required=True)
    p.add_argument('--size', type=int, default=100 * 1024 * 1024)
    p.add_argument('--backlog', type=int, default=1024)
    p.add_argument('--uvloop', action='store_true')
    p.add_argument('--maildir', help='store every message in this Maildir (durable scenarios)')
    p.add_argument('--tls', action='store_true')
    p.add_argument('--key')
    p.add_argument('--cert')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.uvloop:
        import uvloop
        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    handler = MaildirHandler(args.maildir) if args.maildir else DiscardHandler()
    options = dict(hostname='bench.example', data_size_limit=args.size,
                   enable_SMTPUTF8=True, loop=loop)
    if args.tls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)
        options.update(tls_context=context, require_starttls=True,
                       auth_require_tls=True, authenticator=accept_any,
                       auth_exclude_mechanism=['LOGIN'])

    server = loop.run_until_complete(loop.create_server(
        lambda: SMTP(handler, **options), args.host, args.port,
        backlog=args.backlog))
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    loop.add_signal_handler(signal.SIGINT, loop.stop)
    try:
        loop.run_forever()
    finally:
        server.close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
