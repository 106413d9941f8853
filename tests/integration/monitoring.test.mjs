// deploy/monitoring/ (docs/monitoring.md): the Prometheus alerting rules pass `promtool check
// rules` and their unit tests (`promtool test rules`, one case per alert), and every metric
// name and label the rules and the Grafana dashboard use is one a running miproxy exports on
// /metrics. promtool comes from Debian's prometheus package (scripts/install-deps.sh); when it
// is missing the tests fail saying so.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { requireBinary, startMiproxy, makeFixture, proxyConfig, httpRequest } from './lib/index.mjs';

const DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'deploy', 'monitoring');
const RULES = join(DIR, 'miproxy-alerts.yml');

function promtool(args) {
  const r = spawnSync('promtool', args, { cwd: DIR, encoding: 'utf8' });
  assert.ok(!r.error, `promtool: ${r.error?.message} (scripts/install-deps.sh installs Debian's prometheus package)`);
  return r;
}

// Metric names miproxy_* mentioned in |text|.
const names = (text) => new Set([...text.matchAll(/\b(miproxy_[a-z_]+)/g)].map((m) => m[1]));

let fx;
let exported;
before(async () => {
  requireBinary();
  fx = makeFixture('miproxy-monitoring-');
  const built = await proxyConfig({ caFile: fx.ca.certPath, tokenPath: fx.tokenPath,
    routes: [{ name: 'a', match: { host: 'a.test' }, upstream: 'https://127.0.0.1:1',
      identity: 'test', scope: 'https://storage.azure.com/.default' }] });
  const proxy = await startMiproxy({ config: built.config });
  try {
    // A request, so that the per-route families carry samples.
    await httpRequest({ port: built.port, path: '/', headers: { host: 'a.test' } });
    const r = await httpRequest({ port: built.adminPort, path: '/metrics' });
    assert.equal(r.status, 200);
    exported = r.body.toString();
  } finally {
    await proxy.stop();
  }
});
after(() => fx?.cleanup());

test('promtool check rules accepts the alerting rules', () => {
  const r = promtool(['check', 'rules', RULES]);
  assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
  assert.match(r.stdout, /SUCCESS: 8 rules found/);
});

test('promtool test rules: every alert has a firing unit test, and all pass', () => {
  const r = promtool(['test', 'rules', 'miproxy-alerts.test.yml']);
  assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
  const rules = readFileSync(RULES, 'utf8');
  const tests = readFileSync(join(DIR, 'miproxy-alerts.test.yml'), 'utf8');
  const alerts = [...rules.matchAll(/- alert: (\w+)/g)].map((m) => m[1]);
  assert.equal(alerts.length, 8);
  for (const a of alerts) {
    // A case that expects the alert to fire: its alertname followed by exp_alerts.
    assert.match(tests, new RegExp(`alertname: ${a}\\n\\s+exp_alerts:`), `no firing test for ${a}`);
  }
});

test('the rules and the dashboard use only metrics and labels miproxy exports', () => {
  const have = names(exported);
  for (const file of ['miproxy-alerts.yml', 'miproxy-dashboard.json']) {
    const used = names(readFileSync(join(DIR, file), 'utf8'));
    assert.ok(used.size > 0, file);
    for (const n of used) {
      const base = n.replace(/_(bucket|sum|count)$/, '');
      assert.ok(have.has(n) || have.has(base), `${file} uses ${n}, not in /metrics`);
    }
  }
  // The labels the rules select on.
  for (const [metric, label] of [['miproxy_requests_total', 'status_class'],
    ['miproxy_requests_total', 'route'], ['miproxy_token_acquisitions_total', 'result'],
    ['miproxy_token_acquisitions_total', 'identity'], ['miproxy_token_expiry_seconds', 'identity'],
    ['miproxy_config_reloads_total', 'result'], ['miproxy_limit_hits_total', 'limit']]) {
    assert.match(exported, new RegExp(`^${metric}\\{[^}]*\\b${label}="`, 'm'), `${metric}{${label}}`);
  }
  JSON.parse(readFileSync(join(DIR, 'miproxy-dashboard.json'), 'utf8'));
});
