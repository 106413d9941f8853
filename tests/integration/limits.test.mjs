// Resource limits under load and faults (issue 8): running out of file descriptors must pause
// accepting (logged once, counted) instead of spinning, and miproxy recovers and still stops
// on SIGTERM; many idle keep-alive clients stay cheap and usable; a client that pipelines
// requests and never reads its responses does not grow miproxy's memory.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  startMiproxy, startTlsServer, issueCert, makeFixture, proxyConfig, httpRequest,
  MEMORY_FACTOR,
} from './lib/index.mjs';

const SCOPE = 'https://storage.azure.com/.default';

function vmRssKiB(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m[1]);
}

function limitHits(text, limit) {
  const m = new RegExp(`^miproxy_limit_hits_total\\{limit="${limit}"\\} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : NaN;
}

function openIdle(port, n) {
  return Promise.all(Array.from({ length: n }, () => new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    s.on('error', () => {});
    s.once('connect', () => resolve(s));
    s.once('close', () => resolve(s));
  })));
}

// One keep-alive request on an already open socket; resolves with the status code.
function requestOn(socket, host) {
  return new Promise((resolve, reject) => {
    let buf = '';
    const onData = (d) => {
      buf += d.toString('latin1');
      const m = /^HTTP\/1\.1 (\d{3})/.exec(buf);
      const end = buf.indexOf('\r\n\r\n');
      const cl = /content-length: (\d+)/i.exec(buf);
      if (m && end >= 0 && cl && buf.length >= end + 4 + Number(cl[1])) {
        socket.off('data', onData);
        resolve(Number(m[1]));
      }
    };
    socket.on('data', onData);
    socket.once('error', reject);
    socket.write(`GET /echo/x HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
  });
}

