// Suite-wide secret scan (interface.md "Logs and metrics": tokens, secrets and assertion JWTs
// never appear in logs). The harness appends the stdout and stderr of every miproxy it starts to
// files in the test log directory, and every token or secret it hands out to a list there
// (lib/testlog.mjs). ctest runs this file last (tests/CMakeLists.txt: fixture cleanup); it
// greps every recorded log for every secret, and for the payload segment of each JWT on its
// own, and fails naming the file. It never prints a secret.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { BINARY_PROBLEM, testLogDir, SECRETS_FILE } from './lib/index.mjs';

const MIN_SECRET_LENGTH = 12; // shorter strings would match by chance; none of ours are

// Returns [{ needle, what }] for each distinct secret: the secret itself and, for a compact
// JWT, its payload segment alone (unique per token, and what a truncated log line would keep).
function needles(secrets) {
  const out = [];
  const seen = new Set();
  secrets.forEach((secret, i) => {
    const add = (needle, what) => {
      if (needle.length >= MIN_SECRET_LENGTH && !seen.has(needle)) {
        seen.add(needle);
        out.push({ needle, what: `${what} of secret #${i + 1}` });
      }
    };
    add(secret, 'the whole value');
    const parts = secret.split('.');
    if (parts.length === 3) {
      add(parts[1], 'the JWT payload');
    }
  });
  return out;
}

test('no token or secret used by the suite appears in any miproxy log', (t) => {
  const dir = testLogDir();
  const files = existsSync(dir) ? readdirSync(dir).sort() : [];
  const logs = files.filter((f) => f.endsWith('.log'));
  const secrets = files.includes(SECRETS_FILE)
    ? readFileSync(join(dir, SECRETS_FILE), 'utf8').split('\n').filter(Boolean) : [];
  if (logs.length === 0) {
    // Nothing ran that started miproxy. That is fine only if no other test ran either; tests
    // that handed out tokens with a real binary yet left no miproxy output mean the recording
    // is broken.
    assert.fail(`no miproxy logs in ${dir} (${secrets.length} secrets recorded): no test `
      + `started miproxy, or the harness did not record its output${BINARY_PROBLEM ? ` (${BINARY_PROBLEM})` : ''}`);
  }
  const list = needles(secrets);
  const leaks = [];
  let bytes = 0;
  for (const file of logs) {
    const text = readFileSync(join(dir, file), 'latin1');
    bytes += text.length;
    for (const { needle, what } of list) {
      if (text.includes(needle)) {
        const line = text.slice(0, text.indexOf(needle)).split('\n').length;
        leaks.push(`${file} line ${line}: ${what}`);
      }
    }
  }
  t.diagnostic(`scanned ${logs.length} log files (${bytes} bytes) in ${dir} for `
    + `${secrets.length} secrets (${list.length} strings)`);
  assert.ok(secrets.length > 0,
    'miproxy logs were recorded but no secrets: the token helpers did not record what they issued');
  assert.deepEqual(leaks, [], `secrets found in logs (values not shown):\n${leaks.join('\n')}`);
});
