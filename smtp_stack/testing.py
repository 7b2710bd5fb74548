"""Helpers for test suites: a server in a thread of its own, and a mail sink.

The server runs in its own OS thread with its own gevent hub, so a test
that talks to it with the blocking stdlib `smtplib` never blocks it. In a
process monkey-patched by gevent the "thread" is a greenlet of the same hub
and everything still cooperates.

MailSink's defaults are those of the mail server an application meets in
production, so the application's own code runs unchanged: AUTH with any
mechanism and any credentials (also without TLS, as apps log in over plain
connections in tests), and STARTTLS with a certificate that a verifying
client accepts once it trusts `sink.ca_file` (testing_tls.py). Each default
has a switch to turn it off or make it strict; docs/testing.md lists them.
"""
from __future__ import annotations

import email.policy
import threading
from collections.abc import Callable, Mapping
from email.message import EmailMessage
from email.parser import BytesParser
from typing import TYPE_CHECKING, Any, Literal, get_args

import gevent
import gevent.monkey

from .delivery.base import is_success, message_body, untouched
from .delivery.header_edits import top_block
from .middleware import Context
from .options import LogLevels
from .server import SmtpServer
from .session import Envelope, Session
from .testing_tls import loopback_certificates

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .options import ServerOptions

__all__ = ['MailSink', 'ServerThread', 'SinkMessage', 'TlsMode']

START_TIMEOUT = 10.0

#: How the sink offers TLS: STARTTLS on a plain port (RFC 3207), implicit
#: TLS from the first byte (RFC 8314 3.3, port 465's way), or not at all.
TlsMode = Literal['starttls', 'implicit', 'off']
TLS_MODES: tuple[TlsMode, ...] = get_args(TlsMode)

#: Every SASL mechanism the server implements; CRAM-MD5 too, which a
#: server with hashed passwords could not offer (there are none here).
ALL_MECHANISMS = ('PLAIN', 'LOGIN', 'CRAM-MD5', 'XOAUTH2')

#: AUTH failures per connection before 421 and close. smtplib's login()
#: tries each mechanism it knows with the same wrong password (three): an
#: application under test must see its 535, not a 421 at QUIT.
MAX_AUTH_FAILURES = 10


