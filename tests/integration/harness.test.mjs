// The fakes the other integration tests rely on behave like the real thing: the test PKI
// verifies, Azurite in HTTPS + OAuth mode accepts the minted tokens (and refuses bad ones),
// dev-imds speaks the IMDS protocol (token-sources.md §1), the generator is deterministic.
// These run without the miproxy binary.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import https from 'node:https';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  makeCA, issueCert, startTlsServer, startAzurite, mintJwt, decodeJwt, generatedStream,
  sha256OfStream, hashingPassThrough, httpRequest, rssPeakOfPid, freePort,
} from './lib/index.mjs';
import { startDevImds, TOKEN_PATH } from '../tools/dev-imds.mjs';

function httpsRequest({ port, path = '/', method = 'GET', headers = {}, body, ca,
  host = '127.0.0.1', servername }) {
  return new Promise((resolve, reject) => {
    const req = https.request({ host, port, path, method, headers, ca, servername, agent: false },
      (res) => {
        const parts = [];
        res.on('data', (c) => parts.push(c));
        res.on('end', () => resolve({ status: res.statusCode, headers: res.headers,
          body: Buffer.concat(parts).toString('utf8') }));
      });
    req.on('error', reject);
    req.end(body);
  });
}

test('test PKI: a leaf verifies against its CA and not against another CA', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'miproxy-pki-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const ca = makeCA(join(dir, 'good'));
  const other = makeCA(join(dir, 'other'), { cn: 'other CA' });
  const leaf = issueCert(ca, { dns: ['localhost'], ip: ['127.0.0.1'] });
  const server = await startTlsServer({ cert: leaf.cert, key: leaf.key });
  t.after(() => server.close());

  const ok = await httpsRequest({ port: server.port, path: '/echo?x=1', method: 'POST',
    body: 'hello', ca: ca.cert, servername: 'localhost' });
  assert.equal(ok.status, 200);
  assert.equal(JSON.parse(ok.body).body, 'hello');
  assert.equal(server.requests.length, 1);
  assert.equal(server.requests[0].url, '/echo?x=1');

  await assert.rejects(httpsRequest({ port: server.port, ca: other.cert }),
    (err) => /self[- ]signed|unable to verify|UNABLE_TO_VERIFY/i.test(`${err.code} ${err.message}`));
  const stats = server.stats();
  assert.equal(server.requests.length, 1, 'the refused client sent no request');
  assert.equal(stats.tlsHandshakes, 1);
  assert.equal(stats.tcpConnections, 2);
  assert.ok(stats.applicationBytes > 0);
});

test('test TLS server counts zero application bytes when the client refuses the certificate',
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'miproxy-pki-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const ca = makeCA(join(dir, 'good'));
    const other = makeCA(join(dir, 'other'), { cn: 'other CA' });
    const leaf = issueCert(other, { dns: ['localhost'] });
    const server = await startTlsServer({ cert: leaf.cert, key: leaf.key });
    t.after(() => server.close());
    await assert.rejects(httpsRequest({ port: server.port, ca: ca.cert, servername: 'localhost',
      method: 'PUT', body: 'secret-payload' }));
    await new Promise((r) => setTimeout(r, 100));
    const stats = server.stats();
    assert.equal(stats.tlsHandshakes, 0);
    assert.equal(stats.applicationBytes, 0);
    assert.equal(server.requests.length, 0);
  });

test('Azurite (HTTPS, --oauth basic) accepts a minted bearer token and refuses bad ones',
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'miproxy-az-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const ca = makeCA(dir);
    const azurite = await startAzurite({ ca });
    t.after(() => azurite.stop());
    const call = (path, { token = mintJwt(), method = 'GET', headers = {}, body } = {}) =>
      httpsRequest({ port: azurite.port, path: `/devstoreaccount1${path}`, method, ca: ca.cert,
        body, headers: { authorization: `Bearer ${token}`, 'x-ms-version': '2021-08-06',
          ...headers } });

    const created = await call('/harness?restype=container', { method: 'PUT' });
    assert.equal(created.status, 201, created.body);
    const put = await call('/harness/a.txt', { method: 'PUT', body: 'hello azurite',
      headers: { 'x-ms-blob-type': 'BlockBlob' } });
    assert.equal(put.status, 201, put.body);
    // An IMDS-style audience (resource with trailing slash) works too.
    const got = await call('/harness/a.txt', { token: mintJwt({ aud: 'https://storage.azure.com/' }) });
    assert.equal(got.status, 200);
    assert.equal(got.body, 'hello azurite');

    const noAuth = await httpsRequest({ port: azurite.port, path: '/devstoreaccount1/harness/a.txt',
      ca: ca.cert, headers: { 'x-ms-version': '2021-08-06' } });
    assert.equal(noAuth.status, 403);
    const wrongAud = await call('/harness/a.txt', { token: mintJwt({ aud: 'https://vault.azure.net' }) });
    assert.equal(wrongAud.status, 403);
    assert.match(wrongAud.body, /Invalid token audience/);
    const expired = await call('/harness/a.txt', {
      token: mintJwt({ iat: 1000, nbf: 1000, exp: 2000 }) });
    assert.equal(expired.status, 403);
    assert.match(expired.body, /expired/);
    const wrongIss = await call('/harness/a.txt', {
      token: mintJwt({ iss: 'https://login.microsoftonline.com/x/v2.0' }) });
    assert.equal(wrongIss.status, 403);
    assert.match(wrongIss.body, /Invalid token issuer/);
  });

