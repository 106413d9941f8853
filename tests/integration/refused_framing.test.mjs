// A request refused for its framing never reaches the upstream (issue 8, item 3). llhttp 8.1
// reports an unknown Transfer-Encoding only after the head is complete; miproxy used to forward
// that head, with the token, as a complete bodiless PUT (against Storage: a blob overwritten
// with nothing while the app was told 400), and forwarded `gzip, chunked` with the gzip coding
// dropped while the body stayed compressed.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  startMiproxy, startTlsServer, issueCert, makeFixture, proxyConfig, httpRequest, RawConnection,
} from './lib/index.mjs';

const SCOPE = 'https://storage.azure.com/.default';

describe('framing refused before anything goes upstream', () => {
  let fx; let upstream; let proxy; let port;

  before(async () => {
    fx = makeFixture('miproxy-framing-');
    const cert = issueCert(fx.ca, { dns: ['localhost'], ip: ['127.0.0.1'], name: 'framing' });
    upstream = await startTlsServer({ cert: cert.cert, key: cert.key });
    const built = await proxyConfig({
      caFile: fx.ca.certPath, tokenPath: fx.tokenPath,
      routes: [{ name: 'blob', match: { host: 'blob.test' }, upstream: upstream.url,
        identity: 'test', scope: SCOPE }],
    });
    port = built.port;
    proxy = await startMiproxy({ config: built.config });
  });

  after(async () => {
    await proxy?.stop();
    await upstream?.close();
    fx?.cleanup();
  });

  const cases = [
    ['Transfer-Encoding: gzip', 'Transfer-Encoding: gzip\r\n', 'AAAA'],
    ['Transfer-Encoding: xchunked', 'Transfer-Encoding: xchunked\r\n', 'AAAA'],
    ['Transfer-Encoding: gzip, chunked', 'Transfer-Encoding: gzip, chunked\r\n', '4\r\nAAAA\r\n0\r\n\r\n'],
    ['two Transfer-Encoding headers', 'Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n',
      '4\r\nAAAA\r\n0\r\n\r\n'],
    ['Content-Length 2^64-1', 'Content-Length: 18446744073709551615\r\n', 'AAAA'],
  ];
  for (const [name, headers, body] of cases) {
    test(`${name}: 400 BadRequest, connection closed, nothing upstream`, async () => {
      const before = upstream.stats().tcpConnections;
      const seen = upstream.requests.length;
      const conn = await RawConnection.connect(port);
      await conn.write(`PUT /c/${encodeURIComponent(name)} HTTP/1.1\r\nHost: blob.test\r\n${headers}\r\n${body}`);
      const res = await conn.readResponse();
      assert.equal(res.status, 400);
      assert.equal(res.headers['x-miproxy-error'], 'BadRequest');
      assert.equal(res.headers.connection, 'close');
      while (!conn.ended) await conn.waitForData();
      await sleep(100);  // an upstream request in flight would have been recorded by now
      assert.equal(upstream.requests.length, seen, 'the upstream received no request');
      assert.equal(upstream.stats().tcpConnections, before, 'no upstream connection was even opened');
    });
  }

  test('a chunked PUT still goes through intact', async () => {
    const conn = await RawConnection.connect(port);
    await conn.write('PUT /c/ok HTTP/1.1\r\nHost: blob.test\r\nTransfer-Encoding: Chunked\r\n\r\n' +
      '4\r\nAAAA\r\n4\r\nBBBB\r\n0\r\n\r\n');
    const res = await conn.readResponse();
    conn.socket.destroy();
    assert.equal(res.status, 200);
    assert.equal(JSON.parse(res.body.toString()).body, 'AAAABBBB');
    const ok = await httpRequest({ port, headers: { host: 'blob.test' }, path: '/after' });
    assert.equal(ok.status, 200);
  });
});
