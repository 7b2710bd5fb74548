// Runs every Cypress command of npm's cypress-mailpit against smtp-stack's
// inbox, without Cypress: cypress.mjs stands in for Cypress (cy.request is
// real HTTP), loader.mjs loads the package's own files unchanged.
// Run by tests/test_inbox_cypress_mailpit.py:
//   node every_command.mjs MAILPIT_URL MAILPIT_USERNAME MAILPIT_PASSWORD SPAM_WORD
// (the first three are what a Cypress project sets in its configuration).
// The test has sent two messages over SMTP first ("Welcome Ann" with an
// attachment, and one whose subject holds SPAM_WORD). This prints WAITING
// when a command starts waiting for a message the test then sends, and
// RESULT {json} at the end: what `Cypress.Commands.add` was given, and for
// each command what was checked, or the error it ended with.
import assert from 'node:assert/strict';
import { register } from 'node:module';
import { Chain, commands, install, requests, run } from './cypress.mjs';

register('./loader.mjs', import.meta.url);
const [url, username, password, spamWord] = process.argv.slice(2);
const cy = install({ MAILPIT_URL: url, MAILPIT_USERNAME: username, MAILPIT_PASSWORD: password });
await import('cypress-mailpit');

const checked = {};

// Run one command's checks; a failure is recorded, not thrown, so that
// every command is tried and the report names each one that failed.
async function check(name, body) {
  try {
    checked[name] = await body();
  } catch (error) {
    checked[name] = `FAILED: ${String(error.message).split('\n').slice(0, 3).join(' | ')}`;
  }
}

const subjects = (summary) => summary.messages.map((m) => m.Subject);
const quick = { timeout: 2000, interval: 100 };

await check('mailpitGetAllMails', async () => {
  const all = await run(cy.mailpitGetAllMails());
  assert.equal(all.total, 2);
  assert.deepEqual(subjects(all), [`Offer ${spamWord}`, 'Welcome Ann']);
  const page = await run(cy.mailpitGetAllMails(1, 1));
  assert.deepEqual(subjects(page), ['Welcome Ann']);
  return 'newest first; start and limit';
});

await check('mailpitSearchEmails', async () => {
  const found = await run(cy.mailpitSearchEmails('from:shop@example.com has:attachment'));
  assert.equal(found.messages_count, 1);
  assert.deepEqual(subjects(found), ['Welcome Ann']);
  return 'from: and has:attachment';
});

await check('mailpitGetEmailsBySubject', async () => {
  const found = await run(cy.mailpitGetEmailsBySubject('Welcome Ann'));
  assert.deepEqual(subjects(found), ['Welcome Ann']);
  return 'subject:Welcome Ann';
});

await check('mailpitGetEmailsByTo', async () => {
  const found = await run(cy.mailpitGetEmailsByTo('ann@example.com'));
  assert.deepEqual(subjects(found), ['Welcome Ann']);
  return 'to:ann@example.com';
});

let welcome;
await check('mailpitGetMail', async () => {
  const latest = await run(cy.mailpitGetMail());
  assert.equal(latest.Subject, `Offer ${spamWord}`);
  const [summary] = (await run(cy.mailpitGetEmailsBySubject('Welcome'))).messages;
  welcome = await run(cy.mailpitGetMail(summary.ID));
  assert.equal(welcome.ID, summary.ID);
  assert.match(welcome.Text, /^Hello Ann,\r\nwelcome aboard\.\r\n/);
  return 'latest by default; by ID, with its Text';
});

const child = {
  mailpitGetSubject: [(c) => c.mailpitGetSubject(), 'Welcome Ann', 'Subject'],
  mailpitGetFromAddress: [(c) => c.mailpitGetFromAddress(), 'shop@example.com', 'From.Address'],
  mailpitGetRecipientAddress: [(c) => c.mailpitGetRecipientAddress(),
                               ['ann@example.com', 'ben@example.com'], 'each To Address'],
  mailpitGetAttachments: [(c) => c.mailpitGetAttachments(), ['terms.pdf'], 'file names'],
};
for (const [name, [command, expected, what]] of Object.entries(child)) {
  await check(name, async () => {
    assert.deepEqual(await run(command(cy.mailpitGetMail(welcome.ID))), expected);
    return what;
  });
}

await check('mailpitGetMailHTMlBody', async () => {
  const html = await run(cy.mailpitGetMail(welcome.ID).mailpitGetMailHTMlBody());
  assert.match(html, /<p>Hello <b>Ann<\/b><\/p>/);
  return 'the HTML part';
});

await check('mailpitGetMailTextBody', async () => {
  const text = await run(cy.mailpitGetMail(welcome.ID).mailpitGetMailTextBody());
  assert.match(text, /^Hello Ann,\r\nwelcome aboard\./);
  return 'the text part';
});

for (const name of ['mailpitGetMailSpamAssassinSummary', 'mailpitGetMailSpamAssainSummary']) {
  await check(name, async () => {
    const report = await run(cy.mailpitGetMail()[name]());
    assert.equal(report.Error, '');
    assert.ok(report.Score >= 3.3, `score ${report.Score}`);
    assert.ok(report.Rules.some((rule) => rule.Name === 'SMTP_STACK_TEST'));
    return "spamd's score and rules";
  });
}

const unread = async () => (await run(cy.mailpitGetAllMails())).unread;