class ServerThread:
    """Run an SmtpServer on 127.0.0.1 in a thread; `with ServerThread(server):`."""

    def __init__(self, server: SmtpServer, host: str = '127.0.0.1', port: int = 0) -> None:
        self.server = server
        self._host = host
        self._port = port
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> ServerThread:
        self._thread = threading.Thread(target=self._run, name='smtp-stack-server',
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            raise TimeoutError('the SMTP server did not start in time')
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
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

    def stop(self, timeout: float | None = None) -> None:
        if self._thread is None:
            return
        self.server.stop(timeout)
        self._thread.join(START_TIMEOUT)
        self._thread = None

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) the server listens on; RuntimeError before start()."""
        if self.server.address is None:
            raise RuntimeError('the server is not listening yet: start() it first')
        host, port = self.server.address
        return str(host), int(port)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> Literal[False]:
        self.stop()
        return False


class SinkMessage(EmailMessage):
    """A message MailSink accepted: an `EmailMessage` (parsed with
    `email.policy.default`) that also carries how it arrived. The three
    attributes are set on the message itself, not on its MIME parts."""

    #: mail_from and rcpt_to, `Address` objects as the session saw them.
    envelope: Envelope
    #: The SMTP session: `user` (the name the client logged in with), `auth`
    #: (mechanism and credentials), `secure`, `tls`, `helo`, the client's address.
    session: Session
    #: The bytes as stored: CRLF line ends, under any fields middleware added.
    raw: bytes


_PARSER = BytesParser(SinkMessage, policy=email.policy.default)


class MailSink:
    """A real SMTP server on 127.0.0.1 that keeps every accepted message.

    `messages` holds `SinkMessage` objects (`EmailMessage` with `.envelope`,
    `.session` and `.raw`). The switches, keyword-only:

    - `users`: None (the default) accepts AUTH with any user name and
      password; a mapping {user: password} accepts only those (with every
      mechanism: the password is the CRAM-MD5 secret and the XOAUTH2 token).
    - `auth_required`: MAIL before a successful AUTH gets 530.
    - `tls`: 'starttls' (the default), 'implicit' (TLS from the first byte)
      or 'off'; the certificate is signed by the CA in `ca_file`.
    - `host`, `port`: where to listen (127.0.0.1 and a free port).

    Any other keyword is an SmtpServer option, passed on; given explicitly it
    wins over the sink's defaults (`auth_methods`, `allow_insecure_auth`,
    `on_auth`, `key`/`cert`, `name`...).
    """

    def __init__(self, *, users: Mapping[str, str] | None = None,
                 auth_required: bool = False, tls: TlsMode | None = None,
                 host: str = '127.0.0.1', port: int = 0,
                 **server_options: Unpack[ServerOptions]) -> None:
        options: dict[str, Any] = dict(server_options)
        self.tls: TlsMode = _tls_mode(tls, options)
        self.users: dict[str, str] | None = _check_users(users)
        if self.users is not None and options.get('on_auth') is not None:
            raise ValueError('MailSink: give users or on_auth, not both')
        if _check_bool('auth_required', auth_required):
            _agree(options, 'auth_optional', False, 'auth_required=True')
        certificates = loopback_certificates()
        self.ca_file = certificates.ca_file
        if 'key' not in options and 'cert' not in options:
            options.update(key=certificates.key_pem, cert=certificates.cert_pem)
        defaults: dict[str, Any] = {
            'name': 'localhost',
            'disable_reverse_lookup': True,
            'log_level': LogLevels.WARN,
            'auth_methods': list(ALL_MECHANISMS),
            'allow_insecure_auth': True,
            'max_auth_failures': MAX_AUTH_FAILURES,
            'on_auth': self._login,
        }
        for name, value in defaults.items():
            options.setdefault(name, value)
        self.server = SmtpServer(**options)
        self.server.use(self._keep)
        self.messages: list[SinkMessage] = []
        self._changed = threading.Condition()
        self._runner = ServerThread(self.server, host, port)

    def _login(self, session: Session) -> str | None:
        """The on_auth hook: the user name becomes `session.user`."""
        auth = session.auth
        if auth is None or not auth.username:
            return None
        if self.users is None:
            return str(auth.username)
        secret = self.users.get(auth.username)
        return str(auth.username) if secret and auth.validate(secret) else None

    def _keep(self, ctx: Context, next: Callable[[], None]) -> None:
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
        # (envelope.add_header) and those a milter placed above them. No trace
        # fields of its own: a test sees the message as its code sent it (and
        # as its middleware changed it).
        raw = top_block(ctx.session.envelope) + body
        # Parsed with LF line ends, as Python's mailbox does, so get_content()
        # gives natural text; `.raw` keeps the bytes as stored.
        message = _PARSER.parsebytes(raw.replace(b'\r\n', b'\n'))
        assert isinstance(message, SinkMessage)
        message.envelope = ctx.session.envelope
        message.session = ctx.session
        message.raw = raw
        with self._changed:
            self.messages.append(message)
            self._changed.notify_all()

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) the sink listens on."""
        return self._runner.address

    def start(self) -> MailSink:
        self._runner.start()
        return self

    def stop(self) -> None:
        self._runner.stop()

    def __enter__(self) -> MailSink:
        return self.start()

    def __exit__(self, *exc: object) -> Literal[False]:
        self.stop()
        return False

    def wait_for(self, n: int, timeout: float = 5) -> list[SinkMessage]:
        """The first n messages, waiting up to `timeout` seconds for them."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.messages) >= n, timeout):
                raise TimeoutError(f'{len(self.messages)} of {n} messages arrived '
                                   f'within {timeout} s')
            return self.messages[:n]

    def clear(self) -> None:
        with self._changed:
            self.messages.clear()


def _tls_mode(tls: str | None, options: dict[str, Any]) -> TlsMode:
    """The `tls` switch, squared with the server options it stands for:
    `secure` (implicit TLS) and STARTTLS in `disabled_commands`."""
    disabled = {str(c).upper() for c in options.get('disabled_commands', ())}
    if tls is None:
        return ('implicit' if options.get('secure') is True
                else 'off' if 'STARTTLS' in disabled else 'starttls')
    if tls not in TLS_MODES:
        raise ValueError(f'MailSink: tls must be one of {", ".join(TLS_MODES)}, not {tls!r}')
    _agree(options, 'secure', tls == 'implicit', f'tls={tls!r}')
    if tls == 'off':
        options['disabled_commands'] = sorted(disabled | {'STARTTLS'})
    elif 'STARTTLS' in disabled and tls == 'starttls':
        raise ValueError("MailSink: tls='starttls' but disabled_commands has STARTTLS")
    return tls


def _agree(options: dict[str, Any], name: str, value: bool, switch: str) -> None:
    """Set a server option from a sink switch, unless it was given otherwise."""
    if name in options and options[name] != value:
        raise ValueError(f'MailSink: {switch} and {name}={options[name]!r} disagree')
    options[name] = value


def _check_users(users: Mapping[str, str] | None) -> dict[str, str] | None:
    if users is None:
        return None
    if not isinstance(users, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) and k and v for k, v in users.items()):
        raise ValueError('MailSink: users must map user names to passwords (non-empty str)')
    return dict(users)


def _check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f'MailSink: {name} must be True or False')
    return value


def _patched() -> bool:
    return bool(gevent.monkey.is_module_patched('threading'))