test('dev-imds answers IMDS-shaped string fields and refuses what IMDS refuses', async (t) => {
  const imds = await startDevImds({ lifetime: 86399 });
  t.after(() => imds.close());
  const get = (query, headers = { metadata: 'true' }) => httpRequest({ port: imds.port,
    path: `${TOKEN_PATH}?${query}`, headers });

  const before = Math.floor(Date.now() / 1000);
  const ok = await get('api-version=2018-02-01&resource=https%3A%2F%2Fstorage.azure.com%2F');
  assert.equal(ok.status, 200);
  assert.match(ok.headers['content-type'], /^application\/json/);
  const body = ok.json();
  assert.deepEqual(Object.keys(body).sort(), ['access_token', 'client_id', 'expires_in',
    'expires_on', 'ext_expires_in', 'not_before', 'resource', 'token_type']);
  for (const [k, v] of Object.entries(body)) {
    assert.equal(typeof v, 'string', `${k} is a string`);
  }
  assert.equal(body.token_type, 'Bearer');
  assert.equal(body.resource, 'https://storage.azure.com/');
  assert.equal(body.expires_in, '86399');
  const claims = decodeJwt(body.access_token);
  assert.equal(claims.aud, 'https://storage.azure.com/');
  assert.match(claims.iss, /^https:\/\/sts\.windows\.net\/[0-9a-f-]+\/$/);
  assert.equal(String(claims.exp), body.expires_on);
  assert.ok(claims.exp >= before + 86399);
  assert.equal(claims.appid, body.client_id);

  const user = (await get('api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net'
    + '&client_id=11111111-2222-3333-4444-555555555555')).json();
  assert.equal(user.client_id, '11111111-2222-3333-4444-555555555555');
  assert.equal(decodeJwt(user.access_token).aud, 'https://vault.azure.net');

  const refusals = [
    ['api-version=2018-02-01&resource=x', {}],
    ['api-version=2018-02-01&resource=x', { metadata: 'True' }],
    ['api-version=2018-02-01&resource=x', { metadata: 'true', 'x-forwarded-for': '10.0.0.1' }],
    ['resource=x', { metadata: 'true' }],
    ['api-version=2018-02-01', { metadata: 'true' }],
    ['api-version=2018-02-01&resource=x&resource=y', { metadata: 'true' }],
    ['api-version=2018-02-01&resource=x&mi_res_id=/subscriptions/s', { metadata: 'true' }],
    ['api-version=2018-02-01&resource=x&client_id=a&object_id=b', { metadata: 'true' }],
  ];
  for (const [query, headers] of refusals) {
    const r = await get(query, headers);
    assert.equal(r.status, 400, `${query} ${JSON.stringify(headers)}`);
    assert.equal(typeof r.json().error, 'string');
    assert.equal(typeof r.json().error_description, 'string');
  }
  const missingHeader = (await get('api-version=2018-02-01&resource=x', {})).json();
  assert.equal(missingHeader.error, 'bad_request_102');

  const counted = (await httpRequest({ port: imds.port, path: '/count' })).json();
  assert.deepEqual(counted, { count: 2 + refusals.length + 1, issued: 2 });
});

test('dev-imds tokens are accepted by Azurite', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'miproxy-az-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const ca = makeCA(dir);
  const [azurite, imds] = await Promise.all([startAzurite({ ca }), startDevImds()]);
  t.after(() => Promise.all([azurite.stop(), imds.close()]));
  const token = (await httpRequest({ port: imds.port, headers: { metadata: 'true' },
    path: `${TOKEN_PATH}?api-version=2018-02-01&resource=https%3A%2F%2Fstorage.azure.com%2F` }))
    .json().access_token;
  const r = await httpsRequest({ port: azurite.port, method: 'PUT', ca: ca.cert,
    path: '/devstoreaccount1/fromimds?restype=container',
    headers: { authorization: `Bearer ${token}`, 'x-ms-version': '2021-08-06' } });
  assert.equal(r.status, 201, r.body);
});

test('generated streams are deterministic per seed and independent of chunk size', async () => {
  const a = await sha256OfStream(generatedStream({ bytes: 3_000_001, seed: 's', chunkSize: 65536 }));
  const b = await sha256OfStream(generatedStream({ bytes: 3_000_001, seed: 's', chunkSize: 1000 }));
  const c = await sha256OfStream(generatedStream({ bytes: 3_000_001, seed: 't' }));
  assert.equal(a.length, 3_000_001);
  assert.equal(a.sha256, b.sha256);
  assert.notEqual(a.sha256, c.sha256);
  const tap = hashingPassThrough();
  await sha256OfStream(generatedStream({ bytes: 3_000_001, seed: 's' }).pipe(tap));
  assert.deepEqual(tap.result(), a);
});

test('process helpers: VmHWM of this process and a free port', async () => {
  const peak = rssPeakOfPid(process.pid);
  assert.ok(peak > 1 << 20, `VmHWM ${peak}`);
  const port = await freePort();
  assert.ok(port > 0 && port < 65536);
});
