#!/bin/sh
# Install the peers benchmarks/run.py compares smtp_stack with:
#   - aiosmtpd and uvloop (pip; the same as pip install -e '.[bench]')
#   - Postfix's smtp-source and smtp-sink (Debian package postfix; its
#     daemon is stopped again right after the install)
#   - nodemailer's smtp-server and Haraka (npm, into
#     benchmarks/node/node_modules, which git ignores)
# Each step is skipped when what it installs is already there.
# Usage: sh benchmarks/install.sh        (PYTHON=python3.11 to pick Python)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python3}

if ! "$python" -c 'import aiosmtpd, uvloop' 2>/dev/null; then
    echo "== pip install aiosmtpd uvloop"
    "$python" -m pip install aiosmtpd uvloop
fi

if ! command -v smtp-source >/dev/null 2>&1 && [ ! -x /usr/sbin/smtp-source ]; then
    echo "== apt-get install postfix (for smtp-source and smtp-sink)"
    if [ "$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi
    $sudo apt-get update -q
    # Answer the install questions with "No configuration": no mail
    # system is set up, only the programs are wanted.
    echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q postfix
fi
# The package may start the Postfix daemon; the benchmark wants none.
if command -v postfix >/dev/null 2>&1 || [ -x /usr/sbin/postfix ]; then
    if [ "$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi
    $sudo /usr/sbin/postfix status >/dev/null 2>&1 && $sudo /usr/sbin/postfix stop || true
fi

if ! command -v node >/dev/null 2>&1; then
    echo "node is not installed: the nodemailer peer will be skipped" >&2
elif [ ! -f "$here/node/node_modules/smtp-server/package.json" ] \
        || [ ! -f "$here/node/node_modules/Haraka/package.json" ]; then
    echo "== npm install smtp-server and Haraka into benchmarks/node"
    npm install --prefix "$here/node" --no-audit --no-fund
fi

echo "peers installed; run: python benchmarks/run.py --quick"
