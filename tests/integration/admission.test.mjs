// What miproxy refuses before anything goes upstream (issue 8, items 4, 5, 6 and 9): paths that
// would escape a route's path_prefix once the upstream decodes or normalises them, requests
// from web pages (CSRF) and through DNS rebinding, {host} values that are no DNS name, and
// scope "auto" challenges that do not name exactly one scope of the upstream's own domain.
// Every refusal is also checked at the upstream: it received nothing.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startMiproxy, startTlsServer, issueCert, makeFixture, proxyConfig, httpRequest, miproxyError,
  RawConnection,
} from './lib/index.mjs';
import { startDevImds } from '../tools/dev-imds.mjs';

const SCOPE = 'https://storage.azure.com/.default';

// Sends one request exactly as written (no client-side path normalisation) and reads the answer.
async function raw(port, requestLine, headers = ['Host: 127.0.0.1']) {
  const conn = await RawConnection.connect(port);
  try {
    await conn.write(`${requestLine}\r\n${headers.join('\r\n')}\r\n\r\n`);
    return await conn.readResponse();
  } finally {
    conn.close();
  }
}

function errorOf(r) {
  const parsed = JSON.parse(r.body.toString('utf8'));
  assert.equal(parsed.error?.code, r.headers['x-miproxy-error'], r.body.toString());
  return parsed.error;
}

