// Request framing miproxy refuses (RFC 9112 section 6): the app gets 400 and the upstream
// sees nothing at all, not even a connection, because the head never leaves.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startMiproxy, startTlsServer, issueCert, makeFixture, proxyConfig } from './lib/index.mjs';

const SCOPE = 'https://storage.azure.com/.default';

function rawExchange(port, bytes) {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port });
    const parts = [];
    s.on('data', (c) => parts.push(c));
    s.on('error', reject);
    s.on('close', () => resolve(Buffer.concat(parts).toString('latin1')));
    s.write(bytes);
  });
}

describe('refused request framing', () => {
  let fx; let up; let proxy; let port;

  before(async () => {
    fx = makeFixture('miproxy-framing-');
    const cert = issueCert(fx.ca, { dns: ['localhost'], ip: ['127.0.0.1'], name: 'framing' });
    up = await startTlsServer({ cert: cert.cert, key: cert.key });
    const built = await proxyConfig({
      caFile: fx.ca.certPath, tokenPath: fx.tokenPath,
      routes: [{ name: 'echo', match: { host: 'echo.test' }, upstream: up.url, identity: 'test', scope: SCOPE }],
    });
    port = built.port;
    proxy = await startMiproxy({ config: built.config });
  });

  after(async () => {
    await proxy?.stop();
    await up?.close();
    fx?.cleanup();
  });

  const cases = [
    ['Transfer-Encoding: gzip', 'PUT /c/b HTTP/1.1\r\nHost: echo.test\r\nTransfer-Encoding: gzip\r\n\r\nAAAA'],
    ['Transfer-Encoding: xchunked', 'PUT /c/b HTTP/1.1\r\nHost: echo.test\r\nTransfer-Encoding: xchunked\r\n\r\n4\r\nAAAA\r\n0\r\n\r\n'],
    ['Transfer-Encoding: gzip, chunked', 'PUT /c/b HTTP/1.1\r\nHost: echo.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n4\r\nAAAA\r\n0\r\n\r\n'],
    ['two Transfer-Encoding headers', 'PUT /c/b HTTP/1.1\r\nHost: echo.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'],
    ['two differing Content-Length', 'PUT /c/b HTTP/1.1\r\nHost: echo.test\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nAAAAA'],
    ['two equal Content-Length', 'PUT /c/b HTTP/1.1\r\nHost: echo.test\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nAAAA'],
    ['Content-Length 2^64-1', 'PUT /c/b HTTP/1.1\r\nHost: echo.test\r\nContent-Length: 18446744073709551615\r\n\r\nAAAA'],
  ];
  for (const [name, bytes] of cases) {
    test(`${name}: 400 and zero upstream bytes`, async () => {
      const before = { conns: up.stats().tcpConnections, reqs: up.requests.length };
      const answer = await rawExchange(port, bytes);
      assert.match(answer, /^HTTP\/1\.1 400 /, answer);
      assert.match(answer, /connection: close/i);
      assert.equal(up.stats().tcpConnections, before.conns, 'upstream saw a connection');
      assert.equal(up.requests.length, before.reqs, 'upstream saw a request');
    });
  }

  test('a plain chunked PUT still goes through', async () => {
    const answer = await rawExchange(port,
      'PUT /c/b HTTP/1.1\r\nHost: echo.test\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nAAAA\r\n0\r\n\r\n');
    assert.match(answer, /^HTTP\/1\.1 200 /, answer);
  });
});
