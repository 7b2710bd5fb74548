"""The smtp_stack side of benchmarks/milter_bench.py: a MilterServer whose
one middleware adds a header to every message. It declares no stage of its
own (middleware.stages: the DATA decision at the end of the message reaches
every middleware), so the MTA is asked for the end of the message alone,
as pymilter's milter with only eom().

    python benchmarks/milter_smtp_stack.py --listen inet:127.0.0.1:8891 [--profile FILE]

With --profile, cProfile runs from SIGUSR1 (milter_bench.py sends it after
its warm-up, so only the measured messages count) and its statistics go to
FILE (pstats) at SIGTERM; `milter_bench.py --profile FILE` prints their top.
"""
import argparse
import cProfile
import logging
import signal
import time

import gevent

from smtp_stack.middleware import stages
from smtp_stack.milter import MilterServer


@stages()
def add_header(ctx, next):
    next()
    if ctx.command_name == 'DATA':
        ctx.session.envelope.add_header('X-Milter', 'seen')


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--listen', required=True)
    parser.add_argument('--workers', type=int, default=1)
    parser.add_argument('--profile', help='write cProfile statistics here at SIGTERM')
    args = parser.parse_args()
    # CPU time, not wall time: a greenlet waiting in the hub costs nothing.
    profile = cProfile.Profile(time.process_time) if args.profile else None
    if profile is not None:
        gevent.signal_handler(signal.SIGUSR1, profile.enable)
    logging.basicConfig(level=logging.WARNING)
    server = MilterServer(name='bench.example', log_level='warning', workers=args.workers)
    server.use(add_header)
    server.start(args.listen)
    print('listening', flush=True)
    gevent.signal_handler(signal.SIGTERM, server.stop, 1.0)
    server.serve_forever()
    if profile is not None:
        profile.disable()
        profile.dump_stats(args.profile)


if __name__ == '__main__':
    main()
