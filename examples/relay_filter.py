"""A content filter in front of (or behind) Postfix: check, then relay.

    python examples/relay_filter.py --port 10025 --upstream 127.0.0.1:10026 \
        --domain example.com --domain example.org

- RCPT: only recipients in the given domains (else 550 5.1.2);
- DATA: the body streams straight to the upstream as it arrives; a message
  containing the EICAR test string is refused with 554 after the final dot
  (the upstream never gets the final dot, so it discards its copy);
- everything else is the upstream's verdict, relayed back; the original
  client is passed on with XFORWARD when the upstream offers it (Postfix
  does once `smtpd_authorized_xforward_hosts` lists us).

As a Postfix after-queue filter (master.cf):
    smtp-filter unix - - n - 10 smtp
        -o smtp_send_xforward_command=yes
    127.0.0.1:10026 inet n - n - - smtpd
        -o content_filter= -o smtpd_authorized_xforward_hosts=127.0.0.0/8
and `content_filter = smtp-filter:[127.0.0.1]:10025` in main.cf.
"""
import argparse
import logging
import signal

import gevent

from smtp_stack import SmtpError, SmtpServer
from smtp_stack.delivery import RelayDelivery

EICAR = b'X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*'


def recipient_policy(domains):
    def on_rcpt_to(session, address):
        domain = address.address.rpartition('@')[2].lower()
        if domain not in domains:
            raise SmtpError(550, f'Relay access denied for {domain or "that address"}', '5.1.2')
    return on_rcpt_to


def eicar_scanner(ctx, chunk):
    """`inspect` callback: sees each piece of the body as it streams through.

    A pattern may straddle two pieces, so the tail of the previous piece
    (kept on the DATA command's ctx) is searched together with the next one.
    """
    window = getattr(ctx, 'scan_tail', b'') + chunk
    if EICAR in window:
        raise SmtpError(554, 'Message refused: it carries the EICAR test virus', '5.7.1')
    ctx.scan_tail = window[-len(EICAR):]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=10025)
    parser.add_argument('--upstream', default='127.0.0.1:10026', help='HOST:PORT to relay to')
    parser.add_argument('--domain', action='append', default=[], help='accepted recipient domain')
    parser.add_argument('--lmtp', action='store_true', help='the upstream speaks LMTP')
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(name)s: %(message)s')

    upstream_host, _, upstream_port = args.upstream.rpartition(':')
    relay = RelayDelivery(upstream_host, int(upstream_port), lmtp=args.lmtp,
                          xforward=True, inspect=eicar_scanner)
    server = SmtpServer(
        name='filter.localhost',
        disabled_commands=['STARTTLS', 'AUTH'],
        disable_reverse_lookup=True,
        on_rcpt_to=recipient_policy({d.lower() for d in args.domain}),
    )
    server.use(relay)      # a component: it hangs up upstream when the client leaves
    server.start(args.port, args.host)
    host, port = server.address[:2]
    print(f'relay_filter: listening on {host}:{port}; mail goes to {relay.describe()}', flush=True)
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, server.stop)
    server.serve_forever()


if __name__ == '__main__':
    main()
