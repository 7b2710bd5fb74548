"""The pymilter side of benchmarks/milter_bench.py (Debian python3-milter:
libmilter's threads): a milter that adds the same header to every message.
Run with the system's python3, where the package installs:

    /usr/bin/python3 benchmarks/milter_pymilter.py --listen inet:8891@127.0.0.1
"""
import argparse
import sys

import Milter


class AddHeader(Milter.Base):
    """Only eom is overridden: pymilter asks the MTA for nothing else."""

    def eom(self):
        self.addheader('X-Milter', 'seen')
        return Milter.ACCEPT


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--listen', required=True)
    args = parser.parse_args()
    Milter.factory = AddHeader
    Milter.set_flags(Milter.ADDHDRS)
    print('listening', flush=True)
    sys.stdout.flush()
    Milter.runmilter('bench', args.listen, timeout=600)


if __name__ == '__main__':
    main()
