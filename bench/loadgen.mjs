// bench/loadgen.mjs: an exact-count HTTP/1.1 load generator for bench/profile.sh.
//
//   node bench/loadgen.mjs --port P --path /1k --conns C --requests N --warmup W
//                          [--method PUT --body-bytes B] [--expect-bytes B]
//
// Opens at most C keep-alive connections, sends W warm-up requests, prints "warm" and waits
// for a line on stdin; then sends exactly N requests, prints "done <ok> <errors>" and waits
// for another line before closing, so the caller can start and stop its counters around the
// measured requests only (connection setup and teardown stay outside them).
import http from 'node:http';
import readline from 'node:readline';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => {
    if (a.startsWith('--')) acc.push([a.slice(2), all[i + 1]]);
    return acc;
  }, []));
const port = Number(args.port);
const path = args.path ?? '/1k';
const conns = Number(args.conns ?? 1);
const method = args.method ?? 'GET';
const bodyBytes = Number(args['body-bytes'] ?? 0);
const expectBytes = args['expect-bytes'] === undefined ? -1 : Number(args['expect-bytes']);
const body = bodyBytes > 0 ? Buffer.alloc(bodyBytes, 0x78) : null;
const agent = new http.Agent({ keepAlive: true, maxSockets: conns, maxFreeSockets: conns,
  scheduling: 'fifo', timeout: 600000 });

const lines = readline.createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => lines.once('line', resolve));

function one() {
  return new Promise((resolve) => {
    const headers = body ? { 'content-type': 'application/octet-stream',
      'content-length': String(bodyBytes) } : {};
    const req = http.request({ host: '127.0.0.1', port, path, method, agent, headers },
      (res) => {
        let n = 0;
        res.on('data', (c) => { n += c.length; });
        res.on('end', () => resolve(res.statusCode === 200 &&
          (expectBytes < 0 || n === expectBytes)));
        res.on('error', () => resolve(false));
      });
    req.setTimeout(600000, () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve(false));
    req.end(body ?? undefined);
  });
}

async function run(total) {
  let issued = 0, ok = 0, bad = 0;
  async function lane() {
    while (issued < total) {
      issued++;
      if (await one()) ok++; else bad++;
    }
  }
  await Promise.all(Array.from({ length: Math.min(conns, total) }, lane));
  return [ok, bad];
}

const [, wbad] = await run(Number(args.warmup ?? 0));
process.stdout.write(`warm ${wbad}\n`);
await nextLine();
const [ok, bad] = await run(Number(args.requests));
process.stdout.write(`done ${ok} ${bad}\n`);
await nextLine();
agent.destroy();
process.exit(bad === 0 ? 0 : 1);
