"""Helpers for test suites: a server in a thread of its own, and a mail sink.

The server runs in its own OS thread with its own gevent hub, so a test
that talks to it with the blocking stdlib `smtplib` never blocks it. In a
process monkey-patched by gevent the "thread" is a greenlet of the same hub
and everything still cooperates.
"""
from __future__ import annotations

import email.policy
import threading

import gevent
import gevent.monkey
from email.parser import BytesParser

from .delivery.base import is_success, message_body, untouched
from .headers import header_block
from .options import LogLevels
from .server import SmtpServer

START_TIMEOUT = 10.0


class ServerThread:
    """Run an SmtpServer on 127.0.0.1 in a thread; `with ServerThread(server):`."""

    def __init__(self, server: SmtpServer, host: str = '127.0.0.1', port: int = 0):
        self.server = server
        self._host = host
        self._port = port
        self._ready = threading.Event()
        self._error = None
        self._thread = None

    def start(self):
        self._thread = threading.Thread(target=self._run, name='smtp-stack-server',
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            raise TimeoutError('the SMTP server did not start in time')
        if self._error is not None:
            raise self._error
        return self

    def _run(self):
        try:
            self.server.start(self._port, self._host)
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            self.server.serve_forever()
        finally:
            # The thread's own hub and loop hold file descriptors (an
            # eventfd, an epoll): a suite that starts hundreds of servers
            # must not keep them all open. Not in a patched process, where
            # the "thread" is a greenlet of the one shared hub.
            if not _patched():
                gevent.get_hub().destroy(destroy_loop=True)

    def stop(self, timeout: float | None = None):
        if self._thread is None:
            return
        self.server.stop(timeout)
        self._thread.join(START_TIMEOUT)
        self._thread = None

    @property
    def address(self):
        return self.server.address

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False


class MailSink:
    """A real SMTP server on 127.0.0.1 that keeps every accepted message.

    `messages` holds `email.message.EmailMessage` objects, each with
    `.envelope` (mail_from, rcpt_to as `Address` objects) and `.session`.
    """

    def __init__(self, **server_options):
        server_options.setdefault('name', 'localhost')
        server_options.setdefault('disable_reverse_lookup', True)
        server_options.setdefault('log_level', LogLevels.WARN)
        self.server = SmtpServer(**server_options)
        self.server.use(self._keep)
        self.messages: list = []
        self._changed = threading.Condition()
        self._runner = ServerThread(self.server)

    def _keep(self, ctx, next):
        next()
        stream = ctx.data_stream
        if stream is None or not stream.started or not is_success(ctx.reply):
            return
        if not untouched(ctx):      # read by a middleware without spool(): 451, not a cut body
            return
        # The whole body, from the spool when a middleware made one, less
        # the fields recorded with envelope.remove_header; a body the
        # server refuses raises MessageRefused here and is not kept.
        body = b''.join(message_body(ctx))
        if not stream.acceptable or not is_success(ctx.reply):
            return
        # On top, as the built-in deliveries do: the fields middleware added
        # (envelope.add_header). No trace fields of its own: a test sees the
        # message as its code sent it (and as its middleware changed it).
        raw = header_block(ctx.session.envelope.added_headers) + body
        # Parsed with LF line ends, as Python's mailbox does, so get_content()
        # gives natural text; `.raw` keeps the bytes as stored.
        message = BytesParser(policy=email.policy.default).parsebytes(
            raw.replace(b'\r\n', b'\n'))
        message.envelope = ctx.session.envelope
        message.session = ctx.session
        message.raw = raw
        with self._changed:
            self.messages.append(message)
            self._changed.notify_all()

    @property
    def address(self):
        return self.server.address

    def start(self):
        self._runner.start()
        return self

    def stop(self):
        self._runner.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def wait_for(self, n: int, timeout: float = 5):
        """The first n messages, waiting up to `timeout` seconds for them."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.messages) >= n, timeout):
                raise TimeoutError(f'{len(self.messages)} of {n} messages arrived '
                                   f'within {timeout} s')
            return self.messages[:n]

    def clear(self):
        with self._changed:
            self.messages.clear()


def _patched() -> bool:
    return gevent.monkey.is_module_patched('threading')
