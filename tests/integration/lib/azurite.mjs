// Azurite's blob service in the mode miproxy needs: HTTPS with a certificate from a test CA and
// `--oauth basic`, so it accepts (and requires well-formed) bearer tokens; in-memory storage,
// telemetry off, path-style URLs (https://127.0.0.1:PORT/devstoreaccount1/container/blob).
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { issueCert } from './pki.mjs';
import { spawnProcess } from './proc.mjs';

const here = dirname(fileURLToPath(import.meta.url));
export const AZURITE_BLOB_MAIN = join(here, '..', 'node_modules', 'azurite', 'dist', 'src',
  'blob', 'main.js');
export const AZURITE_ACCOUNT = 'devstoreaccount1';

// The argument list, shared with scripts/demo.sh's documentation of the same flags.
export function azuriteArgs({ certPath, keyPath, port = 0, location }) {
  const args = [
    '--blobHost', '127.0.0.1', '--blobPort', String(port),
    '--cert', certPath, '--key', keyPath,
    '--oauth', 'basic',
    '--skipApiVersionCheck', '--disableTelemetry', '--disableProductStyleUrl', '--silent',
  ];
  if (location) {
    args.push('--location', location);
  } else {
    args.push('--inMemoryPersistence');
  }
  return args;
}

// Starts Azurite on 127.0.0.1 (port 0: it binds a free port and reports it).
//   ca: from makeCA(); a server certificate for 127.0.0.1/localhost is issued from it.
// Returns { port, url ('https://127.0.0.1:PORT'), accountUrl (url + '/devstoreaccount1'), pid,
//           stop() } and throws if Azurite does not come up.
export async function startAzurite({ ca, port = 0, timeoutMs = 60000 } = {}) {
  if (!existsSync(AZURITE_BLOB_MAIN)) {
    throw new Error(`Azurite is not installed (${AZURITE_BLOB_MAIN}); run scripts/install-deps.sh`);
  }
  const workDir = mkdtempSync(join(tmpdir(), 'miproxy-azurite-'));
  const leaf = issueCert(ca, { dns: ['localhost'], ip: ['127.0.0.1'], name: 'azurite' });
  let resolvePort;
  const portPromise = new Promise((resolve) => { resolvePort = resolve; });
  let seen = '';
  const proc = spawnProcess(process.execPath,
    [AZURITE_BLOB_MAIN, ...azuriteArgs({ certPath: leaf.certPath, keyPath: leaf.keyPath, port })],
    {
      cwd: workDir,
      onStdout(chunk) {
        seen += chunk;
        const m = /successfully listens on https:\/\/127\.0\.0\.1:(\d+)/.exec(seen);
        if (m) {
          resolvePort(Number(m[1]));
        }
      },
    });
  let timer;
  const bound = await Promise.race([
    portPromise,
    proc.exited.then(() => {
      throw new Error(`Azurite exited early:\n${proc.stdout()}\n${proc.stderr()}`);
    }),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`Azurite did not start:\n${proc.stdout()}`)),
        timeoutMs);
    }),
  ]).finally(() => clearTimeout(timer));
  const url = `https://127.0.0.1:${bound}`;
  return {
    port: bound,
    url,
    accountUrl: `${url}/${AZURITE_ACCOUNT}`,
    pid: proc.pid,
    process: proc,
    async stop() {
      await proc.stop('SIGTERM');
      rmSync(workDir, { recursive: true, force: true });
    },
  };
}
