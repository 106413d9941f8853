// Azure Storage through miproxy with the real SDK and no credentials (issue 4): the Azure
// Storage SDK for JavaScript with an anonymous credential, pointed at miproxy, against Azurite
// (HTTPS + OAuth). Block blobs of 64 MiB and more (staged blocks + block list, and
// uploadStream), ranged reads, listing with pagination, append blobs, comp= operations and
// deletes. Then the Storage rules at a local echo upstream: SAS parameters and a SharedKey
// header the app still sends never leave miproxy, and x-ms-version is raised only when needed.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { AnonymousCredential, ContainerClient } from '@azure/storage-blob';
import {
  requireBinary, startMiproxy, startAzurite, startTlsServer, issueCert, makeFixture,
  proxyConfig, generatedStream, sha256OfStream, httpRequest,
} from './lib/index.mjs';

const it = (name, fn) => test(name, fn);
const SCOPE = 'https://storage.azure.com/.default';
const MiB = 1024 * 1024;

function block(i, size) {
  // Deterministic block content without holding more than one block at a time.
  const buf = Buffer.alloc(size);
  let x = (i + 1) * 2654435761;
  for (let o = 0; o < size; o += 4) {
    x = (x * 1103515245 + 12345) >>> 0;
    buf.writeUInt32LE(x, o);
  }
  return buf;
}

describe('Storage SDK through miproxy (Azurite)', () => {
  let fx; let azurite; let proxy; let container; let echo; let port;

  before(async () => {
    requireBinary();
    fx = makeFixture('miproxy-storage-');
    azurite = await startAzurite({ ca: fx.ca });
    const cert = issueCert(fx.ca, { dns: ['localhost'], ip: ['127.0.0.1'], name: 'echo' });
    echo = await startTlsServer({ cert: cert.cert, key: cert.key });
    const built = await proxyConfig({
      caFile: fx.ca.certPath, tokenPath: fx.tokenPath,
      routes: [
        { name: 'blob', match: { path_prefix: '/devstoreaccount1/' }, upstream: azurite.url,
          identity: 'test', scope: SCOPE },
        { name: 'echo', match: { host: 'echo.blob.core.windows.net' }, upstream: echo.url,
          identity: 'test', scope: SCOPE },
      ],
    });
    port = built.port;
    proxy = await startMiproxy({ config: built.config });
    container = new ContainerClient(`http://127.0.0.1:${port}/devstoreaccount1/sdk-big`,
      new AnonymousCredential());
    await container.create();
  });

  after(async () => {
    requireBinary();
    await container?.delete().catch(() => {});
    await proxy?.stop();
    await Promise.all([azurite?.stop(), echo?.close()]);
    fx?.cleanup();
  });

  it('a 64 MiB block blob from staged blocks and a block list; sha256 matches; ranged reads', async () => {
    const blob = container.getBlockBlobClient('blocks.bin');
    const hash = createHash('sha256');
    const ids = [];
    for (let i = 0; i < 16; i++) {
      const data = block(i, 4 * MiB);
      hash.update(data);
      const id = Buffer.from(`block-${String(i).padStart(4, '0')}`).toString('base64');
      ids.push(id);
      await blob.stageBlock(id, data, data.length);
    }
    const uncommitted = await blob.getBlockList('uncommitted');
    assert.equal(uncommitted.uncommittedBlocks.length, 16);
    await blob.commitBlockList(ids);
    const committed = await blob.getBlockList('committed');
    assert.equal(committed.committedBlocks.length, 16);
    const props = await blob.getProperties();
    assert.equal(props.contentLength, 64 * MiB);
    const got = await sha256OfStream((await blob.download()).readableStreamBody);
    assert.equal(got.sha256, hash.digest('hex'));
    // Ranged reads inside one block and across a block boundary.
    const part = await blob.downloadToBuffer(5 * MiB + 3, 1000);
    assert.deepEqual(part, block(1, 4 * MiB).subarray(MiB + 3, MiB + 1003));
    const across = await blob.downloadToBuffer(4 * MiB - 10, 20);
    assert.deepEqual(across, Buffer.concat([block(0, 4 * MiB).subarray(-10), block(1, 4 * MiB).subarray(0, 10)]));
  });

  it('a 72 MiB streamed upload (uploadStream) round-trips with the same sha256', async () => {
    const bytes = 72 * MiB + 5;
    const blob = container.getBlockBlobClient('stream.bin');
    await blob.uploadStream(generatedStream({ bytes, seed: 'stream72' }), 8 * MiB, 4);
    const expected = await sha256OfStream(generatedStream({ bytes, seed: 'stream72' }));
    const got = await sha256OfStream((await blob.download()).readableStreamBody);
    assert.deepEqual(got, expected);
  });

  it('listing with pagination returns every blob once across pages', async () => {
    const c = new ContainerClient(`http://127.0.0.1:${port}/devstoreaccount1/sdk-pages`, new AnonymousCredential());
    await c.create();
    const names = [];
    for (let i = 0; i < 25; i++) {
      const name = `item-${String(i).padStart(2, '0')}`;
      names.push(name);
      await c.getBlockBlobClient(name).upload('x', 1);
    }
    const pages = [];
    for await (const page of c.listBlobsFlat().byPage({ maxPageSize: 10 })) {
      pages.push(page.segment.blobItems.map((b) => b.name));
    }
    assert.deepEqual(pages.map((p) => p.length), [10, 10, 5]);
    assert.deepEqual(pages.flat(), names);
    await c.delete();
  });

  it('append blobs, metadata and properties (comp= operations), deletes', async () => {
    const log = container.getAppendBlobClient('log.txt');
    await log.create();
    await log.appendBlock('one\n', 4);
    await log.appendBlock('two\n', 4);
    assert.equal((await log.downloadToBuffer()).toString(), 'one\ntwo\n');
    await log.setMetadata({ owner: 'orders', stage: 'test' });
    const props = await log.getProperties();
    assert.deepEqual(props.metadata, { owner: 'orders', stage: 'test' });
    assert.equal(props.blobType, 'AppendBlob');
    await log.delete();
    assert.equal(await log.exists(), false);
  });

  it('SAS parameters and SharedKey from a half-migrated app never reach the upstream', async () => {
    const before = echo.requests.length;
    const r = await httpRequest({ port,
      path: '/c/b.txt?comp=metadata&sv=2021-08-06&ss=b&srt=sco&sp=rl&se=2030-01-01&sig=c2lnbmF0dXJl&timeout=30',
      headers: { host: 'echo.blob.core.windows.net', authorization: 'SharedKey devstoreaccount1:c2ln' } });
    assert.equal(r.status, 200);
    const seen = echo.requests[before];
    assert.equal(seen.url, '/c/b.txt?comp=metadata&timeout=30');
    assert.match(seen.headers.authorization, /^Bearer /);
    assert.equal(seen.headers.authorization, `Bearer ${fx.token}`);
  });

  it('x-ms-version: added when missing, raised when too old, kept when new enough', async () => {
    const send = async (version) => {
      const before = echo.requests.length;
      const headers = { host: 'echo.blob.core.windows.net' };
      if (version) headers['x-ms-version'] = version;
      await httpRequest({ port, path: '/c?restype=container', headers });
      return echo.requests[before].headers['x-ms-version'];
    };
    assert.equal(await send(undefined), '2024-11-04');
    assert.equal(await send('2015-04-05'), '2024-11-04');
    assert.equal(await send('2021-08-06'), '2021-08-06');
    assert.equal(await send('2025-05-05'), '2025-05-05');
  });
});
