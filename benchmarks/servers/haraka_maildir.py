"""Haraka for the durable scenarios: a service directory made under
/tmp/bench-haraka-PORT (Haraka's default configuration, with smtp.ini
listening on 127.0.0.1:PORT, one process, logging at WARN; plugins
rcpt_to.in_host_list for bench.example and
haraka/durable_maildir.js, which stores each message in the Maildir with
write, fsync, rename and an fsync of new/ before the 250), then Haraka from
benchmarks/node/node_modules runs in the foreground in this process.

    python benchmarks/servers/haraka_maildir.py --port 2525 --maildir DIR
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
    for name, text in files.items():
        with open(os.path.join(config, name), 'w') as f:
            f.write(text)
    os.environ['BENCH_MAILDIR'] = os.path.abspath(args.maildir)
    node = shutil.which('node')
    os.execv(node, [node, HARAKA, '-c', root])


if __name__ == '__main__':
    sys.exit(main())
