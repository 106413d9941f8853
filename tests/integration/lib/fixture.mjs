// Shared set-up for tests that run miproxy in front of local TLS upstreams: a temp directory,
// a test CA, a token file holding a minted JWT, and a config builder.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeCA } from './pki.mjs';
import { mintJwt } from './jwt.mjs';
import { freePort } from './net.mjs';

// Returns { dir, ca, token, tokenPath, cleanup() }. The token is what miproxy must inject.
export function makeFixture(prefix = 'miproxy-it-') {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const ca = makeCA(join(dir, 'ca'));
  const token = mintJwt({ aud: 'https://storage.azure.com', lifetime: 3 * 3600 });
  const tokenPath = join(dir, 'token');
  writeFileSync(tokenPath, `${token}\n`, { mode: 0o600 });
  return { dir, ca, token, tokenPath, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

// A complete miproxy config (interface.md "Config file") with one TCP listener and an admin
// listener on free loopback ports, trusting `caFile` for upstream TLS, and one token_file
// identity named "test". Returns { config, port, adminPort }.
export async function proxyConfig({ caFile, tokenPath, routes, identities, shutdownGrace = 30,
  extra = {} }) {
  const port = await freePort();
  const adminPort = await freePort();
  const config = {
    listeners: [{ address: `127.0.0.1:${port}` }],
    admin: { address: `127.0.0.1:${adminPort}` },
    shutdown_grace: shutdownGrace,
    tls: { ca_file: caFile },
    log: { level: 'info', format: 'json' },
    identities: identities ?? { test: { type: 'token_file', path: tokenPath } },
    routes,
    ...extra,
  };
  return { config, port, adminPort };
}
