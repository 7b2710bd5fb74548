// Calls every method of npm's `mailpit-api` 2.1.0 against smtp-stack's
// inbox and checks Mailpit's answers. Run by
// tests/test_inbox_mailpit_client.py: node every_method.mjs BASE_URL
// The test has stored one message over SMTP first (no Message-ID, a
// List-Unsubscribe, a blind recipient, a plus-address); it checks the
// release and the chaos trigger left on afterwards. Prints RESULT {json}:
// each method's name and what it gave; any failed assertion exits non-zero.
import assert from 'node:assert/strict';
import { MailpitClient } from 'mailpit-api';

const mailpit = new MailpitClient(process.argv[2]);
const result = {};
const PNG = Buffer.from('89504e470d0a1a0a0000000d49484452', 'hex').toString('base64');

// -- what arrived over SMTP ---------------------------------------------------------------------
const config = await mailpit.getConfiguration();
assert.equal(config.ChaosEnabled, true);
assert.equal(config.MessageRelay.Enabled, true);
result.getConfiguration = 'ChaosEnabled, MessageRelay';

const list = await mailpit.listMessages();
assert.equal(list.total, 1);
const [item] = list.messages;
assert.equal(item.Cc, null);                       // Mailpit: an empty list is null in a list
assert.deepEqual(item.ReplyTo, []);
assert.deepEqual(item.Bcc, [{ Name: '', Address: 'hidden@example.com' }]);
assert.equal(item.Username, '');
assert.deepEqual(item.Tags, ['signup']);           // ann+signup@example.com
assert.equal(item.Snippet, 'Hello from the HTML part');
assert.match(item.MessageID, /^[0-9A-Za-z]{22}@smtp-stack$/);
result.listMessages = 'null Cc, Bcc, Username "", plus-address tag, HTML snippet';

const smtp = await mailpit.getMessageSummary(item.ID);
assert.equal('Read' in smtp, false);
assert.equal(smtp.MessageID, item.MessageID);
assert.equal(smtp.Date, '2026-02-03T10:00:00+02:00');
assert.equal(smtp.Text, 'Hello in text\r\n');
assert.deepEqual(smtp.ListUnsubscribe, {
  Header: '<mailto:leave@example.com>, <https://example.com/leave?u=1>',
  Links: ['mailto:leave@example.com', 'https://example.com/leave?u=1'],
  Errors: '',
  HeaderPost: 'List-Unsubscribe=One-Click',
});
result.getMessageSummary = 'ListUnsubscribe, generated MessageID, Date with its offset, CRLF Text';

const found = await mailpit.searchMessages({ query: `message-id:${smtp.MessageID}` });
assert.equal(found.messages_count, 1);
result.searchMessages = 'message-id: of a generated Message-ID';

// -- send -----------------------------------------------------------------------------------
const sent = await mailpit.sendMessage({
  From: { Email: 'shop@example.com', Name: 'Shop' },
  To: [{ Email: 'ann@example.com', Name: 'Ann' }],
  Cc: [{ Email: 'carol@example.com' }],
  Bcc: ['audit@example.com'],
  ReplyTo: [{ Email: 'help@example.com' }],
  Subject: 'Sent over HTTP',
  Text: 'Your order\nhas shipped.',
  HTML: '<p>Your order <img src="cid:logo"> has shipped.</p>',
  Attachments: [
    { Content: PNG, Filename: 'logo.png', ContentType: 'image/png', ContentID: 'logo' },
    { Content: Buffer.from('a,b\n1,2\n').toString('base64'), Filename: 'order.csv' },
  ],
  Headers: { 'X-Order': '42' },
  Tags: ['Smoke test', 'api'],
});
assert.match(sent.ID, /^[0-9A-Za-z]{22}$/);
result.sendMessage = 'ID';

const waited = await mailpit.waitForMessage({ query: 'subject:"Sent over HTTP"' },
                                            { timeout: 5000, interval: 100 });
assert.equal(waited.ID, sent.ID);
assert.equal(waited.Text, 'Your order\nhas shipped.');
assert.deepEqual(waited.Tags, ['api', 'Smoke test']);
assert.deepEqual(waited.Bcc, [{ Name: '', Address: 'audit@example.com' }]);
assert.deepEqual(waited.ReplyTo, [{ Name: '', Address: 'help@example.com' }]);
assert.equal(waited.ReturnPath, 'shop@example.com');
assert.deepEqual(waited.Inline.map((p) => [p.PartID, p.FileName, p.ContentID]),
                 [['1.2', 'logo.png', 'logo']]);
