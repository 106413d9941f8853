// The README quick start works as printed: scripts/demo.sh starts Azurite and miproxy, and the
// curl commands it prints (run verbatim by bash) create a container, upload, download and list
// without any credential; the emulator refuses the same request sent to it directly. Ctrl-C
// (here SIGTERM) stops the whole stack.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import net from 'node:net';
import { requireBinary, MIPROXY_BIN, spawnProcess, freePort } from './lib/index.mjs';

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

function bash(script, cwd) {
  return new Promise((resolve) => {
    execFile('bash', ['-c', script], { cwd, encoding: 'utf8', timeout: 60000,
      env: { ...process.env, http_proxy: '', HTTP_PROXY: '', no_proxy: '', NO_PROXY: '' } },
    (err, stdout, stderr) => resolve({ code: err ? err.code ?? 1 : 0, stdout, stderr }));
  });
}

function accepts(port) {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

async function runDemo(t, identity) {
  const dir = mkdtempSync(join(tmpdir(), `miproxy-demo-${identity}-`));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const work = join(dir, 'work');
  mkdirSync(work);
  const port = await freePort();
  const adminPort = await freePort();
  let printed = '';
  let resolveReady;
  const ready = new Promise((resolve) => { resolveReady = resolve; });
  const demo = spawnProcess('bash', [join(repoRoot, 'scripts', 'demo.sh')], {
    env: { ...process.env, MIPROXY_BIN, MIPROXY_DEMO_IDENTITY: identity,
      MIPROXY_DEMO_DIR: join(dir, 'demo'), MIPROXY_DEMO_PORT: String(port),
      MIPROXY_DEMO_ADMIN_PORT: String(adminPort) },
    onStdout(chunk) {
      printed += chunk;
      if (printed.includes('Press Ctrl-C to stop.')) {
        resolveReady();
      }
    },
  });
  t.after(() => demo.stop('SIGKILL'));
  await Promise.race([ready, demo.exited.then(() => {
    throw new Error(`demo exited early:\n${demo.stdout()}\n${demo.stderr()}`);
  })]);

  // The Storage commands exactly as printed (indented lines that are not comments).
  const commands = printed.split('\n').filter((l) => l.startsWith('  ') && !l.trim().startsWith('#'))
    .map((l) => l.trim()).filter((l) => /devstoreaccount1|^echo /.test(l));
  assert.ok(commands.length >= 6, `printed commands:\n${printed}`);
  const results = [];
  for (const command of commands) {
    results.push({ command, ...(await bash(command, work)) });
  }
  const find = (re) => {
    const r = results.find((x) => re.test(x.command));
    assert.ok(r, `a printed command matching ${re}`);
    assert.equal(r.code, 0, `${r.command}\n${r.stderr}`);
    return r.stdout;
  };
  assert.match(find(/-X PUT ".*restype=container"/), /^HTTP\/1\.1 201/);
  assert.match(find(/x-ms-blob-type: BlockBlob/), /^HTTP\/1\.1 201/);
  assert.equal(find(/^curl "[^"]*\/demo\/hello\.txt"$/), 'hello from miproxy\n');
  assert.match(find(/comp=list/), /<Name>hello\.txt<\/Name>/);
  assert.equal(find(/^http_proxy=/), 'hello from miproxy\n');
  assert.match(find(/--cacert/), /^HTTP\/1\.1 403/);

  const exit = await demo.stop('SIGTERM');
  assert.equal(exit.signal, null);
  assert.equal(await accepts(port), false, 'miproxy stopped with the demo');
  return exit;
}

test('the quick-start demo works as printed (token_file identity)',
  async (t) => {
    await runDemo(t, 'token_file');
  });

test('the quick-start demo works as printed (managed identity via dev-imds)',
  async (t) => {
    await runDemo(t, 'imds');
  });
