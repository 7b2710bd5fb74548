"""The README's quick example, runnable: `python examples/quick_example.py [PORT]`.

Try it with smtplib:
    import smtplib
    with smtplib.SMTP('127.0.0.1', 2525) as s:
        s.login('bob', 'secret')
        s.sendmail('bob@example.com', ['alice@example.com'], b'Subject: hi\r\n\r\nhello\r\n')
"""
import logging
import sys

from smtp_stack import LogLevels, SmtpError, SmtpServer  # noqa: F401 (SmtpError: as in the README)

logging.basicConfig(level=logging.INFO, format='%(asctime)s %(message)s')

server = SmtpServer(
    name='mail.example.com',
    auth_methods=['PLAIN', 'LOGIN', 'XOAUTH2', 'CRAM-MD5'],
    allow_insecure_auth=True,
    no_auth_reply=True,
    size=10 * 1024 * 1024,
    log_level=LogLevels.INFO,
)


@server.use
def check_auth(ctx, next):
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
def store(ctx, next):
    next()
    if ctx.command_name == 'DATA' and ctx.session.envelope.data_stream:
        body = ctx.session.envelope.data_stream.read()   # file-like, bytes
        print(f'received {len(body)} bytes from {ctx.session.envelope.mail_from}', flush=True)


port = int(sys.argv[1]) if len(sys.argv) > 1 else 2525
server.start(port, '127.0.0.1')   # returns at once; serving runs in greenlets
print(f'listening on {server.address[0]}:{server.address[1]}', flush=True)
server.serve_forever()            # blocks until server.stop()
