// `miproxy doctor` (issue 4): against a working stack (Azurite over HTTPS with OAuth, a managed
// identity through the IMDS-compatible dev endpoint) it passes and shows the token's evidence;
// against broken setups it explains the failure in words and exits non-zero. The token itself
// never appears in its output.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  requireBinary, MIPROXY_BIN, startTlsServer, issueCert, makeFixture, startAzurite,
  freePort, mintJwt, recordOutput, AZURITE_ACCOUNT,
} from './lib/index.mjs';
import { startDevImds } from '../tools/dev-imds.mjs';

const it = (name, fn) => test(name, fn);
const STORAGE = 'https://storage.azure.com/.default';
const KNOWN = '5b1a2c3d-0000-4000-8000-00000000000a';
const UNKNOWN = '5b1a2c3d-0000-4000-8000-00000000000b';

// Runs doctor without blocking this process's event loop (the fakes live here).
function doctor(configPath, extra = []) {
  return new Promise((resolve, reject) => {
    const child = spawn(MIPROXY_BIN, ['doctor', '--config', configPath, ...extra]);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => { stdout += c; });
    child.stderr.on('data', (c) => { stderr += c; });
    child.on('error', reject);
    child.on('close', (status) => {
      recordOutput('miproxy-doctor', stdout, stderr);
      resolve({ status, stdout, stderr, text: stdout + stderr });
    });
  });
}

