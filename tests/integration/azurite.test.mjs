// A legacy app with no credentials at all (curl, the Storage SDK with an anonymous client) uses
// Blob Storage through miproxy. The Storage emulator runs over HTTPS with `--oauth basic`, so
// every call below succeeds only if miproxy added a well-formed bearer token (and refuses
// anonymous calls made directly, as checked first).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AnonymousCredential, ContainerClient } from '@azure/storage-blob';
import {
  requireBinary, startMiproxy, startAzurite, makeFixture, proxyConfig,
  generatedStream, sha256OfStream,
} from './lib/index.mjs';

const it = (name, fn) => test(name, fn);
const ACCOUNT_HOST = 'devstoreaccount1.blob.core.windows.net';

// Runs curl; resolves { status, headers, body } from `-i` output. Never throws on HTTP errors.
function curl(args, { env } = {}) {
  const cleanEnv = { ...process.env, ...env };
  for (const k of ['HTTP_PROXY', 'HTTPS_PROXY', 'ALL_PROXY', 'NO_PROXY', 'https_proxy',
    'all_proxy', 'no_proxy']) {
    delete cleanEnv[k];
  }
  if (!env?.http_proxy) {
    delete cleanEnv.http_proxy;
  }
  return new Promise((resolve, reject) => {
    execFile('curl', ['-sS', '-i', '--max-time', '60', ...args],
      { env: cleanEnv, encoding: 'buffer', maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
        if (err && !stdout.length) {
          reject(new Error(`curl ${args.join(' ')} failed: ${stderr}`));
          return;
        }
        let head = stdout;
        let rest = Buffer.alloc(0);
        let status;
        // Skip interim 1xx responses.
        for (;;) {
          const end = head.indexOf('\r\n\r\n');
          const text = head.subarray(0, end < 0 ? head.length : end).toString('latin1');
          status = Number(/^HTTP\/[\d.]+ (\d{3})/.exec(text)?.[1]);
          rest = end < 0 ? Buffer.alloc(0) : head.subarray(end + 4);
          if (status >= 200 || end < 0) {
            const headers = {};
            for (const line of text.split('\r\n').slice(1)) {
              const i = line.indexOf(':');
              headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
            }
            resolve({ status, headers, body: rest });
            return;
          }
          head = rest;
        }
      });
  });
}

describe('Blob Storage through miproxy (Azurite, HTTPS + OAuth)', () => {
  let fx;
  let azurite;
  let proxy;
  let base; // http://127.0.0.1:PORT/devstoreaccount1
  let proxyUrl;

  before(async () => {
    requireBinary();
    fx = makeFixture('miproxy-azurite-');
    azurite = await startAzurite({ ca: fx.ca });
    const storageRoute = {
      upstream: azurite.url, identity: 'test', scope: 'https://storage.azure.com/.default',
    };
    const built = await proxyConfig({
      caFile: fx.ca.certPath,
      tokenPath: fx.tokenPath,
      routes: [
        { name: 'blob-by-host', match: { host: ACCOUNT_HOST }, ...storageRoute },
        { name: 'blob-by-path', match: { path_prefix: '/devstoreaccount1/' }, ...storageRoute },
      ],
    });
    proxyUrl = `http://127.0.0.1:${built.port}`;
    base = `${proxyUrl}/devstoreaccount1`;
    proxy = await startMiproxy({ config: built.config });
  });

  after(async () => {
    requireBinary();
    await proxy?.stop();
    await azurite?.stop();
    fx?.cleanup();
  });

  it('Azurite itself refuses the same call without a token', async () => {
    const r = await curl(['--cacert', fx.ca.certPath, '-X', 'PUT',
      `${azurite.accountUrl}/direct?restype=container`]);
    assert.equal(r.status, 403);
  });

  it('curl without credentials: create container, PUT, GET, HEAD, list, DELETE', async () => {
    const created = await curl(['-X', 'PUT', `${base}/curl-demo?restype=container`]);
    assert.equal(created.status, 201, created.body.toString());

    const payload = Buffer.from(`hello through miproxy ${Date.now()}\n`);
    const file = join(fx.dir, 'payload.txt');
    writeFileSync(file, payload);
    const put = await curl(['-X', 'PUT', '-H', 'x-ms-blob-type: BlockBlob',
      '--data-binary', `@${file}`, `${base}/curl-demo/hello.txt`]);
    assert.equal(put.status, 201, put.body.toString());

    const got = await curl([`${base}/curl-demo/hello.txt`]);
    assert.equal(got.status, 200);
    assert.deepEqual(got.body, payload);

    const head = await curl(['-I', `${base}/curl-demo/hello.txt`]);
    assert.equal(head.status, 200);
    assert.equal(head.headers['content-length'], String(payload.length));
    assert.equal(head.headers['x-ms-blob-type'], 'BlockBlob');

    const list = await curl([`${base}/curl-demo?restype=container&comp=list`]);
    assert.equal(list.status, 200);
    assert.match(list.body.toString(), /<Name>hello\.txt<\/Name>/);

    const del = await curl(['-X', 'DELETE', `${base}/curl-demo/hello.txt`]);
    assert.equal(del.status, 202);
    const gone = await curl([`${base}/curl-demo/hello.txt`]);
    assert.equal(gone.status, 404, 'the emulator answers 404 for a deleted blob');
    assert.equal(gone.headers['x-ms-error-code'], 'BlobNotFound');
    assert.equal(gone.headers['x-miproxy-error'], undefined, "the upstream's 404, passed through");

    const delContainer = await curl(['-X', 'DELETE', `${base}/curl-demo?restype=container`]);
    assert.equal(delContainer.status, 202);
  });

  it('curl with http_proxy (absolute-form) routes by the account host name', async () => {
    const env = { http_proxy: proxyUrl };
    const url = `http://${ACCOUNT_HOST}/devstoreaccount1/proxied`;
    const created = await curl(['-X', 'PUT', `${url}?restype=container`], { env });
    assert.equal(created.status, 201, created.body.toString());
    const put = await curl(['-X', 'PUT', '-H', 'x-ms-blob-type: BlockBlob',
      '--data-binary', 'via http_proxy', `${url}/b.txt`], { env });
    assert.equal(put.status, 201);
    const got = await curl([`${url}/b.txt`], { env });
    assert.equal(got.status, 200);
    assert.equal(got.body.toString(), 'via http_proxy');
  });

  it('the Storage SDK with an anonymous client works unchanged through miproxy', async () => {
    const container = new ContainerClient(`${base}/sdk-demo`, new AnonymousCredential());
    await container.create();
    const bytes = 3 * 1024 * 1024 + 11;
    const expected = await sha256OfStream(generatedStream({ bytes, seed: 'sdk' }));
    const blob = container.getBlockBlobClient('data.bin');
    await blob.uploadStream(generatedStream({ bytes, seed: 'sdk' }), 1024 * 1024, 2);
    const download = await blob.download();
    const got = await sha256OfStream(download.readableStreamBody);
    assert.deepEqual(got, expected);
    const names = [];
    for await (const item of container.listBlobsFlat()) {
      names.push(item.name);
    }
    assert.deepEqual(names, ['data.bin']);
    await container.delete();
  });

  it('the token never appears in miproxy output', () => {
    const out = `${proxy.stdout()}${proxy.stderr()}`;
    assert.equal(out.includes(fx.token), false);
    assert.equal(out.includes(fx.token.split('.')[2]), false);
  });
});
