// Plain-HTTP client calls to miproxy's listener, the way a legacy app makes them.
import http from 'node:http';
import { Readable } from 'node:stream';

// Sends one request and buffers the response. `body` may be a string, a Buffer or a Readable
// (streamed; chunked unless a content-length header is given). Returns
// { status, headers, body (Buffer), json() }.
export function httpRequest({ port, host = '127.0.0.1', method = 'GET', path = '/',
  headers = {}, body, agent = false, timeoutMs = 120000 }) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host, port, method, path, headers, agent }, (res) => {
      const parts = [];
      res.on('data', (c) => parts.push(c));
      res.on('end', () => {
        const buf = Buffer.concat(parts);
        resolve({
          status: res.statusCode,
          headers: res.headers,
          body: buf,
          json: () => JSON.parse(buf.toString('utf8')),
        });
      });
      res.on('error', reject);
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    if (body instanceof Readable) {
      body.pipe(req);
    } else {
      req.end(body);
    }
  });
}

// The JSON error body miproxy answers with, checked against the contract: the header
// x-miproxy-error equals error.code. Returns the parsed { error: {...} }.
export function miproxyError(response) {
  const parsed = response.json();
  if (!parsed.error || parsed.error.code !== response.headers['x-miproxy-error']) {
    throw new Error(`not a miproxy error response: ${response.body.toString('utf8')}`);
  }
  return parsed;
}
