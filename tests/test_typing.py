"""SmtpServer's options are visible to type checkers: mypy, run on a user's
program as a user runs it, flags a misspelled option and a value of the
wrong type, and passes a correct program under --strict."""
import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import peers
from clirunner import ROOT

MYPY_TIMEOUT = 300

# One mypy cache for the test process: smtp_stack, gevent and the standard
# library's stubs are analysed once, not once per test (4 to 8 s each).
MYPY_CACHE = tempfile.mkdtemp(prefix='smtp-stack-mypy-cache-')
atexit.register(shutil.rmtree, MYPY_CACHE, ignore_errors=True)

# Each line that mypy must flag ends with `# flagged: <mypy's message>`.
MISTAKES = '''\
    from smtp_stack import SmtpServer

    SmtpServer(sise=10)  # flagged: Unexpected keyword argument "sise" for "SmtpServer"
    SmtpServer(size=1.5)  # flagged: Argument "size" to "SmtpServer" has incompatible type "float"; expected "int | str"
    SmtpServer(bare_newline='drop')  # flagged: Argument "bare_newline" to "SmtpServer" has incompatible type "Literal['drop']"; expected "Literal['reject', 'normalize']"
    SmtpServer(min_version='TLSv1.4')  # flagged: Argument "min_version" to "SmtpServer" has incompatible type "Literal['TLSv1.4']"; expected "Literal['TLSv1', 'TLSv1.1', 'TLSv1.2', 'TLSv1.3']"
    SmtpServer(auth_optional='no')  # flagged: Argument "auth_optional" to "SmtpServer" has incompatible type "str"; expected "bool"
'''

# The validated options, as a program reads them from a server.
OPTION_READS = '''\
    from smtp_stack import SmtpServer

    options = SmtpServer(size='10M').options
    size: int = options.size
    options.size = 5  # flagged: Property "size" defined in "Options" is read-only
    name: int = options.name  # flagged: Incompatible types in assignment (expression has type "str", variable has type "int")
    options.sise  # flagged: "Options" has no attribute "sise"
'''

CORRECT = '''\
    import logging
    import ssl

    from smtp_stack import Address, LogLevels, SmtpError, SmtpServer
    from smtp_stack.middleware import Context, Next
    from smtp_stack.options import ServerOptions
    from smtp_stack.session import Session


    class PrintLog:
        def log(self, level: int, msg: str, *args: object) -> None:
            print(level, msg % args)


    def check_rcpt(session: Session, address: Address) -> None:
        if not address.address.endswith('@example.com'):
            raise SmtpError(550, 'No such user here')


    def pick(name: str) -> ssl.SSLContext | None:
        return None


    options: ServerOptions = {'name': 'mx.example.com', 'size': '10M'}
    SmtpServer(**options)
    server = SmtpServer(
        name='mx.example.com',
        auth_methods=['PLAIN', 'LOGIN', 'CRAM-MD5'],
        disabled_commands={'VRFY'},
        socket_timeout=30,
        upgrade_timeout=2.5,
        use_proxy=['10.0.0.0/8'],
        use_xclient=True,
        log_level=LogLevels.DEBUG,
        log_backend=PrintLog(),
        bare_newline='normalize',
        min_version='TLSv1.3',
        sni_options={'mx.example.org': {'min_version': 'TLSv1.2', 'honor_cipher_order': True}},
        sni_callback=pick,
        on_rcpt_to=check_rcpt,
        request_ocsp=False,
        session=None,
    )
    SmtpServer(log_backend=logging.getLogger('mail'), size=0, workers=2, store=None)


    @server.use
    def audit(ctx: Context, next: Next) -> None:
        next()
        print(ctx.command_name)
'''


def run_mypy(tmp_path, programs: dict) -> str:
    """mypy's output over `programs` ({file name: source}), with smtp_stack
    found in this checkout (an editable install hides it from mypy) and its
    own errors left out, as for a package installed from a wheel."""
    peers.python_module('mypy')
    for name, source in programs.items():
        (tmp_path / name).write_text(textwrap.dedent(source))
    (tmp_path / 'mypy.ini').write_text('[mypy]\npython_version = 3.10\nstrict = True\n')
    env = dict(os.environ, MYPYPATH=ROOT)
    result = subprocess.run(
        [sys.executable, '-m', 'mypy', '--config-file', 'mypy.ini', '--follow-imports=silent',
         '--cache-dir', MYPY_CACHE, '--no-error-summary', '--hide-error-context',
         '--no-pretty', '--show-error-codes', *programs],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=MYPY_TIMEOUT)
    assert result.returncode in (0, 1), result.stdout + result.stderr
    return result.stdout


def expected_errors(source: str, name: str) -> list:
    lines = textwrap.dedent(source).splitlines()
    return [(f'{name}:{number}', line.split('# flagged: ', 1)[1])
            for number, line in enumerate(lines, 1) if '# flagged: ' in line]


def test_mypy_flags_a_misspelled_option_and_values_of_the_wrong_type(tmp_path):
    output = run_mypy(tmp_path, {'mistakes.py': MISTAKES, 'correct.py': CORRECT})
    errors = [line for line in output.splitlines() if ': error: ' in line]
    found = [(line.split(': error: ')[0], line.split(': error: ')[1].rsplit('  [', 1)[0])
             for line in errors]
    assert found == expected_errors(MISTAKES, 'mistakes.py'), output


def test_mypy_passes_a_correct_program_under_strict(tmp_path):
    output = run_mypy(tmp_path, {'correct.py': CORRECT})
    assert [line for line in output.splitlines() if 'error' in line] == [], output


def test_mypy_knows_the_type_of_each_validated_option_and_that_it_is_frozen(tmp_path):
    output = run_mypy(tmp_path, {'reads.py': OPTION_READS})
    errors = [line for line in output.splitlines() if ': error: ' in line]
    found = [(line.split(': error: ')[0], line.split(': error: ')[1].rsplit('  [', 1)[0])
             for line in errors]
    assert found == expected_errors(OPTION_READS, 'reads.py'), output
