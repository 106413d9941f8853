// A request refused while its head is parsed (framing, CONNECT, an upgrade) whose app keeps
// sending its body: miproxy answers, then lingers — reads and discards the body — so the app
// finishes its upload, reads the answer and sees an orderly close, not a reset. (Found by
// tests/fuzz/fuzz_downstream.cc: the refusal paused the parser, and that stopped reading the
// lingering connection, so the upload stalled until limits.lingering_timeout and then met RST.)
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startMiproxy, startTlsServer, issueCert, makeFixture, proxyConfig } from './lib/index.mjs';

const SCOPE = 'https://storage.azure.com/.default';
const MiB = 1024 * 1024;

// Sends |head| and |bodyBytes| of body, half-closes once the body is handed to the kernel, and
// resolves with what happened.
function uploadAfterRefusal(port, head, bodyBytes) {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    const parts = [];
    const result = { writeError: null, socketError: null, ended: false };
    s.on('data', (c) => parts.push(c));
    s.on('end', () => { result.ended = true; });
    s.on('error', (e) => { result.socketError = e.code ?? String(e); });
    s.on('close', () => resolve({ ...result, answer: Buffer.concat(parts).toString('latin1') }));
    s.write(head);
    s.write(Buffer.alloc(bodyBytes, 0x41), (err) => {
      if (err) {
        result.writeError = err.code ?? String(err);
        return;
      }
      s.end();
    });
  });
}

describe('refused while uploading: the body is drained, the answer arrives', () => {
  let fx; let up; let proxy; let port;

  before(async () => {
    fx = makeFixture('miproxy-refusal-linger-');
    const cert = issueCert(fx.ca, { dns: ['localhost'], ip: ['127.0.0.1'], name: 'linger' });
    up = await startTlsServer({ cert: cert.cert, key: cert.key });
    const built = await proxyConfig({
      caFile: fx.ca.certPath, tokenPath: fx.tokenPath,
      routes: [{ name: 'echo', match: { host: 'echo.test' }, upstream: up.url, identity: 'test', scope: SCOPE }],
      extra: { limits: { lingering_timeout: 20 } },
    });
    port = built.port;
    proxy = await startMiproxy({ config: built.config });
  });

  after(async () => {
    await proxy?.stop();
    await up?.close();
    fx?.cleanup();
  });

  const heads = [
    ['Transfer-Encoding: gzip', 'PUT /c/b HTTP/1.1\r\nHost: echo.test\r\nTransfer-Encoding: gzip\r\n\r\n'],
    ['two Content-Length', 'PUT /c/b HTTP/1.1\r\nHost: echo.test\r\nContent-Length: 40000000\r\nContent-Length: 40000001\r\n\r\n'],
  ];
  for (const [name, head] of heads) {
    test(`${name}: 400, the 32 MiB upload completes, then an orderly close`, async () => {
      const r = await uploadAfterRefusal(port, head, 32 * MiB);
      assert.match(r.answer, /^HTTP\/1\.1 400 /, r.answer);
      assert.equal(r.writeError, null, 'the upload was not cut off');
      assert.equal(r.socketError, null, 'no reset');
      assert.equal(r.ended, true, 'miproxy closed with a FIN after the app finished');
      assert.equal(up.requests.length, 0, 'nothing reached the upstream');
      assert.ok(proxy.isAlive());
    });
  }
});
