// Unsigned-but-well-formed JWTs shaped like Entra v1 access tokens.
//
// Azurite's `--oauth basic` mode (BlobTokenAuthenticator.authenticateBasic) decodes the token
// without verifying the signature and checks only: iat, nbf and exp present with
// nbf <= now <= exp; iss starting with `https://sts.windows.net/` (or another sovereign STS
// prefix); aud equal to `https://storage.azure.com` (optional trailing slash), the Storage app
// id `e406a681-f3d4-42a8-90b6-c2b029497af1`, or `https://<account>.blob.core.windows.net`.
// It also refuses Bearer over plain HTTP, so Azurite must run with --cert/--key.
import { createHmac, randomUUID } from 'node:crypto';
import { recordSecret } from './testlog.mjs';

export const DEFAULT_TENANT = '72f988bf-0000-4000-8000-00000000c0de';
export const STORAGE_AUDIENCE = 'https://storage.azure.com';

function b64url(value) {
  return Buffer.from(typeof value === 'string' ? value : JSON.stringify(value))
    .toString('base64url');
}

// Returns the compact JWT string. `exp` and `nbf` are POSIX seconds; `lifetime` (seconds) is used
// when `exp` is not given. Extra claims can be passed in `claims`.
export function mintJwt({
  aud = STORAGE_AUDIENCE,
  tid = DEFAULT_TENANT,
  iss = `https://sts.windows.net/${tid}/`,
  oid = '00000000-0000-4000-8000-0000000000a1',
  appid = '00000000-0000-4000-8000-0000000000b2',
  iat,
  nbf,
  exp,
  lifetime = 3600,
  claims = {},
} = {}) {
  const now = Math.floor(Date.now() / 1000);
  const issuedAt = iat ?? now - 60;
  const payload = {
    aud,
    iss,
    iat: issuedAt,
    nbf: nbf ?? issuedAt,
    exp: exp ?? now + lifetime,
    appid,
    appidacr: '2',
    idtyp: 'app',
    oid,
    sub: oid,
    tid,
    uti: randomUUID().replaceAll('-', ''),
    ver: '1.0',
    ...claims,
  };
  const header = { typ: 'JWT', alg: 'HS256', kid: 'miproxy-test' };
  const signingInput = `${b64url(header)}.${b64url(payload)}`;
  // A real-looking signature segment; nobody verifies it (the key is not a secret).
  const sig = createHmac('sha256', 'miproxy-test-signing-key').update(signingInput)
    .digest('base64url');
  const token = `${signingInput}.${sig}`;
  // Every token a test hands out is on the list the suite-wide secret scan looks for.
  recordSecret(token);
  return token;
}

// Decodes the payload of a compact JWT (no verification), for assertions in tests.
export function decodeJwt(token) {
  const parts = token.split('.');
  if (parts.length !== 3) {
    throw new Error('not a compact JWT');
  }
  return JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
}
