// `audit.sinks` in the configuration: what is refused at load (plain http off loopback,
// credentials in a webhook URL, duplicate names, unknown keys), and the backoff's bounds.
import { describe, expect, it } from 'vitest';
import { backoffDelay, DEFAULT_TIMING } from '../../src/audit/sinks/index.js';
import { testConfig } from '../gateway/helpers.js';

const load = (sinks: unknown[]) =>
  testConfig({ dataDir: '/tmp/unused', issuerUrl: 'http://127.0.0.1:1', extra: { audit: { sinks } } });
const webhook = (url: string) => ({
  name: 'siem',
  kind: 'webhook',
  url,
  secret: { env: 'TEST_ADMIN_TOKEN' },
});

describe('audit.sinks configuration', () => {
  it('accepts the three kinds with their defaults', () => {
    const cfg = load([
      webhook('https://siem.example.com/ciport'),
      { name: 'logs', kind: 'syslog', address: 'logs.internal:6514', tls: {} },
      { name: 'local', kind: 'file', path: '/var/log/ciport/audit.jsonl' },
    ]);
    expect(cfg.audit.sinks.map((s) => [s.kind, s.timeout, s.batch])).toEqual([
      ['webhook', 10_000, 100],
      ['syslog', 10_000, 100],
      ['file', 10_000, 100],
    ]);
    expect(cfg.audit.sinks[1]).toMatchObject({ facility: 13, app_name: 'ciport' });
  });

  it.each([
    [[webhook('http://siem.example.com/x')], /plain http is only allowed on a loopback address/],
    [[webhook('https://user:pw@siem.example.com/x')], /credentials in the URL are not supported/],
    [[webhook('https://a.example'), webhook('https://b.example')], /duplicate name "siem"/],
    [[{ name: 'x', kind: 'syslog', address: 'no-port' }], /host:port/],
    [[{ name: 'x', kind: 'file', path: '/tmp/a', mode: 644 }], /unknown key "mode"/],
    [[{ name: 'x', kind: 'kafka' }], /.+/],
  ])('refuses %j', (sinks, message) => {
    expect(() => load(sinks)).toThrow(message);
  });
});

describe('backoffDelay', () => {
  it('doubles from the base to the cap, each delay 50–100 % of its step', () => {
    const timing = { ...DEFAULT_TIMING, backoffMs: 500, maxBackoffMs: 60_000 };
    const low = (n: number) => backoffDelay(n, timing, () => 0);
    const high = (n: number) => backoffDelay(n, timing, () => 1);
    expect([1, 2, 3, 4].map(high)).toEqual([500, 1000, 2000, 4000]);
    expect([1, 2, 3, 4].map(low)).toEqual([250, 500, 1000, 2000]);
    expect(high(50)).toBe(60_000);
    expect(low(10_000)).toBe(30_000);
  });
});
