// The data path (interface.md): a legacy app speaks plain HTTP/1.1 to miproxy, which matches a
// route, swaps in the route's bearer token and forwards over verified TLS, streaming both
// bodies. Upstreams are local HTTPS servers with certificates from a test CA; they record what
// reached them, so each test also proves what was NOT sent.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import {
  requireBinary, startMiproxy, startTlsServer, issueCert, makeCA, makeFixture,
  proxyConfig, httpRequest, miproxyError, RawConnection, generatedStream, sha256OfStream,
  sha256Hex,
} from './lib/index.mjs';
import { join } from 'node:path';

const it = (name, fn) => test(name, fn);
const SCOPE = 'https://storage.azure.com/.default';

function rawRequest(conn, lines, body = '') {
  return conn.write(`${lines.join('\r\n')}\r\n\r\n${body}`);
}

describe('data path', () => {
  let fx;
  let good; // upstream with a certificate from the trusted test CA
  let bad; // upstream whose certificate does not verify against the configured CA
  let routeCa; // upstream trusted only through the route's tls.ca_file
  let keepAlive; // upstream used only by the keep-alive test
  let proxy;
  let port;

  before(async () => {
    requireBinary();
    fx = makeFixture('miproxy-dataplane-');
    const other = makeCA(join(fx.dir, 'other-ca'), { cn: 'untrusted CA' });
    const goodCert = issueCert(fx.ca, { dns: ['localhost'], ip: ['127.0.0.1'], name: 'good' });
    const badCert = issueCert(other, { dns: ['localhost'], ip: ['127.0.0.1'], name: 'bad' });
    good = await startTlsServer({ cert: goodCert.cert, key: goodCert.key });
    bad = await startTlsServer({ cert: badCert.cert, key: badCert.key });
    routeCa = await startTlsServer({ cert: badCert.cert, key: badCert.key });
    keepAlive = await startTlsServer({ cert: goodCert.cert, key: goodCert.key });
    const route = (name, host, upstream, more = {}) => ({
      name, match: { host }, upstream, identity: 'test', scope: SCOPE, ...more,
    });
    const built = await proxyConfig({
      caFile: fx.ca.certPath,
      tokenPath: fx.tokenPath,
      routes: [
        route('echo', 'echo.test', good.url, {
          headers: { set: { 'x-route-added': 'yes' }, remove: ['x-app-secret'] },
        }),
        { ...route('readonly', 'ro.test', good.url), match: { host: 'ro.test', methods: ['GET', 'HEAD'] } },
        route('badtls', 'bad.test', bad.url),
        route('routeca', 'routeca.test', routeCa.url, { tls: { ca_file: other.certPath } }),
        route('keepalive', 'ka.test', keepAlive.url),
      ],
    });
    port = built.port;
    proxy = await startMiproxy({ config: built.config });
  });

  after(async () => {
    requireBinary();
    await proxy?.stop();
    await Promise.all([good, bad, routeCa, keepAlive].map((s) => s?.close()));
    fx?.cleanup();
  });

  const last = (server) => server.requests[server.requests.length - 1];

  it('GET: app credential replaced by the route token, Host set to the upstream', async () => {
    const before = good.requests.length;
    const r = await httpRequest({ port, path: '/echo/get?a=1&b=two', headers: {
      host: 'echo.test', authorization: 'SharedKey devstoreaccount1:c2lnbmF0dXJl',
    } });
    assert.equal(r.status, 200);
    assert.equal(good.requests.length, before + 1);
    const seen = last(good);
    assert.equal(seen.method, 'GET');
    assert.equal(seen.url, '/echo/get?a=1&b=two');
    assert.equal(seen.headers.host, `localhost:${good.port}`);
    assert.equal(seen.headers.authorization, `Bearer ${fx.token}`);
    const authCount = seen.rawHeaders.filter((v, i) => i % 2 === 0 && /^authorization$/i.test(v));
    assert.equal(authCount.length, 1, 'exactly one Authorization header upstream');
    // The response is the upstream's, passed through.
    assert.equal(r.json().url, '/echo/get?a=1&b=two');
  });

  it('hop-by-hop headers are removed; end-to-end headers pass', async () => {
    const conn = await RawConnection.connect(port);
    try {
      await rawRequest(conn, [
        'GET /echo/hop HTTP/1.1', 'Host: echo.test',
        'Connection: keep-alive, x-hop-private',
        'Keep-Alive: timeout=5', 'X-Hop-Private: must-not-pass',
        'Proxy-Authorization: Basic dXNlcjpwYXNz', 'Proxy-Connection: keep-alive',
        'X-End-To-End: kept', 'Accept: application/json',
      ]);
      const r = await conn.readResponse();
      assert.equal(r.status, 200);
    } finally {
      conn.close();
    }
    const seen = last(good);
    assert.equal(seen.url, '/echo/hop');
    for (const name of ['keep-alive', 'x-hop-private', 'proxy-authorization', 'proxy-connection']) {
      assert.equal(seen.headers[name], undefined, `${name} must not reach the upstream`);
    }
    assert.doesNotMatch(seen.headers.connection ?? '', /x-hop-private/i);
    assert.equal(seen.headers['x-end-to-end'], 'kept');
    assert.equal(seen.headers.accept, 'application/json');
  });

  it('x-ms-client-request-id is added when absent and kept when present', async () => {
    await httpRequest({ port, path: '/echo/rid1', headers: { host: 'echo.test' } });
    const added = last(good).headers['x-ms-client-request-id'];
    assert.ok(typeof added === 'string' && added.length > 0, 'request id added');
    await httpRequest({ port, path: '/echo/rid2', headers: { host: 'echo.test' } });
    assert.notEqual(last(good).headers['x-ms-client-request-id'], added, 'a new id per request');
    await httpRequest({ port, path: '/echo/rid3',
      headers: { host: 'echo.test', 'x-ms-client-request-id': 'app-chosen-id-42' } });
    assert.equal(last(good).headers['x-ms-client-request-id'], 'app-chosen-id-42');
  });

  it('Storage routes get an x-ms-version that accepts bearer tokens', async () => {
    // Bearer tokens need x-ms-version 2017-11-09 or later (azure-services.md §2.1).
    const versionOf = async (headers) => {
      await httpRequest({ port, path: '/echo/version', headers: { host: 'echo.test', ...headers } });
      return last(good).headers['x-ms-version'];
    };
    const added = await versionOf({});
    assert.match(added ?? '', /^\d{4}-\d{2}-\d{2}$/);
    assert.ok(added >= '2017-11-09', `added ${added}`);
    const raised = await versionOf({ 'x-ms-version': '2015-04-05' });
    assert.ok(raised >= '2017-11-09', `raised ${raised}`);
    assert.equal(await versionOf({ 'x-ms-version': '2023-11-03' }), '2023-11-03');
  });

  it("route headers.set overrides and headers.remove drops the app's headers", async () => {
    await httpRequest({ port, path: '/echo/hdr', headers: {
      host: 'echo.test', 'x-route-added': 'from-app', 'x-app-secret': 'do-not-forward',
      'x-other': 'stays',
    } });
    const seen = last(good);
    assert.equal(seen.headers['x-route-added'], 'yes');
    assert.equal(seen.headers['x-app-secret'], undefined);
    assert.equal(seen.headers['x-other'], 'stays');
  });

  it('POST with Content-Length: the body arrives intact', async () => {
    const body = Buffer.from('{"hello":"world","n":[1,2,3]}');
    const r = await httpRequest({ port, method: 'POST', path: '/echo/post', body, headers: {
      host: 'echo.test', 'content-type': 'application/json', 'content-length': body.length,
    } });
    assert.equal(r.status, 200);
    const seen = last(good);
    assert.equal(seen.method, 'POST');
    assert.equal(seen.headers['content-length'], String(body.length));
    assert.equal(seen.bodySha256, sha256Hex(body));
    assert.equal(seen.body, body.toString());
  });

  it('PUT with a chunked request body (unknown length) streams through', async () => {
    const bytes = 5 * 1024 * 1024 + 17;
    const expected = await sha256OfStream(generatedStream({ bytes, seed: 'put-chunked' }));
    const r = await httpRequest({ port, method: 'PUT', path: '/echo/put-chunked',
      headers: { host: 'echo.test' },
      body: generatedStream({ bytes, seed: 'put-chunked', chunkSize: 100000 }) });
    assert.equal(r.status, 200);
    const seen = last(good);
    assert.equal(seen.method, 'PUT');
    assert.equal(seen.bodyLength, bytes);
    assert.equal(seen.bodySha256, expected.sha256);
  });

  it('PUT with Content-Length and a multi-megabyte body', async () => {
    const bytes = 3 * 1024 * 1024 + 5;
    const expected = await sha256OfStream(generatedStream({ bytes, seed: 'put-cl' }));
    const r = await httpRequest({ port, method: 'PUT', path: '/upload/put-cl',
      headers: { host: 'echo.test', 'content-length': bytes },
      body: generatedStream({ bytes, seed: 'put-cl' }) });
    assert.equal(r.status, 200);
    assert.deepEqual(r.json(), { bodyLength: bytes, bodySha256: expected.sha256 });
  });

  it('responses stream back with Content-Length and chunked framing', async () => {
    const chunked = await httpRequest({ port, path: '/chunked?parts=7', headers: { host: 'echo.test' } });
    assert.equal(chunked.status, 200);
    assert.equal(chunked.body.toString(),
      Array.from({ length: 7 }, (_, i) => `part-${i}\n`).join(''));
    for (const framing of ['content-length', 'chunked']) {
      const bytes = 2 * 1024 * 1024 + 3;
      const expected = await sha256OfStream(generatedStream({ bytes, seed: framing }));
      const r = await httpRequest({ port, headers: { host: 'echo.test' },
        path: `/download?bytes=${bytes}&seed=${framing}${framing === 'chunked' ? '&chunked=1' : ''}` });
      assert.equal(r.status, 200);
      assert.equal(r.body.length, bytes);
      assert.equal(sha256Hex(r.body), expected.sha256);
    }
  });

  it('Expect: 100-continue gets an interim 100 before the body is sent', async () => {
    const conn = await RawConnection.connect(port);
    try {
      const body = 'continued-body';
      await rawRequest(conn, [
        'PUT /echo/expect HTTP/1.1', 'Host: echo.test', `Content-Length: ${body.length}`,
        'Expect: 100-continue',
      ]);
      const interim = await conn.readResponse();
      assert.equal(interim.status, 100);
      await conn.write(body);
      let final = await conn.readResponse();
      while (final.status === 100) {
        final = await conn.readResponse(); // a relayed upstream 100 may follow miproxy's own
      }
      assert.equal(final.status, 200);
      assert.equal(JSON.parse(final.body).body, body);
    } finally {
      conn.close();
    }
    assert.equal(last(good).body, 'continued-body');
  });

  it('upstream 4xx answers pass through untouched', async () => {
    const r = await httpRequest({ port, path: '/status/403', headers: { host: 'echo.test' } });
    assert.equal(r.status, 403);
    assert.equal(r.body.toString(), 'status 403\n');
    assert.equal(r.headers['x-miproxy-error'], undefined);
  });

  it('no route: 404 NoRoute, JSON error, nothing forwarded', async () => {
    const before = good.requests.length;
    const r = await httpRequest({ port, path: '/echo/x', headers: { host: 'unknown.test' } });
    assert.equal(r.status, 404);
    assert.equal(r.headers['x-miproxy-error'], 'NoRoute');
    assert.match(r.headers['content-type'] ?? '', /json/);
    assert.equal(miproxyError(r).error.code, 'NoRoute');
    assert.equal(good.requests.length, before);
  });

  it('method excluded by the route: 405 MethodNotAllowed, nothing forwarded', async () => {
    const before = good.requests.length;
    const r = await httpRequest({ port, method: 'POST', path: '/x', body: 'data',
      headers: { host: 'ro.test', 'content-length': 4 } });
    assert.equal(r.status, 405);
    assert.equal(miproxyError(r).error.code, 'MethodNotAllowed');
    assert.equal(good.requests.length, before);
    const ok = await httpRequest({ port, path: '/echo/ro', headers: { host: 'ro.test' } });
    assert.equal(ok.status, 200);
  });

  it('absolute-form requests (HTTP_PROXY apps) route by the request-line host', async () => {
    const conn = await RawConnection.connect(port);
    try {
      const before = good.requests.length;
      await rawRequest(conn, ['GET http://other.example/x HTTP/1.1', 'Host: other.example']);
      const r = await conn.readResponse();
      assert.equal(r.status, 404);
      assert.equal(r.headers['x-miproxy-error'], 'NoRoute');
      assert.equal(good.requests.length, before);
    } finally {
      conn.close();
    }
    const conn2 = await RawConnection.connect(port);
    try {
      await rawRequest(conn2, ['GET http://echo.test/echo/absolute?q=1 HTTP/1.1', 'Host: echo.test']);
      const r = await conn2.readResponse();
      assert.equal(r.status, 200);
      const seen = last(good);
      assert.equal(seen.url, '/echo/absolute?q=1');
      assert.equal(seen.headers.host, `localhost:${good.port}`);
    } finally {
      conn2.close();
    }
  });

  it('an upstream whose certificate does not verify gets 502 UpstreamTlsFailed and no bytes',
    async () => {
      const r = await httpRequest({ port, method: 'PUT', path: '/secret', body: 'payload',
        headers: { host: 'bad.test', 'content-length': 7 } });
      assert.equal(r.status, 502);
      assert.equal(miproxyError(r).error.code, 'UpstreamTlsFailed');
      const stats = bad.stats();
      assert.ok(stats.tcpConnections >= 1, 'miproxy did try to connect');
      assert.equal(stats.tlsHandshakes, 0, 'no TLS session was completed');
      assert.equal(stats.applicationBytes, 0, 'no application bytes (no token) reached it');
      assert.equal(bad.requests.length, 0);
    });

  it("a route's tls.ca_file is trusted for that route", async () => {
    const r = await httpRequest({ port, path: '/echo/routeca', headers: { host: 'routeca.test' } });
    assert.equal(r.status, 200);
    assert.equal(last(routeCa).headers.authorization, `Bearer ${fx.token}`);
  });

  it('smuggling shapes are refused with 400 and the connection is closed', async () => {
    const shapes = {
      'Content-Length with Transfer-Encoding': [[
        'POST /echo/smuggle1 HTTP/1.1', 'Host: echo.test', 'Content-Length: 6',
        'Transfer-Encoding: chunked'], '0\r\n\r\nX'],
      'two different Content-Length values': [[
        'POST /echo/smuggle2 HTTP/1.1', 'Host: echo.test', 'Content-Length: 5',
        'Content-Length: 6'], 'hello!'],
      'a malformed chunk size': [[
        'POST /echo/smuggle3 HTTP/1.1', 'Host: echo.test', 'Transfer-Encoding: chunked'],
      'zz\r\nhello\r\n0\r\n\r\n'],
    };
    for (const [shape, [lines, body]] of Object.entries(shapes)) {
      const conn = await RawConnection.connect(port);
      try {
        await rawRequest(conn, lines, body);
        const r = await conn.readResponse();
        assert.equal(r.status, 400, shape);
        assert.equal(r.headers['x-miproxy-error'], 'BadRequest', shape);
        assert.equal(await conn.closedWithin(10000), true, `${shape}: connection closed`);
      } finally {
        conn.close();
      }
    }
    // No smuggled request ever reached the upstream as a complete request.
    const completed = good.requests.filter((q) => /smuggle/.test(q.url) && q.bodyLength !== undefined);
    assert.deepEqual(completed.map((q) => q.url), []);
  });

  it('oversized request headers get 431', async () => {
    const conn = await RawConnection.connect(port);
    try {
      const big = 'a'.repeat(8000);
      const lines = ['GET /echo/huge HTTP/1.1', 'Host: echo.test'];
      for (let i = 0; i < 32; i++) {
        lines.push(`X-Big-${i}: ${big}`);
      }
      await rawRequest(conn, lines);
      const r = await conn.readResponse();
      assert.equal(r.status, 431);
      assert.equal(r.headers['x-miproxy-error'], 'RequestHeaderFieldsTooLarge');
    } finally {
      conn.close();
    }
    assert.equal(good.requests.filter((q) => q.url === '/echo/huge').length, 0);
  });

  it('pipelined requests are answered in order', async () => {
    const conn = await RawConnection.connect(port);
    try {
      await conn.write(
        'GET /echo/p1 HTTP/1.1\r\nHost: echo.test\r\n\r\n'
        + 'POST /echo/p2 HTTP/1.1\r\nHost: echo.test\r\nContent-Length: 3\r\n\r\nabc'
        + 'GET /download?bytes=300000&seed=p3 HTTP/1.1\r\nHost: echo.test\r\n\r\n'
        + 'GET /echo/p4 HTTP/1.1\r\nHost: echo.test\r\n\r\n');
      const r1 = await conn.readResponse();
      const r2 = await conn.readResponse();
      const r3 = await conn.readResponse();
      const r4 = await conn.readResponse();
      assert.deepEqual([r1.status, r2.status, r3.status, r4.status], [200, 200, 200, 200]);
      assert.equal(JSON.parse(r1.body).url, '/echo/p1');
      assert.equal(JSON.parse(r2.body).url, '/echo/p2');
      assert.equal(JSON.parse(r2.body).body, 'abc');
      const expected = await sha256OfStream(generatedStream({ bytes: 300000, seed: 'p3' }));
      assert.equal(sha256Hex(r3.body), expected.sha256);
      assert.equal(JSON.parse(r4.body).url, '/echo/p4');
    } finally {
      conn.close();
    }
  });

  it('10,000 keep-alive requests on one client connection reuse upstream connections',
    async (t) => {
      const conn = await RawConnection.connect(port);
      const n = 10000;
      try {
        for (let i = 0; i < n; i++) {
          await conn.write(`GET /status/200?i=${i} HTTP/1.1\r\nHost: ka.test\r\n\r\n`);
          const r = await conn.readResponse();
          if (r.status !== 200) {
            assert.fail(`request ${i} answered ${r.status}`);
          }
        }
      } finally {
        conn.close();
      }
      assert.equal(keepAlive.requests.length, n);
      const stats = keepAlive.stats();
      t.diagnostic(`${n} requests: ${stats.tcpConnections} upstream TCP connections, `
        + `${stats.tlsHandshakes} TLS handshakes`);
      assert.ok(stats.tlsHandshakes <= 4,
        `${stats.tlsHandshakes} upstream TLS handshakes for ${n} requests`);
      assert.ok(stats.tcpConnections <= 4,
        `${stats.tcpConnections} upstream TCP connections for ${n} requests`);
    });

  it('the access log has one JSON line per request, without tokens or SAS values', async () => {
    await httpRequest({ port, path: '/echo/logged?sig=SECRETSIG&se=2030-01-01&comp=list',
      headers: { host: 'echo.test' } });
    const line = await proxy.waitForLogLine(
      (l) => typeof l.path === 'string' && l.path.startsWith('/echo/logged'));
    assert.equal(line.route, 'echo');
    assert.equal(line.method, 'GET');
    assert.equal(line.status, 200);
    assert.doesNotMatch(JSON.stringify(line), /SECRETSIG/);
  });

  it('the token never appears in miproxy output', () => {
    assert.equal(proxy.stdout().includes(fx.token), false);
    assert.equal(proxy.stderr().includes(fx.token), false);
    const signature = fx.token.split('.')[2];
    assert.equal(`${proxy.stdout()}${proxy.stderr()}`.includes(signature), false);
  });
});

