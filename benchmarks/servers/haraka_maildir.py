"""Haraka for the durable and MX scenarios: a service directory made under
/tmp/bench-haraka-PORT (Haraka's default configuration, with smtp.ini
listening on 127.0.0.1:PORT, one process, logging at WARN; plugins
rcpt_to.in_host_list for bench.example and
haraka/durable_maildir.js, which stores each message in the Maildir with
write, fsync, rename and an fsync of new/ before the 250), then Haraka from
benchmarks/node/node_modules runs in the foreground in this process.

    python benchmarks/servers/haraka_maildir.py --port 2525 --maildir DIR

With ``--mx`` (the MX scenarios) the plugins are Haraka's stock ones, in
this order: xclient (127.0.0.1 is trusted by the plugin itself), dns-list
(the run's DNSBL zone only), rcpt_to.in_host_list, greylist (Redis; the
black period 1 s so that the client can pass its triplets before the
measurement, the rest as shipped), limit (rate_rcpt_host: recipients per
client address in an hour, a limit never reached; stock limit.ini enables
no limit at all), spf, dkim (verify, as shipped), then the same queue
plugin. ``--mx none`` keeps xclient, rcpt_to.in_host_list and the queue
plugin only. Redis is ``--redis``; DNS is ``--dns``, which Node's resolvers
are pointed at by haraka/bench_dns.js (loaded with ``--require``: the
plugins' resolvers read /etc/resolv.conf, which has no port). The queue
plugin answers Haraka's reverse-DNS hook with 'Unknown' there (no rDNS, as
smtp_stack runs: the client says NAME=[UNAVAILABLE]).
"""

import argparse
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
HARAKA = os.path.join(os.path.dirname(HERE), 'node', 'node_modules', 'Haraka', 'bin', 'haraka')


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--host', default='127.0.0.1')
    p.add_argument('--port', type=int, required=True)
    p.add_argument('--maildir', required=True)
    p.add_argument('--size', type=int, default=100 * 1024 * 1024)
    p.add_argument('--backlog', type=int, default=1024)
    p.add_argument('--mx', choices=('all', 'none'),
                   help='MX scenarios: the policy plugins (all) or none of them')
    p.add_argument('--redis', default='127.0.0.1:6379', help='HOST:PORT of Redis (--mx)')
    p.add_argument('--dns', default='127.0.0.1:53', help='HOST:PORT of the DNS server (--mx)')
    args = p.parse_args(argv)
    root = f'/tmp/bench-haraka-{args.port}'
    shutil.rmtree(root, ignore_errors=True)
    config, plugins = os.path.join(root, 'config'), os.path.join(root, 'plugins')
    shutil.copytree(os.path.join(os.path.dirname(os.path.dirname(HARAKA)), 'config'), config)
    os.makedirs(plugins)
    shutil.copy(os.path.join(HERE, 'haraka', 'durable_maildir.js'), plugins)
    files = {
        'smtp.ini': f'[main]\nlisten={args.host}:{args.port}\n',
        'log.ini': '[main]\nlevel=warn\ntimestamps=false\n',
        'plugins': 'rcpt_to.in_host_list\ndurable_maildir\n',
        'host_list': 'bench.example\n',
        'databytes': f'{args.size}\n',
    }
    node_args = []
    if args.mx:
        files.update(mx_files(args.mx, args.redis))
        os.environ['BENCH_DNS'] = args.dns
        os.environ['BENCH_RDNS'] = 'Unknown'
        node_args = ['--require', os.path.join(HERE, 'haraka', 'bench_dns.js')]
    for name, text in files.items():
        with open(os.path.join(config, name), 'w') as f:
            f.write(text)
    os.environ['BENCH_MAILDIR'] = os.path.abspath(args.maildir)
    node = shutil.which('node')
    os.execv(node, [node, *node_args, HARAKA, '-c', root])


MX_PLUGINS = ('xclient', 'dns-list', 'rcpt_to.in_host_list', 'greylist', 'limit', 'spf',
              'dkim', 'durable_maildir')


def mx_files(which: str, redis: str) -> dict:
    """The configuration files of the MX scenarios (Haraka's ini syntax);
    the plugins' other settings stay as their packages ship them."""
    host, _, port = redis.rpartition(':')
    plugins = MX_PLUGINS if which == 'all' else ('xclient', 'rcpt_to.in_host_list',
                                                 'durable_maildir')
    return {
        'plugins': '\n'.join(plugins) + '\n',
        'redis.ini': f'[server]\nhost={host}\nport={port}\n',
        'dns-list.ini': '[main]\nzones=bl.bench.example\nperiodic_checks=30\nsearch=all\n',
        'greylist.ini': (f'[main]\n[redis]\nhost={host}\nport={port}\ndb=11\n'
                         '[skip]\ndnswlorg=true\nmailspikewl=true\n'
                         '[period]\nblack=1\ngrey=90000\nwhite=3024000\n'),
        'limit.ini': (f'[redis]\nhost={host}\nport={port}\ndatabase=4\n'
                      '[rate_rcpt_host]\nenabled=true\n127=0\ndefault=1000000000/1h\n'),
    }


if __name__ == '__main__':
    sys.exit(main())