assert.deepEqual(waited.Attachments.map((p) => [p.PartID, p.FileName]), [['2', 'order.csv']]);
result.waitForMessage = 'the sent message, its tags, parts and Bcc';

const headers = await mailpit.getMessageHeaders(sent.ID);
assert.deepEqual(headers['Return-Path'], ['<shop@example.com>']);
assert.deepEqual(headers.Bcc, ['audit@example.com']);
assert.deepEqual(headers['X-Order'], ['42']);
assert.match(headers['Message-Id'][0], /^<[0-9A-Za-z]{22}@smtp-stack>$/);
result.getMessageHeaders = 'Return-Path, Bcc, Message-Id written at arrival';

const source = await mailpit.getMessageSource(sent.ID);
assert.match(source, /^Bcc: audit@example\.com\r\nMessage-ID: <[^>]+>\r\nReturn-Path: <shop@example\.com>\r\n/);
result.getMessageSource = 'starts Bcc, Message-ID, Return-Path';

const csv = await mailpit.getMessageAttachment(sent.ID, '2');
assert.equal(await csv.text(), 'a,b\n1,2\n');
assert.equal(csv.type, 'text/csv');
result.getMessageAttachment = 'text/csv, its bytes';

const html = await mailpit.renderMessageHTML(sent.ID);
assert.equal(html, `<p>Your order <img src="/api/v1/message/${sent.ID}/part/1.2"> has shipped.</p>`);
assert.match(await mailpit.renderMessageHTML(sent.ID, 1), /<base target="_blank">/);
result.renderMessageHTML = 'the HTML part, cid: made a part URL';
assert.equal(await mailpit.renderMessageText(sent.ID), 'Your order\nhas shipped.');
result.renderMessageText = 'the Text';

const textOnly = await mailpit.sendMessage({ From: { Email: 'a@example.com' },
                                            To: [{ Email: 'b@example.com' }],
                                            Subject: 'Text only', Text: 'plain' });
await assert.rejects(mailpit.renderMessageHTML(textOnly.ID), /404/);

// -- tags -----------------------------------------------------------------------------------
assert.deepEqual(await mailpit.getTags(), ['api', 'signup', 'Smoke test']);
result.getTags = 'every tag, by name';
assert.equal(await mailpit.setTags({ IDs: [textOnly.ID, item.ID], Tags: ['one', 'Two'] }), 'ok');
assert.deepEqual((await mailpit.searchMessages({ query: 'tag:two' })).messages.map((m) => m.ID),
                 [textOnly.ID, item.ID]);
assert.deepEqual(await mailpit.getTags(), ['api', 'one', 'Smoke test', 'Two']);   // signup: gone
result.setTags = 'replaced; an unused tag is gone';
assert.equal(await mailpit.renameTag('one', 'uno'), 'ok');
result.renameTag = 'ok';
assert.equal(await mailpit.deleteTag('Two'), 'ok');
assert.deepEqual(await mailpit.getTags(), ['api', 'Smoke test', 'uno']);
await assert.rejects(mailpit.deleteTag('Two'), /400/);
result.deleteTag = 'ok; an unknown one 400';
assert.deepEqual((await mailpit.getInfo()).Tags, { api: 1, 'Smoke test': 1, uno: 2 });
result.getInfo = 'Tags with their counts';

// -- read flags, searches, waiting ---------------------------------------------------------------
assert.equal(await mailpit.setReadStatus(), 'ok');                  // all unread
assert.equal((await mailpit.listMessages()).unread, 3);
assert.equal(await mailpit.setReadStatus({ Search: 'tag:uno', Read: true }, { tz: 'Europe/Paris' }),
             'ok');
assert.equal((await mailpit.listMessages()).unread, 1);
await assert.rejects(mailpit.setReadStatus({ IDs: [item.ID], Search: 'tag:uno' }), /400/);
result.setReadStatus = 'all; by search with tz; IDs and Search both: 400';
const after = await mailpit.searchMessages({ query: 'after:2000-01-01', tz: 'Pacific/Auckland' });
assert.equal(after.messages_count, 3);
const unknownFilter = await mailpit.searchMessages({ query: 'is:flagged' });
assert.equal(unknownFilter.messages_count, 0);     // a word, not an error
const all = await mailpit.listMessages(0, 0);
assert.equal(all.messages.length, 3);
assert.equal((await mailpit.waitForMessages({ count: 3, exact: true },
                                            { timeout: 2000, interval: 100 })).total, 3);