describe('graceful shutdown', () => {
  test('SIGTERM during a slow download: the download completes intact and miproxy exits 0',
    async (t) => {
      const fx = makeFixture('miproxy-shutdown-');
      t.after(() => fx.cleanup());
      const cert = issueCert(fx.ca, { dns: ['localhost'], ip: ['127.0.0.1'] });
      const upstream = await startTlsServer({ cert: cert.cert, key: cert.key });
      t.after(() => upstream.close());
      const { config, port } = await proxyConfig({
        caFile: fx.ca.certPath, tokenPath: fx.tokenPath,
        routes: [{ name: 'slow', match: { host: 'slow.test' }, upstream: upstream.url,
          identity: 'test', scope: SCOPE }],
      });
      const proxy = await startMiproxy({ config });
      t.after(() => proxy.stop('SIGKILL'));

      // 4 MiB in 64 KiB chunks, 40 ms apart: a download that is still running when the signal
      // arrives (the signal is sent only after the first bytes came back).
      const bytes = 4 * 1024 * 1024;
      const expected = await sha256OfStream(generatedStream({ bytes, seed: 'slow' }));
      const conn = await RawConnection.connect(port);
      t.after(() => conn.close());
      await conn.write(`GET /download?bytes=${bytes}&seed=slow&delayMs=40 HTTP/1.1\r\n`
        + 'Host: slow.test\r\n\r\n');
      while (conn.buffer.indexOf('\r\n\r\n') < 0 || conn.buffer.length < 200000) {
        assert.equal(conn.ended, false, 'connection ended before the download started');
        await conn.waitForData();
      }
      process.kill(proxy.pid, 'SIGTERM');
      const r = await conn.readResponse();
      assert.equal(r.status, 200);
      assert.equal(r.body.length, bytes);
      assert.equal(sha256Hex(r.body), expected.sha256);
      const exit = await proxy.exited;
      assert.deepEqual({ code: exit.code, signal: exit.signal }, { code: 0, signal: null });
    });
});