describe('miproxy doctor', () => {
  let fx; let imds; let azurite; let denying; let untrusted; let cfgDir;
  const issued = () => imds.issuedTokens?.() ?? [];

  function writeConfig(name, identities, routes) {
    const path = join(cfgDir, `${name}.json`);
    writeFileSync(path, JSON.stringify({
      listeners: [{ address: '127.0.0.1:0' }],
      tls: { ca_file: fx.ca.certPath },
      identities,
      routes,
    }, null, 2));
    return path;
  }

  before(async () => {
    requireBinary();
    fx = makeFixture('miproxy-doctor-');
    cfgDir = fx.dir;
    imds = await startDevImds({ port: 0, knownClientIds: [KNOWN] });
    azurite = await startAzurite({ ca: fx.ca });
    const cert = issueCert(fx.ca, { dns: ['localhost'], ip: ['127.0.0.1'], name: 'deny' });
    const xml = '<?xml version="1.0" encoding="utf-8"?><Error><Code>AuthorizationPermissionMismatch</Code>'
      + '<Message>This request is not authorized to perform this operation using this permission.\n'
      + 'RequestId:f78a6e00\nTime:2026-01-01T17:39:32.0047316Z</Message></Error>';
    denying = await startTlsServer({ cert: cert.cert, key: cert.key, handler: (req, res) => {
      res.writeHead(403, { 'content-type': 'application/xml', 'x-ms-error-code': 'AuthorizationPermissionMismatch',
        'content-length': Buffer.byteLength(xml) });
      res.end(xml);
    } });
    const other = (await import('./lib/pki.mjs')).makeCA(join(fx.dir, 'other'), { cn: 'other CA' });
    const bad = issueCert(other, { dns: ['localhost'], ip: ['127.0.0.1'], name: 'bad' });
    untrusted = await startTlsServer({ cert: bad.cert, key: bad.key });
  });

  after(async () => {
    requireBinary();
    await Promise.all([imds?.close(), azurite?.stop(), denying?.close(), untrusted?.close()]);
    fx?.cleanup();
  });

  const mi = (clientId = KNOWN) => ({ vm: { type: 'managed_identity', source: 'imds',
    endpoint: imds.tokenUrl, client_id: clientId } });

  it('passes against Azurite with a managed identity and shows the evidence, not the token', async () => {
    const cfg = writeConfig('ok', mi(), [{ name: 'blob', match: { path_prefix: `/${AZURITE_ACCOUNT}/` },
      upstream: azurite.url, identity: 'vm', scope: STORAGE }]);
    const r = await doctor(cfg);
    assert.equal(r.status, 0, r.text);
    assert.match(r.stdout, /route blob: PASS/);
    assert.match(r.stdout, /source +imds/);
    assert.match(r.stdout, /object_id +[0-9a-f-]{36}/);
    assert.match(r.stdout, /tenant +[0-9a-f-]{36}/);
    assert.match(r.stdout, /audience +https:\/\/storage\.azure\.com/);
    assert.match(r.stdout, /expires/);
    assert.match(r.stdout, /probe +GET .* -> 200/);
    for (const t of issued()) assert.ok(!r.text.includes(t), 'the token is never printed');
    const j = await doctor(cfg, ['--json']);
    assert.equal(j.status, 0);
    const parsed = JSON.parse(j.stdout);
    assert.equal(parsed.pass, true);
    assert.equal(parsed.routes[0].route, 'blob');
    assert.equal(parsed.routes[0].token.source, 'imds');
  });

  it('missing data-plane role: a 403 AuthorizationPermissionMismatch is explained, exit 1', async () => {
    const cfg = writeConfig('role', mi(), [{ name: 'orders', match: { path_prefix: '/orders/' },
      upstream: `https://localhost:${denying.port}`, identity: 'vm', scope: STORAGE }]);
    const r = await doctor(cfg);
    assert.equal(r.status, 1, r.text);
    assert.match(r.stdout, /route orders: FAIL/);
    assert.match(r.stdout, /Missing data-plane role/);
    assert.match(r.stdout, /AuthorizationPermissionMismatch/);
    assert.match(r.stdout, /object id [0-9a-f-]{36}/);
  });

  it('wrong audience: a token for another resource is called out, exit 1', async () => {
    const tokenPath = join(fx.dir, 'vault-token');
    writeFileSync(tokenPath, mintJwt({ aud: 'https://vault.azure.net' }));
    const cfg = writeConfig('aud', { t: { type: 'token_file', path: tokenPath } },
      [{ name: 'blob', match: { path_prefix: `/${AZURITE_ACCOUNT}/` }, upstream: azurite.url,
        identity: 't', scope: STORAGE }]);
    const r = await doctor(cfg);
    assert.equal(r.status, 1, r.text);
    assert.match(r.stdout, /wrong audience/i);
    assert.match(r.stdout, /vault\.azure\.net/);
  });

  it('unreachable endpoint: connection refused is explained, exit 1', async () => {
    const dead = await freePort();
    const cfg = writeConfig('dead', mi(), [{ name: 'gone', match: { path_prefix: '/gone/' },
      upstream: `https://127.0.0.1:${dead}`, identity: 'vm', scope: STORAGE }]);
    const r = await doctor(cfg);
    assert.equal(r.status, 1, r.text);
    assert.match(r.stdout, /unreachable/);
  });

  it('TLS failure: an upstream certificate that does not verify is explained, exit 1', async () => {
    const cfg = writeConfig('tls', mi(), [{ name: 'tls', match: { path_prefix: '/tls/' },
      upstream: `https://localhost:${untrusted.port}`, identity: 'vm', scope: STORAGE }]);
    const r = await doctor(cfg);
    assert.equal(r.status, 1, r.text);
    assert.match(r.stdout, /TLS to localhost:\d+ failed/);
    assert.match(r.stdout, /verify/);
  });

  it('identity not found: IMDS refusing the client_id is explained, exit 1', async () => {
    const cfg = writeConfig('id', mi(UNKNOWN), [{ name: 'blob', match: { path_prefix: `/${AZURITE_ACCOUNT}/` },
      upstream: azurite.url, identity: 'vm', scope: STORAGE }]);
    const r = await doctor(cfg);
    assert.equal(r.status, 1, r.text);
    assert.match(r.stdout, /identity not found/);
    assert.match(r.stdout, /Identity not found/);
  });

  it('--route selects one route; an unknown name is an error', async () => {
    const cfg = writeConfig('sel', mi(), [
      { name: 'blob', match: { path_prefix: `/${AZURITE_ACCOUNT}/` }, upstream: azurite.url, identity: 'vm', scope: STORAGE },
      { name: 'gone', match: { path_prefix: '/gone/' }, upstream: `https://127.0.0.1:${await freePort()}`, identity: 'vm', scope: STORAGE },
    ]);
    const one = await doctor(cfg, ['--route', 'blob']);
    assert.equal(one.status, 0, one.text);
    assert.doesNotMatch(one.stdout, /route gone/);
    const all = await doctor(cfg);
    assert.equal(all.status, 1);
    const none = await doctor(cfg, ['--route', 'nope']);
    assert.equal(none.status, 2);
  });
});
