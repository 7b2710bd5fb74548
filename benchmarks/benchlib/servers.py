"""The servers under test: how each is started, what it can run, and what
is missing when it cannot run here.

Each server is a small sink (see benchmarks/servers/) that reads every body
completely and throws it away. All of them listen on 127.0.0.1 with a
listen backlog of 1024 and no reverse DNS.
"""

import importlib.metadata
import importlib.util
import json
import os
import pwd
import shutil
import subprocess
import sys

BENCH_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT_DIR = os.path.dirname(BENCH_DIR)
SINKS = os.path.join(BENCH_DIR, 'servers')
NODE_DIR = os.path.join(BENCH_DIR, 'node')
NODE_MODULES = os.path.join(NODE_DIR, 'node_modules')

MAX_SIZE = 100 * 1024 * 1024   # the SIZE limit given to every sink: above (c)
BACKLOG = 1024
HOSTNAME = 'bench.example'

INSTALL_HINT = 'benchmarks/install.sh installs every peer'


def find_postfix_tool(name):
    """smtp-source / smtp-sink live in /usr/sbin, which a user's PATH may
    lack."""
    path = shutil.which(name)
    if path:
        return path
    for folder in ('/usr/sbin', '/usr/lib/postfix/sbin', '/usr/local/sbin'):
        candidate = os.path.join(folder, name)
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _python_env():
    """Run the Python sinks against this work tree's smtp_stack even when it
    is not pip-installed."""
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        p for p in (ROOT_DIR, env.get('PYTHONPATH')) if p)
    env.setdefault('PYTHONDONTWRITEBYTECODE', '1')
    return env


def _use_tree(path):
    """Python that makes `import smtp_stack` load the checkout at `path`."""
    return (f'import sys\nsys.path.insert(0, {BENCH_DIR!r})\n'
            'from benchlib.checkout import use_checkout\n'
            f'use_checkout({os.path.abspath(path)!r})\n')


def _version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


class ServerSpec:
    """One row of the table."""

    name = ''          # the key used by --servers
    label = ''         # the row title
    scenarios = ()     # scenario keys this server takes part in
    workers = 1        # processes serving connections (cores it can use)

    def check(self):
        """None when it can run here, else what is missing and how to fix it."""
        return None

    def version(self):
        return ''

    # The MX scenarios: whether the server checks the DNSBL (so refuses the
    # listed client), and what its Authentication-Results must say of the
    # signed message (a check that silently did nothing would flatter it).
    mx_dnsbl = False
    mx_results = ()
    # The row this one's policy costs are counted over ("cost over none").
    mx_base = None

    def command(self, port, tls=None, maildir=None, mx=None):
        """argv to start the sink; ``tls`` is (key_path, cert_path) for (e);
        ``maildir`` a directory to store every message in (durable and MX
        scenarios); ``mx`` the MX scenarios' world (benchlib.mx.MxWorld.env:
        Redis and DNS addresses)."""
        raise NotImplementedError

    def env(self):
        return None


DURABLE = ('durable', 'durable-conn')
MX = ('mx', 'mx-conn')
MX_POLICIES = ('recipients', 'dnsbl', 'greylist', 'rate_limit', 'authenticate')
AUTH_RESULTS = ('spf=pass', 'dkim=pass', 'dmarc=pass')


