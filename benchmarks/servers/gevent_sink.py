"""A featureless gevent SMTP sink: the floor a gevent server can reach.

A `gevent.server.StreamServer` whose handler reads lines with
`makefile().readline()` and answers the commands a benchmark client sends,
with no parsing beyond the verb, no middleware, no limits, no logging, no
TLS. It is not a server anyone should run; it tells how much of
smtp_stack's cost is gevent and the kernel, and how much is smtp_stack.
"""

import argparse
import sys

from gevent.server import StreamServer


def handle(sock, address):
    reader = sock.makefile('rb')
    send = sock.sendall
    send(b'220 bench.example ESMTP\r\n')
    try:
        while True:
            line = reader.readline(8192)
            if not line:
                return
            verb = line[:4].upper()
            if verb in (b'EHLO', b'LHLO'):
                send(b'250-bench.example\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE\r\n')
            elif verb == b'DATA':
                send(b'354 go ahead\r\n')
                while True:
                    body = reader.readline(65536)
                    if not body or body == b'.\r\n':
                        break
                send(b'250 OK\r\n')
            elif verb == b'QUIT':
                send(b'221 bye\r\n')
                return
            else:
                send(b'250 OK\r\n')     # HELO, MAIL, RCPT, RSET, NOOP
    except OSError:
        return
    finally:
        reader.close()
        sock.close()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--host', default='127.0.0.1')
    p.add_argument('--port', type=int, required=True, help='0: a free one (printed)')
    p.add_argument('--backlog', type=int, default=1024)
    p.add_argument('--size', type=int, default=0, help='accepted and ignored')
    args = p.parse_args(argv)
    server = StreamServer((args.host, args.port), handle, backlog=args.backlog)
    server.start()
    host, port = server.address[:2]
    print(f'gevent_sink: listening on {host}:{port}', flush=True)
    server.serve_forever()
    return 0


if __name__ == '__main__':
    sys.exit(main())
