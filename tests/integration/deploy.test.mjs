// Deployment artefacts: systemd units, install.sh, example configs, the container image recipe
// and the Kubernetes manifests. These are what an operator copies; each check below is a
// promise docs/deploy-*.md makes.
//
// Uses node built-ins only, plus a YAML parser: the `yaml` npm package when it is installed
// under tests/integration/node_modules, else python3 with PyYAML; the YAML checks fail
// (with the reason) when neither is available. With MIPROXY_BIN naming a binary that
// implements `check`, every config is also validated by miproxy itself.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..');
const deployDir = path.join(repo, 'deploy');
const examplesDir = path.join(deployDir, 'examples');
const unitDir = path.join(deployDir, 'systemd');

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'miproxy-deploy-test-'));
after(() => fs.rmSync(scratch, { recursive: true, force: true }));

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', ...opts });
  if (r.error && r.error.code !== 'ENOENT') {
    throw r.error;
  }
  return r;
}

function have(cmd) {
  const r = run('sh', ['-c', `command -v ${cmd}`]);
  return r.status === 0;
}

function readText(...parts) {
  return fs.readFileSync(path.join(repo, ...parts), 'utf8');
}

// ---------------------------------------------------------------------------------------------
// The config contract (interface.md "Config file"): the keys a config may use, nothing else.

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

const IDENTITY_KEYS = {
  managed_identity: ['source', 'endpoint', 'client_id', 'object_id', 'resource_id'],
  workload_identity: ['client_id', 'tenant_id', 'authority_host'],
  client_secret: ['tenant_id', 'client_id', 'secret_file', 'authority_host'],
  client_certificate: ['tenant_id', 'client_id', 'certificate_file', 'authority_host'],
  azure_cli: [],
  default: [],
  token_file: ['path'],
};

function isLoopbackAddress(address) {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(address);
  assert.ok(m, `listener address ${address} is host:port`);
  const host = m[1] ?? m[2];
  return host === '::1' || host === 'localhost' || /^127\./.test(host);
}

// Returns every violation of the contract found in |config|, each naming its JSON path.
function contractViolations(config) {
  const errors = [];
  const only = (obj, where, keys) => {
    if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
      errors.push(`${where}: must be an object`);
      return false;
    }
    for (const k of Object.keys(obj)) {
      if (!keys.includes(k)) {
        errors.push(`${where}.${k}: not a key of the contract`);
      }
    }
    return true;
  };
  only(config, '$', ['listeners', 'admin', 'workers', 'shutdown_grace', 'tls', 'log',
                     'identities', 'routes']);
  if (!Array.isArray(config.listeners) || config.listeners.length === 0) {
    errors.push('listeners: at least one listener');
  } else {
    config.listeners.forEach((l, i) => {
      const where = `listeners[${i}]`;
      if ('unix' in l) {
        only(l, where, ['unix', 'mode', 'allowed_uids']);
        if ('mode' in l && !/^0[0-7]{3}$/.test(l.mode)) {
          errors.push(`${where}.mode: octal string like "0660"`);
        }
        if ('allowed_uids' in l && !(Array.isArray(l.allowed_uids) &&
                                     l.allowed_uids.every(Number.isInteger))) {
          errors.push(`${where}.allowed_uids: array of integers`);
        }
      } else {
        only(l, where, ['address', 'allow_remote']);
        if (!l.allow_remote && !isLoopbackAddress(l.address)) {
          errors.push(`${where}.address: not loopback and no allow_remote`);
        }
      }
    });
  }
  if ('admin' in config) {
    // allow_remote on admin mirrors the listeners' key; interface.md does not list it yet.
    only(config.admin, 'admin', ['address', 'allow_quit', 'allow_remote']);
    if (!config.admin.allow_remote && !isLoopbackAddress(config.admin.address)) {
      errors.push('admin.address: not loopback and no allow_remote');
    }
  }
  if ('workers' in config && config.workers !== 'auto' &&
      !(Number.isInteger(config.workers) && config.workers > 0)) {
    errors.push('workers: "auto" or a positive integer');
  }
  if ('shutdown_grace' in config && !(typeof config.shutdown_grace === 'number' &&
                                      config.shutdown_grace >= 0)) {
    errors.push('shutdown_grace: seconds');
  }
  if ('tls' in config) {
    only(config.tls, 'tls', ['ca_file', 'min_version']);
  }
  if ('log' in config) {
    only(config.log, 'log', ['level', 'format']);
  }
  const identities = config.identities ?? {};
  only(identities, 'identities', Object.keys(identities));
  for (const [name, id] of Object.entries(identities)) {
    const keys = IDENTITY_KEYS[id.type];
    if (!keys) {
      errors.push(`identities.${name}.type: unknown type ${id.type}`);
      continue;
    }
    only(id, `identities.${name}`, ['type', ...keys]);
    const selectors = ['client_id', 'object_id', 'resource_id'].filter((k) => k in id);
    if (id.type === 'managed_identity' && selectors.length > 1) {
      errors.push(`identities.${name}: at most one of client_id, object_id, resource_id`);
    }
    for (const k of ['client_id', 'object_id', 'tenant_id']) {
      if (k in id && !GUID.test(id[k])) {
        errors.push(`identities.${name}.${k}: not a GUID`);
      }
    }
  }
  const names = new Set();
  if (!Array.isArray(config.routes) || config.routes.length === 0) {
    errors.push('routes: at least one route');
  }
  (config.routes ?? []).forEach((r, i) => {
    const where = `routes[${i}]`;
    only(r, where, ['name', 'match', 'upstream', 'identity', 'scope', 'strip_prefix', 'headers',
                    'tls', 'timeouts', 'inbound_authorization']);
    if (names.has(r.name)) {
      errors.push(`${where}.name: duplicate ${r.name}`);
    }
    names.add(r.name);
    const match = r.match ?? {};
    only(match, `${where}.match`, ['host', 'path_prefix', 'methods']);
    if (!(r.identity in identities)) {
      errors.push(`${where}.identity: no identity named ${r.identity}`);
    }
    if (typeof r.upstream !== 'string' || !r.upstream.startsWith('https://')) {
      errors.push(`${where}.upstream: must be https://`);
    } else if (r.upstream.includes('{host}') && !(match.host ?? '').startsWith('*.')) {
      errors.push(`${where}.upstream: {host} needs a wildcard match.host`);
    }
    if (r.scope !== 'auto' && !/^https:\/\/.+\/\.default$/.test(r.scope ?? '')) {
      errors.push(`${where}.scope: an Entra scope ending in /.default, or "auto"`);
    }
    if ('headers' in r) {
      only(r.headers, `${where}.headers`, ['set', 'remove']);
    }
    if ('tls' in r) {
      only(r.tls, `${where}.tls`, ['ca_file']);
    }
    if ('timeouts' in r) {
      only(r.timeouts, `${where}.timeouts`, ['connect', 'idle', 'response']);
    }
    if ('inbound_authorization' in r && !['replace', 'reject'].includes(r.inbound_authorization)) {
      errors.push(`${where}.inbound_authorization: replace or reject`);
    }
  });
  return errors;
}