class SmtpStack(ServerSpec):
    """smtp_stack_sink.py; in the MX scenarios with every policy on."""
    scenarios = ('a', 'b', 'c', 'c50', 'd', 'e') + DURABLE + MX
    mx_dnsbl = True
    mx_results = AUTH_RESULTS
    mx_base = 'smtp_stack-mx-none'

    def __init__(self, workers=1, bare=False, tree=None):
        self.workers = workers
        self.bare = bare        # no middleware, no log: what the features on top cost
        self.tree = tree        # (name, path): another checkout, for an A/B in one run
        self.name = 'smtp_stack' if workers == 1 else f'smtp_stack-w{workers}'
        self.label = 'smtp_stack' if workers == 1 else f'smtp_stack ({workers} workers)'
        if bare:
            self.name, self.label = 'smtp_stack-bare', 'smtp_stack without middleware or log'
        if tree:
            self.name, self.label = f'smtp_stack@{tree[0]}', f'smtp_stack at {tree[0]}'
        if bare:
            self.scenarios = ('a', 'b')
        elif workers != 1:
            self.scenarios = ('a', 'b') + DURABLE
        elif tree:
            self.scenarios = ('a', 'b') + DURABLE + MX
        self._checked = None

    def check(self):
        if self._checked is None:
            probe = _use_tree(self.tree[1]) if self.tree else ''
            probe += ('import smtp_stack\n'
                     'from smtp_stack import SmtpServer, LogLevels\n'
                     'print(getattr(smtp_stack, "__version__", "") or "dev")\n')
            if self.workers != 1:   # options are validated at construction
                probe += ('SmtpServer(name="bench.example", disable_reverse_lookup=True, '
                          f'workers={self.workers})\n')
            try:
                done = subprocess.run([sys.executable, '-c', probe],
                                      env=_python_env(), capture_output=True,
                                      text=True, timeout=60)
            except subprocess.TimeoutExpired:
                self._checked = ('', 'importing smtp_stack took over 60 s')
            else:
                if done.returncode == 0:
                    self._checked = (done.stdout.strip(), None)
                else:
                    lines = done.stderr.strip().splitlines() or ['no output']
                    if done.stdout.strip():     # imported; workers refused
                        self._checked = ('', f'SmtpServer(workers={self.workers}) '
                                         f'is refused: {lines[-1]}')
                    else:
                        self._checked = ('', 'cannot import SmtpServer and LogLevels '
                                         f'from smtp_stack ({lines[-1]}); install it '
                                         "with pip install -e . once the core has landed")
        return self._checked[1]

    def version(self):
        self.check()
        return self._checked[0]

    mx_policies = ','.join(MX_POLICIES)
    mx_no_dmarc_arc = False

    def command(self, port, tls=None, maildir=None, mx=None):
        cmd = [sys.executable, os.path.join(SINKS, 'smtp_stack_sink.py'),
               '--host', '127.0.0.1', '--port', str(port),
               '--size', str(MAX_SIZE), '--backlog', str(BACKLOG)]
        if mx:
            cmd += ['--policies', self.mx_policies, '--redis', mx['redis'], '--dns', mx['dns']]
            if self.mx_no_dmarc_arc:
                cmd.append('--no-dmarc-arc')
        if self.workers != 1:
            cmd += ['--workers', str(self.workers)]
        if self.bare:
            cmd.append('--bare')
        if self.tree:
            cmd += ['--tree', self.tree[1]]
        if tls:
            cmd += ['--tls', '--key', tls[0], '--cert', tls[1]]
        if maildir:
            cmd += ['--maildir', maildir]
        return cmd

    def env(self):
        return _python_env()


class SmtpStackMx(SmtpStack):
    """smtp_stack in the MX scenarios with some of the policies: none (the
    floor: XCLIENT and the Maildir), one alone (what it costs over none), or
    all without DMARC and ARC (what Haraka checks)."""

    def __init__(self, policies, no_dmarc_arc=False):
        super().__init__()
        self.scenarios = MX
        self.mx_policies = ','.join(policies) or 'none'
        self.mx_no_dmarc_arc = no_dmarc_arc
        self.mx_dnsbl = 'dnsbl' in policies
        self.mx_results = ()
        if 'authenticate' in policies:
            self.mx_results = AUTH_RESULTS[:2] if no_dmarc_arc else AUTH_RESULTS
        if no_dmarc_arc:
            self.name = 'smtp_stack-mx-nodmarc'
            self.label = 'smtp_stack, all but DMARC and ARC (what Haraka checks)'
        elif not policies:
            self.name, self.label = 'smtp_stack-mx-none', 'smtp_stack, no policy'
            self.mx_base = None
        else:
            self.name = f'smtp_stack-mx-{policies[0]}'
            self.label = f'smtp_stack, {policies[0]} alone'


