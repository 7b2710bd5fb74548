"""Processes: start them in their own group, read /proc, stop them for sure.

Every process the harness starts (servers and clients) gets a session of its
own (``setsid``), so its process-group id is its pid and ``killpg`` reaches
whatever it forked (worker processes, multiprocessing children). Every group
is recorded in ``LIVE`` until it is reaped; ``kill_all()`` runs from the
harness's ``finally`` and ``atexit`` so nothing outlives a run, even on Ctrl-C
or an exception.

Server CPU time and memory are read from /proc, summed over the server's
process group (one process for most servers; master plus workers for
``smtp_stack --workers N``).
"""

import os
import resource
import signal
import socket
import subprocess
import time

CLK_TCK = os.sysconf('SC_CLK_TCK')

LIVE = {}   # pgid -> Popen, for every group not yet reaped


class RunResult:
    """What a bounded client run left: exit code, output, times."""

    def __init__(self, returncode, stdout, stderr, wall, cpu, timed_out):
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.wall = wall            # seconds, monotonic
        self.cpu = cpu              # the client's own CPU seconds (user+sys)
        self.timed_out = timed_out

    @property
    def ok(self):
        return self.returncode == 0 and not self.timed_out

    def error_text(self):
        if self.timed_out:
            return 'timed out'
        text = (self.stderr or self.stdout or '').strip().splitlines()
        return f'exit {self.returncode}: ' + (text[-1] if text else 'no output')


def raise_nofile_limit(want=65536):
    """Raise RLIMIT_NOFILE to ``want`` (the hard limit too when we may, else
    up to the hard limit). Children inherit it, so 2,000 idle connections
    fit on both ends."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want
    if hard != resource.RLIM_INFINITY and hard < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return want
        except (ValueError, OSError):
            target = hard
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def free_port(host='127.0.0.1'):
    """A port that was free a moment ago (the server binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_port_udp_tcp(host='127.0.0.1', tries=50):
    """A port free a moment ago for both UDP and TCP (a DNS server binds
    both)."""
    for _ in range(tries):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
                return port
    raise OSError('no port free for both UDP and TCP')


def _stat_fields(pid):
    """Fields of /proc/PID/stat after the command name (which may hold
    spaces and parentheses), so index 0 is field 3 ('state')."""
    with open(f'/proc/{pid}/stat', 'rb') as f:
        raw = f.read()
    return raw[raw.rindex(b')') + 2:].split()


def group_pids(pgid):
    """The live processes whose process group is ``pgid``."""
    pids = []
    for name in os.listdir('/proc'):
        if not name.isdigit():
            continue
        try:
            fields = _stat_fields(name)
        except (OSError, ValueError):
            continue
        if int(fields[2]) == pgid and fields[0] != b'Z':
            pids.append(int(name))
    return pids


def group_cpu_seconds(pgid):
    """utime+stime of every process in the group, plus what their reaped
    children used (cutime+cstime), in seconds."""
    ticks = 0
    for pid in group_pids(pgid):
        try:
            fields = _stat_fields(pid)
        except (OSError, ValueError):
            continue
        # fields 14..17 of stat(5): utime stime cutime cstime
        ticks += sum(int(x) for x in fields[11:15])
    return ticks / CLK_TCK


def group_cpu_split(pgid):
    """(user, system) seconds of the group, reaped children included: what
    group_cpu_seconds sums, apart."""
    user = system = 0
    for pid in group_pids(pgid):
        try:
            fields = _stat_fields(pid)
        except (OSError, ValueError):
            continue
        user += int(fields[11]) + int(fields[13])       # utime, cutime
        system += int(fields[12]) + int(fields[14])     # stime, cstime
    return user / CLK_TCK, system / CLK_TCK


def machine_busy_seconds():
    """(busy, total) CPU seconds of the whole machine so far, from the
    first line of /proc/stat (idle and iowait are not busy; steal is)."""
    with open('/proc/stat') as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    total = sum(fields)
    return (total - fields[3] - fields[4]) / CLK_TCK, total / CLK_TCK


def _status_kb(pid, key):
    try:
        with open(f'/proc/{pid}/status') as f:
            for line in f:
                if line.startswith(key + ':'):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def group_rss_kb(pgid):
    """Resident set size of the group now (sum of VmRSS), KiB."""
    return sum(_status_kb(pid, 'VmRSS') for pid in group_pids(pgid))


def group_hwm_kb(pgid):
    """Peak resident set size (sum of each process's VmHWM), KiB."""
    return sum(_status_kb(pid, 'VmHWM') for pid in group_pids(pgid))


def spawn(cmd, *, env=None, cwd=None, stdin=subprocess.DEVNULL,
          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=False):
    """Start ``cmd`` as the leader of a new process group and record it."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, start_new_session=True,
                            stdin=stdin, stdout=stdout, stderr=stderr,
                            text=text)
    LIVE[proc.pid] = proc
    return proc


def stop_group(proc, grace=5.0):
    """SIGTERM the group, wait up to ``grace`` seconds, then SIGKILL it.
    Also kills group members that outlived the leader (forked workers)."""
    pgid = proc.pid
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc.poll() is not None and not group_pids(pgid):
                break
            time.sleep(0.05)
        else:
            continue
        break
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    LIVE.pop(pgid, None)


def stop_pgid(pgid, grace=5.0):
    """SIGTERM a process group the harness did not start itself, then
    SIGKILL what is left of it after `grace` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while group_pids(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not group_pids(pgid):
            return


def kill_all():
    """Stop every group still recorded (used on errors and at exit)."""
    for proc in list(LIVE.values()):
        stop_group(proc, grace=2.0)


def run_bounded(cmd, timeout, *, env=None, cwd=None, input_text=None):
    """Run a client to completion in its own group, killed at ``timeout``.
    Returns a RunResult with the client's wall time and its own CPU time
    (from RUSAGE_CHILDREN: only this child is reaped in between)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, start_new_session=True, text=True,
        stdin=subprocess.PIPE if input_text is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    LIVE[proc.pid] = proc
    timed_out = False
    try:
        out, err = proc.communicate(input_text, timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        stop_group(proc, grace=1.0)
        out, err = proc.communicate()
    finally:
        LIVE.pop(proc.pid, None)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return RunResult(proc.returncode, out, err, wall, cpu, timed_out)


def wait_smtp_ready(port, proc, timeout=30.0, host='127.0.0.1'):
    """Wait until the server answers a connection with a 220 greeting (then
    QUIT). Returns None when ready, else a reason."""
    deadline = time.monotonic() + timeout
    last = 'no answer'
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f'exited with code {proc.returncode} before it was ready'
        try:
            with socket.create_connection((host, port), timeout=3) as s:
                s.settimeout(3)
                data = b''
                while b'\n' not in data:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                if data.startswith(b'220'):
                    try:
                        s.sendall(b'QUIT\r\n')
                        s.recv(4096)
                    except OSError:
                        pass
                    return None
                last = f'greeting was {data[:60]!r}'
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    return f'not ready after {timeout:.0f} s ({last})'


def tail(path, lines=8):
    try:
        with open(path, errors='replace') as f:
            return ''.join(f.readlines()[-lines:]).rstrip()
    except OSError:
        return ''
