// Small RFC 9110 rules on forwarded messages (issue 8, item 9): the names listed in every
// Connection header are dropped (not only the first header's), a 204 reaches the client without
// Content-Length, and `100 Continue` goes only to an HTTP/1.1 client that sent
// `Expect: 100-continue` (an HTTP/1.0 client's Expect is not forwarded either).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startMiproxy, startTlsServer, upstreamHandler, issueCert, makeFixture, proxyConfig,
  RawConnection,
} from './lib/index.mjs';

const SCOPE = 'https://storage.azure.com/.default';

describe('message rules', () => {
  let fx; let upstream; let proxy; let port;

  before(async () => {
    fx = makeFixture('miproxy-msgrules-');
    const cert = issueCert(fx.ca, { dns: ['localhost'], ip: ['127.0.0.1'], name: 'msgrules' });
    upstream = await startTlsServer({ cert: cert.cert, key: cert.key, handler: (req, res, record) => {
      if (req.url === '/no-content') {
        // node would not write Content-Length on a 204 by itself: write the head raw, and end
        // the connection (node's own response object never finishes, so it would hold back any
        // later request miproxy sends on this pooled connection).
        req.socket.end('HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nX-Seen: 1\r\n\r\n');
        return undefined;
      }
      if (req.url === '/continue') {
        res.writeContinue();  // unasked for: the client did not send Expect
      }
      return upstreamHandler(req, res, record);
    } });
    const built = await proxyConfig({
      caFile: fx.ca.certPath, tokenPath: fx.tokenPath,
      routes: [{ name: 'echo', match: { host: 'echo.test' }, upstream: upstream.url,
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

  async function exchange(request, opts) {
    const conn = await RawConnection.connect(port);
    await conn.write(request);
    const res = await conn.readResponse(opts);
    conn.socket.destroy();
    return res;
  }

  test('names listed in a second Connection header are not forwarded', async () => {
    const res = await exchange('GET /echo/conn HTTP/1.1\r\nHost: echo.test\r\nConnection: keep-alive, X-A\r\n' +
      'Connection: X-B\r\nX-A: 1\r\nX-B: 2\r\nX-C: 3\r\n\r\n');
    assert.equal(res.status, 200);
    const seen = upstream.requests.find((r) => r.url === '/echo/conn');
    assert.equal(seen.headers['x-a'], undefined);
    assert.equal(seen.headers['x-b'], undefined, 'the second Connection header counts too');
    assert.equal(seen.headers['x-c'], '3');
  });

  test('a 204 reaches the client without Content-Length', async () => {
    const res = await exchange('GET /no-content HTTP/1.1\r\nHost: echo.test\r\n\r\n', { head: true });
    assert.equal(res.status, 204);
    assert.equal(res.headers['x-seen'], '1');
    assert.equal(res.headers['content-length'], undefined);
  });

  test('no 100 Continue to a client that did not ask for it', async () => {
    const res = await exchange('GET /continue HTTP/1.1\r\nHost: echo.test\r\n\r\n');
    assert.equal(res.status, 200, 'the first response the client reads is the final one');
  });

  test('an HTTP/1.0 client\'s Expect is not forwarded, and it gets no 100', async () => {
    const res = await exchange('PUT /echo/old HTTP/1.0\r\nHost: echo.test\r\nExpect: 100-continue\r\n' +
      'Content-Length: 4\r\n\r\nAAAA');
    assert.equal(res.status, 200);
    const seen = upstream.requests.find((r) => r.url === '/echo/old');
    assert.equal(seen.headers.expect, undefined);
    assert.equal(seen.bodyLength, 4);
  });
});
