// Test PKI through the openssl CLI: a throw-away CA and leaf certificates issued by it.
// Everything is written under a caller-owned directory (a temp dir in tests, .demo/ for the demo);
// nothing here is ever committed.
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

function openssl(args, cwd) {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

let serial = 0;

// Creates a self-signed CA (EC P-256) in `dir`, valid for `days`.
// Returns { dir, certPath, keyPath, cert } where cert is the PEM text.
export function makeCA(dir, { cn = 'miproxy test CA', days = 2 } = {}) {
  mkdirSync(dir, { recursive: true });
  const keyPath = join(dir, 'ca.key');
  const certPath = join(dir, 'ca.pem');
  openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', keyPath]);
  openssl([
    'req', '-x509', '-new', '-key', keyPath, '-sha256', '-days', String(days), '-subj', `/CN=${cn}`,
    '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
    '-out', certPath,
  ]);
  chmodSync(keyPath, 0o600);
  return { dir, certPath, keyPath, cert: readFileSync(certPath, 'utf8') };
}

// Issues a server certificate signed by `ca` for the given DNS names and IP addresses.
// `name` picks the file stem (default: first DNS name or IP). Returns
// { certPath, keyPath, cert, key } (PEM text of the leaf certificate and its key).
export function issueCert(ca, { dns = [], ip = [], name, dir = ca.dir, days = 2 } = {}) {
  if (dns.length === 0 && ip.length === 0) {
    throw new Error('issueCert needs at least one dns name or ip address');
  }
  const stem = (name ?? dns[0] ?? ip[0]).replace(/[^A-Za-z0-9_.-]/g, '_');
  const keyPath = join(dir, `${stem}.key`);
  const csrPath = join(dir, `${stem}.csr`);
  const certPath = join(dir, `${stem}.pem`);
  const extPath = join(dir, `${stem}.ext`);
  const san = [...dns.map((d) => `DNS:${d}`), ...ip.map((i) => `IP:${i}`)].join(',');
  writeFileSync(extPath, [
    'basicConstraints=critical,CA:FALSE',
    'keyUsage=critical,digitalSignature,keyEncipherment',
    'extendedKeyUsage=serverAuth',
    `subjectAltName=${san}`,
    '',
  ].join('\n'));
  openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', keyPath]);
  openssl(['req', '-new', '-key', keyPath, '-subj', `/CN=${dns[0] ?? ip[0]}`, '-out', csrPath]);
  serial += 1;
  const serialHex = (Date.now().toString(16) + process.pid.toString(16) + serial.toString(16))
    .padStart(16, '0');
  openssl([
    'x509', '-req', '-in', csrPath, '-CA', ca.certPath, '-CAkey', ca.keyPath,
    '-set_serial', `0x${serialHex}`, '-days', String(days), '-sha256', '-extfile', extPath,
    '-out', certPath,
  ]);
  rmSync(csrPath);
  rmSync(extPath);
  chmodSync(keyPath, 0o600);
  return {
    certPath, keyPath, cert: readFileSync(certPath, 'utf8'), key: readFileSync(keyPath, 'utf8'),
  };
}