function adminPort(config) {
  return Number(/:(\d+)$/.exec(config.admin.address)[1]);
}

// ---------------------------------------------------------------------------------------------
// miproxy itself, when MIPROXY_BIN is a build that implements `check`.

let checkSupport; // { bin } or { missing: reason }
function miproxyCheck() {
  if (checkSupport) {
    return checkSupport;
  }
  const bin = process.env.MIPROXY_BIN;
  if (!bin || !fs.existsSync(bin)) {
    checkSupport = { missing: 'MIPROXY_BIN is not set to a built binary' };
    return checkSupport;
  }
  // A binary that implements `check` must refuse a config file that does not exist.
  const probe = run(bin, ['check', '--config', path.join(scratch, 'no-such-config.json')]);
  if (probe.status === 0) {
    checkSupport = {
      missing: `${bin} does not implement "check" yet (it accepted a missing config file)`,
    };
  } else {
    checkSupport = { bin };
  }
  return checkSupport;
}

function assertMiproxyAccepts(t, file) {
  const support = miproxyCheck();
  assert.ok(!support.missing, support.missing);
  const r = run(support.bin, ['check', '--config', file]);
  assert.equal(r.status, 0, `miproxy check --config ${file} failed:\n${r.stdout}${r.stderr}`);
}

// ---------------------------------------------------------------------------------------------
// YAML: the `yaml` npm package, else python3 + PyYAML.

let yamlParser; // { parseAll(text) } or { missing }
async function yamlLoader() {
  if (yamlParser) {
    return yamlParser;
  }
  try {
    const mod = await import('yaml');
    yamlParser = {
      parseAll(text) {
        return mod.parseAllDocuments(text).map((doc) => {
          if (doc.errors.length > 0) {
            throw doc.errors[0];
          }
          return doc.toJS();
        });
      },
    };
    return yamlParser;
  } catch {
    // fall through to python3
  }
  const script = 'import sys, json, yaml\n' +
                 'print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d is not None]))';
  const probe = run('python3', ['-c', 'import yaml']);
  if (probe.status === 0) {
    yamlParser = {
      parseAll(text) {
        const r = run('python3', ['-c', script], { input: text });
        assert.equal(r.status, 0, `YAML parse failed: ${r.stderr}`);
        return JSON.parse(r.stdout);
      },
    };
  } else {
    yamlParser = {
      missing: 'no YAML parser: add the "yaml" npm package to tests/integration ' +
            '(devDependency) or install python3-yaml',
    };
  }
  return yamlParser;
}

const yamlMissing = (await yamlLoader()).missing ?? false;

function loadManifest(name) {
  const docs = yamlParser.parseAll(readText('deploy', 'kubernetes', name));
  const byKind = {};
  for (const d of docs) {
    assert.ok(d.apiVersion && d.kind && d.metadata?.name, `${name}: a document lacks kind/name`);
    byKind[d.kind] = d;
  }
  return { docs, byKind };
}

// ---------------------------------------------------------------------------------------------
// systemd unit files.

function parseUnit(text) {
  const sections = {};
  let current = null;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) {
      continue;
    }
    const sec = /^\[(.+)\]$/.exec(line);
    if (sec) {
      current = sections[sec[1]] ??= {};
      continue;
    }
    const eq = line.indexOf('=');
    assert.ok(current && eq > 0, `unit line outside a section or without "=": ${line}`);
    const key = line.slice(0, eq).trim();
    (current[key] ??= []).push(line.slice(eq + 1).trim());
  }
  return sections;
}

function unitValue(unit, key) {
  const values = unit.Service[key];
  return values === undefined ? undefined : values[values.length - 1];
}

function secondsOf(value) {
  const m = /^(\d+)(s|min)?$/.exec(value);
  assert.ok(m, `a duration in seconds: ${value}`);
  return Number(m[1]) * (m[2] === 'min' ? 60 : 1);
}

// A root directory for `systemd-analyze --root`: the distribution's units (for
// sysinit.target and friends), /bin/kill for ExecReload, and the miproxy binary at the path
// the units name. The binary is MIPROXY_BIN when set, else a stand-in script: verify only
// checks that the ExecStart path is an executable file, it never runs it.
function miproxyExecutable() {
  const bin = process.env.MIPROXY_BIN;
  if (bin && fs.existsSync(bin)) {
    return bin;
  }
  const stub = path.join(scratch, 'miproxy-stand-in');
  if (!fs.existsSync(stub)) {
    fs.writeFileSync(stub, '#!/bin/sh\necho "miproxy stand-in"\n', { mode: 0o755 });
  }
  return stub;
}

function systemUnitDir() {
  for (const dir of ['/usr/lib/systemd/system', '/lib/systemd/system']) {
    if (fs.existsSync(path.join(dir, 'sysinit.target'))) {
      return dir;
    }
  }
  return null;
}

