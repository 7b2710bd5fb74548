"""What the hardening tests share: a careful recording reader, and ways
to open a transaction, reset a connection and drip bytes."""
import socket
import struct
import threading
import time

from smtp_stack import ClientDisconnected, MessageRefused




class Recorder:
    """Middleware that reads every DATA body and keeps only messages the
    server accepts whole (`acceptable`), as a careful delivery handler does;
    a body the server refuses raises MessageRefused, noted and re-raised."""

    def __init__(self):
        self.delivered = []       # bodies of complete, acceptable messages
        self.outcomes = []        # 'ok', 'refused' or the reader's exception name
        self.done = threading.Event()

    commands = ('DATA',)

    @classmethod
    def for_bdat(cls):
        rec = cls()
        rec.commands = ('DATA', 'BDAT')
        return rec

    def __call__(self, ctx, next):
        next()
        if (ctx.command_name not in self.commands or ctx.data_stream is None
                or not ctx.data_stream.started):
            return
        try:
            body = ctx.data_stream.read()
        except ClientDisconnected as exc:
            self.outcomes.append(type(exc).__name__)
            self.done.set()
            raise
        except MessageRefused:
            self.outcomes.append('refused')
            self.done.set()
            raise
        if ctx.data_stream.acceptable and ctx.reply is not None and ctx.reply.code == 250:
            self.delivered.append(body)
            self.outcomes.append('ok')
        else:
            self.outcomes.append('refused')
        self.done.set()


def start_transaction(c, helo='EHLO x'):
    c.expect(250, helo)
    c.expect(250, 'MAIL FROM:<a@b.example>')
    c.expect(250, 'RCPT TO:<c@d.example>')
    c.expect(354, 'DATA')


def rst_close(sock):
    """Close with a TCP RST instead of a FIN (SO_LINGER 0)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    sock.close()


def drip(c, data: bytes, interval: float, limit: float):
    """Send `data` a byte at a time; return (reply bytes, seconds) when the
    server answers or closes, or (None, seconds) if `limit` passes first."""
    c.sock.settimeout(interval)
    started = time.monotonic()
    for byte in data:
        if time.monotonic() - started > limit:
            break
        try:
            c.send(bytes([byte]))
        except OSError:
            return b'', time.monotonic() - started
        try:
            got = c.sock.recv(4096)
            return got, time.monotonic() - started
        except TimeoutError:
            continue
        except OSError:
            return b'', time.monotonic() - started
    return None, time.monotonic() - started


LONG_PASSWORD = 'p' * (9216 - 6)     # its PLAIN response is exactly 12,288 base64 octets


def auth_server(serve, **options):
    """A server where user 'user' logs in with 'pw' (or LONG_PASSWORD)."""
    def on_auth(session):
        auth = session.auth
        ok = auth.username == 'user' and (auth.validate('pw') or auth.validate(LONG_PASSWORD))
        return auth.username if ok else None
    options.setdefault('allow_insecure_auth', True)
    return serve(on_auth=on_auth, **options)
