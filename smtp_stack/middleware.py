"""Koa-style middleware: `fn(ctx, next)` around the built-in command handler.

The types user code is written against are here: `Middleware` (what
`server.use()` takes), `Next`, `Context`, the hooks' signatures, and
`Component`: a middleware that also takes part in its server's and its
sessions' lifecycle (`Lifecycle` is what the server keeps of it).

    def audit(ctx: Context, next: Next) -> None:
        next()
        print(ctx.command_name, ctx.reply)
"""
from __future__ import annotations

import re
import socket
import types
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, TypeVar, overload

from .errors import SmtpError
from .events import stamp
from .replies import Enhanced, Message, Reply, validate_code

if TYPE_CHECKING:
    from .addresses import Address
    from .engine import Engine
    from .server import SmtpServer
    from .session import Session
    from .stream import DataStream

M_ = TypeVar('M_', bound=Callable[..., None])

# What `ctx.send()` takes for one reply besides (code, message, enhanced).
ReplyLike: TypeAlias = Reply | tuple[int, Message] | tuple[int, Message, Enhanced]


class Context:
    """One command as middleware sees it.

    The final reply is data: `send()` sets it (the last call wins) and the
    session writes it once the whole chain has returned.
    """

    __slots__ = ('command', 'command_name', 'command_args', 'address',
                 'session', 'server', 'reply', 'close_requested', 'data_stream',
                 'parse_error', '_engine', '__dict__')

    command: str
    command_name: str
    command_args: list[str]
    address: Address | None
    session: Session
    server: SmtpServer
    reply: Reply | list[Reply] | None
    close_requested: bool
    data_stream: DataStream | None
    parse_error: SmtpError | None
    # The session running this command, for engine.builtin. Only a Context
    # made outside a session (a test of the chain) has None, and such a
    # context never reaches builtin.
    _engine: Engine
    # Who set a refusal, as (reply, by), where the server knows it: the
    # built-in handler, an SmtpError raised in the chain (by the middleware
    # level it left: component_name), a delivery. The log names a refusal
    # set with send() and not recorded here 'middleware'. (A class default:
    # a command that is not refused never stores it.)
    refusal: tuple[Reply | list[Reply], str] | None = None

    def __init__(self, command: str, session: Session, server: SmtpServer,
                 engine: Engine | None = None) -> None:
        self.command = command
        name, _, rest = command.partition(' ')
        # ASCII only: 'QU\u0131T'.upper() is 'QUIT', and must not become one.
        self.command_name = name.upper() if name.isascii() else name
        self.command_args = rest.split()
        self.address = None
        self.session = session
        self.server = server
        self.reply = None
        self.close_requested = False
        self.data_stream = None     # set by DATA/BDAT, drained after the chain
        self.parse_error = None     # why MAIL/RCPT's address did not parse
        self._engine = engine  # type: ignore[assignment]

    @overload
    def send(self, code: int, message: Message = '', enhanced: Enhanced = None) -> None: ...

    @overload
    def send(self, code: ReplyLike | Sequence[ReplyLike], /) -> None: ...

    def send(self, code: int | ReplyLike | Sequence[ReplyLike], message: Message = '',
             enhanced: Enhanced = None) -> None:
        """Set the final reply: `send(250, 'OK')`, `send(reply)`, or for LMTP
        after DATA a list `[(code, message), ...]`, one per recipient."""
        if isinstance(code, Reply):
            self.reply = _as_reply(code)
        elif isinstance(code, tuple) and code and isinstance(code[0], int):
            self.reply = _as_reply(code)
        elif isinstance(code, (list, tuple)):
            self.reply = [_as_reply(item) for item in code]
        else:
            self.reply = Reply(validate_code(code), message, enhanced)

    def close(self) -> None:
        """Close the connection after the final reply."""
        self.close_requested = True

    def __repr__(self) -> str:
        return f'<Context {self.command_name} reply={self.reply!r}>'


def _as_reply(item: ReplyLike) -> Reply:
    if isinstance(item, Reply):
        validate_code(item.code)
        return item
    code, message, *rest = item
    return Reply(validate_code(code), message, rest[0] if rest else None)


def compose(middlewares: Iterable[Middleware], innermost: Dispatch) -> Dispatch:
    """One callable `dispatch(ctx)` running middlewares outermost-first.

    The chain is built once, as one function per level; a command then costs
    one call and one small `next` closure per middleware.
    """
    dispatch = innermost
    for fn in reversed(tuple(middlewares)):
        dispatch = _level(fn, dispatch)
    return dispatch


