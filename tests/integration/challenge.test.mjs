// Challenges from the upstream (issue 4): scope "auto" learned from a Key Vault-style 401 Bearer
// challenge (with the domain check and the replay of the original request), and CAE claims
// challenges (the rejected token is dropped and the request replayed once). The upstreams are
// local TLS servers from the test CA that behave like Key Vault and like a CAE-enabled API;
// tokens come from the IMDS-compatible dev endpoint (tests/tools/dev-imds.mjs), which mints a
// fresh token (aud = the requested resource) for every request.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  requireBinary, startMiproxy, startTlsServer, issueCert, makeFixture, proxyConfig,
  httpRequest, miproxyError, decodeJwt,
} from './lib/index.mjs';
import { startDevImds } from '../tools/dev-imds.mjs';

const it = (name, fn) => test(name, fn);
const TENANT = '72f988bf-86f1-41af-91ab-2d7cd011db47';

function readBody(req) {
  return new Promise((resolve, reject) => {
    const parts = [];
    req.on('data', (c) => parts.push(c));
    req.on('end', () => resolve(Buffer.concat(parts).toString('utf8')));
    req.on('error', reject);
  });
}

function json(res, status, body, headers = {}) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

// Key Vault's protocol (azure-services.md §3.1): no token -> 401 with a challenge naming the
// resource; a token for that resource -> secrets API.
function keyVault(resource) {
  const secrets = new Map([['db-password', 'hunter2']]);
  return async (req, res, record) => {
    const body = await readBody(req);
    record.body = body;
    const auth = req.headers.authorization;
    if (!auth) {
      json(res, 401, { error: { code: 'Unauthorized', message: 'AKV10000: Request is missing a Bearer or PoP token.' } }, {
        'www-authenticate': `Bearer authorization="https://login.microsoftonline.com/${TENANT}", resource="${resource}"`,
      });
      return;
    }
    const claims = decodeJwt(auth.slice('Bearer '.length));
    if (claims.aud !== resource) {
      json(res, 401, { error: { code: 'Unauthorized', message: 'AKV10022: Invalid audience.' } });
      return;
    }
    const name = req.url.split('?')[0].split('/')[2];
    if (req.method === 'PUT') {
      secrets.set(name, JSON.parse(body).value);
    }
    if (!secrets.has(name)) {
      json(res, 404, { error: { code: 'SecretNotFound' } });
      return;
    }
    json(res, 200, { id: `https://vault/secrets/${name}`, value: secrets.get(name) });
  };
}

