// Child processes that tests start and always stop by PID (never by name).
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';

const live = new Set();

// Safety net: if the test process exits with children still running, kill them by PID.
process.on('exit', () => {
  for (const child of live) {
    try {
      process.kill(child.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
});

// Spawns `command` with `args`; collects stdout/stderr text. Returns a handle:
//   { child, pid, stdout(), stderr(), exited (Promise<{code, signal}>), isAlive(),
//     stop(signal = 'SIGTERM', killAfterMs = 20000) -> Promise<{code, signal}> }
// `onStdout` / `onStderr` receive each chunk as it arrives (e.g. to wait for a log line).
export function spawnProcess(command, args, { env = process.env, cwd, onStdout, onStderr,
  keepOutput = true } = {}) {
  const child = spawn(command, args, { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  let out = '';
  let err = '';
  let alive = true;
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stdout.on('data', (chunk) => {
    if (keepOutput) { out += chunk; }
    onStdout?.(chunk);
  });
  child.stderr.on('data', (chunk) => {
    if (keepOutput) { err += chunk; }
    onStderr?.(chunk);
  });
  const exited = new Promise((resolve) => {
    child.on('error', (e) => {
      alive = false;
      live.delete(child);
      err += `\nspawn error: ${e.message}`;
      resolve({ code: null, signal: null, error: e });
    });
    child.on('close', (code, signal) => {
      alive = false;
      live.delete(child);
      resolve({ code, signal });
    });
  });
  return {
    child,
    pid: child.pid,
    stdout: () => out,
    stderr: () => err,
    exited,
    isAlive: () => alive,
    async stop(signal = 'SIGTERM', killAfterMs = 20000) {
      if (alive) {
        try {
          process.kill(child.pid, signal);
        } catch {
          // raced with exit
        }
        const timer = setTimeout(() => {
          if (alive) {
            try { process.kill(child.pid, 'SIGKILL'); } catch { /* gone */ }
          }
        }, killAfterMs);
        const result = await exited;
        clearTimeout(timer);
        return result;
      }
      return exited;
    },
  };
}

// Peak resident set size of a live process in bytes (VmHWM from /proc/PID/status).
export function rssPeakOfPid(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /^VmHWM:\s+(\d+)\s+kB$/m.exec(status);
  if (!m) {
    throw new Error(`no VmHWM in /proc/${pid}/status`);
  }
  return Number(m[1]) * 1024;
}