describe('refused before forwarding', () => {
  let fx; let up; let fixed; let proxy; let port; let adminPort; let unusedPort;

  before(async () => {
    fx = makeFixture('miproxy-admission-');
    const cert = issueCert(fx.ca, { dns: ['localhost'], ip: ['127.0.0.1'], name: 'up' });
    up = await startTlsServer({ cert: cert.cert, key: cert.key });
    fixed = await startTlsServer({ cert: cert.cert, key: cert.key });
    const route = (name, match, upstream, more = {}) => ({
      name, match, upstream, identity: 'test', scope: SCOPE, ...more,
    });
    // An upstream that must never be dialled: {host} routes point at its port.
    unusedPort = fixed.port;
    const built = await proxyConfig({
      caFile: fx.ca.certPath,
      tokenPath: fx.tokenPath,
      routes: [
        route('numeric', { host: '*.0.0.1', path_prefix: '/num/' }, `https://{host}:${unusedPort}`),
        route('named', { host: 'app.internal' }, up.url),
        route('orders', { path_prefix: '/orders/' }, up.url),
        route('kv', { path_prefix: '/kv' }, `${up.url}/tenant-a`, { strip_prefix: true }),
        route('listed', { path_prefix: '/listed/', allowed_hosts: ['svc.internal'] }, up.url),
        route('rest', { path_prefix: '/' }, up.url),
      ],
    });
    built.config.listeners[0].allowed_origins = ['http://localhost:3000'];
    ({ port, adminPort } = built);
    proxy = await startMiproxy({ config: built.config });
  });

  after(async () => {
    await proxy?.stop();
    await Promise.all([up?.close(), fixed?.close()]);
    fx?.cleanup();
  });

  test('escaping path shapes under a path_prefix get 400 BadPath and reach no upstream', async () => {
    const shapes = [
      '/orders/..%2fsecret', '/orders/..%2Fsecret', '/orders/%2e%2e%2fsecret', '/orders/..\\secret',
      '/orders/..%5csecret', '/orders/..%5Csecret', '/orders/..;/secret', '/orders/a%2fb',
      '/orders/../secret', '/orders/%2e%2e/secret', '/kv/../tenant-b/x', '/kv/..%2ftenant-b/x',
    ];
    const before = up.requests.length;
    for (const path of shapes) {
      const r = await raw(port, `GET ${path} HTTP/1.1`);
      assert.equal(r.status, 400, `${path}: ${r.body}`);
      const err = errorOf(r);
      // llhttp may refuse some bytes itself (BadRequest); those that parse are BadPath.
      assert.ok(['BadPath', 'BadRequest'].includes(err.code), `${path}: ${err.code}`);
      if (err.code === 'BadPath') {
        assert.match(err.message, /refuses path/, path);
      }
    }
    const badPath = await raw(port, 'GET /orders/..%2fsecret HTTP/1.1');
    assert.equal(errorOf(badPath).code, 'BadPath');
    assert.match(errorOf(badPath).message, /route 'orders'.*%2F/);
    assert.equal(up.requests.length, before, 'the upstream received nothing');
  });

  test('strip_prefix cannot manufacture a dot segment: /kv../x is not under /kv', async () => {
    const before = up.requests.length;
    const r = await raw(port, 'GET /kv../tenant-b/x HTTP/1.1');
    assert.equal(r.status, 200, r.body.toString());
    const seen = up.requests.slice(before);
    assert.equal(seen.length, 1);
    // The catch-all route took it, unstripped: nothing went to /tenant-a/../tenant-b/x.
    assert.equal(seen[0].url, '/kv../tenant-b/x');
    const ok = await raw(port, 'GET /kv/secrets/a HTTP/1.1');
    assert.equal(ok.status, 200);
    assert.equal(up.requests.at(-1).url, '/tenant-a/secrets/a');
  });

  test('Origin or Sec-Fetch-Site from a web page gets 403 and reaches no upstream', async () => {
    const before = up.requests.length;
    const cases = [
      ['Origin: https://evil.example'],
      ['Origin: null'],
      ['Sec-Fetch-Site: cross-site', 'Sec-Fetch-Mode: no-cors'],
      ['Sec-Fetch-Site: same-site'],
      ['Origin: http://localhost:3000', 'Origin: https://evil.example'],
    ];
    for (const extra of cases) {
      for (const request of ['GET /orders/x HTTP/1.1', 'POST /rest/x HTTP/1.1']) {
        const r = await raw(port, request, ['Host: 127.0.0.1', 'Content-Length: 0', ...extra]);
        assert.equal(r.status, 403, `${extra}: ${r.body}`);
        assert.equal(errorOf(r).code, 'BrowserRequestRefused');
      }
    }
    const named = await raw(port, 'GET /x HTTP/1.1', ['Host: app.internal', 'Origin: https://evil.example']);
    assert.equal(named.status, 403, 'routes with match.host too');
    assert.equal(up.requests.length, before, 'the upstream received nothing');
  });

  test('a listed origin and a navigation (Sec-Fetch-Site: none) pass', async () => {
    const before = up.requests.length;
    const r = await httpRequest({ port, path: '/orders/a', headers: {
      origin: 'http://localhost:3000', 'sec-fetch-site': 'same-site' } });
    assert.equal(r.status, 200, r.body.toString());
    const nav = await httpRequest({ port, path: '/orders/b', headers: { 'sec-fetch-site': 'none' } });
    assert.equal(nav.status, 200, nav.body.toString());
    const seen = up.requests.slice(before);
    assert.equal(seen.length, 2);
    assert.equal(seen[0].headers.origin, 'http://localhost:3000', 'forwarded as sent');
  });

  test('a rebinding Host on a host-less route gets 421 and reaches no upstream', async () => {
    const before = up.requests.length;
    for (const host of ['rebind.evil.example:8080', 'contoso.blob.core.windows.net', '0.0.0.0',
      'user@127.0.0.1']) {
      const r = await raw(port, 'GET /orders/x HTTP/1.1', [`Host: ${host}`]);
      assert.ok([400, 421].includes(r.status), `${host}: ${r.status} ${r.body}`);
      if (r.status === 421) {
        assert.equal(errorOf(r).code, 'HostNotAllowed');
        assert.match(errorOf(r).message, /route 'orders'/);
      }
    }
    const rebind = await raw(port, 'GET /orders/x HTTP/1.1', ['Host: rebind.evil.example:8080']);
    assert.equal(rebind.status, 421);
    assert.equal(up.requests.length, before, 'the upstream received nothing');
    // Loopback names and addresses, and the names a route lists, are answered.
    for (const [path, host] of [['/orders/1', 'localhost:8080'], ['/orders/2', `127.0.0.1:${port}`],
      ['/orders/3', '[::1]:8080'], ['/listed/4', 'svc.internal']]) {
      const r = await raw(port, `GET ${path} HTTP/1.1`, [`Host: ${host}`]);
      assert.equal(r.status, 200, `${host}: ${r.body}`);
    }
    const unlisted = await raw(port, 'GET /orders/5 HTTP/1.1', ['Host: svc.internal']);
    assert.equal(unlisted.status, 421, 'allowed_hosts is per route');
  });

  test('a {host} value that is no DNS name gets 400 before any connection', async () => {
    const connectsBefore = fixed.stats().tcpConnections;
    for (const host of ['0x7f.0.0.1', '0127.0.0.1', '127.0.0.1']) {
      const r = await raw(port, 'GET /num/x HTTP/1.1', [`Host: ${host}`]);
      assert.equal(r.status, 400, `${host}: ${r.body}`);
      const err = errorOf(r);
      assert.equal(err.code, 'BadRequest');
      assert.match(err.message, /route 'numeric' refuses host .*DNS name/);
    }
    assert.equal(fixed.stats().tcpConnections, connectsBefore, 'nothing was dialled');
  });

  test('the admin listener refuses browsers and rebinding Hosts', async () => {
    const ok = await raw(adminPort, 'GET /healthz HTTP/1.1', [`Host: 127.0.0.1:${adminPort}`]);
    assert.equal(ok.status, 200);
    const cases = [
      [[`Host: 127.0.0.1:${adminPort}`, `Origin: http://127.0.0.1:${adminPort}`], 403],
      [[`Host: 127.0.0.1:${adminPort}`, 'Sec-Fetch-Site: cross-site'], 403],
      [[`Host: rebind.evil.example:${adminPort}`], 421],
    ];
    for (const [headers, status] of cases) {
      const r = await raw(adminPort, 'GET /metrics HTTP/1.1', headers);
      assert.equal(r.status, status, `${headers}: ${r.body}`);
      assert.doesNotMatch(r.body.toString(), /miproxy_requests_total/);
    }
    // Still serving afterwards.
    const again = await raw(adminPort, 'GET /healthz HTTP/1.1', ['Host: localhost']);
    assert.equal(again.status, 200);
    assert.ok(proxy.isAlive());
  });
});

