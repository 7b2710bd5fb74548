"""The milter's CPU per MTA session without an MTA: the packets Postfix 3.7
sends for one message to a milter that asks for the end of the message
alone, replayed over loopback, `--connections` at a time.

    python benchmarks/milter_packets.py [--sessions 5000] [--connections 20]
        [--before TREE ...] [--profile FILE] [--pymilter] [--instructions]

The milter is benchmarks/milter_smtp_stack.py (one middleware adding a
header). Each session is one TCP connection, as Postfix's smtpd opens one
per SMTP session: SMFIC_OPTNEG (answered), the macros of the skipped steps
in one write, the end-of-message macros and SMFIC_BODYEOB (answered with
the header and CONTINUE), then ABORT, ABORT, QUIT. The bytes are those
strace showed of Postfix 3.7 in benchmarks/milter_bench.py. Printed: the
milter process's CPU (user, system) per session. Quicker and steadier than
milter_bench.py for one change at a time; milter_bench.py decides.
--pymilter adds benchmarks/milter_pymilter.py (libmilter) for reference.
--before may be given more than once. --instructions runs each milter
under valgrind's callgrind instead and prints the user-space instructions
it ran per session, from after the warm-up to the last session (its exit
not counted): what the load of a shared machine does not change (the
kernel's share is not in it).
"""
import argparse
import os
import pstats
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TICKS = os.sysconf('SC_CLK_TCK')


def packet(command: bytes, data: bytes = b'') -> bytes:
    return (len(data) + 1).to_bytes(4, 'big') + command + data


def macros(stage: bytes, *pairs: str) -> bytes:
    return packet(b'D', stage + b''.join(each.encode() + b'\0' for each in pairs))


OPTNEG = packet(b'O', (6).to_bytes(4, 'big') + (0x1FF).to_bytes(4, 'big')
                + (0x1FFFFF).to_bytes(4, 'big'))
ENVELOPE = b''.join((
    macros(b'C', 'j', 'mx.test.example', '{daemon_name}', 'mx.test.example',
           '{daemon_addr}', '127.0.0.1', '{daemon_port}', '35929', 'v', 'Postfix 3.7.11',
           '_', 'localhost [127.0.0.1]', '{client_addr}', '127.0.0.1',
           '{client_port}', '58814', '{client_name}', 'localhost'),
    macros(b'H'),
    macros(b'M', '{mail_addr}', 'sender@example.org'),
    macros(b'R', '{rcpt_addr}', 'rcpt@test.example'),
    macros(b'T', 'i', '1040E220631'),
))
END = macros(b'E', 'i', '1040E220631') + packet(b'E')
GOODBYE = packet(b'A') + packet(b'A') + packet(b'Q')


def cpu_seconds(pid: int) -> tuple[float, float]:
    fields = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS


MODIFICATIONS = frozenset(b'+-2ehimbqp')     # SMFIR_* that come before the answer


def read_reply(sock: socket.socket) -> bytes:
    """One answer: packets up to and including one that is not a modification."""
    data = b''
    while True:
        while len(data) >= 5 and len(data) >= 4 + int.from_bytes(data[:4], 'big'):
            size = int.from_bytes(data[:4], 'big')
            if data[4] not in MODIFICATIONS:
                return data
            data = data[4 + size:]
        more = sock.recv(65536)
        if not more:
            raise ConnectionError('the milter closed the connection')
        data += more


def session(port: int) -> None:
    with socket.create_connection(('127.0.0.1', port), timeout=10) as sock:
        sock.sendall(OPTNEG)
        read_reply(sock)
        sock.sendall(ENVELOPE)
        sock.sendall(END)
        read_reply(sock)
        sock.sendall(GOODBYE)


