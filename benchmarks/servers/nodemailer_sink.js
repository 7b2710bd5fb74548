'use strict';
// nodemailer's smtp-server as a benchmark sink.
//
// Every body is read to the end ('data' events) and thrown away. Reverse DNS
// off, logger off. Plain runs (a)-(d) disable STARTTLS and AUTH; with --tls
// (scenario e) it offers STARTTLS with the harness's certificate and AUTH
// PLAIN only after TLS, accepting any password. The module is found through
// NODE_PATH (benchmarks/node/node_modules, set by the harness).

const fs = require('fs');
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

const server = new SMTPServer(options);
server.on('error', err => console.error('server error:', err.message));
server.listen(args.port, args.host, args.backlog);

for (const signal of ['SIGTERM', 'SIGINT']) {
    process.on(signal, () => process.exit(0));
}
