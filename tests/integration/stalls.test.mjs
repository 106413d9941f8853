// Bodies that stop moving (issue 8 item 7, "a request body that stalls has no timeout (both
// sockets stay open)"): limits.body_stall_timeout bounds a request body the app stops sending
// (408, upstream connection closed) and a response the app stops reading (both connections
// closed, memory bounded). Each time miproxy goes on serving.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  startMiproxy, startTlsServer, upstreamHandler, issueCert, makeFixture, proxyConfig,
  httpRequest, RawConnection, rssPeakOfPid, MEMORY_FACTOR,
} from './lib/index.mjs';

const SCOPE = 'https://storage.azure.com/.default';
const MiB = 1024 * 1024;

function limitHits(text, limit) {
  const m = new RegExp(`^miproxy_limit_hits_total\\{limit="${limit}"\\} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : NaN;
}

// Resolves with what `check()` returns once it is truthy; rejects after `ms` (a bound on
// behaviour: the test fails when the thing never happens).
async function eventually(check, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
    await sleep(50);
  }
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`not within ${ms} ms: ${what}`)), ms); }),
  ]);
}

describe('stalled bodies', () => {
  let fx; let upstream; let proxy; let built;

  before(async () => {
    fx = makeFixture('miproxy-stalls-');
    const cert = issueCert(fx.ca, { dns: ['localhost'], ip: ['127.0.0.1'], name: 'stalls' });
    // The default upstream, recording when miproxy closes its side of each request.
    upstream = await startTlsServer({
      cert: cert.cert, key: cert.key,
      handler: (req, res, record) => {
        record.closed = false;
        res.on('close', () => { record.closed = true; record.finished = res.writableFinished; });
        return upstreamHandler(req, res, record);
      },
    });
    built = await proxyConfig({
      caFile: fx.ca.certPath, tokenPath: fx.tokenPath,
      routes: [{ name: 'stall', match: { host: 'stall.test' }, upstream: upstream.url,
        identity: 'test', scope: SCOPE }],
      extra: { limits: { body_stall_timeout: 2 } },
    });
    proxy = await startMiproxy({ config: built.config });
  });

  after(async () => {
    await proxy?.stop();
    await upstream?.close();
    fx?.cleanup();
  });

  async function stillServes() {
    const r = await httpRequest({ port: built.port, headers: { host: 'stall.test' }, path: '/echo/after' });
    assert.equal(r.status, 200);
    assert.ok(proxy.isAlive());
  }

  async function hits(limit) {
    const m = await httpRequest({ port: built.adminPort, path: '/metrics' });
    return limitHits(m.body.toString(), limit);
  }

  test('a request body that stops half-way gets 408 and its upstream connection is closed', async () => {
    const before = await hits('body_stall_timeout');
    const conn = await RawConnection.connect(built.port);
    try {
      await conn.write('PUT /upload/half HTTP/1.1\r\nHost: stall.test\r\nContent-Length: 100000\r\n\r\n');
      await conn.write(Buffer.alloc(1000, 0x61));
      // The head (and the first bytes) went upstream: the upstream holds a half-sent request.
      const record = await eventually(() => upstream.requests.find((r) => r.url === '/upload/half'),
        10000, 'the request reaches the upstream');
      const started = Date.now();
      const r = await withTimeout(conn.readResponse(), 15000, 'an answer to the stalled upload');
      const waited = Date.now() - started;
      assert.equal(r.status, 408);
      const err = JSON.parse(r.body.toString('utf8')).error;
      assert.equal(err.code, 'RequestTimeout');
      assert.equal(r.headers['x-miproxy-error'], 'RequestTimeout');
      assert.equal(err.route, 'stall');
      assert.match(err.message, /limits\.body_stall_timeout/);
      assert.equal(r.headers.connection, 'close');
      assert.ok(waited < 10000, `answered after ${waited} ms (limit 2 s)`);
      assert.equal(await conn.closedWithin(10000), true, 'miproxy closes the client connection');
      await eventually(() => record.closed, 10000, 'the upstream connection is closed');
      assert.equal(record.finished, false, 'the upstream never got a complete request');
    } finally {
      conn.close();
    }
    assert.ok(await hits('body_stall_timeout') > before, 'counted');
    await stillServes();
  });

  test('a client that never reads a large response is closed, upstream too, memory bounded', async () => {
    const before = await hits('body_stall_timeout');
    const sock = net.connect({ port: built.port, host: '127.0.0.1' });
    await new Promise((r, j) => { sock.once('connect', r); sock.once('error', j); });
    sock.pause();  // never reads (until the end of the test)
    sock.on('error', () => {});
    const total = 1024 * MiB;
    try {
      sock.write(`GET /download/big?bytes=${total} HTTP/1.1\r\nHost: stall.test\r\n\r\n`);
      const record = await eventually(() => upstream.requests.find((r) => r.url.startsWith('/download/big')),
        10000, 'the request reaches the upstream');
      // The socket buffers fill, miproxy stops reading the upstream, and after
      // body_stall_timeout (2 s) without the client taking bytes it closes both sides.
      await eventually(() => record.closed, 20000, 'the upstream connection is closed');
      assert.equal(record.finished, false, 'the download was cut, not completed');
      assert.ok(await hits('body_stall_timeout') > before, 'counted');
      const peak = rssPeakOfPid(proxy.pid);
      assert.ok(peak < MEMORY_FACTOR * 64 * MiB, `peak RSS ${peak} bytes stays bounded`);
      // What reaches the client is what was in flight, then the end of the connection.
      let received = 0;
      sock.on('data', (d) => { received += d.length; });
      const ended = new Promise((r) => { sock.once('end', r); sock.once('close', r); });
      sock.resume();
      await withTimeout(ended, 15000, 'the client connection ends');
      assert.ok(received < total, `the client got ${received} of ${total} bytes, then the close`);
    } finally {
      sock.destroy();
    }
    await stillServes();
  });
});