def _level(fn: Middleware, inner: Dispatch) -> Dispatch:
    """The dispatcher of one level: `fn(ctx, next)` where next runs `inner`.
    An SmtpError leaving it is stamped with `fn`'s name unless an inner
    level stamped it (the log says who refused; a try costs nothing until
    something is raised)."""
    name = component_name(fn)

    def dispatch(ctx: Context) -> None:
        called = False

        def next_() -> None:
            nonlocal called
            if called:
                raise RuntimeError('next() called twice by one middleware')
            called = True
            inner(ctx)

        try:
            fn(ctx, next_)
        except SmtpError as err:
            stamp(err, name)
            raise
    return dispatch


def component_name(fn: object) -> str:
    """How the log names a middleware that refused: a function by its name,
    any other object by its class's, in snake case ('RateLimit' ->
    'rate_limit', 'Recipients' -> 'recipients': the policies' YAML names)."""
    if isinstance(fn, (types.FunctionType, types.MethodType, types.BuiltinFunctionType)):
        return fn.__name__
    return _WORD_START.sub('_', type(fn).__name__).lower()


_WORD_START = re.compile(r'(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])')


# -- the types user code is written against ----------------------------------

# `next()`: runs the rest of the chain (the inner middleware, then the
# built-in handler) and returns when it has; at most once per command.
Next: TypeAlias = Callable[[], None]
# `fn(ctx, next)`: what `server.use()` takes. It returns nothing: the reply
# is set with ctx.send() (or by raising SmtpError), never returned.
Middleware: TypeAlias = Callable[[Context, Next], None]
# One command through a chain: what `compose` returns, and the innermost
# handler it wraps (`engine.builtin`).
Dispatch: TypeAlias = Callable[[Context], None]

# The hooks (SmtpServer options, docs/api.md). A hook answers a command by
# raising SmtpError; whatever else it raises costs the client its session.
# on_socket(sock, address): the accepted socket, before PROXY and TLS.
SocketHook: TypeAlias = Callable[[socket.socket, Any], None]
# on_connect(session), on_data(session), on_close(session).
SessionHook: TypeAlias = Callable[['Session'], None]
# on_auth(session) -> user or None: a truthy user becomes `session.user`.
AuthHook: TypeAlias = Callable[['Session'], Any]
# on_mail_from(session, address), on_rcpt_to(session, address).
AddressHook: TypeAlias = Callable[['Session', 'Address'], None]


# -- stages: what a middleware needs of a session ------------------------------

# The stages a middleware may declare (`stages` below). An SmtpServer shows
# every command to every middleware whatever it declares; a MilterServer asks
# the MTA only for the steps its chain declares (docs/milter.md).
#   CONNECT  the session from the client's connection on (on_connect's time)
#   HELO     HELO/EHLO and session.helo
#   MAIL     MAIL FROM and envelope.mail_from
#   RCPT     RCPT TO and envelope.rcpt_to
#   DATA     the DATA decision (at the end of the message)
#   HEADER   the header section in data_stream
#   BODY     the body in data_stream
STAGES = frozenset({'CONNECT', 'HELO', 'MAIL', 'RCPT', 'DATA', 'HEADER', 'BODY'})


def stages(*names: str) -> Callable[[M_], M_]:
    """Declare the stages a middleware needs: `@stages('RCPT')` on a
    function sets its `stages` attribute (a class sets `stages` itself).
    A middleware without the attribute needs every stage."""
    wanted = _checked_stages(names)

    def declare(fn: M_) -> M_:
        fn.stages = wanted      # type: ignore[attr-defined]
        return fn
    return declare


def stages_of(fn: object) -> frozenset[str] | None:
    """The stages `fn` declared (its `stages` attribute), or None: it
    declared nothing and needs every stage. ValueError for an unknown name."""
    declared = getattr(fn, 'stages', None)
    if declared is None:
        return None
    if isinstance(declared, str) or not isinstance(declared, Iterable):
        raise TypeError(f'{name_of(fn)}.stages must be a set of stage names')
    return _checked_stages(declared)


def _checked_stages(names: Iterable[str]) -> frozenset[str]:
    wanted = frozenset(name.upper() for name in names)
    unknown = wanted - STAGES
    if unknown:
        raise ValueError(f'unknown stage {", ".join(sorted(unknown))}; known: '
                         + ', '.join(sorted(STAGES)))
    return wanted


