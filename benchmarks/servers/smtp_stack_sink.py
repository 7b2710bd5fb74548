"""smtp_stack as a benchmark sink, written against the public API (docs/api.md).

Everything a plain session pays for stays on: the middleware chain (with one
pass-through middleware), command parsing, and logging at INFO into a logger
whose handler drops every record (so records are made and handed to a
handler, as in production, but nothing is written). Reverse DNS is off, as
for every peer. The body is read to the end from ``data_stream`` by a
middleware after ``next()`` and thrown away.

Plain runs (a)-(d) disable STARTTLS and AUTH, as the peers do. With
``--tls`` (scenario e) it offers STARTTLS with the harness's certificate and
AUTH PLAIN only after TLS, and accepts any password.

With ``--maildir DIR`` (the durable scenarios) the body is not thrown away:
``MaildirDelivery(DIR)`` stores each message (write, fsync, rename into
new/, fsync of new/) before the 250, in place of the reading middleware.

With ``--policies`` (the MX scenarios) the client is trusted for XCLIENT
(``use_xclient=['127.0.0.1']``) and the inbound-MX policies named run after
the Maildir delivery, as docs/policies.md registers them: recipients
(bench.example), dnsbl (the run's zone), greylist (delay 1 s, so that the
client can pass its triplets before the measurement; the rest as shipped),
rate_limit (recipients per client address in an hour, a limit never
reached), authenticate (SPF, DKIM, DMARC, ARC; ``--no-dmarc-arc`` leaves
the last two out); Redis and DNS are the run's private redis-server
(``--redis``) and dnsmasq (``--dns``).
"""

import argparse
import os
import logging
import sys


class DiscardHandler(logging.Handler):
    """A handler that receives every record and writes nothing."""

    def emit(self, record):
        pass


def passthrough(ctx, next):
    next()


def read_body(ctx, next):
    next()
    if ctx.command_name in ('DATA', 'BDAT'):
        stream = ctx.session.envelope.data_stream
        if stream is not None:
            while stream.read(65536):
                pass


MX_POLICIES = ('recipients', 'dnsbl', 'greylist', 'rate_limit', 'authenticate')


def mx_policies(args):
    """The middleware of the MX scenarios' policies, in MX_POLICIES order."""
    names = [n.strip() for n in args.policies.split(',') if n.strip() not in ('', 'none')]
    unknown = set(names) - set(MX_POLICIES)
    if unknown:
        raise SystemExit(f'unknown policies: {", ".join(sorted(unknown))}')
    if not names:
        return []
    from smtp_stack import policies
    host, _, port = (args.dns or '127.0.0.1:53').rpartition(':')
    dns = policies.Resolver([host], port=int(port), timeout=2.0)
    state = policies.store(f'redis://{args.redis or "127.0.0.1:6379"}/0')
    made = {
        'recipients': lambda: policies.recipients(domains=['bench.example']),
        'dnsbl': lambda: policies.dnsbl(['bl.bench.example'], resolver=dns),
        'greylist': lambda: policies.greylist(delay=1, store=state),
        'rate_limit': lambda: policies.rate_limit(recipients=10**9, per=3600, store=state),
        'authenticate': lambda: policies.authenticate(
            dmarc=not args.no_dmarc_arc, arc=not args.no_dmarc_arc, resolver=dns),
    }
    return [made[name]() for name in MX_POLICIES if name in names]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--host', default='127.0.0.1')
    p.add_argument('--port', type=int, required=True)
    p.add_argument('--size', type=int, default=100 * 1024 * 1024)
    p.add_argument('--backlog', type=int, default=1024)
    p.add_argument('--workers', type=int, default=1)
    p.add_argument('--bare', action='store_true',
                   help='no middleware and no logging: the engine alone, to tell what they cost')
    p.add_argument('--tree', help='import smtp_stack from this checkout (an A/B in one run)')
    p.add_argument('--maildir', help='store every message in this Maildir (durable scenarios)')
    p.add_argument('--policies', default='',
                   help='MX scenarios: comma-separated policies (recipients, dnsbl, greylist, '
                        'rate_limit, authenticate), or "none" for XCLIENT alone')
    p.add_argument('--no-dmarc-arc', action='store_true',
                   help='authenticate checks SPF and DKIM only')
    p.add_argument('--redis', help='HOST:PORT of the Redis server of greylist and rate_limit')
    p.add_argument('--dns', help='HOST:PORT of the DNS server of dnsbl and authenticate')
    p.add_argument('--tls', action='store_true')
    p.add_argument('--key')
    p.add_argument('--cert')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.tree:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from benchlib.checkout import use_checkout
        use_checkout(args.tree)
    try:
        from smtp_stack import LogLevels, SmtpServer
    except Exception as exc:   # the core may not have landed yet
        print(f'smtp_stack_sink: cannot import smtp_stack: {exc!r}', file=sys.stderr)
        return 3

    logger = logging.getLogger('smtp_stack.benchmark_sink')
    logger.handlers[:] = [DiscardHandler()]
    logger.setLevel(logging.INFO)
    logger.propagate = False

    options = dict(
        name='bench.example',
        disable_reverse_lookup=True,
        size=args.size,
        log_level=LogLevels.SILENT if args.bare else LogLevels.INFO,
        log_backend=logger,
    )
    if args.workers != 1:        # only passed when asked: workers may be new
        options['workers'] = args.workers
    from smtp_stack.options import OPTIONS
    if 'max_messages' in OPTIONS:
        # A limit, not a feature on the hot path: smtp-source -d sends as
        # many messages per session as it can (over 1,000 in (a) for the
        # fastest sessions), and no peer has such a limit.
        options['max_messages'] = 0
    if args.tls:
        with open(args.key, 'rb') as f:
            key = f.read()
        with open(args.cert, 'rb') as f:
            cert = f.read()
        options.update(
            key=key, cert=cert,
            auth_methods=['PLAIN'],
            allow_insecure_auth=False,
            on_auth=lambda session: {'name': session.auth.username},
        )
    else:
        options['disabled_commands'] = ['STARTTLS', 'AUTH']

    if args.policies:
        options['use_xclient'] = ['127.0.0.1']
    server = SmtpServer(**options)
    if args.maildir:
        from smtp_stack.delivery import MaildirDelivery
        server.use(passthrough)
        server.use(MaildirDelivery(args.maildir, hostname='bench.example'))
        for policy in mx_policies(args):
            server.use(policy)
    elif not args.bare:
        server.use(passthrough)
        server.use(read_body)
    server.start(args.port, args.host, backlog=args.backlog)
    server.serve_forever()
    return 0


if __name__ == '__main__':
    sys.exit(main())