describe('scope "auto": only one scope of the upstream\'s own domain is learned', () => {
  let fx; let imds; let twoScopes; let userinfo; let good; let proxy; let port;

  // A Key Vault-like upstream whose 401 challenge carries |challenge|.
  const challenging = (challenge) => async (req, res) => {
    req.resume();
    await new Promise((resolve) => req.on('end', resolve));
    if (!req.headers.authorization) {
      res.writeHead(401, { 'www-authenticate': challenge, 'content-length': 0 });
      res.end();
      return;
    }
    const text = JSON.stringify({ ok: true });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': text.length });
    res.end(text);
  };

  before(async () => {
    fx = makeFixture('miproxy-admission-auto-');
    const cert = issueCert(fx.ca, { dns: ['localhost'], ip: ['127.0.0.1'], name: 'auto' });
    imds = await startDevImds({ port: 0 });
    twoScopes = await startTlsServer({ cert: cert.cert, key: cert.key, handler: challenging(
      'Bearer authorization="https://login.microsoftonline.com/t", '
      + 'scope="https://localhost/.default https://graph.microsoft.com/.default"') });
    userinfo = await startTlsServer({ cert: cert.cert, key: cert.key, handler: challenging(
      'Bearer authorization="https://login.microsoftonline.com/t", '
      + 'resource="https://graph.microsoft.com@localhost"') });
    good = await startTlsServer({ cert: cert.cert, key: cert.key, handler: challenging(
      'Bearer authorization="https://login.microsoftonline.com/t", resource="https://localhost"') });
    const auto = (name, upstream) => ({ name, match: { path_prefix: `/${name}/` }, strip_prefix: true,
      upstream, identity: 'vm', scope: 'auto' });
    const built = await proxyConfig({
      caFile: fx.ca.certPath,
      identities: { vm: { type: 'managed_identity', source: 'imds', endpoint: imds.tokenUrl } },
      routes: [auto('two', twoScopes.url), auto('userinfo', userinfo.url), auto('good', good.url)],
    });
    port = built.port;
    proxy = await startMiproxy({ config: built.config });
  });

  after(async () => {
    await proxy?.stop();
    await Promise.all([twoScopes?.close(), userinfo?.close(), good?.close(), imds?.close()]);
    fx?.cleanup();
  });

  test('a challenge naming two scopes, or a scope with userinfo, is refused; no token sent', async () => {
    for (const [name, server] of [['two', twoScopes], ['userinfo', userinfo]]) {
      const r = await httpRequest({ port, path: `/${name}/secrets/x` });
      assert.equal(r.status, 502, r.body.toString());
      const err = miproxyError(r).error;
      assert.equal(err.code, 'TokenAcquisitionFailed');
      assert.equal(err.route, name);
      assert.ok(server.requests.length >= 1);
      assert.ok(server.requests.every((q) => q.headers.authorization === undefined),
        `${name}: the upstream never received a token`);
    }
    const ok = await httpRequest({ port, path: '/good/secrets/x' });
    assert.equal(ok.status, 200, ok.body.toString());
    assert.match(good.requests.at(-1).headers.authorization, /^Bearer /);
  });
});
