"""A mail receiver that stores every accepted message in a Maildir.

    python examples/maildir_receiver.py [--host 127.0.0.1] [--port 2525] [--maildir ./maildir]

Each message gets a Return-Path and a Received header and is on disk
(tmp/ -> new/, fsync'ed) before the client hears 250. Read the mail with
mutt (`mutt -f ./maildir`) or Python's `mailbox.Maildir('./maildir')`.
SIGTERM or Ctrl-C stops it gracefully.
"""
import argparse
import logging
import signal

import gevent

from smtp_stack import SmtpServer
from smtp_stack.delivery import MaildirDelivery


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=2525)
    parser.add_argument('--maildir', default='maildir')
    parser.add_argument('--name', default='localhost', help='our host name (greeting, Received)')
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(name)s: %(message)s')

    server = SmtpServer(
        name=args.name,
        size=25 * 1024 * 1024,
        disabled_commands=['STARTTLS'],     # a local receiver; see docs/tls-and-auth.md
        disable_reverse_lookup=True,
    )
    store = server.use(MaildirDelivery(args.maildir))
    server.start(args.port, args.host)
    host, port = server.address[:2]
    print(f'maildir_receiver: listening on {host}:{port}; mail goes to {store.path}', flush=True)

    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, server.stop)
    server.serve_forever()


if __name__ == '__main__':
    main()
