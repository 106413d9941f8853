// The suite-wide record that the secret scan (zz_secrets.test.mjs) reads: every miproxy
// process's stdout and stderr, and every token or secret the tests handed out.
//
// Directory: env MIPROXY_TEST_LOG_DIR (tests/CMakeLists.txt sets one per build tree and empties
// it before a ctest run), else `<tmpdir>/miproxy-test-logs-<uid>` so that `node --test A.test.mjs`
// followed by `node --test zz_secrets.test.mjs` also works by hand (that default accumulates
// across runs; delete it to start over). Files:
//   <test file>.<pid>.<n>.stdout.log / .stderr.log   output of one miproxy process
//   secrets.list                                     one secret per line (never print it)
// Everything is written synchronously and appended, so parallel test processes can share the
// directory and nothing is lost when a test process exits early.
import { appendFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';

export const SECRETS_FILE = 'secrets.list';

export function testLogDir() {
  const uid = typeof process.getuid === 'function' ? process.getuid() : 'user';
  return process.env.MIPROXY_TEST_LOG_DIR || join(tmpdir(), `miproxy-test-logs-${uid}`);
}

let ready = false;
function ensureDir() {
  const dir = testLogDir();
  if (!ready) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    ready = true;
  }
  return dir;
}

// Adds `value` (a token, a client secret, a key) to the list the scan looks for.
export function recordSecret(value) {
  const text = String(value ?? '').trim();
  if (text.length === 0 || text.includes('\n')) {
    // Multi-line secrets (PEM keys) are recorded line by line, skipping the armour lines.
    for (const line of text.split('\n').map((l) => l.trim())) {
      if (line && !line.startsWith('-----')) {
        appendFileSync(join(ensureDir(), SECRETS_FILE), `${line}\n`, { mode: 0o600 });
      }
    }
    return;
  }
  appendFileSync(join(ensureDir(), SECRETS_FILE), `${text}\n`, { mode: 0o600 });
}

let sequence = 0;
const testName = basename(process.argv[1] ?? 'node').replace(/\.test\.mjs$|\.m?js$/, '');

// Returns { stdout(chunk), stderr(chunk), files: { stdout, stderr } }: appenders for the output
// of one process named `label` (e.g. 'miproxy').
export function processLog(label) {
  const dir = ensureDir();
  sequence += 1;
  const stem = join(dir, `${testName}.${label}.${process.pid}.${sequence}`);
  const files = { stdout: `${stem}.stdout.log`, stderr: `${stem}.stderr.log` };
  appendFileSync(files.stdout, '', { mode: 0o600 });
  appendFileSync(files.stderr, '', { mode: 0o600 });
  return {
    files,
    stdout: (chunk) => appendFileSync(files.stdout, chunk),
    stderr: (chunk) => appendFileSync(files.stderr, chunk),
  };
}

// Records the full output of a process that ran to completion (spawnSync).
export function recordOutput(label, stdout, stderr) {
  const log = processLog(label);
  log.stdout(stdout ?? '');
  log.stderr(stderr ?? '');
}