await check('mailpitSetAllEmailStatusAsRead', async () => {
  assert.equal(await run(cy.mailpitSetAllEmailStatusAsUnRead()), 'ok');
  assert.equal(await unread(), 2);
  assert.equal(await run(cy.mailpitSetAllEmailStatusAsRead()), 'ok');
  assert.equal(await unread(), 0);
  return 'ok; none unread';
});

await check('mailpitSetAllEmailStatusAsUnRead', async () => {
  assert.equal(await run(cy.mailpitSetAllEmailStatusAsUnRead()), 'ok');
  assert.equal(await unread(), 2);
  return 'ok; all unread';
});

await check('mailpitSetStatusAsRead', async () => {
  const both = (await run(cy.mailpitGetAllMails())).messages;
  assert.equal(await run(cy.wrap(both[0]).mailpitSetStatusAsRead()), 'ok');
  assert.equal(await unread(), 1);
  assert.equal(await run(cy.wrap(both).mailpitSetStatusAsRead()), 'ok');
  assert.equal(await unread(), 0);
  return 'ok; one message, then a list';
});

await check('mailpitSetStatusAsUnRead', async () => {
  assert.equal(await run(cy.wrap(welcome).mailpitSetStatusAsUnRead()), 'ok');
  const found = await run(cy.mailpitSearchEmails('is:unread'));
  assert.deepEqual(subjects(found), ['Welcome Ann']);
  return 'ok; is:unread finds it';
});

await check('mailpitSendMail', async () => {
  const sent = await run(cy.mailpitSendMail({
    subject: 'Sent by cypress-mailpit', textBody: 'Sent over HTTP', tags: ['cypress'],
    to: [{ Email: 'carl@example.com', Name: 'Carl' }],
    attachments: [{ Content: Buffer.from('a,b\r\n1,2\r\n').toString('base64'),
                    Filename: 'table.csv' }],
  }));
  assert.match(sent.ID, /^[A-Za-z0-9]{22}$/);
  const stored = await run(cy.mailpitGetMail(sent.ID));
  assert.equal(stored.From.Address, 'from@example.com');
  assert.deepEqual(stored.Cc.map((a) => a.Address), ['cc@example.com']);
  assert.deepEqual(stored.Bcc.map((a) => a.Address), ['bcc@example.com']);
  assert.deepEqual(stored.ReplyTo.map((a) => a.Address), ['replyto@example.com']);
  assert.deepEqual(stored.Tags, ['cypress']);
  assert.equal(stored.Attachments[0].FileName, 'table.csv');
  const defaults = await run(cy.mailpitSendMail());
  assert.equal((await run(cy.mailpitGetMail(defaults.ID))).Subject, 'Hello Mailpit');
  return "ID; its defaults (Bcc as plain addresses), tags, attachment";
});

await check('mailpitHasEmailsBySearch', async () => {
  const found = await run(cy.mailpitHasEmailsBySearch('tag:cypress', 0, 50, quick));
  assert.deepEqual(subjects(found), ['Sent by cypress-mailpit']);
  return 'tag:cypress';
});

await check('mailpitNotHasEmailsBySearch', async () => {
  const found = await run(cy.mailpitNotHasEmailsBySearch('tag:nothing', 0, 50, quick));
  assert.equal(found.messages_count, 0);
  return 'tag:nothing';
});

await check('mailpitHasEmailsBySubject', async () => {
  console.log('WAITING');
  const found = await run(cy.mailpitHasEmailsBySubject('Late arrival', 0, 50,
                                                        { timeout: 15000, interval: 100 }));
  assert.deepEqual(subjects(found), ['Late arrival']);
  return 'waited for a message sent meanwhile';
});

await check('mailpitHasEmailsByTo', async () => {
  const found = await run(cy.mailpitHasEmailsByTo('late@example.com', 0, 50, quick));
  assert.deepEqual(subjects(found), ['Late arrival']);
  return 'to:late@example.com';
});

await check('mailpitNotHasEmailsByTo', async () => {
  const found = await run(cy.mailpitNotHasEmailsByTo('nobody@example.com', 0, 50, quick));
  assert.equal(found.messages_count, 0);
  return 'to:nobody@example.com';
});

await check('mailpitNotHasEmailsBySubject', async () => {
  await assert.rejects(run(cy.mailpitNotHasEmailsBySubject('Welcome Ann', 0, 50,
                                                           { timeout: 300, interval: 100 })),
                       /Timed out after 300ms/);
  return 'times out while one is there';
});

await check('mailpitDeleteEmailsBySearch', async () => {
  const response = await run(cy.mailpitDeleteEmailsBySearch('subject:Welcome'));
  assert.equal(response.status, 200);
  await run(cy.mailpitNotHasEmailsBySubject('Welcome Ann', 0, 50, quick));
  assert.equal((await run(cy.mailpitGetAllMails())).total, 4);
  return 'the match only';
});

await check('mailpitDeleteAllEmails', async () => {
  const response = await run(cy.mailpitDeleteAllEmails());
  assert.equal(response.status, 200);
  assert.equal((await run(cy.mailpitGetAllMails())).total, 0);
  await assert.rejects(run(cy.mailpitGetMail()), /404/);
  return 'all; latest is then 404';
});

assert.ok(cy.mailpitGetAllMails instanceof Function && Chain.prototype.mailpitGetSubject);
const registered = Object.fromEntries([...commands].map(
  ([name, { options }]) => [name, options.prevSubject ? 'child' : 'parent']));
console.log('REQUESTS ' + JSON.stringify(requests));
console.log('RESULT ' + JSON.stringify({ registered, checked }));
