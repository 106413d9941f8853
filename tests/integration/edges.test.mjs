// The data path's edges (issue 2): upstream connect failures and response timeouts map to the
// contract's 503/504, a slow request head (slowloris) is cut off with 408, idle keep-alive
// connections are closed, and Unix-socket listeners apply their file mode and allowed_uids.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  requireBinary, startMiproxy, startTlsServer, issueCert, makeFixture, proxyConfig,
  httpRequest, miproxyError, RawConnection, freePort,
} from './lib/index.mjs';

const it = (name, fn) => test(name, fn);
const SCOPE = 'https://storage.azure.com/.default';

function unixRequest(socketPath, path, headers = { host: 'echo.test' }) {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, path, headers }, (res) => {
      const parts = [];
      res.on('data', (c) => parts.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers,
        body: Buffer.concat(parts) }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('data path edges', () => {
  let fx; let good; let hanging; let stalling; let silent; let proxy; let port; let deadPort; let sock; let denied;
  const silentSockets = new Set();

  before(async () => {
    requireBinary();
    fx = makeFixture('miproxy-edges-');
    const cert = issueCert(fx.ca, { dns: ['localhost'], ip: ['127.0.0.1'], name: 'edge' });
    good = await startTlsServer({ cert: cert.cert, key: cert.key });
    // Completes TLS, reads the request, never answers.
    hanging = await startTlsServer({ cert: cert.cert, key: cert.key, handler: () => new Promise(() => {}) });
    // Sends the head and part of the body, then stalls forever.
    stalling = await startTlsServer({ cert: cert.cert, key: cert.key, handler: (req, res) => {
      res.writeHead(200, { 'content-length': 100000 });
      res.write(Buffer.alloc(1000, 0x61));
      return new Promise(() => {});
    } });
    // Accepts TCP connections and never says anything (not even a TLS handshake).
    silent = net.createServer((s) => { silentSockets.add(s); s.on('error', () => {}); });
    await new Promise((r) => silent.listen(0, '127.0.0.1', r));
    deadPort = await freePort();  // nothing listens here
    sock = join(fx.dir, 'proxy.sock');
    denied = join(fx.dir, 'denied.sock');
    const route = (name, host, upstream, more = {}) => ({
      name, match: { host }, upstream, identity: 'test', scope: SCOPE, ...more });
    const built = await proxyConfig({
      caFile: fx.ca.certPath, tokenPath: fx.tokenPath,
      routes: [
        route('echo', 'echo.test', good.url),
        route('dead', 'dead.test', `https://127.0.0.1:${deadPort}`),
        route('silent', 'silent.test', `https://127.0.0.1:${silent.address().port}`,
          { timeouts: { connect: 1 } }),
        route('slow', 'slow.test', hanging.url, { timeouts: { response: 1 } }),
        route('stall', 'stall.test', stalling.url, { timeouts: { response: 1 } }),
      ],
      extra: { limits: { header_timeout: 1, idle_timeout: 2 } },
    });
    built.config.listeners.push({ unix: sock, mode: '0600', allowed_uids: [process.getuid()] });
    built.config.listeners.push({ unix: denied, mode: '0666', allowed_uids: [process.getuid() + 4242] });
    port = built.port;
    proxy = await startMiproxy({ config: built.config });
  });

  after(async () => {
    requireBinary();
    await proxy?.stop();
    for (const s of silentSockets) s.destroy();
    await new Promise((r) => silent?.close(r));
    await good?.close();
    await hanging?.close();
    await stalling?.close();
    fx?.cleanup();
  });

  it('connection refused upstream: 503 UpstreamUnavailable naming the route', async () => {
    const r = await httpRequest({ port, path: '/x', headers: { host: 'dead.test' } });
    assert.equal(r.status, 503);
    const err = miproxyError(r).error;
    assert.equal(err.code, 'UpstreamUnavailable');
    assert.equal(err.route, 'dead');
  });

  it('an upstream that never completes the handshake: 504 UpstreamTimeout after timeouts.connect', async () => {
    const r = await httpRequest({ port, path: '/x', headers: { host: 'silent.test' } });
    assert.equal(r.status, 504);
    assert.equal(miproxyError(r).error.code, 'UpstreamTimeout');
  });

  it('an upstream that does not answer in timeouts.response: 504 UpstreamTimeout', async () => {
    const r = await httpRequest({ port, path: '/never', headers: { host: 'slow.test' } });
    assert.equal(r.status, 504);
    const err = miproxyError(r).error;
    assert.equal(err.code, 'UpstreamTimeout');
    assert.equal(err.route, 'slow');
    assert.equal(hanging.requests.length, 1, 'the request did reach the upstream');
  });

  it('an upstream that stalls mid-body is cut off after timeouts.response without new bytes', async () => {
    const conn = await RawConnection.connect(port);
    try {
      await conn.write('GET /stall HTTP/1.1\r\nHost: stall.test\r\n\r\n');
      assert.equal(await conn.closedWithin(10000), true, 'miproxy closed the client connection');
      const text = conn.buffer.toString('latin1');
      assert.match(text, /^HTTP\/1\.1 200/);
      const body = text.slice(text.indexOf('\r\n\r\n') + 4);
      assert.ok(body.length < 100000, 'the truncated body is visible to the client as such');
    } finally {
      conn.close();
    }
  });

  it('a request head that trickles in is cut off with 408 (no slowloris)', async () => {
    const conn = await RawConnection.connect(port);
    try {
      await conn.write('GET /echo HTTP/1.1\r\nHost: echo.test\r\n');
      await sleep(300);
      await conn.write('X-Slow: 1\r\n');  // still no end of head
      const r = await conn.readResponse();
      assert.equal(r.status, 408);
      assert.equal(r.headers['x-miproxy-error'], 'RequestTimeout');
      assert.equal(await conn.closedWithin(5000), true);
    } finally {
      conn.close();
    }
  });

  it('an idle keep-alive connection is closed after limits.idle_timeout', async () => {
    const conn = await RawConnection.connect(port);
    try {
      await conn.write('GET /echo/idle HTTP/1.1\r\nHost: echo.test\r\n\r\n');
      const r = await conn.readResponse();
      assert.equal(r.status, 200);
      assert.equal(await conn.closedWithin(6000), true, 'closed by miproxy');
    } finally {
      conn.close();
    }
  });

  it('a Unix listener gets its mode and serves an allowed uid', async () => {
    assert.equal(statSync(sock).mode & 0o777, 0o600);
    const r = await unixRequest(sock, '/echo/unix');
    assert.equal(r.status, 200);
    assert.equal(JSON.parse(r.body).url, '/echo/unix');
  });

  it('a peer uid outside allowed_uids gets 403 ClientNotAllowed and nothing is forwarded', async () => {
    const before = good.requests.length;
    const r = await unixRequest(denied, '/echo/denied');
    assert.equal(r.status, 403);
    assert.equal(r.headers['x-miproxy-error'], 'ClientNotAllowed');
    assert.equal(good.requests.length, before);
  });
});