describe('scope "auto" from a Key Vault-style challenge', () => {
  let fx; let imds; let vault; let foreign; let proxy; let port;

  before(async () => {
    requireBinary();
    fx = makeFixture('miproxy-challenge-');
    const cert = issueCert(fx.ca, { dns: ['localhost'], ip: ['127.0.0.1'], name: 'kv' });
    imds = await startDevImds({ port: 0 });
    vault = await startTlsServer({ cert: cert.cert, key: cert.key, handler: keyVault('https://localhost') });
    foreign = await startTlsServer({ cert: cert.cert, key: cert.key, handler: keyVault('https://evil.example') });
    const built = await proxyConfig({
      caFile: fx.ca.certPath,
      identities: { vm: { type: 'managed_identity', source: 'imds', endpoint: imds.tokenUrl } },
      routes: [
        { name: 'vault', match: { path_prefix: '/vault/' }, strip_prefix: true,
          upstream: `https://localhost:${vault.port}`, identity: 'vm', scope: 'auto' },
        { name: 'foreign', match: { path_prefix: '/foreign/' }, strip_prefix: true,
          upstream: `https://localhost:${foreign.port}`, identity: 'vm', scope: 'auto' },
      ],
    });
    port = built.port;
    proxy = await startMiproxy({ config: built.config });
  });

  after(async () => {
    requireBinary();
    await proxy?.stop();
    await Promise.all([vault?.close(), foreign?.close(), imds?.close()]);
    fx?.cleanup();
  });

  it('the first request learns the scope and is replayed with a token, body intact', async () => {
    const before = vault.requests.length;
    const r = await httpRequest({ port, method: 'PUT', path: '/vault/secrets/api-key?api-version=7.4',
      headers: { 'content-type': 'application/json' }, body: JSON.stringify({ value: 's3cret-value' }) });
    assert.equal(r.status, 200, r.body.toString());
    assert.equal(r.json().value, 's3cret-value');
    const seen = vault.requests.slice(before);
    assert.equal(seen.length, 2, 'a token-less probe, then the real request');
    assert.equal(seen[0].headers.authorization, undefined);
    assert.equal(seen[0].body, '', 'the probe carries no body');
    assert.match(seen[1].headers.authorization, /^Bearer /);
    assert.equal(decodeJwt(seen[1].headers.authorization.slice(7)).aud, 'https://localhost');
    assert.equal(seen[1].body, JSON.stringify({ value: 's3cret-value' }));
    assert.equal(seen[1].url, '/secrets/api-key?api-version=7.4');
  });

  it('later requests go straight out with a token (the learned scope is cached)', async () => {
    const before = vault.requests.length;
    for (let i = 0; i < 5; i++) {
      const r = await httpRequest({ port, path: '/vault/secrets/db-password?api-version=7.4' });
      assert.equal(r.status, 200);
      assert.equal(r.json().value, 'hunter2');
    }
    const seen = vault.requests.slice(before);
    assert.equal(seen.length, 5);
    assert.ok(seen.every((q) => /^Bearer /.test(q.headers.authorization)));
    assert.equal(imds.count().count, 1, 'one token request for the learned scope');
  });

  it('a challenge naming a foreign resource is refused and no token is sent', async () => {
    const r = await httpRequest({ port, path: '/foreign/secrets/db-password?api-version=7.4' });
    assert.equal(r.status, 502);
    const err = miproxyError(r).error;
    assert.equal(err.code, 'TokenAcquisitionFailed');
    assert.match(err.message, /evil\.example/);
    assert.equal(err.route, 'foreign');
    assert.ok(foreign.requests.every((q) => q.headers.authorization === undefined),
      'the foreign upstream never received a token');
  });
});

describe('CAE claims challenge', () => {
  let fx; let imds; let api; let proxy; let port;
  const rejected = new Set();
  let challengeNext = 0;
  const claims = Buffer.from(JSON.stringify({ access_token: { nbf: { essential: true, value: '1700000000' } } })).toString('base64');

  before(async () => {
    requireBinary();
    fx = makeFixture('miproxy-cae-');
    const cert = issueCert(fx.ca, { dns: ['localhost'], ip: ['127.0.0.1'], name: 'cae' });
    imds = await startDevImds({ port: 0 });
    // Accepts any token except one it has revoked; `challengeNext` revokes the next token seen.
    api = await startTlsServer({ cert: cert.cert, key: cert.key, handler: async (req, res, record) => {
      record.body = await readBody(req);
      const token = (req.headers.authorization ?? '').slice(7);
      if (challengeNext > 0) {
        challengeNext -= 1;
        rejected.add(token);
      }
      if (rejected.has(token)) {
        json(res, 401, { error: { code: 'InvalidAuthenticationToken', message: 'Continuous access evaluation resulted in challenge' } }, {
          'www-authenticate': `Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", error="insufficient_claims", claims="${claims}"`,
        });
        return;
      }
      json(res, 200, { ok: true, method: req.method, body: record.body });
    } });
    const built = await proxyConfig({
      caFile: fx.ca.certPath,
      identities: { vm: { type: 'managed_identity', source: 'imds', endpoint: imds.tokenUrl } },
      routes: [{ name: 'api', match: { path_prefix: '/' }, upstream: `https://localhost:${api.port}`,
        identity: 'vm', scope: 'https://localhost/.default' }],
    });
    port = built.port;
    proxy = await startMiproxy({ config: built.config });
    await httpRequest({ port, path: '/warm' });
  });

  after(async () => {
    requireBinary();
    await proxy?.stop();
    await Promise.all([api?.close(), imds?.close()]);
    fx?.cleanup();
  });

  it('a bodiless request is replayed once with a new token', async () => {
    const tokensBefore = imds.count().count;
    const before = api.requests.length;
    challengeNext = 1;
    const r = await httpRequest({ port, path: '/resource' });
    assert.equal(r.status, 200, r.body.toString());
    const seen = api.requests.slice(before);
    assert.equal(seen.length, 2, 'the rejected attempt and one replay');
    assert.notEqual(seen[0].headers.authorization, seen[1].headers.authorization);
    assert.equal(imds.count().count, tokensBefore + 1, 'the cached token was dropped and a new one fetched');
  });

  it('a request with a body gets the 401 passed through; the next request uses a new token', async () => {
    const before = api.requests.length;
    challengeNext = 1;
    const r = await httpRequest({ port, method: 'POST', path: '/upload', body: 'payload' });
    assert.equal(r.status, 401, 'not replayable: the challenge goes to the app');
    assert.match(r.headers['www-authenticate'], /insufficient_claims/);
    const r2 = await httpRequest({ port, method: 'POST', path: '/upload', body: 'payload' });
    assert.equal(r2.status, 200);
    const seen = api.requests.slice(before);
    assert.equal(seen.length, 2);
    assert.notEqual(seen[0].headers.authorization, seen[1].headers.authorization);
  });

  it('never loops: a token rejected again after the replay is passed through', async () => {
    const before = api.requests.length;
    challengeNext = 2;
    const r = await httpRequest({ port, path: '/resource' });
    assert.equal(r.status, 401);
    assert.equal(api.requests.length - before, 2, 'one attempt and exactly one replay');
    challengeNext = 0;
  });
});

