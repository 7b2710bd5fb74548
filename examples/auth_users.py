"""A submission server: AUTH required, users from a YAML file with salted hashes.

    python examples/auth_users.py [--port 2587] [--users examples/users.yaml] [--maildir ./maildir]

examples/users.yaml holds two demo users:
- alice / wonderland: a scrypt hash (`smtp-stack hash-password` made it),
  usable with PLAIN and LOGIN;
- robot / s3cret-token: a plain `secret`, which CRAM-MD5 and XOAUTH2 need
  (they never send the password itself, so no hash can check them).

MAIL before AUTH gets 530. AUTH is allowed without TLS here only so that the
demo needs no certificate: in production drop `allow_insecure_auth` (STARTTLS
is offered with a self-signed certificate, or your own key/cert).
"""
import argparse
import logging
import os
import signal

import gevent
import yaml

from smtp_stack import SmtpServer
from smtp_stack.delivery import MaildirDelivery
from smtp_stack.users import User, Users

HERE = os.path.dirname(os.path.abspath(__file__))


def load_users(path):
    with open(path, encoding='utf-8') as f:
        entries = yaml.safe_load(f)
    return Users(User(e['username'], e.get('password_hash'), e.get('secret')) for e in entries)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=2587)
    parser.add_argument('--users', default=os.path.join(HERE, 'users.yaml'))
    parser.add_argument('--maildir', default='maildir')
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(name)s: %(message)s')

    users = load_users(args.users)
    server = SmtpServer(
        name='submission.localhost',
        auth_methods=['PLAIN', 'LOGIN', 'CRAM-MD5', 'XOAUTH2'],
        auth_optional=False,            # MAIL before AUTH: 530
        allow_insecure_auth=True,       # demo only: see the docstring
        on_auth=users.on_auth,          # returns {'name': ...} or None (535)
        disable_reverse_lookup=True,
    )

    @server.use
    def sender_is_the_user(ctx, next):
        """A submission server lets users send only as themselves (RFC 6409 6.1)."""
        if ctx.command_name == 'MAIL' and ctx.session.user and ctx.address is not None:
            login = ctx.session.user['name']
            if ctx.address.address.split('@')[0].lower() != login.lower():
                ctx.send(553, f'{login} may not send as {ctx.address.address}', '5.7.1')
                return
        next()

    store = server.use(MaildirDelivery(args.maildir))
    server.start(args.port, args.host)
    host, port = server.address[:2]
    print(f'auth_users: listening on {host}:{port}; {len(users)} users; '
          f'mail goes to {store.path}', flush=True)
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, server.stop)
    server.serve_forever()


if __name__ == '__main__':
    main()