assert.equal((await mailpit.waitForMessages({ query: 'tag:uno', count: 2 },
                                            { timeout: 2000, interval: 100 })).messages_count, 2);
result.waitForMessages = 'count, exact and query';

// -- the checks -------------------------------------------------------
assert.deepEqual(await mailpit.linkCheck(item.ID, true), {   // a private address: not asked
  Errors: 1,
  Links: [{ URL: 'http://127.0.0.1:9/offers', StatusCode: 451,
            Status: 'Blocked private/reserved address' }],
});
result.linkCheck = 'Errors, Links: a private address blocked';
const checked = await mailpit.htmlCheck(sent.ID);   // <p> and <img src="cid:">: nothing to warn of
assert.deepEqual(checked.Warnings, []);
assert.deepEqual([checked.Total.Nodes, checked.Total.Supported, checked.Total.Partial,
                  checked.Total.Unsupported], [2, 100, 0, 0]);
assert.ok(checked.Total.Tests > 100, `Tests ${checked.Total.Tests}`);
assert.ok(checked.Platforms.ios.includes('Apple Mail') && checked.Platforms.windows
  .includes('Outlook'), JSON.stringify(checked.Platforms));
await assert.rejects(mailpit.htmlCheck(textOnly.ID), /400/);     // no HTML part, as in Mailpit
result.htmlCheck = 'Platforms, Total, Warnings; a text-only message 400';
const spam = await mailpit.spamAssassinCheck(sent.ID);      // the test's private spamd
assert.deepEqual(Object.keys(spam), ['IsSpam', 'Error', 'Score', 'Rules']);
assert.equal(spam.Error, '');
assert.equal(spam.IsSpam, false);
assert.equal(typeof spam.Score, 'number');
assert.ok(spam.Rules.length > 0 && spam.Rules.every((r) => typeof r.Name === 'string'
  && typeof r.Score === 'number' && typeof r.Description === 'string'), JSON.stringify(spam));
result.spamAssassinCheck = "a real spamd's Score and Rules, not spam";
const thumb = Buffer.from(await (await mailpit.getAttachmentThumbnail(sent.ID, '1.2')).arrayBuffer());
assert.deepEqual([thumb[0], thumb[1]], [0xFF, 0xD8]);    // a JPEG (SOI)
result.getAttachmentThumbnail = '180x120 JPEG';

// -- release, deletes ---------------------------------------------------------------------------
assert.equal(await mailpit.releaseMessage(sent.ID, { To: ['real@example.net'] }), 'ok');
result.releaseMessage = 'ok';
assert.equal(await mailpit.deleteMessagesBySearch({ query: 'subject:"Text only"' }), 'ok');
assert.equal((await mailpit.listMessages()).total, 2);
result.deleteMessagesBySearch = 'ok';
assert.equal(await mailpit.deleteMessages({ IDs: [item.ID] }), 'ok');
assert.deepEqual((await mailpit.listMessages()).messages.map((m) => m.ID), [sent.ID]);
result.deleteMessages = 'ok';

// -- chaos, left on for the test's SMTP client --------------------------------------------------
assert.deepEqual(await mailpit.getChaosTriggers(), {
  Sender: { ErrorCode: 451, Probability: 0 },
  Recipient: { ErrorCode: 451, Probability: 0 },
  Authentication: { ErrorCode: 535, Probability: 0 },
});
result.getChaosTriggers = 'the defaults';
const chaos = await mailpit.setChaosTriggers({ Recipient: { ErrorCode: 452, Probability: 100 } });
assert.deepEqual(chaos.Recipient, { ErrorCode: 452, Probability: 100 });
assert.deepEqual(chaos.Sender, { ErrorCode: 451, Probability: 0 });
await assert.rejects(mailpit.setChaosTriggers({ Sender: { ErrorCode: 200, Probability: 1 } }),
                     /400/);
result.setChaosTriggers = 'Recipient at 100 %; a bad code 400';

console.log('RESULT ' + JSON.stringify(result));
