"""The types middleware and hooks are written against: mypy --strict, run on
a user's program as a user runs it, passes the quick example's middleware
annotated with `smtp_stack`'s public types, and flags their misuse."""
import textwrap

import smtp_stack
from test_typing import run_mypy

# The quick example (docs/api.md), its middleware annotated; and the other
# public types as a user meets them: hooks, replies raised, the body.
CORRECT = '''\
    import logging

    from smtp_stack import (Address, Context, Envelope, LogLevels, MessageRefused,
                            Middleware, Next, Reply, Session, SmtpError, SmtpServer)
    from smtp_stack import replies

    server = SmtpServer(
        name='mail.example.com',
        auth_methods=['PLAIN', 'LOGIN', 'XOAUTH2', 'CRAM-MD5'],
        allow_insecure_auth=True,
        no_auth_reply=True,
        size=10 * 1024 * 1024,
        log_level=LogLevels.INFO,
    )


    @server.use
    def check_auth(ctx: Context, next: Next) -> None:
        next()
        if ctx.session.auth:
            if ctx.session.auth.validate('secret'):      # any mechanism
                ctx.session.user = {'name': ctx.session.auth.username}
                ctx.send(235, 'Authentication successful')
            else:
                ctx.send(535, 'Authentication failed')
                ctx.close()
            ctx.session.auth = None


    @server.use
    def store(ctx: Context, next: Next) -> None:
        next()
        if ctx.command_name == 'DATA' and ctx.session.envelope.data_stream:
            body: bytes = ctx.session.envelope.data_stream.read()   # file-like, bytes


    def local_only(ctx: Context, next: Next) -> None:
        address = ctx.address
        if ctx.command_name == 'RCPT' and address is not None:
            if not address.address.endswith('@example.com'):
                raise SmtpError(replies.NOT_AUTHORIZED)
            if address.args.get('NOTIFY') is True:
                raise SmtpError(501, 'NOTIFY takes a value', '5.5.4')
        next()


    def per_recipient(ctx: Context, next: Next) -> None:
        next()
        if ctx.command_name == 'DATA':
            ctx.send([(250, 'Delivered'), (452, 'Mailbox full', '4.2.2'), replies.QUEUED])
        elif isinstance(ctx.reply, Reply) and ctx.reply.code >= 400:
            ctx.send(ctx.reply.code, ['Refused', 'twice over'])


    def spooled(ctx: Context, next: Next) -> None:
        next()
        envelope: Envelope = ctx.session.envelope
        if ctx.command_name in ('DATA', 'BDAT'):
            try:
                spool = envelope.spool()
            except MessageRefused as refused:
                logging.info('refused: %s', refused.reply.code)
                raise
            with spool.open() as copy:
                head: bytes = copy.read(1024)
            envelope.add_header('X-Spool-Size', str(spool.size))
            envelope.remove_header('X-Spam-Status', lambda value: value.startswith('Yes'))


    chain: list[Middleware] = [check_auth, store, local_only, per_recipient, spooled]


    def on_connect(session: Session) -> None:
        if session.remote_address == '192.0.2.1':
            raise SmtpError(554, 'Go away')


    def on_rcpt_to(session: Session, address: Address) -> None:
        if session.tls is not None and session.tls['version'] == 'TLSv1':
            raise SmtpError(replies.ENCRYPTION_REQUIRED)


    def on_auth(session: Session) -> dict[str, str] | None:
        auth = session.auth
        return {'name': auth.username} if auth and auth.validate('secret') else None


    SmtpServer(on_connect=on_connect, on_rcpt_to=on_rcpt_to, on_auth=on_auth)
'''

# Each line that mypy must flag ends with `# flagged: <part of mypy's message>`.
MISTAKES = '''\
    from smtp_stack import Context, Middleware, Next, SmtpError


    def answer(ctx: Context, next: Next) -> None:
        ctx.send('250')  # flagged: Argument 1 to "send" of "Context" has incompatible type "str"
        ctx.send(250, 'OK', 2)  # flagged: No overload variant of "send" of "Context" matches
        print(ctx.session.helo_name)  # flagged: "Session" has no attribute "helo_name"
        print(ctx.session.envelope.mail_from.address)  # flagged: Item "None" of "Address | None"
        next(ctx)  # flagged: Too many arguments
        raise SmtpError('550', 'No')  # flagged: No overload variant of "SmtpError" matches


    def returns_a_reply(ctx: Context, next: Next) -> tuple[int, str]:
        next()
        return 250, 'OK'


    chain: list[Middleware] = [returns_a_reply]  # flagged: List item 0 has incompatible type
'''


def flagged(source: str, name: str) -> dict:
    lines = textwrap.dedent(source).splitlines()
    return {f'{name}:{number}': line.split('# flagged: ', 1)[1]
            for number, line in enumerate(lines, 1) if '# flagged: ' in line}


def errors(output: str) -> dict:
    """{file:line: [messages]} of mypy's errors."""
    found: dict = {}
    for line in output.splitlines():
        if ': error: ' in line:
            where, message = line.split(': error: ', 1)
            found.setdefault(where, []).append(message)
    return found


def test_the_public_types_are_exported():
    for name in ('Context', 'Next', 'Middleware', 'Session', 'Envelope'):
        assert name in smtp_stack.__all__
        assert getattr(smtp_stack, name) is not None
    assert name in smtp_stack.__doc__


def test_stages_is_exported_where_middleware_is():
    from smtp_stack import middleware, stages, stages_of
    assert {'stages', 'stages_of'} <= set(smtp_stack.__all__)
    assert (stages, stages_of) == (middleware.stages, middleware.stages_of)

    @stages('rcpt')
    def check(ctx, next):
        next()
    assert stages_of(check) == {'RCPT'}


def test_the_quick_example_annotated_passes_strict(tmp_path):
    output = run_mypy(tmp_path, {'correct.py': CORRECT})
    assert errors(output) == {}, output


def test_misuses_of_the_public_types_are_flagged(tmp_path):
    output = run_mypy(tmp_path, {'mistakes.py': MISTAKES})
    found = errors(output)
    expected = flagged(MISTAKES, 'mistakes.py')
    assert sorted(found) == sorted(expected), output
    for where, part in expected.items():
        assert any(part in message for message in found[where]), (where, part, output)