function makeVerifyRoot(name) {
  const root = path.join(scratch, name);
  fs.mkdirSync(path.join(root, 'usr', 'lib', 'systemd'), { recursive: true });
  const r = run('cp', ['-a', systemUnitDir(), path.join(root, 'usr', 'lib', 'systemd', 'system')]);
  assert.equal(r.status, 0, r.stderr);
  fs.mkdirSync(path.join(root, 'bin'), { recursive: true });
  fs.copyFileSync(fs.realpathSync('/bin/kill'), path.join(root, 'bin', 'kill'));
  fs.chmodSync(path.join(root, 'bin', 'kill'), 0o755);
  fs.mkdirSync(path.join(root, 'etc', 'systemd', 'system'), { recursive: true });
  return root;
}

function verifyUnit(root, unitName) {
  const r = run('systemd-analyze', ['verify', `--root=${root}`, unitName]);
  // verify exits 0 on unknown keys and unparsable values but reports them on stderr: any
  // line about our units is a failure.
  const complaints = (r.stderr ?? '').split('\n').filter((l) => /miproxy/.test(l));
  return { status: r.status, complaints, output: `${r.stdout}${r.stderr}` };
}

const systemdMissing = !have('systemd-analyze') ? 'systemd-analyze is not installed'
                  : !systemUnitDir() ? 'no distribution unit directory with sysinit.target'
                  : !fs.existsSync('/bin/kill') ? 'no /bin/kill'
                  : false;

// The checks below need these tools; scripts/install-deps.sh installs them. Missing ones fail
// here (and in the checks that use them), never pass by being left out.
test('the tools the deploy checks need are installed', () => {
  assert.equal(systemdMissing, false, systemdMissing);
  assert.equal(yamlMissing, false, yamlMissing);
  for (const tool of ['shellcheck', 'apt-cache', 'wget', 'ldd', 'readelf', 'dpkg']) {
    assert.ok(have(tool), `${tool} is not installed`);
  }
});

// ---------------------------------------------------------------------------------------------

const EXAMPLES = ['vm-daemon', 'per-app', 'sidecar', 'dev'];
const examples = Object.fromEntries(EXAMPLES.map((n) => [
  n, JSON.parse(fs.readFileSync(path.join(examplesDir, `${n}.json`), 'utf8')),
]));
const units = {
  daemon: parseUnit(fs.readFileSync(path.join(unitDir, 'miproxy.service'), 'utf8')),
  template: parseUnit(fs.readFileSync(path.join(unitDir, 'miproxy@.service'), 'utf8')),
};

describe('example configs', () => {
  for (const name of EXAMPLES) {
    test(`${name}.json uses only contract keys and consistent references`, () => {
      assert.deepEqual(contractViolations(examples[name]), []);
    });
    test(`${name}.json is accepted by miproxy check`, (t) => {
      assertMiproxyAccepts(t, path.join(examplesDir, `${name}.json`));
    });
  }

  test('the contract checker itself rejects what the contract forbids', () => {
    const bad = structuredClone(examples['vm-daemon']);
    bad.listeners.push({ address: '0.0.0.0:8081' });
    bad.admin.address = '0.0.0.0:9464';
    bad.routes[0].upstrem = bad.routes[0].upstream;
    bad.identities.host.secret = 'inline';
    bad.routes.push({ ...bad.routes[1], upstream: 'https://{host}' });
    const errors = contractViolations(bad).join('\n');
    assert.match(errors, /listeners\[2\]\.address: not loopback/);
    assert.match(errors, /admin\.address: not loopback/);
    assert.match(errors, /routes\[0\]\.upstrem: not a key/);
    assert.match(errors, /identities\.host\.secret: not a key/);
    assert.match(errors, /routes\[3\]\.name: duplicate/);
    assert.match(errors, /routes\[3\]\.upstream: \{host\} needs a wildcard/);
  });

  test('vm-daemon: loopback TCP plus a Unix socket restricted by allowed_uids, IMDS identities,'
       + ' storage and Key Vault routes', () => {
    const c = examples['vm-daemon'];
    const tcp = c.listeners.filter((l) => 'address' in l);
    const unix = c.listeners.filter((l) => 'unix' in l);
    assert.ok(tcp.length >= 1 && tcp.every((l) => isLoopbackAddress(l.address)));
    assert.equal(unix.length, 1);
    assert.equal(path.dirname(unix[0].unix), '/run/miproxy', 'inside miproxy.service\'s '
                 + 'RuntimeDirectory');
    assert.ok(unix[0].allowed_uids.length > 0);
    assert.ok(!/[0-7][0-7][1-7]$/.test(unix[0].mode), 'no access for "other" on the socket');
    assert.ok(Object.values(c.identities).every((i) => i.type === 'managed_identity'));
    assert.ok(c.routes.some((r) => r.scope === 'https://storage.azure.com/.default'));
    assert.ok(c.routes.some((r) => /\.vault\.azure\.net$/.test(r.upstream)));
  });

  test('per-app: one Unix socket in the template unit\'s runtime directory, one identity', () => {
    const c = examples['per-app'];
    assert.equal(c.listeners.length, 1);
    const runtime = unitValue(units.template, 'RuntimeDirectory');
    assert.equal(runtime, 'miproxy/%i');
    assert.match(c.listeners[0].unix, /^\/run\/miproxy\/[a-z0-9-]+\/proxy\.sock$/);
    assert.ok(c.listeners[0].allowed_uids.length > 0);
    assert.equal(Object.keys(c.identities).length, 1);
    assert.notEqual(adminPort(c), adminPort(examples['vm-daemon']),
                    'per-app instances need their own admin port');
  });

  test('sidecar uses workload identity, dev uses the Azure CLI', () => {
    assert.deepEqual(Object.values(examples.sidecar.identities).map((i) => i.type),
                     ['workload_identity']);
    assert.deepEqual(Object.values(examples.dev.identities).map((i) => i.type), ['azure_cli']);
  });
});

