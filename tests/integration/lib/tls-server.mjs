// An HTTPS server on loopback that stands in for an upstream (Storage, Key Vault, ...).
// It records every request head and counts what reached it at each layer, so tests can prove
// what miproxy sent and, as important, what it did not send.
import https from 'node:https';
import { createHash } from 'node:crypto';
import { generatedStream } from './hash.mjs';

// Starts the server on 127.0.0.1, port 0 unless `port` is given.
//   cert, key: PEM text (or Buffers) of the server certificate and key.
//   handler(req, res, record): answers the request; defaults to upstreamHandler below.
// Returns {
//   port, url ('https://localhost:PORT'),
//   requests: [{ id, connectionId, method, url, httpVersion, headers, rawHeaders, ...extra }],
//   stats(): { tcpConnections, tlsHandshakes, tlsErrors, applicationBytes } where
//            applicationBytes counts decrypted bytes the server read on completed TLS sessions,
//   close(): Promise — stops listening and destroys open connections,
// }
export async function startTlsServer({ cert, key, handler = upstreamHandler, port = 0 } = {}) {
  const requests = [];
  const openTls = new Set();
  const openRaw = new Set();
  const counters = { tcpConnections: 0, tlsHandshakes: 0, tlsErrors: 0, closedAppBytes: 0 };
  let nextConnectionId = 0;

  const server = https.createServer({ cert, key, keepAliveTimeout: 120000 }, (req, res) => {
    const record = {
      id: requests.length,
      connectionId: req.socket.miproxyConnectionId,
      method: req.method,
      url: req.url,
      httpVersion: req.httpVersion,
      headers: req.headers,
      rawHeaders: req.rawHeaders,
    };
    requests.push(record);
    Promise.resolve(handler(req, res, record)).catch((err) => {
      record.handlerError = String(err?.stack ?? err);
      if (!res.headersSent) {
        res.writeHead(500, { 'content-type': 'text/plain' });
      }
      res.end(`handler error: ${err?.message ?? err}`);
    });
  });
  server.headersTimeout = 120000;
  server.requestTimeout = 0;
  server.on('connection', (raw) => {
    counters.tcpConnections += 1;
    openRaw.add(raw);
    raw.on('close', () => openRaw.delete(raw));
  });
  server.on('secureConnection', (tls) => {
    counters.tlsHandshakes += 1;
    tls.miproxyConnectionId = nextConnectionId++;
    openTls.add(tls);
    tls.on('close', () => {
      counters.closedAppBytes += tls.bytesRead;
      openTls.delete(tls);
    });
  });
  server.on('tlsClientError', () => {
    counters.tlsErrors += 1;
  });

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  const boundPort = server.address().port;

  return {
    port: boundPort,
    url: `https://localhost:${boundPort}`,
    requests,
    stats() {
      let live = 0;
      for (const tls of openTls) {
        live += tls.bytesRead;
      }
      return {
        tcpConnections: counters.tcpConnections,
        tlsHandshakes: counters.tlsHandshakes,
        tlsErrors: counters.tlsErrors,
        applicationBytes: counters.closedAppBytes + live,
      };
    },
    close() {
      return new Promise((resolve) => {
        server.close(() => resolve());
        for (const s of openTls) { s.destroy(); }
        for (const s of openRaw) { s.destroy(); }
      });
    },
  };
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    const parts = [];
    let length = 0;
    req.on('data', (chunk) => {
      hash.update(chunk);
      length += chunk.length;
      if (length <= 1 << 20) {
        parts.push(chunk);
      }
    });
    req.on('end', () => resolve({
      length,
      sha256: hash.digest('hex'),
      text: length <= 1 << 20 ? Buffer.concat(parts).toString('utf8') : null,
    }));
    req.on('error', reject);
  });
}

// The default upstream behaviour, chosen by the request path (query parameters in brackets):
//   /echo...                  200 JSON { method, url, headers, bodyLength, bodySha256, body }
//   /chunked[?parts=N]        200 chunked (no Content-Length), N parts of "part-i\n"
//   /download?bytes=N&seed=S  200 with Content-Length N of generated data
//                             [&chunked=1 for chunked framing] [&delayMs=D between 64 KiB
//                             chunks, for a slow download]
//   /upload                   reads the whole body, answers JSON { bodyLength, bodySha256 }
//   /status/NNN               answers NNN with a small text body
// Anything else: like /echo. The request record gets bodyLength and bodySha256.
export async function upstreamHandler(req, res, record) {
  const url = new URL(req.url, 'https://upstream.invalid');
  const path = url.pathname;
  if (path.startsWith('/download')) {
    await readBody(req);
    const bytes = Number(url.searchParams.get('bytes') ?? '0');
    const seed = url.searchParams.get('seed') ?? 'download';
    const delayMs = Number(url.searchParams.get('delayMs') ?? '0');
    const headers = { 'content-type': 'application/octet-stream' };
    if (url.searchParams.get('chunked') !== '1') {
      headers['content-length'] = String(bytes);
    }
    res.writeHead(200, headers);
    const source = generatedStream({ bytes, seed, chunkSize: 64 * 1024, delayMs });
    await new Promise((resolve, reject) => {
      source.on('error', reject);
      res.on('error', reject);
      res.on('close', resolve);
      source.pipe(res);
    });
    return;
  }
  const body = await readBody(req);
  record.bodyLength = body.length;
  record.bodySha256 = body.sha256;
  record.body = body.text;
  if (path.startsWith('/chunked')) {
    const parts = Number(url.searchParams.get('parts') ?? '5');
    res.writeHead(200, { 'content-type': 'text/plain' });
    for (let i = 0; i < parts; i++) {
      res.write(`part-${i}\n`);
    }
    res.end();
  } else if (path.startsWith('/upload')) {
    const payload = JSON.stringify({ bodyLength: body.length, bodySha256: body.sha256 });
    res.writeHead(200, { 'content-type': 'application/json',
      'content-length': Buffer.byteLength(payload) });
    res.end(payload);
  } else if (path.startsWith('/status/')) {
    const status = Number(path.slice('/status/'.length, '/status/'.length + 3));
    const text = `status ${status}\n`;
    res.writeHead(status, { 'content-type': 'text/plain', 'content-length': text.length });
    res.end(text);
  } else {
    const payload = JSON.stringify({
      method: req.method, url: req.url, headers: req.headers, rawHeaders: req.rawHeaders,
      bodyLength: body.length, bodySha256: body.sha256, body: body.text,
    });
    res.writeHead(200, { 'content-type': 'application/json',
      'content-length': Buffer.byteLength(payload) });
    res.end(payload);
  }
}
