#!/usr/bin/env node
// Writes an unsigned, Entra-shaped access token (a JWT that Azurite's `--oauth basic` accepts)
// to a file with mode 0600, for the demo's `token_file` identity. Never prints the token.
//
// Usage: node tests/tools/mint-token.mjs --out FILE [--aud URI] [--lifetime SECONDS]
import { writeFileSync, renameSync } from 'node:fs';
import { mintJwt } from '../integration/lib/jwt.mjs';

const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : fallback;
};
const out = opt('--out');
if (!out || args.includes('--help')) {
  console.error('usage: mint-token.mjs --out FILE [--aud URI] [--lifetime SECONDS]');
  process.exit(out ? 0 : 2);
}
const token = mintJwt({
  aud: opt('--aud', 'https://storage.azure.com'),
  lifetime: Number(opt('--lifetime', '86400')),
});
// Write then rename, so a reader never sees a half-written file.
writeFileSync(`${out}.tmp`, `${token}\n`, { mode: 0o600 });
renameSync(`${out}.tmp`, out);