# -- components: middleware with a lifecycle ---------------------------------------

class Component(Protocol):
    """A middleware that may also hear of its sessions and its servers.

    Only `__call__` is required. The server looks up each other method once,
    when the component is registered with `use()`, and calls those it has
    (go-smtp discovers a session's optional interfaces the same way); a
    server whose components have none pays nothing per session.

    session_opened(session)  a connection was accepted, before PROXY, TLS,
                             on_connect and the greeting; in the session's
                             greenlet, components in registration order
    session_closed(session)  the session ended, however it ended (QUIT, idle
                             timeout, client gone, stop(), an error): from
                             the engine's `finally`, after the socket was
                             closed and before `on_close`; same greenlet,
                             newest component first
    start(server)            the first server.start(), before the server
                             accepts; once per server the component is
                             registered on; in the process that calls
                             start() (with workers > 1 the master, before
                             the workers fork)
    stop(server)             server.stop(), once every session has ended; in
                             the same process as start, newest first
    describe()               never by the server: one line for people (the
                             start-up line of `smtp-stack serve` names the
                             delivery by it)
    reload()                 never by the server: `smtp-stack serve`'s
                             SIGHUP, on each policy, before the new
                             configuration applies: look again at what it
                             reads from files (the recipients policy's
                             addresses_file)

    Per-session state is kept by the component, keyed by the session, and
    dropped in `session_closed`, which comes for every session of a server
    the component is registered on (also for one opened before `use()`:
    it must ignore a session it never saw). A component registered on
    several servers gets `start` and `stop` once per server: a resource it
    shares between them is opened at the first `start` and closed at the
    last `stop`. With `workers > 1` each worker serves its sessions with its
    own copy of the component, forked after `start`.

    A failing `session_opened` or `session_closed` is logged and reported
    to the server's 'error' listeners; the session and the other components
    go on. A failing `start` makes `server.start()` raise, after the
    components already started were stopped again; a failing `stop` is
    logged and the others still stop.
    """

    def __call__(self, ctx: Context, next: Next, /) -> None: ...
    def session_opened(self, session: Session, /) -> None: ...
    def session_closed(self, session: Session, /) -> None: ...
    def start(self, server: SmtpServer, /) -> None: ...
    def stop(self, server: SmtpServer, /) -> None: ...
    def describe(self) -> str: ...
    def reload(self) -> None: ...


# A component's session_opened / session_closed, and its start / stop.
SessionEvent: TypeAlias = Callable[['Session'], object]
ServerEvent: TypeAlias = Callable[['SmtpServer'], object]


class Lifecycle:
    """The lifecycle methods of a server's components, found once per
    component (`add`, at `use()`): `opened` in registration order, `closed`
    newest first, `serving` as (start, stop) pairs in registration order."""

    __slots__ = ('opened', 'closed', 'serving')

    def __init__(self) -> None:
        self.opened: tuple[SessionEvent, ...] = ()
        self.closed: tuple[SessionEvent, ...] = ()
        self.serving: tuple[tuple[ServerEvent | None, ServerEvent | None], ...] = ()

    @classmethod
    def of(cls, component: object) -> Lifecycle:
        """What `component` has of the contract (a plain function: nothing)."""
        found = cls()
        opened, closed = _method(component, 'session_opened'), _method(component, 'session_closed')
        start, stop = _method(component, 'start'), _method(component, 'stop')
        found.opened = (opened,) if opened is not None else ()
        found.closed = (closed,) if closed is not None else ()
        found.serving = ((start, stop),) if start is not None or stop is not None else ()
        return found

    def add(self, other: Lifecycle) -> None:
        """Take in the methods of a component registered after the others."""
        self.opened += other.opened
        self.closed = other.closed + self.closed
        self.serving += other.serving

    @property
    def stops(self) -> list[ServerEvent]:
        """The `stop` methods, newest component first."""
        return [stop for _, stop in reversed(self.serving) if stop is not None]


def reload_of(component: object) -> Callable[[], object] | None:
    """The component's `reload`, if it has one (the receiver's SIGHUP)."""
    method = getattr(component, 'reload', None)
    return method if callable(method) else None


def _method(component: object, name: str) -> Callable[[Any], object] | None:
    method = getattr(component, name, None)
    return method if callable(method) else None


def name_of(fn: object) -> str:
    """How logs name a callable: 'RelayDelivery.session_closed'."""
    return getattr(fn, '__qualname__', None) or repr(fn)
