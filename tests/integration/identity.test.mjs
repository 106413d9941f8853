// Tokens from a managed identity, end to end through the built binary (issue 3, "How we will
// know"): miproxy asks an IMDS-compatible endpoint (tests/tools/dev-imds.mjs, token-sources.md §1)
// and proxies to a TLS upstream from the test CA. dev-imds counts and timestamps every token
// request it sees, so each test states how many requests the token endpoint got, not only that
// the proxied requests succeeded.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  requireBinary, startMiproxy, startTlsServer, issueCert, makeFixture, proxyConfig,
  httpRequest, miproxyError,
} from './lib/index.mjs';
import { startDevImds } from '../tools/dev-imds.mjs';

const it = (name, fn) => test(name, fn);
const SCOPE = 'https://storage.azure.com/.default';
const ROUTE = 'blob';
const IDENTITY = 'vm';
const KNOWN_CLIENT_ID = '5b1a2c3d-0000-4000-8000-00000000000a';
const UNKNOWN_CLIENT_ID = '5b1a2c3d-0000-4000-8000-00000000000b';

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

describe('managed identity through IMDS', () => {
  let fx;
  let upstream;

  before(async () => {
    requireBinary();
    fx = makeFixture('miproxy-identity-');
    const cert = issueCert(fx.ca, { dns: ['localhost'], ip: ['127.0.0.1'], name: 'upstream' });
    upstream = await startTlsServer({ cert: cert.cert, key: cert.key });
  });

  after(async () => {
    await upstream?.close();
    fx?.cleanup();
  });

  // dev-imds (with `imdsOptions`) and miproxy (2 workers) with one managed_identity identity
  // pointing at it and one route to the upstream. `t.after` stops both and checks that no token
  // dev-imds issued appears in miproxy's stdout or stderr.
  // `arm(imds)` runs before miproxy starts (e.g. to queue failures for its first requests).
  async function startStack(t, { imdsOptions = {}, identity = {}, arm = () => {} } = {}) {
    const imds = await startDevImds(imdsOptions);
    t.after(() => imds.close());
    arm(imds);
    const built = await proxyConfig({
      caFile: fx.ca.certPath,
      identities: {
        [IDENTITY]: { type: 'managed_identity', source: 'imds', endpoint: imds.tokenUrl,
          ...identity },
      },
      routes: [{ name: ROUTE, match: { host: 'blob.test' }, upstream: upstream.url,
        identity: IDENTITY, scope: SCOPE }],
      extra: { workers: 2 },
    });
    const proxy = await startMiproxy({ config: built.config });
    t.after(async () => {
      await proxy.stop();
      assertNoTokenLeaked(imds, proxy);
    });
    return { imds, proxy, port: built.port, adminPort: built.adminPort };
  }

  function assertNoTokenLeaked(imds, proxy) {
    const output = `${proxy.stdout()}\n${proxy.stderr()}`;
    for (const token of imds.issuedTokens()) {
      // The whole token, and its payload part on its own (unique per token), must not appear.
      // The messages never include the token itself.
      assert.ok(!output.includes(token), 'an issued token appears in miproxy output');
      assert.ok(!output.includes(token.split('.')[1]), 'a token payload appears in miproxy output');
    }
  }

  const get = (port, path, agent = false) => httpRequest({ port, path, agent,
    headers: { host: 'blob.test' } });

  it('cold start: 1,000 concurrent requests while the first token is on its way -> one token '
    + 'request', async (t) => {
    const { imds, port } = await startStack(t, { imdsOptions: { delayMs: 500 } });
    const from = upstream.requests.length;
    const sentAt = Date.now();
    const results = await Promise.all(Array.from({ length: 1000 }, (_, i) =>
      get(port, `/cold/${i}`).catch((err) => ({ status: 0, error: err.message }))));
    const failed = results.filter((r) => r.status !== 200);
    assert.deepEqual(failed.slice(0, 3).map((r) => r.status ?? r.error), [],
      `${failed.length} of 1000 requests failed`);
    assert.equal(imds.count().count, 1, 'exactly one token request at the endpoint');
    const [token] = imds.issuedTokens();
    const seen = upstream.requests.slice(from).filter((r) => r.url.startsWith('/cold/'));
    assert.equal(seen.length, 1000);
    assert.ok(seen.every((r) => r.headers.authorization === `Bearer ${token}`),
      'every upstream request carries the issued token');
    const [first] = imds.requests();
    t.diagnostic(`requests sent ${sentAt - first.at} ms after the token request arrived `
      + '(its answer took 500 ms)');
  });

  it('10,000 keep-alive requests over a few connections -> one token request', async (t) => {
    const { imds, port } = await startStack(t);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
    t.after(() => agent.destroy());
    let ok = 0;
    const statuses = new Map();
    const lane = async (lane, n) => {
      for (let i = 0; i < n; i++) {
        const r = await get(port, `/many/${lane}/${i}`, agent);
        statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
        ok += r.status === 200 ? 1 : 0;
      }
    };
    await Promise.all(Array.from({ length: 8 }, (_, l) => lane(l, 1250)));
    assert.equal(ok, 10000, `statuses: ${JSON.stringify([...statuses])}`);
    assert.equal(imds.count().count, 1, 'exactly one token request at the endpoint');
  });

  it('token endpoint down for 30 s while the cached token is valid: no failed request, no '
    + 'storm after', async (t) => {
    const { imds, port } = await startStack(t);
    assert.equal((await get(port, '/outage/before')).status, 200);
    const beforeOutage = imds.count().count;
    await imds.down();
    const outageEnd = Date.now() + 30000;
    const statuses = new Map();
    let sent = 0;
    const lane = async (lane) => {
      for (let i = 0; Date.now() < outageEnd; i++) {
        const r = await get(port, `/outage/${lane}/${i}`).catch(() => ({ status: 0 }));
        statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
        sent += 1;
        await sleep(50);
      }
    };
    await Promise.all(Array.from({ length: 4 }, (_, l) => lane(l)));
    assert.deepEqual([...statuses.keys()], [200], `statuses during the outage: `
      + JSON.stringify([...statuses]));
    await imds.up();
    const atRecovery = imds.count().count;
    const after = await Promise.all(Array.from({ length: 200 }, (_, i) =>
      get(port, `/outage/after/${i}`)));
    assert.ok(after.every((r) => r.status === 200));
    await sleep(2000);
    const afterRecovery = imds.count().count - atRecovery;
    t.diagnostic(`${sent} requests during the outage; token requests: ${beforeOutage} before, `
      + `${atRecovery - beforeOutage} during, ${afterRecovery} in the 2 s after recovery`);
    assert.ok(afterRecovery <= 1, `${afterRecovery} token requests after recovery`);
  });

  it('429 with Retry-After: 3 -> the next token request comes at least 3 s later', async (t) => {
    const { imds, port } = await startStack(t, {
      arm: (imds) => imds.control({ fail: { status: 429, retry_after: 3, count: 1 } }),
    });
    // A request arriving while miproxy backs off waits for the next attempt (within its 10 s).
    const early = await get(port, '/throttled/early');
    assert.equal(early.status, 200, early.body.toString('utf8'));
    const [first, second] = await waitFor(() => imds.requests().length >= 2 && imds.requests(),
      'a second token request');
    assert.equal(first.status, 429);
    assert.equal(second.status, 200);
    // Arrival times at dev-imds; miproxy counts the 3 s from when it read the 429, which is
    // later still. 50 ms allows for millisecond timer rounding; a proxy that ignored
    // Retry-After would come back after its 1-2 s backoff.
    const gap = second.at - first.at;
    t.diagnostic(`second token request ${gap} ms after the first`);
    assert.ok(gap >= 2950, `second token request only ${gap} ms after the 429`);
    assert.equal((await get(port, '/throttled/after')).status, 200);
    assert.equal(imds.count().count, 2);
  });

  it('410 (IMDS updating): the retry comes 10 s later and a waiting request is served',
    async (t) => {
      const { imds, port } = await startStack(t, {
        arm: (imds) => imds.control({ fail: { status: 410, count: 1 } }),
      });
      // The request is parked through the 410 window instead of failing after its usual 10 s
      // budget or 3 attempts.
      const r = await get(port, '/gone');
      assert.equal(r.status, 200, r.body.toString('utf8'));
      const [first, second] = imds.requests();
      assert.equal(first.status, 410);
      assert.equal(second.status, 200);
      const gap = second.at - first.at;
      t.diagnostic(`retry ${gap} ms after the 410`);
      assert.ok(gap >= 9950, `retried ${gap} ms after a 410 (the pace inside the window is 10 s)`);
      assert.equal(imds.count().count, 2);
    });

  it('endpoint failing (500) at start-up: requests get TokenAcquisitionFailed, no storm, '
    + 'recovery without intervention', async (t) => {
    const { imds, port, adminPort } = await startStack(t, {
      arm: (imds) => imds.control({ fail: { status: 500, count: 100000 } }),
    });
    // 6 s of traffic on 4 connections while every token request fails (each request waits for
    // the attempts it joins, so only a few complete).
    const statuses = new Map();
    const codes = new Set();
    const end = Date.now() + 6000;
    const lane = async () => {
      while (Date.now() < end) {
        const r = await get(port, '/failing');
        statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
        if (r.status !== 200) {
          codes.add(miproxyError(r).error.code);
        }
        await sleep(100);
      }
    };
    await Promise.all(Array.from({ length: 4 }, lane));
    const during = imds.count().count;
    t.diagnostic(`statuses while failing: ${JSON.stringify([...statuses])}; `
      + `${during} token requests`);
    assert.deepEqual([...statuses.keys()], [502]);
    assert.deepEqual([...codes], ['TokenAcquisitionFailed']);
    // Backoff 1-2 s, 2-4 s, 4-8 s after consecutive failures: at most 4 attempts in the first
    // 6 s (plus the last one's answer), however many requests arrive.
    assert.ok(during <= 5, `${during} token requests in 6 s of failures`);
    const ready = await httpRequest({ port: adminPort, path: '/readyz' });
    assert.equal(ready.status, 503);

    imds.control({ fail: null });
    // The next scheduled attempt (at most 16 s away) succeeds; readiness follows.
    await waitFor(async () => (await httpRequest({ port: adminPort, path: '/readyz' })).status
      === 200, '/readyz 200 after recovery', 30000);
    assert.equal((await get(port, '/recovered')).status, 200);
    t.diagnostic(`${imds.count().count} token requests in all`);
  });

  it('refresh ahead: a 70 s token is refreshed before it expires, requests never fail',
    async (t) => {
      // Under 2 h: refresh at the later of expiry - 5 min and half-life (35 s), which is before
      // the token stops being served (expiry - 30 s margin = 40 s).
      const { imds, port } = await startStack(t, { imdsOptions: { lifetime: 70 } });
      const statuses = new Map();
      const end = Date.now() + 45000;
      while (Date.now() < end && imds.count().issued < 2) {
        const r = await get(port, '/refresh/during');
        statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
        await sleep(100);
      }
      assert.deepEqual([...statuses.keys()], [200], JSON.stringify([...statuses]));
      const reqs = imds.requests();
      assert.equal(reqs.length, 2, 'one refresh');
      const gap = reqs[1].at - reqs[0].at;
      t.diagnostic(`refresh ${gap} ms after the first token request`);
      assert.ok(gap < 40000, `refreshed only after ${gap} ms, when the token was no longer served`);
      const [, fresh] = imds.issuedTokens();
      const from = upstream.requests.length;
      assert.equal((await get(port, '/refresh/after')).status, 200);
      assert.equal(upstream.requests[from].headers.authorization, `Bearer ${fresh}`);
    });

  it('unknown client_id: 502 TokenAcquisitionFailed naming identity and route; /readyz 503',
    async (t) => {
      const { imds, port, adminPort } = await startStack(t, {
        imdsOptions: { knownClientIds: [KNOWN_CLIENT_ID] },
        identity: { client_id: UNKNOWN_CLIENT_ID },
      });
      const r = await get(port, '/unknown');
      assert.equal(r.status, 502);
      assert.equal(r.headers['x-miproxy-error'], 'TokenAcquisitionFailed');
      const { error } = miproxyError(r);
      assert.match(error.message, /Identity not found/);
      assert.equal(error.identity, IDENTITY);
      assert.equal(error.route, ROUTE);
      const ready = await httpRequest({ port: adminPort, path: '/readyz' });
      assert.equal(ready.status, 503);
      const body = ready.json();
      assert.equal(body.ready, false);
      assert.match(JSON.stringify(body.identities), /Identity not found/);
      assert.ok(imds.requests().every((x) => x.clientId === UNKNOWN_CLIENT_ID && x.status === 400));
      assert.equal(imds.count().issued, 0);
    });
});