describe('resource limits', () => {
  let fx; let good;

  before(async () => {
    fx = makeFixture('miproxy-limits-');
    const cert = issueCert(fx.ca, { dns: ['localhost'], ip: ['127.0.0.1'], name: 'limits' });
    good = await startTlsServer({ cert: cert.cert, key: cert.key });
  });
  after(async () => {
    await good?.close();
    fx?.cleanup?.();
  });

  // Starts miproxy for one test; it is stopped after that test whatever happens (a failed
  // assertion must not leave it running and keep the suite from ending).
  async function start(t, extra = {}) {
    const built = await proxyConfig({
      caFile: fx.ca.certPath, tokenPath: fx.tokenPath, shutdownGrace: 5,
      routes: [{ name: 'echo', match: { host: 'echo.test' }, upstream: good.url,
        identity: 'test', scope: SCOPE }],
      extra: { workers: 2, ...extra },
    });
    const proxy = await startMiproxy({ config: built.config });
    t.after(() => proxy.stop('SIGKILL'));
    return { proxy, port: built.port, adminPort: built.adminPort };
  }

  test('out of file descriptors: accepting pauses (logged once, counted), then recovers',
    async (t) => {
      const { proxy, port, adminPort } = await start(t);
      // Leave room for the listeners, admin, token and upstream sockets, not for 150 clients.
      execFileSync('prlimit', ['--pid', String(proxy.pid), '--nofile=64:64']);
      const clients = await openIdle(port, 150);
      await sleep(2500);  // the workers retry on their timers meanwhile (100 ms .. 1 s)
      assert.ok(proxy.isAlive(), 'miproxy died under fd exhaustion');
      for (const s of clients) s.destroy();
      await sleep(1500);

      const health = await httpRequest({ port: adminPort, path: '/healthz' });
      assert.equal(health.status, 200);
      const r = await httpRequest({ port, path: '/echo/after', headers: { host: 'echo.test' } });
      assert.equal(r.status, 200);
      const metrics = await httpRequest({ port: adminPort, path: '/metrics' });
      const hits = limitHits(metrics.body.toString(), 'file_descriptors');
      assert.ok(hits >= 1, `file_descriptors hits: ${hits}`);
      assert.ok(hits < 200, `a pause per retry, not a spin: ${hits}`);

      const exited = await proxy.stop('SIGTERM');
      assert.equal(exited.code, 0);
      const warnings = proxy.stderr().split('\n')
        .filter((l) => l.includes('out of file descriptors'));
      assert.equal(warnings.length, 1, proxy.stderr().slice(-3000));
    });

  test('max_connections: accepting pauses at the limit and resumes when clients leave',
    async (t) => {
      const { proxy, port, adminPort } = await start(t, { limits: { max_connections: 20 } });
      // Fill the limit first, then 20 more: those wait in the listen backlog, so their
      // requests get no answer yet (opening all 40 at once leaves the order to the kernel).
      const first = await openIdle(port, 20);
      await sleep(500);
      const waiting = await openIdle(port, 20);
      const clients = [...first, ...waiting];
      const answered = [];
      for (const s of waiting) {
        requestOn(s, 'echo.test').then((st) => answered.push(st), () => {});
      }
      await sleep(500);
      assert.equal(answered.length, 0);
      for (const s of clients.slice(0, 20)) s.destroy();
      const deadline = Date.now() + 10000;
      while (answered.length < 20 && Date.now() < deadline) await sleep(50);
      assert.deepEqual(answered, Array(20).fill(200));
      const metrics = await httpRequest({ port: adminPort, path: '/metrics' });
      assert.ok(limitHits(metrics.body.toString(), 'max_connections') >= 1);
      for (const s of waiting) s.destroy();
      const warnings = proxy.stderr().split('\n')
        .filter((l) => l.includes('max_connections reached'));
      // One line per episode, not per accept attempt: as the first 20 leave one by one, the
      // waiting ones can fill the limit again after each freed slot, so at most 21 episodes.
      assert.ok(warnings.length >= 1 && warnings.length <= 21, proxy.stderr().slice(-3000));
      assert.equal((await proxy.stop('SIGTERM')).code, 0);
    });

  test('1,000 idle keep-alive clients: RSS stays under 64 MiB and every one is still usable',
    async (t) => {
      const { proxy, port } = await start(t);
      execFileSync('prlimit', ['--pid', String(proxy.pid), '--nofile=8192:8192']);
      const clients = await openIdle(port, 1000);
      await sleep(500);
      const rss = vmRssKiB(proxy.pid);
      assert.ok(rss < MEMORY_FACTOR * 64 * 1024, `VmRSS ${rss} kB`);
      const statuses = [];
      for (let i = 0; i < clients.length; i += 100) {
        statuses.push(...await Promise.all(clients.slice(i, i + 100)
          .map((s) => requestOn(s, 'echo.test'))));
      }
      assert.equal(statuses.filter((s) => s === 200).length, 1000);
      for (const s of clients) s.destroy();
      assert.equal((await proxy.stop('SIGTERM')).code, 0);
    });
  test('200k pipelined requests from a client that never reads: memory stays bounded',
    async (t) => {
      const { proxy, port } = await start(t);
      const before = vmRssKiB(proxy.pid);
      const hog = net.connect({ port, host: '127.0.0.1' });
      hog.on('error', () => {});
      await new Promise((r) => hog.once('connect', r));
      hog.pause();  // never read a response
      const one = 'GET /nothing HTTP/1.1\r\nHost: nothing.test\r\n\r\n';
      for (let i = 0; i < 200; ++i) hog.write(one.repeat(1000));
      await sleep(3000);
      const grown = vmRssKiB(proxy.pid) - before;
      assert.ok(grown < MEMORY_FACTOR * 16 * 1024, `VmRSS grew by ${grown} kB`);
      const r = await httpRequest({ port, path: '/echo/other', headers: { host: 'echo.test' } });
      assert.equal(r.status, 200);
      hog.destroy();
      assert.equal((await proxy.stop('SIGTERM')).code, 0);
    });
});
