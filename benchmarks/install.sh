#!/bin/sh
# Install the peers benchmarks/run.py compares smtp_stack with:
#   - aiosmtpd and uvloop (pip; the same as pip install -e '.[bench]')
#   - Postfix's smtp-source and smtp-sink (Debian package postfix; its
#     daemon is stopped again right after the install)
#   - nodemailer's smtp-server and Haraka (npm, into
#     benchmarks/node/node_modules, which git ignores; Haraka's stock
#     plugins come with it as optional dependencies)
#   - for the MX scenarios: redis-server and dnsmasq (Debian packages
#     redis-server and dnsmasq-base; no daemon of theirs is wanted, the
#     harness starts private ones) and the policies' Python packages
#     (dkimpy ...: pip install -e '.[policies]')
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

if ! "$python" -c 'import dkim, dns, spf, redis' 2>/dev/null; then
    echo "== pip install -e '.[policies]' (for the MX scenarios)"
    "$python" -m pip install -e "$here/..[policies]"
fi

missing=
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
command -v dnsmasq >/dev/null 2>&1 || [ -x /usr/sbin/dnsmasq ] || missing="$missing dnsmasq-base"
if [ -n "$missing" ]; then
    echo "== apt-get install$missing (for the MX scenarios)"
    if [ "$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi
    $sudo apt-get update -q
    # dnsmasq-base has no service; redis-server's is stopped: the harness
    # runs private instances on free ports.
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q $missing
    if [ -z "${missing##*redis-server*}" ] && command -v systemctl >/dev/null 2>&1; then
        $sudo systemctl stop redis-server 2>/dev/null || true
    fi
fi

if ! command -v node >/dev/null 2>&1; then
    echo "node is not installed: the nodemailer peer will be skipped" >&2
elif [ ! -f "$here/node/node_modules/smtp-server/package.json" ] \
        || [ ! -f "$here/node/node_modules/Haraka/package.json" ]; then
    echo "== npm install smtp-server and Haraka into benchmarks/node"
    npm install --prefix "$here/node" --no-audit --no-fund
fi

echo "peers installed; run: python benchmarks/run.py --quick"
