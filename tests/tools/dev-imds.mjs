#!/usr/bin/env node
// dev-imds: a local stand-in for the Azure Instance Metadata Service token endpoint, for the demo
// and for tests on a machine that is not an Azure VM. It speaks the IMDS managed-identity
// protocol (token-sources.md §1) on loopback and mints unsigned JWTs that Azurite's
// `--oauth basic` mode accepts (aud = the requested resource, iss = https://sts.windows.net/<tid>/).
//
//   GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=<uri>
//       [&client_id=|object_id=|msi_res_id=<selector>]      header `Metadata: true`
//     -> 200 application/json, every field a string:
//        { access_token, client_id, expires_in, expires_on, ext_expires_in, not_before,
//          resource, token_type: "Bearer" }
//     -> 400 {"error": "...", "error_description": "..."} for a request real IMDS refuses:
//        missing/wrong Metadata header, X-Forwarded-For present, missing api-version or
//        resource, duplicate query keys, an unknown selector name or more than one selector.
//   GET /count -> {"count": <token requests seen>, "issued": <tokens issued>}
//
// Usage: node tests/tools/dev-imds.mjs [--host 127.0.0.1] [--port 0] [--port-file FILE]
//                                      [--lifetime SECONDS] [--tenant GUID]
// Prints "dev-imds listening on http://HOST:PORT" on stdout once it accepts connections.
// Also importable: startDevImds(options) -> { port, url, tokenUrl, count(), close() }.
// It never prints a token.
import http from 'node:http';
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { mintJwt, DEFAULT_TENANT } from '../integration/lib/jwt.mjs';

export const TOKEN_PATH = '/metadata/identity/oauth2/token';
const SELECTORS = ['client_id', 'object_id', 'msi_res_id'];
const DEFAULT_CLIENT_ID = '9a1f0c3e-0000-4000-8000-000000000001';
const DEFAULT_OBJECT_ID = '9a1f0c3e-0000-4000-8000-000000000002';

// A stable GUID-shaped id derived from a selector value, so one user-assigned identity always
// maps to the same client and object id.
function derivedId(kind, value) {
  const h = createHash('sha256').update(`${kind}:${value}`).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

function sendJson(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
  });
  res.end(text);
}

function badRequest(res, error, description) {
  sendJson(res, 400, { error, error_description: description });
}

// Answers one token request; returns true when a token was issued.
function answerToken(req, res, url, { lifetime, tenant }) {
  if (req.method !== 'GET') {
    res.writeHead(405, { allow: 'GET', 'content-length': 0 });
    res.end();
    return false;
  }
  if (req.headers.metadata !== 'true') {
    badRequest(res, 'bad_request_102', 'Required metadata header not specified');
    return false;
  }
  if (req.headers['x-forwarded-for'] !== undefined) {
    badRequest(res, 'invalid_request', 'Request contains X-Forwarded-For header');
    return false;
  }
  const keys = [...url.searchParams.keys()];
  if (new Set(keys).size !== keys.length) {
    badRequest(res, 'invalid_request', 'Duplicate query parameter');
    return false;
  }
  for (const key of keys) {
    if (!['api-version', 'resource', ...SELECTORS].includes(key)) {
      badRequest(res, 'invalid_request', `Unknown query parameter '${key}'`);
      return false;
    }
  }
  const apiVersion = url.searchParams.get('api-version');
  if (!apiVersion) {
    badRequest(res, 'invalid_request', "Required query variable 'api-version' is missing");
    return false;
  }
  const resource = url.searchParams.get('resource');
  if (!resource) {
    badRequest(res, 'invalid_request', "Required query variable 'resource' is missing");
    return false;
  }
  const selectors = SELECTORS.filter((s) => url.searchParams.has(s));
  if (selectors.length > 1) {
    badRequest(res, 'invalid_request', 'Only one of client_id, object_id, msi_res_id is allowed');
    return false;
  }
  let clientId = DEFAULT_CLIENT_ID;
  let objectId = DEFAULT_OBJECT_ID;
  let mirid = '/subscriptions/00000000-0000-4000-8000-000000000000/resourceGroups/dev/'
    + 'providers/Microsoft.Compute/virtualMachines/dev-vm';
  if (selectors.length === 1) {
    const value = url.searchParams.get(selectors[0]);
    if (selectors[0] === 'client_id') {
      clientId = value;
      objectId = derivedId('object', value);
    } else if (selectors[0] === 'object_id') {
      objectId = value;
      clientId = derivedId('client', value);
    } else {
      mirid = value;
      clientId = derivedId('client', value);
      objectId = derivedId('object', value);
    }
  }
  const now = Math.floor(Date.now() / 1000);
  const exp = now + lifetime;
  const token = mintJwt({
    aud: resource, tid: tenant, oid: objectId, appid: clientId, iat: now, nbf: now, exp,
    claims: { appidacr: '2', xms_mirid: mirid },
  });
  sendJson(res, 200, {
    access_token: token,
    client_id: clientId,
    expires_in: String(lifetime),
    expires_on: String(exp),
    ext_expires_in: String(lifetime),
    not_before: String(now),
    resource,
    token_type: 'Bearer',
  });
  return true;
}

export function startDevImds({ host = '127.0.0.1', port = 0, lifetime = 86399,
  tenant = DEFAULT_TENANT, log = () => {} } = {}) {
  let count = 0;
  let issued = 0;
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, `http://${host}`);
    if (url.pathname === TOKEN_PATH) {
      count += 1;
      req.resume();
      req.on('end', () => {
        if (answerToken(req, res, url, { lifetime, tenant })) {
          issued += 1;
        }
        log(`${req.method} ${url.pathname} resource=${url.searchParams.get('resource') ?? ''} `
          + `-> ${res.statusCode}`);
      });
    } else if (url.pathname === '/count' && req.method === 'GET') {
      sendJson(res, 200, { count, issued });
    } else {
      sendJson(res, 404, { error: 'not_found', error_description: 'Unknown path' });
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      const bound = server.address().port;
      const url = `http://${host}:${bound}`;
      resolve({
        port: bound,
        url,
        tokenUrl: `${url}${TOKEN_PATH}`,
        count: () => ({ count, issued }),
        close: () => new Promise((r) => { server.close(() => r()); server.closeAllConnections(); }),
      });
    });
  });
}

function parseArgs(argv) {
  const opts = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) {
        throw new Error(`${a} needs a value`);
      }
      return argv[++i];
    };
    if (a === '--host') { opts.host = value(); }
    else if (a === '--port') { opts.port = Number(value()); }
    else if (a === '--port-file') { opts.portFile = value(); }
    else if (a === '--lifetime') { opts.lifetime = Number(value()); }
    else if (a === '--tenant') { opts.tenant = value(); }
    else if (a === '--help' || a === '-h') { opts.help = true; }
    else { throw new Error(`unknown argument ${a}`); }
  }
  return opts;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (err) {
    console.error(`dev-imds: ${err.message}`);
    process.exit(2);
  }
  if (opts.help) {
    console.log('usage: dev-imds.mjs [--host H] [--port P] [--port-file FILE] [--lifetime S] '
      + '[--tenant GUID]');
    process.exit(0);
  }
  const imds = await startDevImds({ ...opts, log: (line) => console.error(`dev-imds: ${line}`) });
  if (opts.portFile) {
    writeFileSync(opts.portFile, `${imds.port}\n`);
  }
  console.log(`dev-imds listening on ${imds.url}`);
  const stop = () => { imds.close().then(() => process.exit(0)); };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
