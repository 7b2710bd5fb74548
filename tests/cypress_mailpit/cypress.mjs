// The part of Cypress that cypress-mailpit's commands use, without Cypress:
// `Cypress.Commands.add`, `Cypress.config`, `Cypress.expose`, `Cypress.env`,
// and `cy.request`, `cy.wrap`, `cy.wait`, `cy.env`, with chains whose
// `.then` yields as Cypress's do. `cy.request` is real HTTP (Node's fetch):
// it follows redirects, sends an object body as JSON, applies `qs` and
// basic `auth`, parses a JSON answer and, as Cypress does by default
// (failOnStatusCode), fails on a status that is not 2xx or 3xx.
// Commands run at once rather than from Cypress's queue: enough for
// commands that only chain requests, which is all cypress-mailpit's are.
import { Buffer } from 'node:buffer';

const CONFIG = { defaultCommandTimeout: 4000, responseTimeout: 30000 };

// What each request got, `METHOD path status`, in order: for the report.
export const requests = [];
// What `Cypress.Commands.add` was given: name -> { options, fn }.
export const commands = new Map();

export class Chain {
  constructor(promise) {
    this.promise = promise;
  }

  // Cypress's `.then`: a chain returned by the callback yields its subject,
  // `undefined` yields the subject unchanged, anything else yields itself.
  then(callback) {
    return new Chain(this.promise.then(async (subject) => {
      const result = await settle(callback(subject));
      return result === undefined ? subject : result;
    }));
  }
}

async function settle(value) {
  return value instanceof Chain ? value.promise : value;
}

function chainOf(value) {
  return value instanceof Chain ? value : new Chain(Promise.resolve(value).then(settle));
}

function basicAuth(auth) {
  const user = auth.user ?? auth.username;
  const pass = auth.pass ?? auth.password;
  return 'Basic ' + Buffer.from(`${user}:${pass}`).toString('base64');
}

async function request(options) {
  const opts = typeof options === 'string' ? { url: options } : options;
  const method = (opts.method || 'GET').toUpperCase();
  const url = new URL(opts.url);
  for (const [name, value] of Object.entries(opts.qs || {})) {
    url.searchParams.append(name, String(value));
  }
  const headers = { ...(opts.headers || {}) };
  if (opts.auth) headers.Authorization = basicAuth(opts.auth);
  let body;
  if (opts.body !== undefined && opts.body !== null) {
    body = typeof opts.body === 'string' ? opts.body : JSON.stringify(opts.body);
    if (typeof opts.body !== 'string') headers['Content-Type'] = 'application/json';
  }
  const started = Date.now();
  const answer = await fetch(url, {
    method, headers, body, redirect: opts.followRedirect === false ? 'manual' : 'follow',
    signal: AbortSignal.timeout(opts.timeout ?? CONFIG.responseTimeout),
  });
  const text = await answer.text();
  const type = answer.headers.get('content-type') || '';
  const response = {
    status: answer.status,
    statusText: answer.statusText,
    headers: Object.fromEntries(answer.headers),
    body: type.includes('json') && text ? JSON.parse(text) : text,
    duration: Date.now() - started,
    isOkStatusCode: answer.status >= 200 && answer.status < 400,
    redirects: answer.redirected ? [answer.url] : [],
  };
  requests.push(`${method} ${url.pathname}${url.search} ${answer.status}`
                + (answer.redirected ? ` (redirected to ${new URL(answer.url).pathname})` : ''));
  if (!response.isOkStatusCode && opts.failOnStatusCode !== false) {
    throw new Error(`cy.request() failed on: ${url}\n`
                    + `The response we received from your web server was:\n`
                    + `  > ${answer.status}: ${answer.statusText}\n${text.slice(0, 300)}`);
  }
  return response;
}

// Install `Cypress` and `cy` as globals, with `exposed` as the values of
// Cypress.expose/Cypress.env/cy.env; returns the `cy` object.
export function install(exposed) {
  const cy = {
    request: (options) => new Chain(request(options)),
    wrap: (value) => chainOf(value),
    wait: (ms) => new Chain(new Promise((done) => setTimeout(() => done(null), ms))),
    env: (names) => chainOf(Object.fromEntries(names.map((name) => [name, exposed[name]]))),
  };
  const Cypress = {
    config: (name) => CONFIG[name],
    expose: (name) => exposed[name],
    env: (name) => exposed[name],
    Commands: {
      add(name, options, fn) {
        if (typeof options === 'function') [options, fn] = [{}, options];
        commands.set(name, { options, fn });
        if (options.prevSubject) {
          Chain.prototype[name] = function child(...args) {
            return this.then((subject) => fn(subject, ...args));
          };
        } else {
          cy[name] = (...args) => chainOf(fn(...args));
        }
      },
    },
  };
  globalThis.Cypress = Cypress;
  globalThis.cy = cy;
  return cy;
}

// The subject a chain yields, as a promise (a failed command rejects it).
export function run(chain) {
  return chainOf(chain).promise;
}