def drive(port: int, sessions: int, connections: int) -> None:
    left = [sessions]
    lock = threading.Lock()
    failures: list[BaseException] = []

    def worker() -> None:
        while True:
            with lock:
                if not left[0] or failures:
                    return
                left[0] -= 1
            try:
                session(port)
            except OSError as exc:
                failures.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError(f'{len(failures)} sessions failed: {failures[0]!r}')


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(('127.0.0.1', port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def run_one(tree: Path | None, args: argparse.Namespace, profile: Path | None = None) -> dict:
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    if tree is None:
        command = ['/usr/bin/python3', str(HERE / 'milter_pymilter.py'),
                   '--listen', f'inet:{port}@127.0.0.1']
    else:
        command = [os.path.realpath(sys.executable), str(tree / 'benchmarks/milter_smtp_stack.py'),
                   '--listen', f'inet:127.0.0.1:{port}']
    if profile is not None:
        command += ['--profile', str(profile)]
    workdir = tempfile.mkdtemp(prefix='milter-cg-') if args.instructions else None
    if workdir is not None:
        command = ['valgrind', '--tool=callgrind', f'--callgrind-out-file={workdir}/cg.out',
                   *command]
    milter = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env=dict(os.environ, PYTHONPATH=str(tree or ''),
                                       PYTHONHASHSEED='0'))
    try:
        wait_port(port, 120 if workdir else 20)
        drive(port, 200, args.connections)      # warm-up
        if profile is not None:
            milter.send_signal(signal.SIGUSR1)
        if workdir is not None:
            subprocess.run(['callgrind_control', '--zero', str(milter.pid)], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        before = cpu_seconds(milter.pid)
        started = time.monotonic()
        drive(port, args.sessions, args.connections)
        elapsed = time.monotonic() - started
        user, system = (a - b for a, b in zip(cpu_seconds(milter.pid), before, strict=True))
        rss = next(int(line.split()[1]) for line in
                   Path(f'/proc/{milter.pid}/status').read_text().splitlines()
                   if line.startswith('VmRSS:'))
        if workdir is not None:     # the counts now: the interpreter's exit is not a session
            subprocess.run(['callgrind_control', '--dump', str(milter.pid)], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        milter.terminate()
        milter.wait(120)
    per = 1e6 / args.sessions
    row = {'user': user * per, 'system': system * per, 'rate': args.sessions / elapsed,
           'rss': rss, 'instructions': 0.0}
    if workdir is not None:
        with open(f'{workdir}/cg.out.1') as counts:
            found = [line for line in counts if line.startswith('totals:')]
        row['instructions'] = int(found[-1].split()[1]) / args.sessions
        shutil.rmtree(workdir, ignore_errors=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sessions', type=int, default=5000)
    parser.add_argument('--connections', type=int, default=20)
    parser.add_argument('--before', type=Path, action='append', default=[],
                        help='also run smtp_stack from this tree (repeatable)')
    parser.add_argument('--profile', type=Path, help="profile this tree's milter into FILE")
    parser.add_argument('--pymilter', action='store_true', help='also run pymilter')
    parser.add_argument('--instructions', action='store_true',
                        help='count user-space instructions per session (callgrind)')
    args = parser.parse_args()
    load = os.getloadavg()[0]
    rows = []
    for tree in args.before:
        rows.append((tree.name, run_one(tree.resolve(), args)))
    rows.append(('this tree', run_one(HERE.parent, args, args.profile)))
    if args.pymilter:
        rows.append(('pymilter', run_one(None, args)))
    if args.profile is not None:
        pstats.Stats(str(args.profile)).sort_stats('tottime').print_stats(45)
    print(f'{args.sessions} sessions, {args.connections} at once; load average {load:.2f} '
          f'at the start, {os.getloadavg()[0]:.2f} at the end')
    for name, row in rows:
        if args.instructions:
            print(f'{name:>14}: {row["instructions"] / 1000:8.1f} thousand user-space '
                  f'instructions per session (callgrind), RSS {row["rss"]} KiB')
        else:
            print(f'{name:>14}: {row["user"] + row["system"]:6.0f} us CPU per session '
                  f'({row["user"]:.0f} user + {row["system"]:.0f} system), '
                  f'{row["rate"]:.0f} sessions/s, RSS {row["rss"]} KiB')


if __name__ == '__main__':
    main()
