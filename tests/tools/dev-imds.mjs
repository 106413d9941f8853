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
//     -> 400 {"error":"invalid_request","error_description":"Identity not found"} when a
//        list of known client ids is configured and the request selects another client_id.
//   GET /count -> {"count": <token requests seen>, "issued": <tokens issued>}
//   POST /control with a JSON object (test controls; every field optional):
//       {"delay_ms": N}            answer every token request N ms late (0: at once)
//       {"lifetime": S}            tokens issued from now on live S seconds
//       {"known_client_ids": [..] | null}   client_ids that exist (null: any)
//       {"fail": {"status": 429|410|404|500|..., "count": K, "retry_after": N}}
//                                  the next K token requests get that status (with a
//                                  `Retry-After: N` header when given) and an IMDS error body
//       {"fail": null}             drop the failures still queued
//       {"down_ms": N}             stop listening for N ms (connections refused), then listen
//                                  on the same port again
//     -> 200 {"ok": true}
//
// Usage: node tests/tools/dev-imds.mjs [--host 127.0.0.1] [--port 0] [--port-file FILE]
//                                      [--lifetime SECONDS] [--tenant GUID] [--delay-ms N]
//                                      [--known-client-id GUID]...
// Prints "dev-imds listening on http://HOST:PORT" on stdout once it accepts connections.
// Also importable: startDevImds(options) -> {
//   port, url, tokenUrl, count() -> {count, issued},
//   control(object) (the same fields as POST /control),
//   down() -> Promise (stop listening, drop open connections), up() -> Promise (listen again),
//   requests() -> [{ at (ms since the epoch, arrival), status, clientId, resource }],
//   issuedTokens() -> [token strings] (for tests that prove a token was never leaked; never
//     print them), close(),
// }
// options: { host, port, lifetime, tenant, delayMs, knownClientIds, log }.
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

// IMDS error bodies for the statuses a test can ask for (token-sources.md §1 "Error responses").
const FAILURE_BODIES = {
  404: { error: 'not_found', error_description: 'Identity not found or not yet available' },
  410: { error: 'gone', error_description: 'IMDS is being updated' },
  429: { error: 'too_many_requests', error_description: 'Too many requests' },
  500: { error: 'unknown', error_description: 'Failed to retrieve token from the Active directory' },
};

