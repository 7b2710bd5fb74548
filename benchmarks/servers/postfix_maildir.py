"""A private Postfix for the durable scenarios: smtpd on 127.0.0.1:PORT,
every message queued (cleanup fsyncs the queue file before smtpd's 250)
and delivered by `virtual` into the Maildir given (a file written and
fsync'd in tmp/, then moved into new/).

The system's Postfix (/etc/postfix, its service, its queue) is never
touched: this instance has its own configuration, queue and data
directories under /tmp (mode 0755: Postfix's daemons drop to the `postfix`
user and must reach them) and runs as `postfix -c DIR start-fg`, which the
harness stops by the master's process group (its pid is in
/tmp/bench-postfix-PORT/queue/pid/master.pid). The Maildir's new/ holds what was
delivered; the harness waits for all of it before it stops the clock.

    python benchmarks/servers/postfix_maildir.py --port 2525 --maildir DIR
"""

import argparse
import os
import pwd
import shutil
import subprocess
import sys

# The services master.cf needs for smtpd -> cleanup -> qmgr -> virtual
# (the layout of Debian's master.cf, chroot off).
SERVICES = """\
{listen} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
proxymap  unix  -       -       n       -       -       proxymap
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def find(name):
    return shutil.which(name) or next(
        (p for p in (f'/usr/sbin/{name}',) if os.access(p, os.X_OK)), None)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--host', default='127.0.0.1')
    p.add_argument('--port', type=int, required=True)
    p.add_argument('--maildir', required=True)
    p.add_argument('--size', type=int, default=100 * 1024 * 1024)
    p.add_argument('--backlog', type=int, default=1024)
    args = p.parse_args(argv)
    postfix = find('postfix')
    if postfix is None:
        print('postfix not found (Debian package postfix)', file=sys.stderr)
        return 3
    root = f'/tmp/bench-postfix-{args.port}'     # the harness finds the master's pid here
    shutil.rmtree(root, ignore_errors=True)
    os.mkdir(root, 0o755)
    config, queue, data = (os.path.join(root, d) for d in ('etc', 'queue', 'data'))
    for path in (config, queue, data):
        os.mkdir(path, 0o755)
    owner = pwd.getpwnam('postfix')
    os.chown(data, owner.pw_uid, owner.pw_gid)
    nobody = pwd.getpwnam('nobody')
    maildir = os.path.abspath(args.maildir)
    for folder, _, _ in os.walk(maildir):
        os.chown(folder, nobody.pw_uid, nobody.pw_gid)
    main_cf = {
        'compatibility_level': '3.6',
        'queue_directory': queue,
        'data_directory': data,
        'command_directory': '/usr/sbin',
        'daemon_directory': '/usr/lib/postfix/sbin',
        'meta_directory': '/etc/postfix',
        'shlib_directory': '/usr/lib/postfix',
        'mail_owner': 'postfix',
        'setgid_group': 'postdrop',
        'myhostname': 'bench.example',
        'mydestination': '',
        'inet_interfaces': args.host,
        'inet_protocols': 'ipv4',
        'mynetworks': '127.0.0.0/8',
        'alias_maps': '',
        'alias_database': '',
        'smtpd_relay_restrictions': 'permit_mynetworks, reject_unauth_destination',
        'virtual_mailbox_domains': 'bench.example',
        'virtual_mailbox_base': os.path.dirname(maildir),
        'virtual_mailbox_maps': f'static:{os.path.basename(maildir)}/',
        'virtual_uid_maps': f'static:{nobody.pw_uid}',
        'virtual_gid_maps': f'static:{nobody.pw_gid}',
        'virtual_minimum_uid': '1',
        'virtual_mailbox_limit': '0',
        'virtual_destination_concurrency_limit': '20',
        'message_size_limit': str(args.size),
        'maillog_file': os.path.join(root, 'maillog'),
        'maillog_file_prefixes': root,
        'smtpd_banner': '$myhostname ESMTP',
        'smtpd_peername_lookup': 'no',
        'biff': 'no',
        'smtputf8_enable': 'no',
        'default_process_limit': '100',
        'smtpd_client_connection_count_limit': '0',
        'smtpd_client_connection_rate_limit': '0',
        'smtpd_error_sleep_time': '0',
        'in_flow_delay': '0',
    }
    with open(os.path.join(config, 'main.cf'), 'w') as f:
        f.writelines(f'{key} = {value}\n' for key, value in main_cf.items())
    with open(os.path.join(config, 'master.cf'), 'w') as f:
        f.write(SERVICES.replace('{listen}', f'{args.host}:{args.port}'))
    check = subprocess.run([postfix, '-c', config, 'check'], capture_output=True,
                           text=True, timeout=60)
    if check.returncode != 0:
        print(f'postfix check failed: {check.stdout}{check.stderr}', file=sys.stderr)
        return 3
    # start-fg: the master in the foreground. It makes a session of its own
    # (setsid), so the harness reads its pid from queue/pid/master.pid to
    # sum its group's CPU time and to stop it. The directory stays until
    # the next run on the same port, or the harness removes it.
    os.execv(postfix, [postfix, '-c', config, 'start-fg'])


if __name__ == '__main__':
    sys.exit(main())
