// miproxy under systemd (docs/deploy-vm.md): the sd_notify protocol spoken to $NOTIFY_SOCKET
// (READY=1 once every listener is bound, RELOADING=1/READY=1 around SIGHUP, STOPPING=1 on
// drain), `miproxy reload --pid`, and journald priority prefixes when stderr is the journal.
// The notify socket is tests/tools/notify-sink.py, which also records whether the ports
// accepted connections when each datagram arrived.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  requireBinary, startMiproxy, makeFixture, proxyConfig, spawnProcess, httpRequest, MIPROXY_BIN,
  startTlsServer, issueCert,
} from './lib/index.mjs';

const SINK = join(dirname(fileURLToPath(import.meta.url)), '..', 'tools', 'notify-sink.py');
const SCOPE = 'https://storage.azure.com/.default';
let fx;
let upstream;

before(async () => {
  requireBinary();
  fx = makeFixture('miproxy-systemd-');
  const cert = issueCert(fx.ca, { dns: ['localhost'], ip: ['127.0.0.1'], name: 'upstream' });
  upstream = await startTlsServer({ cert: cert.cert, key: cert.key });
});
after(async () => { await upstream?.close(); fx?.cleanup(); });

async function waitFor(predicate, what, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

async function startSink(t, address, ports) {
  const sink = spawnProcess('python3', [SINK, address, ...ports.map(String)]);
  t.after(() => sink.stop('SIGKILL'));
  const lines = () => sink.stdout().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
  await waitFor(() => lines().some((l) => l.bound), `notify sink on ${address}\n${sink.stderr()}`);
  return { states: () => lines().filter((l) => l.state !== undefined) };
}

const route = (name, host) => ({ name, match: { host }, upstream: upstream.url, identity: 'test',
  scope: SCOPE });

async function stack(t, address) {
  const built = await proxyConfig({ caFile: fx.ca.certPath, tokenPath: fx.tokenPath,
    routes: [route('a', 'a.test')] });
  const sink = await startSink(t, address, [built.port, built.adminPort]);
  const proxy = await startMiproxy({ config: built.config,
    env: { ...process.env, NOTIFY_SOCKET: address } });
  t.after(() => proxy.stop());
  return { ...built, sink, proxy };
}

test('READY=1 arrives once the proxy and admin ports accept, with a STATUS line; SIGHUP sends '
  + 'RELOADING=1 then READY=1; SIGTERM sends STOPPING=1', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'miproxy-notify-'));
  const { sink, proxy } = await stack(t, join(dir, 'notify.sock'));
  const ready = await waitFor(() => sink.states().find((s) => s.state.includes('READY=1')), 'READY=1');
  assert.deepEqual(ready.accepts, [true, true], JSON.stringify(ready));
  assert.match(ready.state, /^STATUS=serving 1 route/m);
  process.kill(proxy.pid, 'SIGHUP');
  await waitFor(() => sink.states().filter((s) => s.state.includes('READY=1')).length === 2, 'READY=1 after reload');
  const states = sink.states().map((s) => s.state);
  assert.match(states[1], /^RELOADING=1$/m);
  assert.match(states[1], /^MONOTONIC_USEC=\d+$/m);
  assert.match(states[2], /^READY=1$/m);
  await proxy.stop();
  // The sink reads datagrams on its own schedule: STOPPING=1 may land just after the exit.
  await waitFor(() => sink.states().some((s) => /^STOPPING=1$/m.test(s.state)), 'STOPPING=1');
});

test('abstract notify socket ("@name") receives READY=1', async (t) => {
  const { sink } = await stack(t, `@miproxy-test-${process.pid}-${Date.now()}`);
  const ready = await waitFor(() => sink.states().find((s) => s.state.includes('READY=1')), 'READY=1');
  assert.deepEqual(ready.accepts, [true, true]);
});

