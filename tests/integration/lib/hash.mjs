// Streaming data for large-body tests: a deterministic generator (AES-128-CTR keystream of a
// seed, so any size is produced on the fly at memory speed and never held whole) and SHA-256
// helpers that hash while data flows.
import { createCipheriv, createHash } from 'node:crypto';
import { Readable, Transform } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';

const ZEROS = Buffer.alloc(1 << 20);

function keystream(seed) {
  const material = createHash('sha256').update(String(seed)).digest();
  return createCipheriv('aes-128-ctr', material.subarray(0, 16), material.subarray(16, 32));
}

// A Readable of exactly `bytes` bytes derived from `seed`. The same seed always yields the same
// bytes, whatever the chunk size. `delayMs` pauses between chunks (slow peers).
export function generatedStream({ bytes, seed = 'miproxy', chunkSize = 256 * 1024,
  delayMs = 0 }) {
  const cipher = keystream(seed);
  let left = bytes;
  return new Readable({
    highWaterMark: chunkSize,
    async read() {
      if (left <= 0) {
        this.push(null);
        return;
      }
      if (delayMs > 0) {
        await sleep(delayMs);
      }
      const n = Math.min(chunkSize, left, ZEROS.length);
      left -= n;
      this.push(cipher.update(ZEROS.subarray(0, n)));
    },
  });
}

// Hashes a stream to its end. Resolves { length, sha256 (hex) }.
export async function sha256OfStream(stream) {
  const hash = createHash('sha256');
  let length = 0;
  for await (const chunk of stream) {
    hash.update(chunk);
    length += chunk.length;
  }
  return { length, sha256: hash.digest('hex') };
}

// A pass-through that hashes what flows through it; `result()` gives { length, sha256 } once
// the stream has ended.
export function hashingPassThrough() {
  const hash = createHash('sha256');
  let length = 0;
  let digest = null;
  const t = new Transform({
    transform(chunk, _enc, done) {
      hash.update(chunk);
      length += chunk.length;
      done(null, chunk);
    },
    flush(done) {
      digest = hash.digest('hex');
      done();
    },
  });
  t.result = () => {
    if (digest === null) {
      throw new Error('stream has not ended');
    }
    return { length, sha256: digest };
  };
  return t;
}

export function sha256Hex(data) {
  return createHash('sha256').update(data).digest('hex');
}
