// Bodies stream: a 1 GiB upload and a 1 GiB download pass through miproxy byte for byte while
// the proxy's peak resident memory stays small (it never buffers a body). The data is generated
// on the fly from a seed on both ends; nothing holds a whole body in memory.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import {
  MEMORY_FACTOR, startMiproxy, startTlsServer, issueCert, makeFixture,
  proxyConfig, generatedStream, sha256OfStream, hashingPassThrough, rssPeakOfPid,
} from './lib/index.mjs';

const GIB = 1024 * 1024 * 1024;
const RSS_LIMIT = 64 * 1024 * 1024;
// Sanitizer builds (scripts/build.sh --debug) carry shadow memory and a quarantine: the bound
// is multiplied by MEMORY_FACTOR there; it is about the release build.

test('1 GiB upload and 1 GiB download stream through with identical SHA-256 and small RSS',
  { timeout: 15 * 60 * 1000 }, async (t) => {
    const fx = makeFixture('miproxy-bigfile-');
    t.after(() => fx.cleanup());
    const cert = issueCert(fx.ca, { dns: ['localhost'], ip: ['127.0.0.1'] });
    const upstream = await startTlsServer({ cert: cert.cert, key: cert.key });
    t.after(() => upstream.close());
    const { config, port } = await proxyConfig({
      caFile: fx.ca.certPath, tokenPath: fx.tokenPath,
      routes: [{ name: 'big', match: { host: 'big.test' }, upstream: upstream.url,
        identity: 'test', scope: 'https://storage.azure.com/.default' }],
    });
    const proxy = await startMiproxy({ config });
    t.after(() => proxy.stop());

    await t.test('upload', async () => {
      const sent = hashingPassThrough();
      const answer = await new Promise((resolve, reject) => {
        const req = http.request({ host: '127.0.0.1', port, method: 'PUT', path: '/upload/big',
          agent: false, headers: { host: 'big.test', 'content-length': GIB,
            'x-ms-blob-type': 'BlockBlob' } }, (res) => {
          const parts = [];
          res.on('data', (c) => parts.push(c));
          res.on('end', () => resolve({ status: res.statusCode,
            body: Buffer.concat(parts).toString('utf8') }));
          res.on('error', reject);
        });
        req.on('error', reject);
        generatedStream({ bytes: GIB, seed: 'upload-1g', chunkSize: 1 << 20 }).pipe(sent).pipe(req);
      });
      assert.equal(answer.status, 200, answer.body);
      assert.deepEqual(JSON.parse(answer.body),
        { bodyLength: GIB, bodySha256: sent.result().sha256 });
    });

    await t.test('download', async () => {
      const expected = await sha256OfStream(generatedStream({ bytes: GIB, seed: 'download-1g',
        chunkSize: 1 << 20 }));
      const got = await new Promise((resolve, reject) => {
        const req = http.request({ host: '127.0.0.1', port, method: 'GET', agent: false,
          path: `/download?bytes=${GIB}&seed=download-1g`, headers: { host: 'big.test' } },
        (res) => {
          if (res.statusCode !== 200) {
            reject(new Error(`status ${res.statusCode}`));
            res.resume();
            return;
          }
          sha256OfStream(res).then(resolve, reject);
        });
        req.on('error', reject);
        req.end();
      });
      assert.deepEqual(got, expected);
    });

    // A sanitizer build carries shadow memory and quarantine: a looser bound there.
    const limit = MEMORY_FACTOR * RSS_LIMIT;
    await t.test(`peak RSS of miproxy stayed under ${limit / 1048576} MiB`,
      (tt) => {
        const peak = rssPeakOfPid(proxy.pid);
        tt.diagnostic(`miproxy VmHWM after 1 GiB up and 1 GiB down: ${(peak / 1048576).toFixed(1)} MiB`);
        assert.ok(peak < limit, `VmHWM ${(peak / 1048576).toFixed(1)} MiB`);
      });
  });
