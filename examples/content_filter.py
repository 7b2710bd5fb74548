"""A content check and a delivery, composed: spool, score, add a header, store.

    python examples/content_filter.py --port 2525 --maildir ./maildir

The check needs the whole body before it can decide, and the delivery must
still get every byte, so the check reads the body through
`envelope.spool()`: the spool keeps it (in memory up to 1 MiB, then in a
temporary file) and the delivery reads it from there. The check

- refuses a message scoring 5 or more with 550 5.7.1 (nothing is stored);
- otherwise records its verdict with `envelope.add_header('X-Spam-Status')`,
  which the delivery puts on top of the stored message.

Registration order: the delivery first (the outermost: its code after
`next()` runs last, so it sees the check's verdict), then the check. A
body the server refuses (too big, bare line ends) raises MessageRefused
inside `spool()`; the check lets it propagate, so neither keeps it.
"""
import argparse
import logging
import re
import signal

import gevent

from smtp_stack import SmtpError, SmtpServer
from smtp_stack.delivery import MaildirDelivery

SPAMMY = re.compile(rb'viagra|lottery|wire transfer|act now', re.IGNORECASE)
THRESHOLD = 5


def spam_check(ctx, next):
    next()
    if ctx.command_name not in ('DATA', 'BDAT') or ctx.data_stream is None:
        return
    envelope = ctx.session.envelope
    score = 0
    with envelope.spool().open() as body:      # MessageRefused propagates: good
        for line in body:
            score += 2 * len(SPAMMY.findall(line))
    if score >= THRESHOLD:
        raise SmtpError(550, f'Message looks like spam (score {score})', '5.7.1')
    envelope.add_header('X-Spam-Status', f'No, score={score} required={THRESHOLD}')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=2525)
    parser.add_argument('--maildir', default='maildir')
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(name)s: %(message)s')

    server = SmtpServer(name='filter.localhost', disable_reverse_lookup=True,
                        size=10 * 1024 * 1024)
    server.use(MaildirDelivery(args.maildir))     # outermost: sees the check's verdict
    server.use(spam_check)
    server.start(args.port, args.host)
    host, port = server.address[:2]
    print(f'content_filter: listening on {host}:{port}; mail goes to {args.maildir}', flush=True)
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, server.stop)
    server.serve_forever()


if __name__ == '__main__':
    main()