// Issue 8, item 6: on a `https://{host}` route the learned scope belongs to the upstream host,
// never to the route. Two names resolve to the same loopback vault (a private /etc/hosts, see
// startMiproxy's `hosts`), which challenges with each Host's own resource, as Key Vault does.
describe('scope "auto" on a {host} route is learned per upstream host', () => {
  let fx; let imds; let vault; let proxy; let port;
  const NAMES = ['kv-a.miproxy.test', 'kv-b.miproxy.test'];

  before(async () => {
    requireBinary();
    fx = makeFixture('miproxy-challenge-hosts-');
    const cert = issueCert(fx.ca, { dns: NAMES, ip: ['127.0.0.1'], name: 'kv-hosts' });
    imds = await startDevImds({ port: 0 });
    vault = await startTlsServer({ cert: cert.cert, key: cert.key, handler: (req, res, record) => {
      const host = String(req.headers.host).split(':')[0];
      return keyVault(`https://${host}`)(req, res, record);
    } });
    const built = await proxyConfig({
      caFile: fx.ca.certPath,
      identities: { vm: { type: 'managed_identity', source: 'imds', endpoint: imds.tokenUrl } },
      routes: [{ name: 'vaults', match: { host: '*.miproxy.test' },
        upstream: `https://{host}:${vault.port}`, identity: 'vm', scope: 'auto' }],
    });
    port = built.port;
    proxy = await startMiproxy({ config: built.config, hosts: [`127.0.0.1 ${NAMES.join(' ')}`] });
  });

  after(async () => {
    requireBinary();
    await proxy?.stop();
    await Promise.all([vault?.close(), imds?.close()]);
    fx?.cleanup();
  });

  it('each host gets a token for its own resource, learned from its own challenge', async () => {
    for (const name of [...NAMES, ...NAMES]) {
      const r = await httpRequest({ port, path: '/secrets/db-password?api-version=7.4',
        headers: { host: name } });
      assert.equal(r.status, 200, `${name}: ${r.body.toString()}`);
      assert.equal(r.json().value, 'hunter2');
    }
    const byHost = (name) => vault.requests.filter((q) => String(q.headers.host).startsWith(name));
    for (const name of NAMES) {
      const seen = byHost(name);
      assert.equal(seen.length, 3, `${name}: one token-less probe, then two requests with a token`);
      assert.equal(seen[0].headers.authorization, undefined);
      for (const q of seen.slice(1)) {
        assert.equal(decodeJwt(q.headers.authorization.slice(7)).aud, `https://${name}`,
          `${name} received a token for its own resource only`);
      }
    }
    assert.equal(imds.count().count, 2, 'one token request per learned scope');
  });
});
