"""An LMTP server (RFC 2033) delivering into one Maildir per user.

    python examples/lmtp_server.py [--port 2424] [--root ./mail] [--user alice --user bob]

What an MTA such as Postfix hands its local mail to (`mailbox_transport =
lmtp:inet:127.0.0.1:2424`): LHLO instead of EHLO, unknown users refused at
RCPT (550 5.1.1), and after the final dot one reply per recipient, so a
full or broken mailbox fails that recipient alone.

Each user's mail goes to ROOT/<domain>/<user>/ (a Maildir); a message for
several users is written once and hard-linked into each.
"""
import argparse
import logging
import os
import signal

import gevent

from smtp_stack import SmtpError, SmtpServer
from smtp_stack.delivery import MaildirDelivery


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=2424)
    parser.add_argument('--root', default='mail', help='parent directory of the Maildirs')
    parser.add_argument('--user', action='append', default=[],
                        help='a local user (local@domain, or local for any domain)')
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(name)s: %(message)s')
    known = {u.lower() for u in args.user}

    def on_rcpt_to(session, address):
        local = address.address.lower().rpartition('@')[0]
        if known and address.address.lower() not in known and local not in known:
            raise SmtpError(550, f'No such user here: {address.address}', '5.1.1')

    server = SmtpServer(
        name='lmtp.localhost',
        lmtp=True,
        disabled_commands=['STARTTLS', 'AUTH'],
        disable_reverse_lookup=True,
        on_rcpt_to=on_rcpt_to,
    )
    store = server.use(MaildirDelivery(os.path.join(args.root, '{domain}', '{local}')))
    server.start(args.port, args.host)
    host, port = server.address[:2]
    print(f'lmtp_server: listening on {host}:{port}; mail goes to {store.path}', flush=True)
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, server.stop)
    server.serve_forever()


if __name__ == '__main__':
    main()
