'use strict';
// nodemailer's smtp-server as a benchmark sink.
//
// Every body is read to the end ('data' events) and thrown away. Reverse DNS
// off, logger off. Plain runs (a)-(d) disable STARTTLS and AUTH; with --tls
// (scenario e) it offers STARTTLS with the harness's certificate and AUTH
// PLAIN only after TLS, accepting any password. The module is found through
// NODE_PATH (benchmarks/node/node_modules, set by the harness).
//
// With --maildir DIR (the durable scenarios) onData stores each message
// before its 250, with the guarantee smtp_stack's Maildir delivery gives:
// the body is written to a new file in tmp/, fsync'd, renamed into new/,
// and new/ is fsync'd; every file call runs in libuv's thread pool
// (fs.promises), as a Node user would write it.

const fs = require('fs');
const path = require('path');
const { SMTPServer } = require('smtp-server');

function parseArgs(argv) {
    const args = { host: '127.0.0.1', port: 0, size: 100 * 1024 * 1024, backlog: 1024, tls: false };
    for (let i = 0; i < argv.length; i++) {
        const name = argv[i].replace(/^--/, '');
        if (name === 'tls') {
            args.tls = true;
        } else {
            args[name] = argv[++i];
        }
    }
    for (const name of ['port', 'size', 'backlog']) {
        args[name] = Number(args[name]);
    }
    return args;
}

const args = parseArgs(process.argv.slice(2));

let counter = 0;

async function storeInMaildir(dir, chunks) {
    const now = Date.now();
    const name = `${Math.floor(now / 1000)}.M${(now % 1000) * 1000}P${process.pid}` +
        `Q${++counter}.bench.example`;
    const tmp = path.join(dir, 'tmp', name);
    const file = await fs.promises.open(tmp, 'wx', 0o600);
    try {
        await file.writev(chunks);
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

function storingOnData(dir) {
    for (const sub of ['tmp', 'new', 'cur']) {
        fs.mkdirSync(path.join(dir, sub), { recursive: true, mode: 0o700 });
    }
    return function onData(stream, session, callback) {
        const chunks = [];
        stream.on('data', chunk => chunks.push(chunk));
        stream.on('error', callback);
        stream.on('end', () => {
            storeInMaildir(dir, chunks).then(() => callback(null), callback);
        });
    };
}

const options = {
    name: 'bench.example',
    disableReverseLookup: true,
    logger: false,
    size: args.size,
    authOptional: true,
    onData(stream, session, callback) {
        stream.on('data', () => {});
        stream.on('error', callback);
        stream.on('end', () => callback(null));
    }
};

if (args.tls) {
    Object.assign(options, {
        key: fs.readFileSync(args.key),
        cert: fs.readFileSync(args.cert),
        authMethods: ['PLAIN'],
        allowInsecureAuth: false,
        onAuth(auth, session, callback) {
            callback(null, { user: auth.username });
        }
    });
} else {
    options.disabledCommands = ['STARTTLS', 'AUTH'];
}
if (args.maildir) {
    options.onData = storingOnData(args.maildir);
}

const server = new SMTPServer(options);
server.on('error', err => console.error('server error:', err.message));
server.listen(args.port, args.host, args.backlog);

for (const signal of ['SIGTERM', 'SIGINT']) {
    process.on(signal, () => process.exit(0));
}