class Aiosmtpd(ServerSpec):
    scenarios = ('a', 'b', 'c', 'c50', 'd', 'e')

    def __init__(self, uvloop=False):
        self.uvloop = uvloop
        self.name = 'aiosmtpd-uvloop' if uvloop else 'aiosmtpd'
        self.label = 'aiosmtpd + uvloop' if uvloop else 'aiosmtpd'
        if not uvloop:
            self.scenarios = Aiosmtpd.scenarios + DURABLE

    def check(self):
        missing = [m for m in (['aiosmtpd'] + (['uvloop'] if self.uvloop else []))
                   if importlib.util.find_spec(m) is None]
        if missing:
            return (f"Python package(s) {', '.join(missing)} not installed: "
                    f"pip install {' '.join(missing)} (or pip install -e '.[bench]')")
        return None

    def version(self):
        text = _version('aiosmtpd') or ''
        if self.uvloop:
            text += f", uvloop {_version('uvloop')}"
        return text

    def command(self, port, tls=None, maildir=None, mx=None):
        cmd = [sys.executable, os.path.join(SINKS, 'aiosmtpd_sink.py'),
               '--host', '127.0.0.1', '--port', str(port),
               '--size', str(MAX_SIZE), '--backlog', str(BACKLOG)]
        if self.uvloop:
            cmd.append('--uvloop')
        if tls:
            cmd += ['--tls', '--key', tls[0], '--cert', tls[1]]
        if maildir:
            cmd += ['--maildir', maildir]
        return cmd

    def env(self):
        return _python_env()


class Nodemailer(ServerSpec):
    name = 'nodemailer'
    label = 'nodemailer smtp-server'
    scenarios = ('a', 'b', 'c', 'c50', 'd', 'e') + DURABLE

    def check(self):
        if not shutil.which('node'):
            return 'node is not installed (Debian package nodejs)'
        if not os.path.exists(os.path.join(NODE_MODULES, 'smtp-server', 'package.json')):
            return ('npm package smtp-server not installed: '
                    'npm install --prefix benchmarks/node')
        return None

    def version(self):
        try:
            with open(os.path.join(NODE_MODULES, 'smtp-server', 'package.json')) as f:
                pkg = json.load(f)['version']
            node = subprocess.run(['node', '--version'], capture_output=True,
                                  text=True, timeout=20).stdout.strip()
            return f'{pkg}, node {node}'
        except (OSError, ValueError, KeyError, subprocess.TimeoutExpired):
            return ''

    def command(self, port, tls=None, maildir=None, mx=None):
        cmd = ['node', os.path.join(SINKS, 'nodemailer_sink.js'),
               '--host', '127.0.0.1', '--port', str(port),
               '--size', str(MAX_SIZE), '--backlog', str(BACKLOG)]
        if tls:
            cmd += ['--tls', '--key', tls[0], '--cert', tls[1]]
        if maildir:
            cmd += ['--maildir', maildir]
        return cmd

    def env(self):
        env = dict(os.environ)
        env['NODE_PATH'] = NODE_MODULES
        return env


class SmtpSink(ServerSpec):
    name = 'smtp-sink'
    label = 'Postfix smtp-sink'
    scenarios = ('a', 'b', 'c', 'c50', 'd')

    def check(self):
        if not find_postfix_tool('smtp-sink'):
            return ('smtp-sink not found: DEBIAN_FRONTEND=noninteractive '
                    'apt-get install -y postfix (then postfix stop)')
        return None

    def version(self):
        try:
            return subprocess.run(['dpkg-query', '-W', '-f=${Version}', 'postfix'],
                                  capture_output=True, text=True,
                                  timeout=20).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ''

    def command(self, port, tls=None, maildir=None, mx=None):
        cmd = [find_postfix_tool('smtp-sink'), '-h', HOSTNAME,
               '-m', '8192']          # default 256 sessions: (d) needs 2,000
        if os.geteuid() == 0:
            cmd += ['-u', 'nobody']    # it refuses to run as root without -u
        return cmd + [f'127.0.0.1:{port}', str(BACKLOG)]


