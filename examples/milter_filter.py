"""One middleware, two homes: an SMTP server of its own, or a milter inside Postfix.

    python examples/milter_filter.py milter --listen inet:127.0.0.1:8891
    python examples/milter_filter.py server --port 2525 --maildir ./maildir
    smtp-stack milter --config examples/milter.yaml      # the same, from YAML

Postfix's main.cf for the milter:

    smtpd_milters = inet:127.0.0.1:8891
    milter_default_action = tempfail

`content_filter` is ordinary middleware. It

- refuses recipients at `blocked.example` at RCPT (Postfix's client gets
  our 550 5.1.1 and its text);
- removes an `Authentication-Results` field that claims to be ours (a
  forgery, RFC 8601 5) and adds `X-Content-Filter` with what it saw;
- reads the body 64 KiB at a time from `envelope.spool()` (in memory up
  to 1 MiB, then a temporary file: a 50 MB message is never held whole,
  and a delivery after it still gets every byte), and refuses it at the
  end of DATA when it holds a blocked phrase.

Behind Postfix, the header changes become the milter's modification
requests at the end of the message; as a server, MaildirDelivery applies
them to the stored file.
"""
import argparse
import logging
import signal

import gevent

from smtp_stack import SmtpError, SmtpServer
from smtp_stack.delivery import MaildirDelivery
from smtp_stack.milter import MilterServer

AUTHSERV_ID = 'mx.example.com'
BLOCKED_PHRASES = (b'BUY NOW', b'WIRE THE MONEY')
BLOCKED_DOMAIN = 'blocked.example'
OVERLAP = max(len(phrase) for phrase in BLOCKED_PHRASES)


def content_filter(ctx, next):
    if ctx.command_name == 'RCPT' and ctx.address is not None \
            and ctx.address.address.lower().endswith('@' + BLOCKED_DOMAIN):
        raise SmtpError(550, f'Mail for {BLOCKED_DOMAIN} is not accepted here', '5.1.1')
    next()
    if ctx.command_name not in ('DATA', 'BDAT') or ctx.data_stream is None:
        return
    envelope = ctx.session.envelope
    envelope.remove_header('Authentication-Results',
                           lambda value: value.split(';', 1)[0].strip() == AUTHSERV_ID)
    size, tail = 0, b''
    with envelope.spool().open() as body:          # MessageRefused propagates: good
        while chunk := body.read(65536):
            size += len(chunk)
            window = tail + chunk.upper()
            if any(phrase in window for phrase in BLOCKED_PHRASES):
                raise SmtpError(554, 'Message content refused', '5.7.1')
            tail = window[-OVERLAP:]
    user = ctx.session.user or 'anonymous'
    envelope.add_header('X-Content-Filter', f'checked {size} bytes; user={user}')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest='home', required=True)
    as_milter = sub.add_parser('milter')
    as_milter.add_argument('--listen', default='inet:127.0.0.1:8891')
    as_server = sub.add_parser('server')
    as_server.add_argument('--host', default='127.0.0.1')
    as_server.add_argument('--port', type=int, default=2525)
    as_server.add_argument('--maildir', default='./maildir')
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(message)s')
    if args.home == 'milter':
        server = MilterServer(name=AUTHSERV_ID)
        server.use(content_filter)
        server.start(args.listen)
        print(f'milter listening on {server.address}', flush=True)
    else:
        server = SmtpServer(name=AUTHSERV_ID)
        server.use(MaildirDelivery(args.maildir))
        server.use(content_filter)
        server.start(args.port, args.host)
        host, port = server.address
        print(f'SMTP server listening on {host}:{port}', flush=True)
    gevent.signal_handler(signal.SIGTERM, server.stop)
    gevent.signal_handler(signal.SIGINT, server.stop)
    server.serve_forever()


if __name__ == '__main__':
    main()
