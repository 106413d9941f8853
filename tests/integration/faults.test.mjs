// Upstream and client faults around one exchange: a pooled upstream connection that dies after
// reading the head (a replay must never lose body bytes, and non-idempotent requests are not
// replayed), a client that half-closes right after its request, a response head that trickles
// in (its own deadline) or is too large (limits.max_response_header_bytes). Each test ends by
// checking that miproxy still serves.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import { setTimeout as sleep } from 'node:timers/promises';
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  startMiproxy, issueCert, makeFixture, proxyConfig, httpRequest,
  miproxyError, RawConnection,
} from './lib/index.mjs';

const it = (name, fn) => test(name, fn);
const SCOPE = 'https://storage.azure.com/.default';

// An HTTPS upstream that answers the first request on each connection (keep-alive, storing
// PUT/POST bodies) and, while `killSecond` is set, drops the connection right after reading
// the head of the second request on it: the pooled connection the server has given up on.
async function startFlakyUpstream(cert) {
  const stored = [];
  const heads = [];
  const state = { killSecond: false };
  const server = https.createServer({ cert: cert.cert, key: cert.key, keepAliveTimeout: 60000 },
    (req, res) => {
      heads.push({ method: req.method, url: req.url });
      req.socket.served = (req.socket.served ?? 0) + 1;
      if (state.killSecond && req.socket.served >= 2) {
        req.socket.destroy();
        return;
      }
      const parts = [];
      req.on('data', (c) => parts.push(c));
      req.on('end', () => {
        const body = Buffer.concat(parts).toString('latin1');
        if (req.method !== 'GET') stored.push({ method: req.method, url: req.url, body });
        res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length });
        res.end(body);
      });
    });
  const sockets = new Set();
  server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: server.address().port, stored, heads, state,
    close: async () => { for (const s of sockets) s.destroy(); await new Promise((r) => server.close(r)); },
  };
}