describe('systemd units', () => {
  const hardening = {
    NoNewPrivileges: 'yes', ProtectSystem: 'strict', ProtectHome: 'yes', PrivateTmp: 'yes',
    PrivateDevices: 'yes', ProtectKernelTunables: 'yes', ProtectKernelModules: 'yes',
    ProtectKernelLogs: 'yes', ProtectControlGroups: 'yes', ProtectClock: 'yes',
    ProtectHostname: 'yes', RestrictAddressFamilies: 'AF_INET AF_INET6 AF_UNIX',
    RestrictNamespaces: 'yes', RestrictRealtime: 'yes', RestrictSUIDSGID: 'yes',
    LockPersonality: 'yes', MemoryDenyWriteExecute: 'yes', SystemCallArchitectures: 'native',
    CapabilityBoundingSet: '', AmbientCapabilities: '', User: 'miproxy', LimitCORE: '0',
    KillSignal: 'SIGTERM', Restart: 'on-failure', UMask: '0077',
  };

  for (const [kind, unit] of Object.entries(units)) {
    test(`${kind} unit: sandbox, user, no core dumps, reload and stop semantics`, () => {
      for (const [key, want] of Object.entries(hardening)) {
        assert.equal(unitValue(unit, key), want, `${key}=`);
      }
      assert.equal(unit.Service.DynamicUser, undefined);
      // A user namespace would hide the real peer uid of Unix-socket clients.
      assert.equal(unit.Service.PrivateUsers, undefined);
      assert.ok(unit.Service.SystemCallFilter.includes('@system-service'));
      // Readiness is READY=1 from miproxy itself; reload needs no /bin/kill (issue 12).
      assert.equal(unitValue(unit, 'Type'), 'notify');
      assert.equal(unitValue(unit, 'NotifyAccess'), 'main');
      assert.match(unitValue(unit, 'ExecStart'), /^\/usr\/local\/bin\/miproxy run --config /);
      // The drain must finish before systemd escalates to SIGKILL.
      const stop = secondsOf(unitValue(unit, 'TimeoutStopSec'));
      for (const name of ['vm-daemon', 'per-app', 'dev']) {
        assert.ok(stop > (examples[name].shutdown_grace ?? 30),
                  `TimeoutStopSec ${stop} > ${name}.shutdown_grace`);
      }
      assert.ok(unit.Service.ReadOnlyPaths.includes('/etc/miproxy'));
      assert.equal(unitValue(unit, 'ConfigurationDirectory'), 'miproxy');
      // Azure Arc: documented, but not on by default (the group exists only on Arc servers).
      assert.equal(unit.Service.SupplementaryGroups, undefined);
    });
  }

  test('the template reads /etc/miproxy/%i.json and the daemon /etc/miproxy/config.json', () => {
    assert.match(unitValue(units.template, 'ExecStart'), /--config \/etc\/miproxy\/%i\.json$/);
    assert.match(unitValue(units.daemon, 'ExecStart'), /--config \/etc\/miproxy\/config\.json$/);
    assert.equal(unitValue(units.daemon, 'RuntimeDirectory'), 'miproxy');
    for (const unit of Object.values(units)) {
      const config = /--config (\S+)$/.exec(unitValue(unit, 'ExecStart'))[1];
      assert.deepEqual(unit.Service.ExecStartPre, [`/usr/local/bin/miproxy check --config ${config}`]);
      assert.deepEqual(unit.Service.ExecReload,
                       [`/usr/local/bin/miproxy reload --pid $MAINPID --config ${config}`]);
    }
    const text = fs.readFileSync(path.join(unitDir, 'miproxy.service'), 'utf8');
    assert.match(text, /^#SupplementaryGroups=himds$/m, 'the Arc hint is in the unit');
  });

  describe('systemd-analyze', () => {
    let root;
    before(() => {
      root = makeVerifyRoot('verify-root');
      const binDir = path.join(root, 'usr', 'local', 'bin');
      fs.mkdirSync(binDir, { recursive: true });
      fs.copyFileSync(miproxyExecutable(), path.join(binDir, 'miproxy'));
      fs.chmodSync(path.join(binDir, 'miproxy'), 0o755);
      for (const f of ['miproxy.service', 'miproxy@.service']) {
        fs.copyFileSync(path.join(unitDir, f), path.join(root, 'etc', 'systemd', 'system', f));
      }
    });

    for (const unitName of ['miproxy.service', 'miproxy@orders.service']) {
      test(`verify ${unitName}`, () => {
        const r = verifyUnit(root, unitName);
        assert.equal(r.status, 0, r.output);
        assert.deepEqual(r.complaints, []);
      });

      test(`security exposure of ${unitName} stays at or below 2.0`, () => {
        const r = run('systemd-analyze', ['security', '--offline=true', '--threshold=20',
                                          `--root=${root}`, unitName]);
        assert.equal(r.status, 0, `${r.stdout}${r.stderr}`.split('\n').slice(-3).join('\n'));
      });
    }

    test('the verify harness reports a broken unit (control)', () => {
      const broken = fs.readFileSync(path.join(unitDir, 'miproxy.service'), 'utf8')
        .replace('ProtectClock=yes', 'ProtectClok=yes');
      fs.writeFileSync(path.join(root, 'etc', 'systemd', 'system', 'miproxy-broken.service'),
                       broken);
      const r = verifyUnit(root, 'miproxy-broken.service');
      assert.ok(r.complaints.some((l) => /ProtectClok/.test(l)), r.output);
    });
  });
});

describe('install.sh', () => {
  const install = path.join(deployDir, 'install.sh');
  // Commands that must not run in a staged install: record any call.
  const fakeBin = path.join(scratch, 'fake-bin');
  const calls = path.join(scratch, 'calls.log');
  before(() => {
    fs.mkdirSync(fakeBin, { recursive: true });
    for (const cmd of ['systemctl', 'useradd', 'groupadd', 'chown']) {
      fs.writeFileSync(path.join(fakeBin, cmd), `#!/bin/sh\necho "${cmd} $*" >> '${calls}'\n`,
                       { mode: 0o755 });
    }
  });

  function stage(destdir, ...args) {
    return run('sh', [install, '--binary', miproxyExecutable(), ...args], {
      env: { ...process.env, DESTDIR: destdir, PATH: `${fakeBin}:${process.env.PATH}` },
    });
  }

  function modeOf(p) {
    return (fs.statSync(p).mode & 0o7777).toString(8).padStart(4, '0');
  }

  test('DESTDIR stages the binary, config, examples and units with their modes', () => {
    const dest = path.join(scratch, 'stage-default');
    fs.rmSync(calls, { force: true });
    const r = stage(dest);
    assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
    const expected = {
      'usr/local/bin/miproxy': '0755',
      'etc/miproxy': '0750',
      'etc/miproxy/config.json': '0640',
      'etc/systemd/system/miproxy.service': '0644',
      'etc/systemd/system/miproxy@.service': '0644',
    };
    for (const n of EXAMPLES) {
      expected[`usr/local/share/miproxy/examples/${n}.json`] = '0644';
    }
    for (const [rel, mode] of Object.entries(expected)) {
      assert.equal(modeOf(path.join(dest, rel)), mode, rel);
    }
    assert.deepEqual(fs.readFileSync(path.join(dest, 'usr/local/bin/miproxy')),
                     fs.readFileSync(miproxyExecutable()));
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(dest, 'etc/miproxy/config.json'))),
                     examples['vm-daemon']);
    assert.equal(fs.readFileSync(path.join(dest, 'etc/systemd/system/miproxy.service'), 'utf8'),
                 fs.readFileSync(path.join(unitDir, 'miproxy.service'), 'utf8'));
    assert.ok(!fs.existsSync(path.join(dest, 'etc/systemd/system/miproxy.service.d')));
    // No user created, no chown, no systemctl daemon-reload in a staged install.
    assert.equal(fs.existsSync(calls) ? fs.readFileSync(calls, 'utf8') : '', '');
  });

  test('a second run keeps an edited config', () => {
    const dest = path.join(scratch, 'stage-rerun');
    assert.equal(stage(dest).status, 0);
    const config = path.join(dest, 'etc/miproxy/config.json');
    fs.writeFileSync(config, '{"edited": true}\n');
    const r = stage(dest, '--config', 'dev');
    assert.equal(r.status, 0, r.stderr);
    assert.equal(fs.readFileSync(config, 'utf8'), '{"edited": true}\n');
    assert.match(r.stdout, /kept the existing \/etc\/miproxy\/config\.json/);
  });

  test('--config picks the example, --prefix moves the binary and rewrites the units', () => {
    const dest = path.join(scratch, 'stage-prefix');
    const r = stage(dest, '--prefix', '/opt/miproxy', '--config', 'dev');
    assert.equal(r.status, 0, r.stderr);
    assert.ok(fs.existsSync(path.join(dest, 'opt/miproxy/bin/miproxy')));
    assert.ok(!fs.existsSync(path.join(dest, 'usr/local/bin/miproxy')));
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(dest, 'etc/miproxy/config.json'))),
                     examples.dev);
    for (const f of ['miproxy.service', 'miproxy@.service']) {
      const unit = parseUnit(fs.readFileSync(path.join(dest, 'etc/systemd/system', f), 'utf8'));
      for (const key of ['ExecStart', 'ExecStartPre']) {
        assert.match(unitValue(unit, key), /^\/opt\/miproxy\/bin\/miproxy /, `${f} ${key}`);
      }
      assert.ok(!unit.Service.ExecReload.join(' ').includes('/usr/local/bin'));
    }
  });

  test('--arc adds group himds through a drop-in for both units', () => {
    const dest = path.join(scratch, 'stage-arc');
    const r = stage(dest, '--arc');
    assert.equal(r.status, 0, r.stderr);
    for (const f of ['miproxy.service', 'miproxy@.service']) {
      const dropIn = path.join(dest, 'etc/systemd/system', `${f}.d`, 'arc.conf');
      assert.deepEqual(parseUnit(fs.readFileSync(dropIn, 'utf8')).Service.SupplementaryGroups,
                       ['himds']);
    }
  });

  test('staged units (with the Arc drop-in and a moved prefix) pass systemd-analyze verify',
       () => {
    const dest = makeVerifyRoot('stage-verify');
    const r = stage(dest, '--arc', '--prefix', '/opt/miproxy');
    assert.equal(r.status, 0, r.stderr);
    for (const unitName of ['miproxy.service', 'miproxy@orders.service']) {
      const v = verifyUnit(dest, unitName);
      assert.equal(v.status, 0, v.output);
      assert.deepEqual(v.complaints, []);
    }
  });

  test('refuses a missing binary and an unknown example', () => {
    const dest = path.join(scratch, 'stage-refused');
    let r = run('sh', [install, '--binary', path.join(scratch, 'nope')],
                { env: { ...process.env, DESTDIR: dest } });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /no executable miproxy/);
    r = stage(dest, '--config', 'nope');
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /no example config named 'nope'/);
    assert.ok(!fs.existsSync(dest), 'nothing staged after a refusal');
  });

  test('install.sh passes shellcheck', () => {
    const r = run('shellcheck', [install]);
    assert.equal(r.status, 0, r.stdout);
  });
});

