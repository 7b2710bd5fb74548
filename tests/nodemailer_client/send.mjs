// Sends one message with the npm client nodemailer, as an application would.
// Run by tests/test_clients.py: node send.mjs '{"transport": {...}, "message": {...}}'
// `transport` is nodemailer's SMTP transport options as they are (host, port,
// secure, requireTLS, auth, authMethod, tls), except that `tls.caFile` names
// a PEM file to trust, read here. Prints RESULT {json} with what the server
// answered; a failure exits non-zero with the error on stderr.
import { readFileSync } from 'node:fs';
import nodemailer from 'nodemailer';

const { transport, message } = JSON.parse(process.argv[2]);
if (transport.tls && transport.tls.caFile) {
    transport.tls.ca = [readFileSync(transport.tls.caFile)];
    delete transport.tls.caFile;
}
// Every wait bounded: the test's own timeout is the last resort, not this one.
Object.assign(transport, { connectionTimeout: 10000, greetingTimeout: 10000, socketTimeout: 10000 });

const transporter = nodemailer.createTransport(transport);
try {
    const info = await transporter.sendMail(message);
    console.log('RESULT ' + JSON.stringify({
        accepted: info.accepted, rejected: info.rejected, response: info.response,
        messageId: info.messageId,
    }));
} catch (err) {
    console.error(`${err.code || 'ERROR'}: ${err.message}`);
    process.exitCode = 1;
} finally {
    transporter.close();
}