class PostfixMaildir(ServerSpec):
    """benchmarks/servers/postfix_maildir.py: a private Postfix whose smtpd
    queues each message (fsync'd before the 250) and whose `virtual`
    delivers it into the Maildir; the durable scenarios wait until every
    message is in new/."""
    name = 'postfix'
    label = 'Postfix (smtpd → virtual → Maildir)'
    scenarios = DURABLE

    def check(self):
        if not find_postfix_tool('postfix'):
            return ('postfix not found: DEBIAN_FRONTEND=noninteractive '
                    'apt-get install -y postfix (then postfix stop)')
        if os.geteuid() != 0:
            return 'a private Postfix needs root (its daemons drop to the postfix user)'
        try:
            pwd.getpwnam('postfix')
        except KeyError:
            return 'no postfix user (install Debian package postfix)'
        return None

    def version(self):
        return SmtpSink.version(self)

    def leader(self, port):
        """The pid of the master, whose process group holds the daemons
        (it leaves the group the harness started), or None."""
        try:
            with open(f'/tmp/bench-postfix-{port}/queue/pid/master.pid') as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def cleanup(self, port):
        shutil.rmtree(f'/tmp/bench-postfix-{port}', ignore_errors=True)

    def command(self, port, tls=None, maildir=None, mx=None):
        return [sys.executable, os.path.join(SINKS, 'postfix_maildir.py'),
                '--host', '127.0.0.1', '--port', str(port), '--maildir', maildir,
                '--size', str(MAX_SIZE)]


class HarakaMaildir(ServerSpec):
    """benchmarks/servers/haraka_maildir.py: Haraka (npm) with a small queue
    plugin that stores each message durably in the Maildir; in the MX
    scenarios with its stock policy plugins in front (``policies=False``:
    without them, the floor the plugins' cost is counted over)."""
    name = 'haraka'
    label = 'Haraka (write+fsync queue plugin)'
    scenarios = DURABLE + MX
    mx_dnsbl = True
    mx_results = AUTH_RESULTS[:2]
    mx_base = 'haraka-mx-none'

    def __init__(self, policies=True):
        self.policies = policies
        if not policies:
            self.name, self.label = 'haraka-mx-none', 'Haraka, no policy plugin'
            self.scenarios = MX
            self.mx_dnsbl, self.mx_results, self.mx_base = False, (), None

    def check(self):
        if not shutil.which('node'):
            return 'node is not installed (Debian package nodejs)'
        if not os.path.exists(os.path.join(NODE_MODULES, 'Haraka', 'package.json')):
            return 'npm package Haraka not installed: npm install --prefix benchmarks/node'
        return None

    def version(self):
        try:
            with open(os.path.join(NODE_MODULES, 'Haraka', 'package.json')) as f:
                return json.load(f)['version']
        except (OSError, ValueError, KeyError):
            return ''

    def cleanup(self, port):
        shutil.rmtree(f'/tmp/bench-haraka-{port}', ignore_errors=True)

    def command(self, port, tls=None, maildir=None, mx=None):
        cmd = [sys.executable, os.path.join(SINKS, 'haraka_maildir.py'),
               '--host', '127.0.0.1', '--port', str(port), '--maildir', maildir,
               '--size', str(MAX_SIZE)]
        if mx:
            cmd += ['--mx', 'all' if self.policies else 'none',
                    '--redis', mx['redis'], '--dns', mx['dns']]
        return cmd

    def env(self):
        env = dict(os.environ)
        env['NODE_PATH'] = NODE_MODULES
        return env


class GeventSink(ServerSpec):
    """benchmarks/servers/gevent_sink.py: no features at all, the floor of
    a gevent server (plain scenarios only: it has no TLS)."""
    name = 'gevent-sink'
    label = 'featureless gevent sink'
    scenarios = ('a', 'b', 'c', 'c50', 'd')

    def command(self, port, tls=None, maildir=None, mx=None):
        return [sys.executable, os.path.join(SINKS, 'gevent_sink.py'),
                '--host', '127.0.0.1', '--port', str(port), '--backlog', str(BACKLOG)]

    def env(self):
        return _python_env()


def all_servers(trees=()):
    """Every server spec; `trees` (name, path) add smtp_stack at other checkouts."""
    return [SmtpStack(tree=tree) for tree in trees] + [
        SmtpStack(), SmtpStack(workers=2), SmtpStack(bare=True), GeventSink(), Aiosmtpd(),
        Aiosmtpd(uvloop=True), Nodemailer(), SmtpSink(), PostfixMaildir(), HarakaMaildir(),
        SmtpStackMx(MX_POLICIES, no_dmarc_arc=True), SmtpStackMx(())] + [
        SmtpStackMx((policy,)) for policy in MX_POLICIES] + [HarakaMaildir(policies=False)]