describe('container image recipe', () => {
  const text = readText('deploy', 'container', 'Dockerfile');
  // Instructions with continuation lines joined and comments dropped.
  const instructions = [];
  {
    let pending = '';
    for (const raw of text.split('\n')) {
      if (/^\s*#/.test(raw) && pending === '') {
        continue;
      }
      const line = raw.replace(/\s+$/, '');
      if (line.endsWith('\\')) {
        pending += line.slice(0, -1) + ' ';
        continue;
      }
      const full = (pending + line).trim();
      pending = '';
      if (full !== '') {
        const m = /^(\w+)\s+(.*)$/.exec(full);
        instructions.push({ op: m[1].toUpperCase(), args: m[2] });
      }
    }
  }
  const stages = [];
  for (const ins of instructions) {
    if (ins.op === 'FROM') {
      stages.push({ from: ins.args, body: [] });
    } else if (stages.length > 0) {
      stages.at(-1).body.push(ins);
    }
  }
  const final = stages.at(-1);
  const finalOps = (op) => final.body.filter((i) => i.op === op);
  const aptPackages = (stage) => stage.body.filter((i) => i.op === 'RUN')
    .flatMap((i) => (/apt-get install (.*?)(?:&&|$)/.exec(i.args)?.[1] ?? '').split(/\s+/))
    .filter((w) => w !== '' && !w.startsWith('-'));

  test('multi-stage on pinned debian:12-slim, no latest tags', () => {
    assert.ok(stages.length >= 2, 'a build stage and a runtime stage');
    for (const s of stages) {
      const image = s.from.split(/\s+/)[0];
      assert.equal(image, 'debian:12-slim');
    }
    assert.doesNotMatch(text, /:latest\b/);
  });

  test('no ADD (so no remote URLs); the binary comes from the build stage', () => {
    assert.equal(instructions.filter((i) => i.op === 'ADD').length, 0);
    assert.ok(finalOps('COPY').some((i) => /--from=build\s+\S*miproxy\s+\/usr\/local\/bin\/miproxy$/
      .test(i.args)));
  });

  test('the build stage installs the build dependencies and builds only the daemon', () => {
    const build = stages[0];
    const pkgs = aptPackages(build);
    for (const p of ['libuv1-dev', 'node-llhttp', 'libssl-dev', 'nlohmann-json3-dev',
                     'prometheus-cpp-dev', 'cmake', 'g++', 'pkg-config']) {
      assert.ok(pkgs.includes(p), p);
    }
    const runs = build.body.filter((i) => i.op === 'RUN').map((i) => i.args).join('\n');
    assert.match(runs, /-DBUILD_TESTING=OFF/);
    assert.match(runs, /--target miproxy/);
  });

  const runtimePackages = aptPackages(final);
  test('the runtime stage installs only the shared libraries and CA certificates', () => {
    assert.deepEqual([...runtimePackages].sort(),
                     ['ca-certificates', 'libprometheus-cpp-core1.0', 'libssl3', 'libuv1']);
  });

  test('the package names exist in Debian', () => {
    const all = [...runtimePackages, ...aptPackages(stages[0])];
    // One call: "NAME:\n  Installed: ...\n  Candidate: VERSION|(none)" per known package.
    const out = run('apt-cache', ['policy', 'libc6', ...all]).stdout;
    const candidates = new Map([...out.matchAll(/^(\S+):\n\s+Installed: .*\n\s+Candidate: (\S+)/gm)]
      .map((x) => [x[1], x[2]]));
    const candidate = (p) => (candidates.get(p) ?? '(none)') !== '(none)';
    if (!candidate('libc6')) {
      assert.fail('apt lists are empty (run apt-get update)');
    }
    assert.deepEqual(all.filter((p) => !candidate(p)), []);
  });

  // Only the binary's direct needs (DT_NEEDED): the packages' own dependencies are apt's job.
  test('every library MIPROXY_BIN links comes from a runtime package or the base image', (t) => {
    const bin = process.env.MIPROXY_BIN;
    assert.ok(bin && fs.existsSync(bin), `MIPROXY_BIN (${bin}) is not a built binary`);
    for (const tool of ['ldd', 'readelf', 'dpkg']) assert.ok(have(tool), `${tool} is not installed`);
    const base = ['libc6', 'libgcc-s1', 'libstdc++6', 'zlib1g'];
    // A sanitizer build (./test.sh --debug) also links the sanitizer runtimes, which the image
    // never ships: leave those out and check the rest.
    const needed = [...run('readelf', ['-d', bin]).stdout.matchAll(/\(NEEDED\).*\[(.+)\]/g)]
      .map((x) => x[1]).filter((n) => !/^lib(asan|ubsan|tsan)\.so/.test(n));
    const resolved = new Map([...run('ldd', [bin]).stdout.matchAll(/^\s*(\S+) => (\/\S+)/gm)]
      .map((x) => [x[1], x[2]]));
    const libs = needed.map((n) => resolved.get(n) ?? `unresolved ${n}`);
    const owners = libs.map((lib) => {
      const candidates = [lib, fs.realpathSync(lib)];
      for (const c of [...candidates]) {
        candidates.push(c.replace(/^\/usr\/lib\//, '/lib/'), c.replace(/^\/lib\//, '/usr/lib/'));
      }
      for (const c of candidates) {
        const r = run('dpkg', ['-S', c]);
        if (r.status === 0) {
          return r.stdout.split(':')[0];
        }
      }
      return `unowned ${lib}`;
    });
    const missing = owners.filter((p) => !base.includes(p) && !runtimePackages.includes(p));
    assert.deepEqual(missing, [], `libraries: ${libs.join(', ')}`);
  });

  test('non-root, no EXPOSE, health check with miproxy wait, entrypoint and command', () => {
    const users = finalOps('USER');
    assert.ok(users.length >= 1);
    const uid = users.at(-1).args.split(':')[0];
    assert.match(uid, /^\d+$/, 'numeric uid so runAsNonRoot can check it');
    assert.notEqual(Number(uid), 0);
    assert.equal(instructions.filter((i) => i.op === 'EXPOSE').length, 0);
    const health = finalOps('HEALTHCHECK');
    assert.equal(health.length, 1);
    const cmd = JSON.parse(/CMD\s+(\[.*\])$/.exec(health[0].args)[1]);
    assert.deepEqual(cmd, ['/usr/local/bin/miproxy', 'wait', '--admin', '127.0.0.1:9464',
                           '--timeout', '2']);
    assert.deepEqual(JSON.parse(finalOps('ENTRYPOINT').at(-1).args), ['/usr/local/bin/miproxy']);
    assert.deepEqual(JSON.parse(finalOps('CMD').at(-1).args),
                     ['run', '--config', '/etc/miproxy/config.json']);
    // Nothing in the runtime stage writes outside the package manager's own RUN.
    assert.equal(finalOps('VOLUME').length, 0);
  });
});

// The image's HEALTHCHECK, the Job's readiness probe and docs/deploy-vm.md rely on
// `miproxy wait --admin ADDR --timeout S`: exit 0 once /readyz answers 200, exit 1 otherwise.
describe('miproxy wait, as the health checks use it', () => {
  async function fakeAdmin(status) {
    const seen = [];
    const server = http.createServer((req, res) => {
      seen.push(`${req.method} ${req.url}`);
      res.writeHead(req.url === '/readyz' ? status : 404, { 'content-type': 'application/json' })
        .end('{}');
    });
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    return { server, seen, address: `127.0.0.1:${server.address().port}` };
  }

  function waitFor(bin, address) {
    const child = spawn(bin, ['wait', '--admin', address, '--timeout', '2'], { stdio: 'ignore' });
    return new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  }

  let bin = null;
  let notWaiting = false;
  before(async () => {
    bin = process.env.MIPROXY_BIN;
    if (!bin || !fs.existsSync(bin)) {
      notWaiting = 'MIPROXY_BIN is not set to a built binary';
      return;
    }
    // Nothing listens on a port that was just released: a binary that implements `wait`
    // must report "not ready".
    const { server, address } = await fakeAdmin(200);
    await new Promise((resolve) => server.close(resolve));
    if ((await waitFor(bin, address)) === 0) {
      notWaiting = `${bin} does not implement "wait" yet (it reported a closed port as ready)`;
    }
  });

  for (const [status, want] of [[200, 0], [503, 1]]) {
    test(`exits ${want} when /readyz answers ${status}`, async (t) => {
      assert.equal(notWaiting, false, notWaiting);
      const admin = await fakeAdmin(status);
      try {
        assert.equal(await waitFor(bin, admin.address), want);
        assert.ok(admin.seen.includes('GET /readyz'), admin.seen.join(', '));
      } finally {
        admin.server.close();
      }
    });
  }
});

describe('Kubernetes manifests', () => {
  function containerSecurity(c, pod) {
    const sc = c.securityContext ?? {};
    const psc = pod.securityContext ?? {};
    assert.equal(sc.runAsNonRoot ?? psc.runAsNonRoot, true, `${c.name}: runAsNonRoot`);
    assert.equal(sc.readOnlyRootFilesystem, true, `${c.name}: readOnlyRootFilesystem`);
    assert.equal(sc.allowPrivilegeEscalation, false, `${c.name}: allowPrivilegeEscalation`);
    assert.ok(sc.capabilities?.drop?.includes('ALL'), `${c.name}: drop ALL`);
    assert.equal((sc.seccompProfile ?? psc.seccompProfile)?.type, 'RuntimeDefault');
  }

  function configFromMount(manifest, pod, container) {
    const configPath = container.args[container.args.indexOf('--config') + 1];
    const mount = container.volumeMounts.find((m) => configPath.startsWith(`${m.mountPath}/`));
    assert.ok(mount, `${configPath} is on a volume mount`);
    assert.equal(mount.readOnly, true);
    const volume = pod.volumes.find((v) => v.name === mount.name);
    const cm = manifest.docs.find((d) => d.kind === 'ConfigMap' &&
                                         d.metadata.name === volume.configMap?.name);
    assert.ok(cm, `volume ${mount.name} is the ConfigMap in the same file`);
    const key = path.relative(mount.mountPath, configPath);
    return JSON.parse(cm.data[key]);
  }

  function workloadIdentity(manifest, pod, podMeta) {
    const sa = manifest.byKind.ServiceAccount;
    assert.equal(pod.serviceAccountName, sa.metadata.name);
    assert.match(sa.metadata.annotations['azure.workload.identity/client-id'], GUID);
    // A string, not a YAML boolean: the webhook selects on the label value "true".
    assert.equal(podMeta.labels['azure.workload.identity/use'], 'true');
  }

  test('every image names a version tag, never latest', () => {
    for (const file of ['sidecar.yaml', 'job-sidecar.yaml']) {
      for (const d of loadManifest(file).docs) {
        const spec = d.spec?.template?.spec;
        for (const c of [...(spec?.initContainers ?? []), ...(spec?.containers ?? [])]) {
          assert.match(c.image, /:[\w][\w.-]*$/, `${file} ${c.name}: a tag`);
          assert.doesNotMatch(c.image, /:latest$/, `${file} ${c.name}`);
        }
      }
    }
  });

  // The image's numeric USER, so that the pod runs miproxy as the user the image was made for.
  const imageUid = Number(/^USER\s+(\d+)/m.exec(readText('deploy', 'container', 'Dockerfile'))[1]);

  function miproxyImage(c) {
    assert.match(c.image, /miproxy:[\w.-]+$/);
    assert.doesNotMatch(c.image, /:latest$/);
    assert.equal(c.securityContext.runAsUser, imageUid);
  }

  describe('sidecar.yaml', () => {
    let m;
    let pod;
    let sidecar;
    let config;
    before(() => {
      m = loadManifest('sidecar.yaml');
      pod = m.byKind.Deployment.spec.template.spec;
      sidecar = (pod.initContainers ?? []).find((c) => /miproxy/.test(c.image));
      config = sidecar && configFromMount(m, pod, sidecar);
    });

    test('a ServiceAccount, a ConfigMap and a Deployment', (t) => {
      assert.deepEqual(m.docs.map((d) => d.kind), ['ServiceAccount', 'ConfigMap', 'Deployment']);
    });

    test('miproxy is a native sidecar running "miproxy run --config"', (t) => {
      assert.ok(sidecar, 'an initContainer with the miproxy image');
      assert.equal(sidecar.restartPolicy, 'Always');
      miproxyImage(sidecar);
      assert.equal(sidecar.args[0], 'run');
      assert.ok(!pod.containers.some((c) => /miproxy/.test(c.image)));
    });

    test('workload identity: annotated ServiceAccount, pod label, only miproxy gets the token',
         (t) => {
      const podMeta = m.byKind.Deployment.spec.template.metadata;
      workloadIdentity(m, pod, podMeta);
      const skipped = (podMeta.annotations?.['azure.workload.identity/skip-containers'] ?? '')
        .split(';').filter(Boolean);
      assert.ok(!skipped.includes(sidecar.name));
      assert.deepEqual(skipped, pod.containers.map((c) => c.name));
    });

    test('the ConfigMap config follows the contract and equals examples/sidecar.json',
         (t) => {
      assert.deepEqual(contractViolations(config), []);
      assert.deepEqual(config, examples.sidecar);
      assert.ok(Object.values(config.identities).every((i) => i.type === 'workload_identity'));
      assert.ok(config.routes.some((r) => /\.blob\.core\.windows\.net$/.test(r.upstream)));
    });

    test('probes: startup and readiness on /readyz, liveness on /healthz, at the admin port',
         (t) => {
      const port = (p) => (typeof p === 'number' ? p
        : sidecar.ports.find((x) => x.name === p).containerPort);
      const probes = {
        startupProbe: '/readyz', readinessProbe: '/readyz', livenessProbe: '/healthz',
      };
      for (const [probe, wantPath] of Object.entries(probes)) {
        const get = sidecar[probe]?.httpGet;
        assert.ok(get, `${probe}.httpGet`);
        assert.equal(get.path, wantPath, probe);
        assert.equal(port(get.port), adminPort(config), `${probe} port`);
      }
      // The kubelet probes the pod IP, so the admin listener must not be loopback-only.
      assert.ok(!isLoopbackAddress(config.admin.address));
      assert.notEqual(config.admin.allow_quit, true, 'no /quitquitquit on a pod-IP listener');
    });

    test('the app reaches miproxy on loopback; the proxy listener is loopback-only',
         (t) => {
      const app = pod.containers[0];
      const proxy = app.env.find((e) => e.name === 'HTTP_PROXY').value;
      assert.ok(config.listeners.every((l) => 'address' in l && isLoopbackAddress(l.address)));
      assert.ok(config.listeners.some((l) => proxy === `http://${l.address}`), proxy);
    });

    test('security contexts, resources, graceful termination', (t) => {
      for (const c of [sidecar, ...pod.containers]) {
        containerSecurity(c, pod);
        assert.ok(c.resources?.requests?.memory && c.resources?.limits?.memory, c.name);
      }
      assert.ok(pod.terminationGracePeriodSeconds > config.shutdown_grace);
      assert.equal(pod.automountServiceAccountToken, false);
    });

    test('the ConfigMap config is accepted by miproxy check', (t) => {
      const file = path.join(scratch, 'sidecar-configmap.json');
      fs.writeFileSync(file, JSON.stringify(config));
      assertMiproxyAccepts(t, file);
    });
  });

  describe('job-sidecar.yaml', () => {
    let m;
    let pod;
    let proxy;
    let main;
    let config;
    before(() => {
      m = loadManifest('job-sidecar.yaml');
      pod = m.byKind.Job.spec.template.spec;
      proxy = pod.containers.find((c) => /miproxy/.test(c.image));
      main = pod.containers.find((c) => c !== proxy);
      config = proxy && configFromMount(m, pod, proxy);
    });

    test('a Job with miproxy beside the main container, allow_quit on a loopback admin',
         (t) => {
      assert.deepEqual(m.docs.map((d) => d.kind), ['ServiceAccount', 'ConfigMap', 'Job']);
      assert.ok(proxy && main);
      miproxyImage(proxy);
      assert.equal(pod.restartPolicy, 'Never');
      assert.deepEqual(contractViolations(config), []);
      assert.equal(config.admin.allow_quit, true);
      assert.ok(isLoopbackAddress(config.admin.address), '/quitquitquit only inside the pod');
      workloadIdentity(m, pod, m.byKind.Job.spec.template.metadata);
      for (const c of pod.containers) {
        containerSecurity(c, pod);
      }
      assert.ok(pod.terminationGracePeriodSeconds > config.shutdown_grace);
      const probe = proxy.readinessProbe.exec.command;
      assert.deepEqual(probe.slice(0, 4), ['/usr/local/bin/miproxy', 'wait', '--admin',
                                           config.admin.address]);
    });

    test('the main container\'s script passes shellcheck as POSIX sh', () => {
      const r = run('shellcheck', ['-s', 'sh', '-'], { input: main.args[0] });
      assert.equal(r.status, 0, r.stdout);
    });

    test('the Job config is accepted by miproxy check', (t) => {
      const file = path.join(scratch, 'job-configmap.json');
      fs.writeFileSync(file, JSON.stringify(config));
      assertMiproxyAccepts(t, file);
    });

    // Runs the main container's script against a fake admin listener: it waits for /readyz,
    // runs the work, and POSTs /quitquitquit whether the work succeeded or failed, keeping the
    // work's exit status (the Job's verdict).
    for (const workStatus of [0, 3]) {
      test(`the main container ends miproxy after work that exits ${workStatus}`, async (t) => {
        assert.ok(have('wget'), 'wget is not installed (scripts/install-deps.sh installs it)');
        const seen = [];
        let readyAsked = 0;
        const server = http.createServer((req, res) => {
          seen.push(`${req.method} ${req.url}`);
          if (req.url === '/readyz') {
            readyAsked += 1;
            res.writeHead(readyAsked === 1 ? 503 : 200).end();
          } else {
            res.writeHead(req.url === '/quitquitquit' && req.method === 'POST' ? 200 : 404).end();
          }
        });
        await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
        try {
          const fakeAdmin = `127.0.0.1:${server.address().port}`;
          assert.deepEqual(main.command, ['/bin/sh', '-c']);
          const original = main.args[0];
          assert.ok(original.includes(config.admin.address));
          const workLine = /^\/app\/export .*$/m;
          assert.match(original, workLine);
          const script = original.replaceAll(config.admin.address, fakeAdmin)
            .replace(workLine, `sh -c 'exit ${workStatus}'`);
          const child = spawn('sh', ['-c', script], { stdio: 'ignore' });
          const status = await new Promise((resolve) => child.on('exit', resolve));
          assert.equal(status, workStatus);
          assert.deepEqual(seen, ['GET /readyz', 'GET /readyz', 'POST /quitquitquit']);
        } finally {
          server.close();
        }
      });
    }
  });
});

describe('docs', () => {
  const docs = ['deploy-vm.md', 'deploy-container.md', 'deploy-kubernetes.md', 'security.md'];
  for (const doc of docs) {
    test(`${doc} exists and every deploy/ path it names exists`, () => {
      const text = readText('docs', doc);
      const named = [...text.matchAll(/\bdeploy\/[\w@.\/-]*[\w@]/g)].map((x) => x[0]);
      const missing = [...new Set(named)].filter((p) => !fs.existsSync(path.join(repo, p)));
      assert.deepEqual(missing, []);
    });
  }
});
