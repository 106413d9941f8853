// Bytes that are not UTF-8 (issue 8, item 1): a Host or path of raw 0xff/0xfe used to end the
// process (the JSON error body was rendered with a throwing serializer). Now the error answer and
// the access log line are valid JSON with U+FFFD in place of each invalid byte, and miproxy
// keeps serving.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startMiproxy, startTlsServer, issueCert, makeFixture, proxyConfig, httpRequest, RawConnection,
} from './lib/index.mjs';

const SCOPE = 'https://storage.azure.com/.default';

describe('non-UTF-8 bytes from a client', () => {
  let fx; let upstream; let proxy; let port;

  before(async () => {
    fx = makeFixture('miproxy-hostile-');
    const cert = issueCert(fx.ca, { dns: ['localhost'], ip: ['127.0.0.1'], name: 'hostile' });
    upstream = await startTlsServer({ cert: cert.cert, key: cert.key });
    const built = await proxyConfig({
      caFile: fx.ca.certPath, tokenPath: fx.tokenPath,
      routes: [{ name: 'echo', match: { host: 'echo.test' }, upstream: upstream.url,
        identity: 'test', scope: SCOPE }],
    });
    port = built.port;
    proxy = await startMiproxy({ config: built.config });
  });

  after(async () => {
    await proxy?.stop();
    await upstream?.close();
    fx?.cleanup();
  });

  const shapes = [
    ['Host of raw 0xff 0xfe', 'GET /x HTTP/1.1\r\nHost: \xff\xfe\r\n\r\n'],
    ['Host with an overlong and a surrogate', 'GET /x HTTP/1.1\r\nHost: a\xc0\xaf\xed\xa0\x80b\r\n\r\n'],
    ['path with raw 0x80 bytes', 'GET /\x80\x81?q=\xff HTTP/1.1\r\nHost: nowhere.test\r\n\r\n'],
  ];
  for (const [name, request] of shapes) {
    test(`${name}: a valid JSON error, and the process keeps serving`, async () => {
      const conn = await RawConnection.connect(port);
      await conn.write(Buffer.from(request, 'latin1'));
      const res = await conn.readResponse();
      conn.socket.destroy();
      assert.ok(res.status === 404 || res.status === 400, `status ${res.status}`);
      const body = JSON.parse(res.body.toString('utf8'));
      assert.ok(['NoRoute', 'BadRequest'].includes(body.error.code));
      assert.equal(res.body.toString('utf8').includes('\ufffd') || body.error.code === 'BadRequest',
        true, 'invalid bytes are shown as U+FFFD');
      assert.ok(proxy.isAlive(), 'miproxy is still running');
      const ok = await httpRequest({ port, headers: { host: 'echo.test' }, path: '/after' });
      assert.equal(ok.status, 200);
    });
  }

  test('every access log line is valid JSON', async () => {
    // Raw stdout lines: accessLog() would silently drop a line that does not parse.
    const lines = proxy.stdout().split('\n').filter((l) => l.trim() !== '');
    assert.ok(lines.length >= shapes.length);
    const parsed = lines.map((l) => JSON.parse(l));
    assert.ok(parsed.some((l) => typeof l.path === 'string' && l.path.includes('\ufffd')),
      'the raw path bytes were logged as U+FFFD');
  });
});
