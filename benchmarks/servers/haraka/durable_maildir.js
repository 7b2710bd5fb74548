'use strict';
// A Haraka queue plugin for the durable scenarios: each message is written
// to a new file in the Maildir's tmp/, fsync'd, renamed into new/, and new/
// is fsync'd, before Haraka's 250 (the guarantee smtp_stack's Maildir
// delivery gives). File calls go through fs.promises (libuv's threads).
// Also answers lookup_rdns with 'localhost' ($BENCH_RDNS when set: 'Unknown'
// in the MX scenarios, Haraka's word for no rDNS): no peer does reverse DNS.
// The Maildir is $BENCH_MAILDIR (set by benchmarks/servers/haraka_maildir.py).

const fs = require('fs');
const path = require('path');

let counter = 0;

exports.register = function () {
    this.maildir = process.env.BENCH_MAILDIR;
};

exports.hook_lookup_rdns = function (next) {
    next(OK, process.env.BENCH_RDNS || 'localhost');
};

async function store(dir, data) {
    const now = Date.now();
    const name = `${Math.floor(now / 1000)}.M${(now % 1000) * 1000}P${process.pid}` +
        `Q${++counter}.bench.example`;
    const tmp = path.join(dir, 'tmp', name);
    const file = await fs.promises.open(tmp, 'wx', 0o600);
    try {
        await file.write(data);
        await file.sync();
    } finally {
        await file.close();
    }
    const newDir = path.join(dir, 'new');
    await fs.promises.rename(tmp, path.join(newDir, name));
    const dirHandle = await fs.promises.open(newDir, 'r');
    try {
        await dirHandle.sync();
    } finally {
        await dirHandle.close();
    }
}

exports.hook_queue = function (next, connection) {
    const dir = this.maildir;
    connection.transaction.message_stream.get_data(data => {
        store(dir, data).then(() => next(OK), err => next(DENYSOFT, err.message));
    });
};