// A TCP forwarder to |targetPort| that holds every connection after the first for |delayMs|
// before connecting on: miproxy's reconnect is slow, so body bytes the app sends meanwhile
// arrive while there is no upstream connection to take them.
async function startSlowForwarder(targetPort, delayMs) {
  let count = 0;
  const sockets = new Set();
  const server = net.createServer((down) => {
    sockets.add(down);
    down.on('error', () => {});
    down.pause();
    const go = () => {
      const up = net.connect({ port: targetPort, host: '127.0.0.1' });
      sockets.add(up);
      up.on('error', () => down.destroy());
      down.on('close', () => up.destroy());
      up.on('close', () => down.destroy());
      down.pipe(up);
      up.pipe(down);
      down.resume();
    };
    if (count++ === 0) go(); else setTimeout(go, delayMs);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: server.address().port,
    close: async () => { for (const s of sockets) s.destroy(); await new Promise((r) => server.close(r)); },
  };
}

// A raw TLS upstream whose answer is written by |respond(socket)| once a request head is read.
async function startRawTlsUpstream(cert, respond) {
  const sockets = new Set();
  const server = tls.createServer({ cert: cert.cert, key: cert.key }, (s) => {
    sockets.add(s);
    s.on('error', () => {});
    s.on('close', () => sockets.delete(s));
    let buf = '';
    let answered = false;
    s.on('data', (d) => {
      buf += d.toString('latin1');
      if (!answered && buf.includes('\r\n\r\n')) {
        answered = true;
        respond(s);
      }
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: server.address().port,
    close: async () => { for (const s of sockets) s.destroy(); await new Promise((r) => server.close(r)); },
  };
}

describe('exchange faults', () => {
  let fx; let flaky; let fwd; let trickle; let bighead; let deny; let proxy; let port; let adminPort;
  const trickleTimers = new Set();

  before(async () => {
    fx = makeFixture('miproxy-faults-');
    const cert = issueCert(fx.ca, { dns: ['localhost'], ip: ['127.0.0.1'], name: 'faults' });
    flaky = await startFlakyUpstream(cert);
    fwd = await startSlowForwarder(flaky.port, 400);
    // One header byte every 300 ms, for longer than the route's response timeout.
    trickle = await startRawTlsUpstream(cert, (s) => {
      const head = `HTTP/1.1 200 OK\r\nX-Slow: ${'a'.repeat(40)}\r\nContent-Length: 2\r\n\r\nok`;
      let i = 0;
      const t = setInterval(() => {
        if (s.destroyed || i >= head.length) { clearInterval(t); trickleTimers.delete(t); return; }
        s.write(head[i++]);
      }, 300);
      trickleTimers.add(t);
    });
    // A 100 KiB response head (above the 64 KiB default), then a small body.
    bighead = await startRawTlsUpstream(cert, (s) => {
      let h = 'HTTP/1.1 200 OK\r\n';
      for (let i = 0; i < 100; i++) h += `X-Big-${i}: ${'b'.repeat(1024)}\r\n`;
      s.write(`${h}Content-Length: 2\r\n\r\nok`);
    });
    // Answers 403 as soon as the head is in, without reading the body.
    deny = await startRawTlsUpstream(cert, (s) => {
      s.write('HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n'
        + 'Connection: close\r\n\r\ndenied');
      s.end();
    });
    const route = (name, host, upstream, more = {}) => ({
      name, match: { host }, upstream, identity: 'test', scope: SCOPE, ...more });
    const built = await proxyConfig({
      caFile: fx.ca.certPath, tokenPath: fx.tokenPath,
      routes: [
        route('flaky', 'flaky.test', `https://localhost:${fwd.port}`, { timeouts: { response: 5 } }),
        route('direct', 'direct.test', `https://localhost:${flaky.port}`),
        route('fresh', 'fresh.test', `https://127.0.0.1:${flaky.port}`),
        route('trickle', 'trickle.test', `https://localhost:${trickle.port}`,
          { timeouts: { response: 2 } }),
        route('bighead', 'bighead.test', `https://localhost:${bighead.port}`),
        route('deny', 'deny.test', `https://localhost:${deny.port}`),
      ],
    });
    port = built.port;
    adminPort = built.adminPort;
    proxy = await startMiproxy({ config: built.config });
  });

  after(async () => {
    for (const t of trickleTimers) clearInterval(t);
    await proxy?.stop();
    await fwd?.close();
    await flaky?.close();
    await trickle?.close();
    await bighead?.close();
    await deny?.close();
    fx?.cleanup();
  });

  async function stillServes() {
    flaky.state.killSecond = false;
    const r = await httpRequest({ port, path: '/alive', headers: { host: 'direct.test' } });
    assert.equal(r.status, 200, 'miproxy still serves');
  }

  // Warms the pool: one GET leaves a keep-alive connection to the upstream in miproxy's pool.
  async function warm() {
    flaky.state.killSecond = false;
    const r = await httpRequest({ port, path: '/warm', headers: { host: 'flaky.test' } });
    assert.equal(r.status, 200);
    flaky.state.killSecond = true;
  }

  for (const framing of ['chunked', 'content-length']) {
    it(`a pooled connection that dies after the head: a ${framing} PUT is stored whole or fails with 502`, async () => {
      await warm();
      const path = `/blob-${framing}`;
      const conn = await RawConnection.connect(port);
      try {
        const frame = framing === 'chunked'
          ? ['Transfer-Encoding: chunked\r\n\r\n', '4\r\nAAAA\r\n', '4\r\nBBBB\r\n0\r\n\r\n']
          : ['Content-Length: 8\r\n\r\n', 'AAAA', 'BBBB'];
        await conn.write(`PUT ${path} HTTP/1.1\r\nHost: flaky.test\r\n${frame[0]}`);
        await sleep(150);  // the pooled connection is dead; miproxy is reconnecting
        await conn.write(frame[1]);
        await sleep(100);
        await conn.write(frame[2]);
        const r = await conn.readResponse();
        const stored = flaky.stored.filter((s) => s.url === path);
        if (r.status === 200) {
          assert.deepEqual(stored.map((s) => s.body), ['AAAABBBB'], 'the upstream stored the whole body');
          assert.equal(r.body.toString('latin1'), 'AAAABBBB');
        } else {
          assert.equal(r.status, 502, `got ${r.status}, not 200 or 502`);
          assert.equal(stored.filter((s) => s.body !== 'AAAABBBB').length, 0,
            'no partial body was stored');
        }
      } finally {
        conn.close();
      }
      await stillServes();
    });
  }

  it('a bodiless POST on a pooled connection that dies is not replayed: 502', async () => {
    await warm();
    const before = flaky.heads.filter((h) => h.url === '/post-once').length;
    const r = await httpRequest({ port, method: 'POST', path: '/post-once',
      headers: { host: 'flaky.test', 'content-length': '0' } });
    assert.equal(r.status, 502);
    assert.equal(miproxyError(r).error.code, 'UpstreamProtocolError');
    assert.equal(flaky.heads.filter((h) => h.url === '/post-once').length - before, 1,
      'the POST reached the upstream once');
    await stillServes();
  });

  it('a GET on a pooled connection that dies is replayed on a fresh one', async () => {
    await warm();
    const r = await httpRequest({ port, path: '/get-again', headers: { host: 'flaky.test' } });
    assert.equal(r.status, 200);
    await stillServes();
  });

  it('a client that half-closes right after a bodiless request gets its answer (fresh upstream)', async () => {
    // The "fresh" route is used only here: its first request needs a new upstream connection,
    // so the request waits for the TLS handshake while the client's FIN arrives.
    const sock = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    await new Promise((r, j) => { sock.once('connect', r); sock.once('error', j); });
    const conn = new RawConnection(sock);
    try {
      flaky.state.killSecond = false;
      await conn.write('GET /half HTTP/1.1\r\nHost: fresh.test\r\n\r\n');
      sock.end();
      const r = await conn.readResponse();
      assert.equal(r.status, 200);
    } finally {
      conn.close();
    }
    await stillServes();
  });

  it('a response head that trickles in ends in 504 at the response deadline', async () => {
    const r = await httpRequest({ port, path: '/slow-head', headers: { host: 'trickle.test' } });
    assert.equal(r.status, 504);
    assert.equal(miproxyError(r).error.code, 'UpstreamTimeout');
    await stillServes();
  });

  it('a response head over limits.max_response_header_bytes is refused with 502', async () => {
    const r = await httpRequest({ port, path: '/big', headers: { host: 'bighead.test' } });
    assert.equal(r.status, 502);
    assert.equal(miproxyError(r).error.code, 'UpstreamProtocolError');
    assert.equal(r.headers['x-big-0'], undefined);
    await stillServes();
  });

  it('an early 403 while the app is still uploading reaches the app, not a reset', async () => {
    // The app writes its body and reads only afterwards (as a client blocked in a large
    // write does): the 403 waits in its receive buffer, where a reset would destroy it.
    // allowHalfOpen: the app keeps its side open after miproxy's FIN, as a client blocked in a
    // write does, so the lingering ends at limits.lingering_timeout.
    const sock = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    await new Promise((r, j) => { sock.once('connect', r); sock.once('error', j); });
    sock.pause();
    let sockError = null;
    sock.on('error', (e) => { sockError = e; });
    const total = 8 * 1024 * 1024;
    sock.write(`PUT /upload HTTP/1.1\r\nHost: deny.test\r\nContent-Length: ${total}\r\n\r\n`);
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    const until = Date.now() + 600;
    let sent = 0;
    while (Date.now() < until && sent < total && !sockError && !sock.destroyed) {
      if (!sock.write(chunk)) await new Promise((r) => { sock.once('drain', r); setTimeout(r, 50); });
      sent += chunk.length;
      await sleep(5);
    }
    await sleep(300);
    const conn = new RawConnection(sock);
    try {
      sock.resume();
      const r = await conn.readResponse();
      assert.equal(r.status, 403);
      assert.equal(r.body.toString('latin1'), 'denied');
      assert.equal(r.headers.connection, 'close');
      assert.equal(await conn.closedWithin(10000), true, 'miproxy closes after lingering');
      // The lingering ended by limits.lingering_timeout (5 s), counted like every other limit.
      let hits = 0;
      for (const until = Date.now() + 15000; hits < 1 && Date.now() < until;) {
        const metrics = await httpRequest({ port: adminPort, path: '/metrics' });
        const m = /^miproxy_limit_hits_total\{limit="lingering_timeout"\} (\S+)$/m
          .exec(metrics.body.toString());
        hits = m ? Number(m[1]) : 0;
        if (hits < 1) await sleep(200);
      }
      assert.ok(hits >= 1, 'lingering_timeout counted in miproxy_limit_hits_total');
    } finally {
      conn.close();
    }
    await stillServes();
  });
});
