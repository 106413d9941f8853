// Upstream response bytes that llhttp 8.1 accepts but that must not reach the app as they are
// (findings of tests/fuzz/fuzz_upstream.cc): the app always gets a well-formed HTTP/1.1
// response, either the upstream's (cleaned where RFC 9112 allows) or miproxy's own 502.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startMiproxy, startTlsServer, issueCert, makeFixture, proxyConfig } from './lib/index.mjs';

const SCOPE = 'https://storage.azure.com/.default';

// The upstream answers every request with these bytes, written on the raw TLS socket.
const ANSWERS = {
  // A 1xx ends with its head, so "hello" is where the next response should start: not HTTP.
  '/interim-with-body': 'HTTP/1.1 103 Early Hints\r\nContent-Length: 5\r\n\r\nhello' +
    'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok',
  '/interim': 'HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n' +
    'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok',
  '/nul-reason': 'HTTP/1.1 200 O\x00K\x01\r\nContent-Length: 2\r\n\r\nok',
  '/empty-name': 'HTTP/1.1 200 OK\r\n: sneaky\r\nContent-Length: 2\r\n\r\nok',
  '/bare-cr-name': 'HTTP/1.1 200 OK\rn: x\x95\r\nContent-Length: 2\r\n\r\nok',
};

// One request on a fresh connection; resolves with everything miproxy sent until it closed.
function rawExchange(port, path) {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port });
    const parts = [];
    s.on('data', (c) => parts.push(c));
    s.on('error', reject);
    s.on('close', () => resolve(Buffer.concat(parts).toString('latin1')));
    s.write(`GET ${path} HTTP/1.1\r\nHost: raw.test\r\nConnection: close\r\n\r\n`);
  });
}

// Splits |text| into responses the way a strict client does; fails on anything else.
function strictResponses(text) {
  const out = [];
  let rest = text;
  while (rest.length > 0) {
    const end = rest.indexOf('\r\n\r\n');
    assert.ok(end >= 0, `an incomplete response head: ${JSON.stringify(rest)}`);
    const lines = rest.slice(0, end).split('\r\n');
    const m = /^HTTP\/1\.1 (\d{3}) ([\t\x20-\x7e\x80-\xff]*)$/.exec(lines[0]);
    assert.ok(m, `not a status line: ${JSON.stringify(lines[0])}`);
    const headers = {};
    for (const line of lines.slice(1)) {
      const h = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[\t ]*([\t\x20-\x7e\x80-\xff]*?)[\t ]*$/.exec(line);
      assert.ok(h, `not a header field: ${JSON.stringify(line)}`);
      headers[h[1].toLowerCase()] = h[2];
    }
    const status = Number(m[1]);
    const length = status < 200 ? 0 : Number(headers['content-length'] ?? 0);
    const body = rest.slice(end + 4, end + 4 + length);
    out.push({ status, reason: m[2], headers, body });
    rest = rest.slice(end + 4 + length);
  }
  return out;
}

describe('upstream bytes llhttp accepts and a strict reader does not', () => {
  let fx; let up; let proxy; let port;

  before(async () => {
    fx = makeFixture('miproxy-upbytes-');
    const cert = issueCert(fx.ca, { dns: ['localhost'], ip: ['127.0.0.1'], name: 'upbytes' });
    up = await startTlsServer({ cert: cert.cert, key: cert.key, handler: (req) => {
      req.socket.end(ANSWERS[req.url] ?? 'HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n');
    } });
    const built = await proxyConfig({
      caFile: fx.ca.certPath, tokenPath: fx.tokenPath,
      routes: [{ name: 'raw', match: { host: 'raw.test' }, upstream: up.url, identity: 'test', scope: SCOPE }],
    });
    port = built.port;
    proxy = await startMiproxy({ config: built.config });
  });

  after(async () => {
    await proxy?.stop();
    await up?.close();
    fx?.cleanup();
  });

  test('a 1xx response carries no content: bytes after its head are not relayed as a body', async () => {
    const responses = strictResponses(await rawExchange(port, '/interim-with-body'));
    assert.equal(responses.length, 1, JSON.stringify(responses));
    assert.equal(responses[0].status, 502);
    assert.equal(responses[0].headers['x-miproxy-error'], 'UpstreamProtocolError');
  });

  test('a 1xx response without framing is still skipped', async () => {
    const responses = strictResponses(await rawExchange(port, '/interim'));
    assert.deepEqual(responses.map((r) => [r.status, r.body]), [[200, 'ok']]);
  });

  test('control bytes in the reason phrase: the standard phrase is sent instead', async () => {
    const responses = strictResponses(await rawExchange(port, '/nul-reason'));
    assert.deepEqual(responses.map((r) => [r.status, r.reason, r.body]), [[200, 'OK', 'ok']]);
  });

  for (const path of ['/empty-name', '/bare-cr-name']) {
    test(`a header name that is not a token (${path}) is refused with 502`, async () => {
      const responses = strictResponses(await rawExchange(port, path));
      assert.equal(responses.length, 1, JSON.stringify(responses));
      assert.equal(responses[0].status, 502);
      assert.equal(responses[0].headers['x-miproxy-error'], 'UpstreamProtocolError');
    });
  }
});
