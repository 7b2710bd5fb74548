// Drives smtp-stack's inbox with the npm Mailpit client `mailpit-api`,
// exactly as a Mailpit user's test helper would. Run by
// tests/test_inbox_mailpit_client.py: node client.mjs BASE_URL
// It prints WAITING when it starts waiting for a message the test then
// sends, and RESULT {json} at the end; any failed assertion exits non-zero.
import assert from 'node:assert/strict';
import { MailpitClient } from 'mailpit-api';

const mailpit = new MailpitClient(process.argv[2]);
const result = {};

const info = await mailpit.getInfo();
assert.equal(info.Messages, 2);
result.info = { Messages: info.Messages, Unread: info.Unread };

const list = await mailpit.listMessages();
assert.equal(list.total, 2);
assert.deepEqual(list.messages.map((m) => m.Subject), ['Invoice 7', 'Welcome Ann']);
result.list = list.messages.map((m) => m.Subject);

const page = await mailpit.listMessages(1, 1);
assert.deepEqual(page.messages.map((m) => m.Subject), ['Welcome Ann']);

const found = await mailpit.searchMessages({ query: 'subject:welcome' });
assert.equal(found.messages_count, 1);
assert.equal(found.messages[0].From.Address, 'shop@example.com');
result.search = found.messages.map((m) => m.Subject);

console.log('WAITING');
const late = await mailpit.waitForMessage({ query: 'subject:"Late arrival"' },
                                          { timeout: 8000, interval: 100 });
assert.equal(late.Subject, 'Late arrival');
assert.match(late.Text, /arrived while the client waited/);
result.waited = late.Subject;

const invoice = await mailpit.getMessageSummary(list.messages[0].ID);
assert.equal(invoice.Attachments.length, 1);
assert.equal(invoice.Attachments[0].FileName, 'invoice-7.pdf');
const blob = await mailpit.getMessageAttachment(invoice.ID, invoice.Attachments[0].PartID);
assert.equal(blob.size, invoice.Attachments[0].Size);
result.attachment = { name: invoice.Attachments[0].FileName, size: blob.size };

const headers = await mailpit.getMessageHeaders(invoice.ID);
assert.deepEqual(headers.Subject, ['Invoice 7']);
const source = await mailpit.getMessageSource(invoice.ID);
assert.match(source, /^Subject: Invoice 7\r$/m);
const latest = await mailpit.getMessageSummary();      // "latest" is the default ID
assert.equal(latest.Subject, 'Late arrival');

assert.equal(await mailpit.setReadStatus({ IDs: [invoice.ID], Read: false }), 'ok');
assert.equal((await mailpit.searchMessages({ query: 'is:unread' })).messages_count, 2);
assert.equal(await mailpit.setReadStatus({ Read: true }), 'ok');
assert.equal((await mailpit.listMessages()).unread, 0);
result.read = 'ok';

assert.equal(await mailpit.deleteMessagesBySearch({ query: 'subject:welcome' }), 'ok');
assert.equal((await mailpit.listMessages()).total, 2);
assert.equal(await mailpit.deleteMessages({ IDs: [invoice.ID] }), 'ok');
assert.deepEqual((await mailpit.listMessages()).messages.map((m) => m.Subject), ['Late arrival']);
assert.equal(await mailpit.deleteMessages(), 'ok');
assert.equal((await mailpit.listMessages()).total, 0);
result.deleted = 'ok';

await assert.rejects(mailpit.getMessageSummary('latest'), /404/);
console.log('RESULT ' + JSON.stringify(result));
