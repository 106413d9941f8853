// Peers that go away mid-transfer (issue 8, "fault tests"): clients hanging up mid-download
// (the crash a retired exchange once caused when upstream reads kept arriving) and mid-upload,
// an upstream that resets mid-body, an upstream that answers garbage. Each shape runs many times
// concurrently; afterwards miproxy must be alive and serve a full transfer intact.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  startMiproxy, startTlsServer, upstreamHandler, issueCert, makeFixture, proxyConfig,
  httpRequest, miproxyError, RawConnection, sha256Hex,
} from './lib/index.mjs';
import { generatedStream, sha256OfStream } from './lib/hash.mjs';

const SCOPE = 'https://storage.azure.com/.default';
const MiB = 1024 * 1024;

// A deterministic pseudo-random sequence, so a failing run can be repeated.
function rng(seed) {
  let x = seed >>> 0;
  return () => { x = (x * 1664525 + 1013904223) >>> 0; return x / 2 ** 32; };
}

// Opens a connection, sends |head| (+ |bodyBytes| of body), then destroys the socket after
// |afterMs| or after |readBytes| response bytes, whichever comes first.
function hangUp(port, { head, bodyBytes = 0, afterMs, readBytes = Infinity }) {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    let got = 0;
    const done = () => { s.destroy(); resolve(got); };
    s.on('connect', () => {
      s.write(head);
      if (bodyBytes > 0) s.write(Buffer.alloc(bodyBytes, 0x62));
      setTimeout(done, afterMs);
    });
    s.on('data', (c) => { got += c.length; if (got >= readBytes) done(); });
    s.on('error', () => resolve(got));
  });
}

describe('peers that hang up mid-transfer', () => {
  let fx; let upstream; let resetting; let garbage; let proxy; let port;

  before(async () => {
    fx = makeFixture('miproxy-hangups-');
    const cert = issueCert(fx.ca, { dns: ['localhost'], ip: ['127.0.0.1'], name: 'hangups' });
    upstream = await startTlsServer({ cert: cert.cert, key: cert.key });
    // Sends the head and half the promised body, then resets the connection.
    resetting = await startTlsServer({ cert: cert.cert, key: cert.key, handler: async (req, res) => {
      const chunked = req.url.includes('chunked');
      res.writeHead(200, chunked ? {} : { 'content-length': 2 * MiB });
      res.write(Buffer.alloc(MiB, 0x61));
      await sleep(20);
      req.socket.destroy();
    } });
    // Answers bytes that are not HTTP.
    garbage = await startTlsServer({ cert: cert.cert, key: cert.key, handler: (req) => {
      req.socket.end('\x00\xffNOT HTTP AT ALL\r\n\r\n');
    } });
    const route = (name, host, up) => ({ name, match: { host }, upstream: up.url,
      identity: 'test', scope: SCOPE });
    const built = await proxyConfig({
      caFile: fx.ca.certPath, tokenPath: fx.tokenPath,
      routes: [route('good', 'good.test', upstream), route('reset', 'reset.test', resetting),
        route('garbage', 'garbage.test', garbage)],
    });
    port = built.port;
    proxy = await startMiproxy({ config: built.config });
  });

  after(async () => {
    await proxy?.stop();
    await Promise.all([upstream?.close(), resetting?.close(), garbage?.close()]);
    fx?.cleanup();
  });

  async function assertStillServes() {
    assert.ok(proxy.isAlive(), 'miproxy is still running');
    const bytes = 3 * MiB + 17;
    const res = await httpRequest({ port, headers: { host: 'good.test' },
      path: `/download?bytes=${bytes}&seed=after` });
    assert.equal(res.status, 200);
    assert.equal(res.body.length, bytes);
    const expected = (await sha256OfStream(generatedStream({ bytes, seed: 'after' }))).sha256;
    assert.equal(sha256Hex(res.body), expected, 'the download arrives intact');
  }

  test('clients hanging up mid-download, 10 rounds of 32 at once', async () => {
    const next = rng(7);
    for (let round = 0; round < 10; round++) {
      const clients = [];
      for (let i = 0; i < 32; i++) {
        const head = `GET /download?bytes=${4 * MiB}&seed=r${round}&delayMs=${i % 3} HTTP/1.1\r\n` +
          'Host: good.test\r\n\r\n';
        clients.push(hangUp(port, { head, afterMs: Math.floor(next() * 60),
          readBytes: Math.floor(next() * 3 * MiB) }));
      }
      await Promise.all(clients);
    }
    await assertStillServes();
  });

  test('clients hanging up mid-upload (Content-Length and chunked), 5 rounds of 32', async () => {
    const next = rng(11);
    for (let round = 0; round < 5; round++) {
      const clients = [];
      for (let i = 0; i < 32; i++) {
        const chunked = i % 2 === 1;
        const send = Math.floor(next() * MiB);
        const head = chunked
          ? `PUT /upload HTTP/1.1\r\nHost: good.test\r\nTransfer-Encoding: chunked\r\n\r\n${send.toString(16)}\r\n`
          : `PUT /upload HTTP/1.1\r\nHost: good.test\r\nContent-Length: ${4 * MiB}\r\n\r\n`;
        clients.push(hangUp(port, { head, bodyBytes: send, afterMs: Math.floor(next() * 40) }));
      }
      await Promise.all(clients);
    }
    await assertStillServes();
  });

  for (const framing of ['content-length', 'chunked']) {
    test(`an upstream reset mid-body (${framing}) never looks like a complete response`, async () => {
      for (let i = 0; i < 5; i++) {
        const conn = await RawConnection.connect(port);
        await conn.write(`GET /${framing} HTTP/1.1\r\nHost: reset.test\r\n\r\n`);
        while (!conn.ended) await conn.waitForData();
        const raw = conn.buffer.toString('latin1');
        assert.match(raw, /^HTTP\/1\.1 200 /);
        const bodyStart = raw.indexOf('\r\n\r\n') + 4;
        if (framing === 'chunked') {
          assert.ok(!raw.endsWith('0\r\n\r\n'), 'no last chunk: the client sees the truncation');
        } else {
          assert.ok(raw.length - bodyStart < 2 * MiB, 'fewer bytes than Content-Length promised');
        }
        conn.socket.destroy();
      }
      await assertStillServes();
    });
  }

  test('an upstream answering garbage gets 502 UpstreamProtocolError', async () => {
    for (let i = 0; i < 5; i++) {
      const res = await httpRequest({ port, headers: { host: 'garbage.test' }, path: '/x' });
      assert.equal(res.status, 502);
      assert.equal(miproxyError(res).error.code, 'UpstreamProtocolError');
    }
    await assertStillServes();
  });
});
