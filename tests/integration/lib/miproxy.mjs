// Running the miproxy binary under test (path in env MIPROXY_BIN, set by ctest).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { waitForPort } from './net.mjs';
import { spawnProcess } from './proc.mjs';
import { processLog, recordOutput } from './testlog.mjs';

export const MIPROXY_BIN = process.env.MIPROXY_BIN ?? '';

// Why MIPROXY_BIN cannot be the proxy under test (unset, missing, or a binary whose `--help`
// does not exit 0 with usage text mentioning --config), or null when it can. A suite never
// skips for this: requireBinary() throws, so the test that needs the binary fails.
export const BINARY_PROBLEM = (() => {
  if (!MIPROXY_BIN) {
    return 'MIPROXY_BIN is not set';
  }
  if (!existsSync(MIPROXY_BIN)) {
    return `MIPROXY_BIN (${MIPROXY_BIN}) does not exist`;
  }
  const r = spawnSync(MIPROXY_BIN, ['--help'], { encoding: 'utf8', timeout: 10000 });
  if (r.status === 0 && /--config/.test(`${r.stdout}${r.stderr}`)) {
    return null;
  }
  return `MIPROXY_BIN (${MIPROXY_BIN}) is not a working miproxy: --help exited ${r.status}`;
})();

// True when MIPROXY_BIN is a sanitizer build (./test.sh --debug): shadow memory and the
// quarantine of freed blocks make its RSS several times a Release build's, so memory bounds are
// multiplied by MEMORY_FACTOR there (the Release suite checks the real figures).
export const SANITIZED_BUILD = !BINARY_PROBLEM
  && /libasan/.test(spawnSync('ldd', [MIPROXY_BIN], { encoding: 'utf8' }).stdout ?? '');
export const MEMORY_FACTOR = SANITIZED_BUILD ? 8 : 1;

// Throws unless MIPROXY_BIN is a working miproxy.
export function requireBinary() {
  if (BINARY_PROBLEM) {
    throw new Error(BINARY_PROBLEM);
  }
}

// Runs `miproxy ARGS...` to completion (check, doctor, --version). Returns { status, stdout,
// stderr }.
export function runMiproxy(args, { env = process.env, timeoutMs = 60000 } = {}) {
  requireBinary();
  const r = spawnSync(MIPROXY_BIN, args, { encoding: 'utf8', env, timeout: timeoutMs });
  recordOutput(`miproxy-${args[0] ?? 'run'}`, r.stdout, r.stderr);
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

function tcpPort(address) {
  const m = /:(\d+)$/.exec(address ?? '');
  return m ? Number(m[1]) : null;
}

// Writes `config` (an object) to a temp file, starts `miproxy run --config FILE`, and waits until
// every TCP listener (and the admin listener, if any) accepts connections.
// Returns {
//   pid, configPath, logFiles ({stdout, stderr}: where the output is also appended),
//   stdout(), stderr(), accessLog() (stdout parsed as JSON lines),
//   waitForLogLine(predicate, timeoutMs = 10000) -> Promise<the first access-log object that
//     matches> (log lines are written after the response, so they can trail it slightly),
//   exited: Promise<{code, signal}>, isAlive(),
//   stop(signal = 'SIGTERM') -> Promise<{code, signal}> (SIGKILL after `killAfterMs`),
// }
// |hosts|: extra "address name..." lines; miproxy then runs in a mount namespace of its own whose
// /etc/hosts is localhost plus those lines (`unshare -rm`, then exec: the PID stays miproxy's),
// so tests can give several upstream names to loopback servers without touching the machine.
export async function startMiproxy({ config, env = process.env, args = [],
  readyTimeoutMs = 30000, killAfterMs = 60000, hosts } = {}) {
  requireBinary();
  const dir = mkdtempSync(join(tmpdir(), 'miproxy-run-'));
  const configPath = join(dir, 'miproxy.json');
  writeFileSync(configPath, JSON.stringify(config, null, 2));
  // stdout and stderr also go to the suite's log directory for the secret scan (testlog.mjs).
  const log = processLog('miproxy');
  let command = MIPROXY_BIN;
  let argv = ['run', '--config', configPath, ...args];
  if (hosts) {
    const hostsPath = join(dir, 'hosts');
    writeFileSync(hostsPath, ['127.0.0.1 localhost', '::1 localhost', ...hosts, ''].join('\n'));
    argv = ['-rm', 'sh', '-c', 'mount --bind "$1" /etc/hosts && shift && exec "$@"', 'sh', hostsPath,
      command, ...argv];
    command = 'unshare';
  }
  const proc = spawnProcess(command, argv, { env,
    onStdout: log.stdout, onStderr: log.stderr });
  const ports = (config.listeners ?? []).map((l) => tcpPort(l.address)).filter(Boolean);
  if (config.admin?.address) {
    ports.push(tcpPort(config.admin.address));
  }
  try {
    for (const port of ports) {
      await waitForPort(port, { timeoutMs: readyTimeoutMs, isAlive: proc.isAlive });
    }
  } catch (err) {
    await proc.stop('SIGKILL');
    throw new Error(`${err.message}\n--- miproxy stderr ---\n${proc.stderr()}`);
  }
  // Complete JSON lines of stdout; other lines (and a partial last line) are ignored.
  const accessLog = () => proc.stdout().split('\n').slice(0, -1)
    .filter((l) => l.trim().startsWith('{'))
    .map((l) => { try { return JSON.parse(l); } catch { return null; } })
    .filter(Boolean);
  return {
    pid: proc.pid,
    configPath,
    logFiles: log.files,
    stdout: proc.stdout,
    stderr: proc.stderr,
    exited: proc.exited,
    isAlive: proc.isAlive,
    accessLog,
    async waitForLogLine(predicate, timeoutMs = 10000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const found = accessLog().find(predicate);
        if (found) {
          return found;
        }
        if (Date.now() > deadline || !proc.isAlive()) {
          throw new Error(`no matching access log line; stdout:\n${proc.stdout().slice(-4000)}`);
        }
        await sleep(50);
      }
    },
    async stop(signal = 'SIGTERM') {
      const result = await proc.stop(signal, killAfterMs);
      rmSync(dir, { recursive: true, force: true });
      return result;
    },
  };
}