test('a listener that cannot bind: exit 1 and no READY=1', async (t) => {
  const blocker = net.createServer();
  await new Promise((r) => blocker.listen(0, '127.0.0.1', r));
  t.after(() => blocker.close());
  const built = await proxyConfig({ caFile: fx.ca.certPath, tokenPath: fx.tokenPath,
    routes: [route('a', 'a.test')] });
  built.config.listeners = [{ address: `127.0.0.1:${blocker.address().port}` }];
  const dir = mkdtempSync(join(tmpdir(), 'miproxy-notify-'));
  const address = join(dir, 'notify.sock');
  const sink = await startSink(t, address, []);
  const cfg = join(dir, 'c.json');
  writeFileSync(cfg, JSON.stringify(built.config));
  const r = spawnSync(MIPROXY_BIN, ['run', '--config', cfg], { env: { ...process.env, NOTIFY_SOCKET: address },
    encoding: 'utf8', timeout: 20000 });
  assert.equal(r.status, 1, r.stderr);
  await sleep(200);
  const states = sink.states().map((s) => s.state);
  assert.ok(!states.some((s) => /READY=1/.test(s)), JSON.stringify(states));
  assert.ok(states.some((s) => /^STATUS=cannot listen/m.test(s)), JSON.stringify(states));
});

test('miproxy reload --pid: 0 after the process applied a good file; 1 on a refused file, '
  + 'and the old config keeps serving', async (t) => {
  const built = await proxyConfig({ caFile: fx.ca.certPath, tokenPath: fx.tokenPath,
    routes: [route('a', 'a.test')] });
  const proxy = await startMiproxy({ config: built.config });
  t.after(() => proxy.stop());
  const get = (host) => httpRequest({ port: built.port, path: '/x', headers: { host } });
  assert.equal((await get('a.test')).status, 200);
  assert.notEqual((await get('b.test')).status, 200);
  const reload = () => spawnSync(MIPROXY_BIN, ['reload', '--pid', String(proxy.pid), '--config',
    proxy.configPath, '--timeout', '20'], { encoding: 'utf8', timeout: 30000 });

  writeFileSync(proxy.configPath, JSON.stringify({ ...built.config,
    routes: [route('a', 'a.test'), route('b', 'b.test')] }));
  const good = reload();
  assert.equal(good.status, 0, good.stderr);
  assert.match(good.stdout, /reloaded/);
  assert.equal((await get('b.test')).status, 200, 'the new route serves as soon as reload returns');

  writeFileSync(proxy.configPath, JSON.stringify({ ...built.config, routes: [route('c', 'c.test')],
    listeners: 'not a list' }));
  const bad = reload();
  assert.equal(bad.status, 1, bad.stderr);
  assert.match(bad.stderr, /not signalled/);
  assert.equal((await get('b.test')).status, 200, 'the old config keeps serving');
  assert.notEqual((await get('c.test')).status, 200);
});

function journalRun(env, cfg) {
  // JOURNAL_STREAM set to stderr's own device:inode, the way systemd sets it for the journal.
  return spawnSync('sh', ['-c', 'JOURNAL_STREAM=${FAKE:-$(stat -L -c %d:%i /proc/self/fd/2)} exec "$@"',
    'sh', MIPROXY_BIN, 'run', '--config', cfg], { env, encoding: 'utf8', timeout: 20000 });
}

test('journald priority prefixes when stderr is the journal stream, none otherwise', async (t) => {
  const blocker = net.createServer();
  await new Promise((r) => blocker.listen(0, '127.0.0.1', r));
  t.after(() => blocker.close());
  const built = await proxyConfig({ caFile: fx.ca.certPath, tokenPath: fx.tokenPath,
    routes: [route('a', 'a.test')] });
  built.config.admin = { address: `127.0.0.1:${blocker.address().port}` };
  const dir = mkdtempSync(join(tmpdir(), 'miproxy-journal-'));
  const cfg = join(dir, 'c.json');
  writeFileSync(cfg, JSON.stringify(built.config));
  // Listeners bind (info lines), then the admin port is taken (an error line), exit 1.
  const journal = journalRun({ ...process.env }, cfg);
  assert.equal(journal.status, 1, journal.stderr);
  const lines = journal.stderr.split('\n').filter(Boolean);
  assert.ok(lines.some((l) => l.startsWith('<6>{') && l.includes('"msg":"listening"')), journal.stderr);
  assert.ok(lines.some((l) => l.startsWith('<3>{') && l.includes('"msg":"cannot listen"')), journal.stderr);
  assert.ok(lines.every((l) => /^<[3467]>\{/.test(l)), journal.stderr);

  const other = journalRun({ ...process.env, FAKE: '1:1' }, cfg);
  assert.equal(other.status, 1);
  const plain = other.stderr.split('\n').filter(Boolean);
  assert.ok(plain.length > 0 && plain.every((l) => l.startsWith('{')), other.stderr);
});
