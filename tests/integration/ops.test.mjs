// Operating miproxy (interface.md "Admin listener", "Logs and metrics", Signals): what an
// operator sees on /metrics, /healthz, /readyz and /quitquitquit, what SIGHUP does to live
// traffic, and what the access log and start-up lines say. Tokens come from dev-imds
// (tests/tools/dev-imds.mjs), which counts every token request, so the tests can state how
// many token requests a reload caused.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  requireBinary, startMiproxy, startTlsServer, issueCert, makeFixture, proxyConfig,
  httpRequest, miproxyError, recordSecret, generatedStream, sha256OfStream, sha256Hex,
} from './lib/index.mjs';
import { startDevImds } from '../tools/dev-imds.mjs';

const it = (name, fn) => test(name, fn);
const SCOPE = 'https://storage.azure.com/.default';

async function waitFor(predicate, what, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await predicate();
    if (value) {
      return value;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}`);
    }
    await sleep(25);
  }
}

// Prometheus text format -> [{ name, labels: {..}, value }] (comment lines skipped).
function parseMetrics(text) {
  const samples = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) {
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `unparsable metrics line: ${line}`);
    const labels = {};
    for (const [, k, v] of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[k] = v.replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
    }
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return samples;
}

// The value of the one sample named `name` whose labels are exactly `labels` (0 when absent:
// counters that were never touched may not be exported yet).
function sample(samples, name, labels = {}) {
  const want = JSON.stringify(Object.entries(labels).sort());
  const found = samples.filter((s) => s.name === name
    && JSON.stringify(Object.entries(s.labels).sort()) === want);
  assert.ok(found.length <= 1, `${found.length} samples ${name}${want}`);
  return found.length ? found[0].value : 0;
}

async function scrape(adminPort) {
  const r = await httpRequest({ port: adminPort, path: '/metrics' });
  assert.equal(r.status, 200);
  assert.match(r.headers['content-type'], /^text\/plain; version=0\.0\.4/);
  const text = r.body.toString('utf8');
  return { text, samples: parseMetrics(text) };
}

// The structured lines miproxy wrote on stderr (one JSON object per line).
function stderrLines(proxy) {
  return proxy.stderr().split('\n').filter((l) => l.startsWith('{'))
    .map((l) => { try { return JSON.parse(l); } catch { return null; } }).filter(Boolean);
}

const promtool = (() => {
  const r = spawnSync('sh', ['-c', 'command -v promtool'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
})();

describe('operating miproxy', () => {
  let fx;
  let upstreamA;
  let upstreamB;
  let cert;

  before(async () => {
    requireBinary();
    fx = makeFixture('miproxy-ops-');
    cert = issueCert(fx.ca, { dns: ['localhost'], ip: ['127.0.0.1'], name: 'upstream' });
    upstreamA = await startTlsServer({ cert: cert.cert, key: cert.key });
    upstreamB = await startTlsServer({ cert: cert.cert, key: cert.key });
  });

  after(async () => {
    await upstreamA?.close();
    await upstreamB?.close();
    fx?.cleanup();
  });

  // dev-imds and miproxy with a managed identity "vm" (through dev-imds) and a token_file
  // identity "file"; `routes(imds)` returns the routes. Stopped (and checked) by t.after.
  async function startStack(t, { routes, admin = {}, workers = 2 }) {
    const imds = await startDevImds();
    t.after(() => imds.close());
    const identities = {
      vm: { type: 'managed_identity', source: 'imds', endpoint: imds.tokenUrl },
      file: { type: 'token_file', path: fx.tokenPath },
    };
    const built = await proxyConfig({ caFile: fx.ca.certPath, identities, routes,
      extra: { workers } });
    built.config.admin = { ...built.config.admin, ...admin };
    const proxy = await startMiproxy({ config: built.config });
    t.after(() => proxy.stop());
    return { imds, proxy, config: built.config, port: built.port, adminPort: built.adminPort };
  }

  const route = (name, host, upstream, identity = 'vm', more = {}) => ({
    name, match: { host }, upstream: upstream.url, identity, scope: SCOPE, ...more,
  });

  it('/metrics moves with traffic, tokens and connections; admin endpoints', async (t) => {
    const { imds, proxy, port, adminPort } = await startStack(t, {
      routes: [route('blob', 'blob.test', upstreamA)],
    });
    // Readiness: 200 with the identities once the first token is cached.
    const ready = await waitFor(async () => {
      const r = await httpRequest({ port: adminPort, path: '/readyz' });
      return r.status === 200 ? r : null;
    }, '/readyz 200');
    const body = ready.json();
    assert.equal(body.ready, true);
    const vm = body.identities.find((s) => s.identity === 'vm');
    assert.ok(vm, `identities: ${JSON.stringify(body.identities)}`);
    assert.equal(vm.scope, SCOPE);
    assert.equal(vm.has_valid_token, true);
    assert.equal((await httpRequest({ port: adminPort, path: '/healthz' })).status, 200);

    const before = (await scrape(adminPort)).samples;
    const N = 25;
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    t.after(() => agent.destroy());
    for (let i = 0; i < N; i++) {
      const r = await httpRequest({ port, path: `/m/${i}`, agent, headers: { host: 'blob.test' } });
      assert.equal(r.status, 200);
    }
    for (let i = 0; i < 3; i++) {
      const r = await httpRequest({ port, path: `/none/${i}`, headers: { host: 'nowhere.test' } });
      assert.equal(r.status, 404);
      assert.equal(miproxyError(r).error.code, 'NoRoute');
    }
    const ok = { route: 'blob', method: 'GET', status_class: '2xx' };
    const unrouted = { route: '', method: 'GET', status_class: '4xx' };
    const delta = (samples, name, labels) => sample(samples, name, labels)
      - sample(before, name, labels);
    // The counters are bumped just after each response is written: wait until they caught up,
    // then they must be exact.
    const { samples: afterSamples, text } = await waitFor(async () => {
      const s = await scrape(adminPort);
      return delta(s.samples, 'miproxy_requests_total', ok) >= N
        && delta(s.samples, 'miproxy_requests_total', unrouted) >= 3 ? s : null;
    }, 'request counters');
    assert.equal(delta(afterSamples, 'miproxy_requests_total', ok), N);
    assert.equal(delta(afterSamples, 'miproxy_requests_total', unrouted), 3);
    assert.equal(delta(afterSamples, 'miproxy_requests_total',
      { route: 'blob', method: 'GET', status_class: '4xx' }), 0);
    assert.equal(delta(afterSamples, 'miproxy_request_duration_seconds_count', { route: 'blob' }), N);
    assert.equal(delta(afterSamples, 'miproxy_upstream_duration_seconds_count', { route: 'blob' }),
      N);
    assert.equal(delta(afterSamples, 'miproxy_request_duration_seconds_count', { route: '' }), 3);

    // Token acquisitions: as many successes as dev-imds issued tokens, none failed.
    const issued = imds.count().issued;
    assert.ok(issued >= 1);
    const acquired = { identity: 'vm', source: 'imds', result: 'success' };
    assert.equal(sample(afterSamples, 'miproxy_token_acquisitions_total', acquired), issued);
    assert.equal(sample(afterSamples, 'miproxy_token_acquisitions_total',
      { ...acquired, result: 'failure' }), 0);
    assert.equal(sample(afterSamples, 'miproxy_token_acquisition_duration_seconds_count',
      { identity: 'vm' }), issued);
    const expiry = sample(afterSamples, 'miproxy_token_expiry_seconds', { identity: 'vm', scope: SCOPE });
    assert.ok(expiry > 0 && expiry <= 86399, `token expiry gauge ${expiry}`);

    // Upstream connections: each forwarded request either opened a connection or reused one;
    // one keep-alive client connection in sequence needs at most a couple of upstream ones.
    const opened = delta(afterSamples, 'miproxy_upstream_connections_opened_total', {});
    const reused = delta(afterSamples, 'miproxy_upstream_connections_reused_total', {});
    assert.equal(opened + reused, N, `opened ${opened} + reused ${reused}`);
    assert.ok(opened >= 0 && opened <= 2, `opened ${opened}`);
    assert.ok(sample(afterSamples, 'miproxy_upstream_connections_open', {}) >= 1);
    assert.ok(sample(afterSamples, 'miproxy_downstream_connections_open', {}) >= 1,
      'the agent\'s keep-alive connection is open');
    agent.destroy();
    await waitFor(async () => sample((await scrape(adminPort)).samples,
      'miproxy_downstream_connections_open', {}) === 0, 'downstream connections back to 0');
    t.diagnostic(`sample /metrics lines:\n${text.split('\n').filter((l) =>
      /^miproxy_(requests_total\{.*route="blob".*2xx|requests_total\{.*route="".*4xx|token_acquisitions_total|token_expiry|upstream_connections|config_reloads)/.test(l))
      .join('\n')}`);

    // Admin endpoints are never served on the proxy listener.
    for (const path of ['/metrics', '/healthz', '/readyz']) {
      const r = await httpRequest({ port, path, headers: { host: `127.0.0.1:${port}` } });
      assert.equal(r.status, 404, `${path} on the proxy port`);
      assert.equal(miproxyError(r).error.code, 'NoRoute');
      assert.doesNotMatch(r.body.toString(), /miproxy_requests_total/);
    }
    const quit = await httpRequest({ port, method: 'POST', path: '/quitquitquit',
      headers: { host: `127.0.0.1:${port}` } });
    assert.equal(quit.status, 404);
    // quitquitquit is off unless admin.allow_quit.
    const refused = await httpRequest({ port: adminPort, method: 'POST', path: '/quitquitquit' });
    assert.equal(refused.status, 403);
    assert.ok(proxy.isAlive(), 'a refused quitquitquit does not stop miproxy');
    assert.equal((await httpRequest({ port, path: '/after-quit', headers: { host: 'blob.test' } }))
      .status, 200);
  });

  test('/metrics passes promtool check metrics', async (t) => {
    assert.ok(promtool, 'promtool is not installed (scripts/install-deps.sh installs prometheus)');
    const { port, adminPort } = await startStack(t, {
      routes: [route('blob', 'blob.test', upstreamA)],
    });
    await httpRequest({ port, path: '/p', headers: { host: 'blob.test' } });
    await httpRequest({ port, path: '/p', headers: { host: 'nowhere.test' } });
    const { text } = await scrape(adminPort);
    const r = spawnSync(promtool, ['check', 'metrics'], { input: text, encoding: 'utf8' });
    assert.equal(r.status, 0, `promtool check metrics:\n${r.stdout}${r.stderr}`);
  });

  it('POST /quitquitquit with admin.allow_quit: 200, in-flight request completes, exit 0',
    async (t) => {
      const { proxy, port, adminPort } = await startStack(t, {
        routes: [route('blob', 'blob.test', upstreamA)], admin: { allow_quit: true },
      });
      const bytes = 2 * 1024 * 1024;
      const expected = await sha256OfStream(generatedStream({ bytes, seed: 'quit' }));
      // A slow download (64 KiB every 50 ms) is in flight when quitquitquit arrives.
      const download = httpRequest({ port, headers: { host: 'blob.test' },
        path: `/download?bytes=${bytes}&seed=quit&delayMs=50` });
      await waitFor(() => upstreamA.requests.some((r) => r.url.includes('seed=quit')),
        'the download reached the upstream');
      const quit = await httpRequest({ port: adminPort, method: 'POST', path: '/quitquitquit' });
      assert.equal(quit.status, 200);
      const r = await download;
      assert.equal(r.status, 200);
      assert.equal(r.body.length, bytes);
      assert.equal(sha256Hex(r.body), expected.sha256);
      const exit = await proxy.exited;
      assert.deepEqual(exit, { code: 0, signal: null });
      assert.ok(stderrLines(proxy).some((l) => l.msg === 'draining'), 'drain logged');
    });

  it('access log: one JSON line per request with the documented fields, secrets redacted; '
    + 'start-up lines on stderr', async (t) => {
    const { proxy, port, adminPort } = await startStack(t, {
      routes: [route('blob', 'blob.test', upstreamA), route('fixed', 'fixed.test', upstreamA, 'file')],
    });
    const sig = `opsSig${sha256Hex(String(Math.random())).slice(0, 24)}`;
    recordSecret(sig);
    const query = `sv=2021-08-06&se=2030-01-01T00%3A00%3A00Z&skoid=ops-skoid-value&sp=r&sig=${sig}&comp=list`;
    const body = 'x'.repeat(1234);
    const r = await httpRequest({ port, method: 'PUT', path: `/logs/a.txt?${query}`, body,
      headers: { host: 'blob.test', 'x-ms-client-request-id': 'ops-request-1',
        'content-length': body.length } });
    assert.equal(r.status, 200);
    const line = await proxy.waitForLogLine((l) => l.client_request_id === 'ops-request-1');
    assert.ok(!Number.isNaN(Date.parse(line.time)), `time ${line.time}`);
    assert.match(line.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
    assert.equal(line.route, 'blob');
    assert.equal(line.method, 'PUT');
    assert.equal(line.status, 200);
    assert.equal(line.bytes_in, body.length);
    assert.equal(line.bytes_out, r.body.length);
    assert.equal(typeof line.duration_ms, 'number');
    assert.ok(line.duration_ms >= 0);
    assert.equal(typeof line.upstream_ms, 'number');
    assert.ok(line.upstream_ms >= 0 && line.upstream_ms <= line.duration_ms,
      `upstream_ms ${line.upstream_ms} duration_ms ${line.duration_ms}`);
    assert.equal(line.identity, 'vm');
    assert.equal(typeof line.token_source, 'string');
    assert.ok(line.token_source.length > 0);
    // The path keeps its shape; secret query values are replaced.
    assert.ok(line.path.startsWith('/logs/a.txt?'), line.path);
    assert.ok(!line.path.includes(sig), 'sig value in the access log');
    assert.ok(!line.path.includes('ops-skoid-value'), 'skoid value in the access log');
    assert.ok(!line.path.includes('2030-01-01'), 'se value in the access log');
    assert.match(line.path, /[?&]sig=[^&]*/);
    assert.match(line.path, /[?&]sv=2021-08-06(&|$)/);
    assert.match(line.path, /[?&]comp=list(&|$)/);

    // One line per request: a keep-alive connection with 5 requests, plus a 404 -> 6 lines.
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    t.after(() => agent.destroy());
    for (let i = 0; i < 5; i++) {
      await httpRequest({ port, path: `/one/${i}`, agent,
        headers: { host: 'fixed.test', 'x-ms-client-request-id': `ops-one-${i}` } });
    }
    await httpRequest({ port, path: '/nope', headers: { host: 'nowhere.test',
      'x-ms-client-request-id': 'ops-nope' } });
    const nope = await proxy.waitForLogLine((l) => l.client_request_id === 'ops-nope');
    assert.equal(nope.status, 404);
    assert.equal(nope.error, 'NoRoute');
    assert.ok(nope.route === undefined || nope.route === '', `404 route ${nope.route}`);
    const ones = proxy.accessLog().filter((l) => /^ops-one-/.test(l.client_request_id ?? ''));
    assert.deepEqual(ones.map((l) => l.client_request_id).sort(),
      [0, 1, 2, 3, 4].map((i) => `ops-one-${i}`));
    assert.ok(ones.every((l) => l.route === 'fixed' && l.identity === 'file' && l.status === 200));
    // A request id is added when absent and logged.
    const noIdResponse = await httpRequest({ port, path: '/no-id', headers: { host: 'blob.test' } });
    assert.equal(noIdResponse.status, 200, noIdResponse.body.toString());
    const noId = await proxy.waitForLogLine((l) => l.path === '/no-id');
    assert.ok(typeof noId.client_request_id === 'string' && noId.client_request_id.length > 0);
    assert.equal(upstreamA.requests.at(-1).headers['x-ms-client-request-id'],
      noId.client_request_id);
    // Admin requests are not access-logged as proxy requests.
    await httpRequest({ port: adminPort, path: '/metrics' });
    assert.ok(!proxy.accessLog().some((l) => l.path === '/metrics'));
    t.diagnostic(`access log line: ${JSON.stringify(line)}`);

    // Start-up lines on stderr state listeners, routes and identities.
    const lines = stderrLines(proxy);
    assert.ok(lines.some((l) => l.msg === 'listening' && l.address.endsWith(`:${port}`)),
      'listener logged');
    assert.ok(lines.some((l) => /admin/.test(l.msg) && String(l.address).endsWith(`:${adminPort}`)),
      'admin listener logged');
    for (const name of ['blob', 'fixed']) {
      assert.ok(lines.some((l) => l.msg === 'route' && l.name === name), `route ${name} logged`);
    }
    for (const name of ['vm', 'file']) {
      assert.ok(lines.some((l) => l.msg === 'identity' && l.name === name),
        `identity ${name} logged`);
    }
  });

  it('SIGHUP under load: routes added, changed and removed; invalid files keep the running '
    + 'config; zero failed requests; the token cache survives', async (t) => {
    const v1 = (more = {}) => [
      route('keep', 'keep.test', upstreamA, 'vm', { headers: { set: { 'x-ops-version': 'v1' } } }),
      route('moved', 'moved.test', upstreamA, 'file'),
      route('gone', 'gone.test', upstreamA, 'file'),
      ...(more.extra ?? []),
    ];
    const { imds, proxy, config, port, adminPort } = await startStack(t, { routes: v1() });
    await waitFor(async () => (await httpRequest({ port: adminPort, path: '/readyz' })).status
      === 200, 'ready');
    const reloads = async () => {
      const { samples } = await scrape(adminPort);
      return {
        success: sample(samples, 'miproxy_config_reloads_total', { result: 'success' }),
        failure: sample(samples, 'miproxy_config_reloads_total', { result: 'failure' }),
      };
    };
    assert.deepEqual(await reloads(), { success: 0, failure: 0 });
    const tokenRequests = imds.count().count;
    assert.ok(tokenRequests >= 1);

    // Load: 4 keep-alive client connections, each sending GETs to the route that exists
    // throughout, one after another, until told to stop. Each record notes the phase in which
    // the request was sent and the x-ops-version the upstream saw.
    let phase = 'v1';
    let running = true;
    const records = [];
    const loaders = Array.from({ length: 4 }, async (_, w) => {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      try {
        for (let i = 0; running; i++) {
          const sentIn = phase;
          try {
            const r = await httpRequest({ port, agent, path: `/load/${w}/${i}`,
              headers: { host: 'keep.test' } });
            const seen = r.status === 200 ? r.json().headers['x-ops-version'] : null;
            records.push({ sentIn, status: r.status, seen });
          } catch (err) {
            records.push({ sentIn, status: 0, error: err.message });
          }
        }
      } finally {
        agent.destroy();
      }
    });
    const get = (host, path = '/probe') => httpRequest({ port, path, headers: { host } });
    const reload = async (routes, raw) => {
      writeFileSync(proxy.configPath, raw ?? JSON.stringify({ ...config, routes }, null, 2));
      const before = await reloads();
      process.kill(proxy.pid, 'SIGHUP');
      return waitFor(async () => {
        const now = await reloads();
        return now.success + now.failure > before.success + before.failure ? now : null;
      }, 'the reload counter');
    };
    await waitFor(() => records.length >= 40, 'load running');

    // (a) a route added.
    assert.equal((await get('added.test')).status, 404);
    let counts = await reload(v1({ extra: [route('added', 'added.test', upstreamB, 'file')] }));
    assert.deepEqual(counts, { success: 1, failure: 0 });
    await waitFor(async () => (await get('added.test')).status === 200, 'added route serving');
    for (let i = 0; i < 5; i++) {
      assert.equal((await get('added.test')).status, 200);
    }

    // (b) routes changed: keep's header value and moved's upstream (A -> B); (c) gone removed.
    const v2 = [
      route('keep', 'keep.test', upstreamA, 'vm', { headers: { set: { 'x-ops-version': 'v2' } } }),
      route('moved', 'moved.test', upstreamB, 'file'),
      route('added', 'added.test', upstreamB, 'file'),
    ];
    counts = await reload(v2);
    assert.deepEqual(counts, { success: 2, failure: 0 });
    await waitFor(async () => {
      const r = await get('keep.test');
      return r.status === 200 && r.json().headers['x-ops-version'] === 'v2';
    }, 'the changed header');
    phase = 'v2';
    for (let i = 0; i < 5; i++) {
      const r = await get('keep.test');
      assert.equal(r.json().headers['x-ops-version'], 'v2');
      const fromB = upstreamB.requests.length;
      const fromA = upstreamA.requests.length;
      assert.equal((await get('moved.test', `/moved/${i}`)).status, 200);
      assert.equal(upstreamB.requests.length, fromB + 1, 'moved route goes to the new upstream');
      assert.equal(upstreamB.requests.at(-1).url, `/moved/${i}`);
      assert.ok(!upstreamA.requests.slice(fromA).some((q) => q.url === `/moved/${i}`));
      const gone = await get('gone.test');
      assert.equal(gone.status, 404);
      assert.equal(miproxyError(gone).error.code, 'NoRoute');
    }
    // Let every load connection send more requests in the new phase.
    const inV2 = () => records.filter((x) => x.sentIn === 'v2').length;
    await waitFor(() => inV2() >= 40, 'load in the new phase');

    // (d) invalid files: a syntax error, then an unknown key. Nothing changes.
    const errorsBefore = stderrLines(proxy).filter((l) => /^reload failed/.test(l.msg)).length;
    counts = await reload(null, '{ "listeners": [ this is not JSON');
    assert.deepEqual(counts, { success: 2, failure: 1 });
    counts = await reload(null, JSON.stringify({ ...config, routes: v2, no_such_key: true }));
    assert.deepEqual(counts, { success: 2, failure: 2 });
    await waitFor(() => stderrLines(proxy).filter((l) => /^reload failed/.test(l.msg)).length
      >= errorsBefore + 2, 'reload failures logged');
    const failures = stderrLines(proxy).filter((l) => /^reload failed/.test(l.msg));
    assert.equal(failures.length, errorsBefore + 2);
    assert.match(JSON.stringify(failures.at(-1)), /no_such_key/);
    assert.equal(failures.at(-1).level, 'error');
    for (let i = 0; i < 3; i++) {
      assert.equal((await get('added.test')).status, 200);
      assert.equal((await get('keep.test')).json().headers['x-ops-version'], 'v2');
      assert.equal((await get('gone.test')).status, 404);
    }
    await waitFor(() => inV2() >= 80, 'load after the failed reloads');
    running = false;
    await Promise.all(loaders);

    const failed = records.filter((x) => x.status !== 200);
    const stale = records.filter((x) => x.sentIn === 'v2' && x.seen !== 'v2');
    t.diagnostic(`load: ${records.length} requests sent on 4 connections across 4 reloads, `
      + `${failed.length} failed, ${inV2()} sent after the change (${stale.length} saw the old `
      + 'header)');
    assert.deepEqual(failed.slice(0, 3), [], `${failed.length} of ${records.length} failed`);
    assert.deepEqual(stale.slice(0, 3), [], `${stale.length} requests sent after the change `
      + 'saw the old header value');
    // The identity "vm" did not change: its cached token was kept, no new token request.
    assert.equal(imds.count().count, tokenRequests, 'token requests across the reloads');
    assert.ok(proxy.isAlive());
    assert.ok(stderrLines(proxy).some((l) => l.msg === 'reloaded'));
  });
});