// Answers one token request; returns the issued token, or null when none was issued.
function answerToken(req, res, url, { lifetime, tenant, knownClientIds }) {
  if (req.method !== 'GET') {
    res.writeHead(405, { allow: 'GET', 'content-length': 0 });
    res.end();
    return null;
  }
  if (req.headers.metadata !== 'true') {
    badRequest(res, 'bad_request_102', 'Required metadata header not specified');
    return null;
  }
  if (req.headers['x-forwarded-for'] !== undefined) {
    badRequest(res, 'invalid_request', 'Request contains X-Forwarded-For header');
    return null;
  }
  const keys = [...url.searchParams.keys()];
  if (new Set(keys).size !== keys.length) {
    badRequest(res, 'invalid_request', 'Duplicate query parameter');
    return null;
  }
  for (const key of keys) {
    if (!['api-version', 'resource', ...SELECTORS].includes(key)) {
      badRequest(res, 'invalid_request', `Unknown query parameter '${key}'`);
      return null;
    }
  }
  const apiVersion = url.searchParams.get('api-version');
  if (!apiVersion) {
    badRequest(res, 'invalid_request', "Required query variable 'api-version' is missing");
    return null;
  }
  const resource = url.searchParams.get('resource');
  if (!resource) {
    badRequest(res, 'invalid_request', "Required query variable 'resource' is missing");
    return null;
  }
  const selectors = SELECTORS.filter((s) => url.searchParams.has(s));
  if (selectors.length > 1) {
    badRequest(res, 'invalid_request', 'Only one of client_id, object_id, msi_res_id is allowed');
    return null;
  }
  let clientId = DEFAULT_CLIENT_ID;
  let objectId = DEFAULT_OBJECT_ID;
  let mirid = '/subscriptions/00000000-0000-4000-8000-000000000000/resourceGroups/dev/'
    + 'providers/Microsoft.Compute/virtualMachines/dev-vm';
  if (selectors.length === 1) {
    const value = url.searchParams.get(selectors[0]);
    if (selectors[0] === 'client_id') {
      if (knownClientIds && !knownClientIds.includes(value)) {
        badRequest(res, 'invalid_request', 'Identity not found');
        return null;
      }
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
  return token;
}

export function startDevImds({ host = '127.0.0.1', port = 0, lifetime = 86399,
  tenant = DEFAULT_TENANT, delayMs = 0, knownClientIds = null, log = () => {} } = {}) {
  let count = 0;
  let issued = 0;
  const tokens = [];
  const seen = [];
  const settings = { lifetime, tenant, delayMs, knownClientIds };
  const failures = []; // queued canned failures: { status, retryAfter }
  let listening = false;
  let bound = port;
  let downTimer = null;

  const server = http.createServer((req, res) => {
    const url = new URL(req.url, `http://${host}`);
    if (url.pathname === TOKEN_PATH) {
      count += 1;
      const record = { at: Date.now(), status: null, resource: url.searchParams.get('resource'),
        clientId: url.searchParams.get('client_id') };
      seen.push(record);
      const failure = failures.shift();
      req.resume();
      req.on('end', () => {
        const answer = () => {
          if (res.destroyed) {
            return;
          }
          if (failure) {
            const body = FAILURE_BODIES[failure.status]
              ?? { error: 'error', error_description: `HTTP ${failure.status}` };
            if (failure.retryAfter !== undefined) {
              res.setHeader('retry-after', String(failure.retryAfter));
            }
            sendJson(res, failure.status, body);
          } else {
            const token = answerToken(req, res, url, settings);
            if (token) {
              issued += 1;
              tokens.push(token);
            }
          }
          record.status = res.statusCode;
          log(`${req.method} ${url.pathname} resource=${url.searchParams.get('resource') ?? ''} `
            + `-> ${res.statusCode}`);
        };
        if (settings.delayMs > 0) {
          setTimeout(answer, settings.delayMs);
        } else {
          answer();
        }
      });
    } else if (url.pathname === '/count' && req.method === 'GET') {
      sendJson(res, 200, { count, issued });
    } else if (url.pathname === '/control' && req.method === 'POST') {
      const parts = [];
      req.on('data', (c) => parts.push(c));
      req.on('end', () => {
        try {
          control(JSON.parse(Buffer.concat(parts).toString('utf8') || '{}'));
          sendJson(res, 200, { ok: true });
        } catch (err) {
          sendJson(res, 400, { error: 'bad_control', error_description: err.message });
        }
      });
    } else {
      sendJson(res, 404, { error: 'not_found', error_description: 'Unknown path' });
    }
  });

  const listen = () => new Promise((resolve, reject) => {
    const onError = (err) => reject(err);
    server.once('error', onError);
    server.listen(bound, host, () => {
      server.off('error', onError);
      listening = true;
      bound = server.address().port;
      resolve();
    });
  });
  // Stops accepting connections and drops the open ones: clients see ECONNREFUSED.
  const down = () => new Promise((r) => {
    if (!listening) {
      r();
      return;
    }
    listening = false;
    server.close(() => r());
    server.closeAllConnections();
  });
  const up = () => (listening ? Promise.resolve() : listen());

  function control(c = {}) {
    if (typeof c !== 'object' || c === null) {
      throw new Error('control wants a JSON object');
    }
    if (c.delay_ms !== undefined) { settings.delayMs = Number(c.delay_ms); }
    if (c.lifetime !== undefined) { settings.lifetime = Number(c.lifetime); }
    if (c.known_client_ids !== undefined) { settings.knownClientIds = c.known_client_ids; }
    if (c.fail === null) {
      failures.length = 0;
    } else if (c.fail) {
      for (let i = 0; i < (c.fail.count ?? 1); i++) {
        failures.push({ status: Number(c.fail.status), retryAfter: c.fail.retry_after });
      }
    }
    if (c.down_ms !== undefined) {
      // After this tick, so that the answer to a POST /control goes out first.
      setImmediate(() => {
        down().then(() => {
          downTimer = setTimeout(() => { downTimer = null; up(); }, Number(c.down_ms));
        });
      });
    }
  }

  return listen().then(() => {
    const url = `http://${host}:${bound}`;
    return {
      port: bound,
      url,
      tokenUrl: `${url}${TOKEN_PATH}`,
      count: () => ({ count, issued }),
      control,
      down,
      up,
      requests: () => seen.map((r) => ({ ...r })),
      issuedTokens: () => [...tokens],
      close: async () => {
        if (downTimer) {
          clearTimeout(downTimer);
          downTimer = null;
        }
        await down();
      },
    };
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
    else if (a === '--delay-ms') { opts.delayMs = Number(value()); }
    else if (a === '--known-client-id') {
      opts.knownClientIds = [...(opts.knownClientIds ?? []), value()];
    }
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
      + '[--tenant GUID] [--delay-ms N] [--known-client-id GUID]...');
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
