// Loopback networking helpers: free ports, waiting for a listener, raw HTTP/1.1 over a socket.
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

// Asks the kernel for a free TCP port on `host` and releases it. There is a small window before
// the caller binds it; prefer binding port 0 directly where the server reports its port.
export function freePort(host = '127.0.0.1') {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, host, () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

// Resolves once a TCP connect to host:port succeeds. Rejects after `timeoutMs` or when
// `isAlive()` returns false (the process that should listen has died).
export async function waitForPort(port, { host = '127.0.0.1', timeoutMs = 30000,
  isAlive = () => true } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!isAlive()) {
      throw new Error(`process exited before listening on ${host}:${port}`);
    }
    const ok = await new Promise((resolve) => {
      const socket = net.connect({ host, port });
      socket.once('connect', () => { socket.destroy(); resolve(true); });
      socket.once('error', () => resolve(false));
    });
    if (ok) {
      return;
    }
    if (Date.now() > deadline) {
      throw new Error(`nothing listens on ${host}:${port} after ${timeoutMs} ms`);
    }
    await sleep(50);
  }
}

// A raw client connection for requests node's http client refuses to send (smuggling shapes,
// pipelining, oversized heads). `read*` methods consume the buffered response bytes.
export class RawConnection {
  constructor(socket) {
    this.socket = socket;
    this.buffer = Buffer.alloc(0);
    this.ended = false;
    this.waiters = [];
    socket.on('data', (chunk) => {
      this.buffer = Buffer.concat([this.buffer, chunk]);
      this.wake();
    });
    const finish = () => { this.ended = true; this.wake(); };
    socket.on('end', finish);
    socket.on('close', finish);
    socket.on('error', finish);
  }

  static connect(port, host = '127.0.0.1') {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host, port });
      socket.once('connect', () => resolve(new RawConnection(socket)));
      socket.once('error', reject);
    });
  }

  wake() {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) {
      w();
    }
  }

  waitForData() {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  write(data) {
    return new Promise((resolve, reject) => {
      this.socket.write(data, (err) => (err ? reject(err) : resolve()));
    });
  }

  // Reads one complete HTTP/1.1 response (Content-Length, chunked, or until close).
  // `head: true` for a response to HEAD (no body). Returns { status, headers, body, raw }
  // where headers maps lower-case names to values (repeated names joined with ', ').
  async readResponse({ head = false } = {}) {
    let headEnd;
    while ((headEnd = this.buffer.indexOf('\r\n\r\n')) < 0) {
      if (this.ended) {
        throw new Error(`connection closed before a response head (${this.buffer.length} bytes)`);
      }
      await this.waitForData();
    }
    const headText = this.buffer.subarray(0, headEnd).toString('latin1');
    const [statusLine, ...lines] = headText.split('\r\n');
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(statusLine);
    if (!m) {
      throw new Error(`bad status line: ${JSON.stringify(statusLine)}`);
    }
    const status = Number(m[1]);
    const headers = {};
    for (const line of lines) {
      const i = line.indexOf(':');
      const name = line.slice(0, i).trim().toLowerCase();
      const value = line.slice(i + 1).trim();
      headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
    }
    let offset = headEnd + 4;
    let body;
    const noBody = head || status === 204 || status === 304 || (status >= 100 && status < 200);
    if (noBody) {
      body = Buffer.alloc(0);
    } else if (/chunked/i.test(headers['transfer-encoding'] ?? '')) {
      const parts = [];
      for (;;) {
        let lineEnd;
        while ((lineEnd = this.buffer.indexOf('\r\n', offset)) < 0) {
          if (this.ended) { throw new Error('connection closed inside a chunked body'); }
          await this.waitForData();
        }
        const size = parseInt(this.buffer.subarray(offset, lineEnd).toString('latin1'), 16);
        offset = lineEnd + 2;
        if (size === 0) {
          let trailerEnd;
          while ((trailerEnd = this.buffer.indexOf('\r\n', offset)) < 0) {
            if (this.ended) { throw new Error('connection closed inside chunked trailers'); }
            await this.waitForData();
          }
          // Skip trailers (rare) until the empty line.
          while (trailerEnd !== offset) {
            offset = trailerEnd + 2;
            while ((trailerEnd = this.buffer.indexOf('\r\n', offset)) < 0) {
              if (this.ended) { throw new Error('connection closed inside chunked trailers'); }
              await this.waitForData();
            }
          }
          offset += 2;
          break;
        }
        while (this.buffer.length < offset + size + 2) {
          if (this.ended) { throw new Error('connection closed inside a chunk'); }
          await this.waitForData();
        }
        parts.push(this.buffer.subarray(offset, offset + size));
        offset += size + 2;
      }
      body = Buffer.concat(parts);
    } else if (headers['content-length'] !== undefined) {
      const length = Number(headers['content-length']);
      while (this.buffer.length < offset + length) {
        if (this.ended) { throw new Error('connection closed inside a body'); }
        await this.waitForData();
      }
      body = this.buffer.subarray(offset, offset + length);
      offset += length;
    } else {
      while (!this.ended) {
        await this.waitForData();
      }
      body = this.buffer.subarray(offset);
      offset = this.buffer.length;
    }
    const raw = this.buffer.subarray(0, offset);
    this.buffer = this.buffer.subarray(offset);
    return { status, headers, body: Buffer.from(body), raw: Buffer.from(raw) };
  }

  // Resolves true once the peer has closed the connection (EOF or reset), false if it is still
  // open after `graceMs` (a bound, not a timing assertion: the test fails on "still open").
  async closedWithin(graceMs = 10000) {
    const deadline = Date.now() + graceMs;
    while (!this.ended) {
      const left = deadline - Date.now();
      if (left <= 0) {
        return false;
      }
      await Promise.race([this.waitForData(), sleep(Math.min(left, 100))]);
    }
    return true;
  }

  close() {
    this.socket.destroy();
  }
}
