// The client's rate-limit retry (issue 10, item 12): a 429 on session creation is retried after
// the gateway's Retry-After, one stderr line per wait, within a bounded total wait
// (CIPORT_RATE_LIMIT_WAIT, default 60 s); past the bound the refusal stands and `ciport exec`
// exits 5. Against the fake gateway (real TLS + HTTP/2) in process, and once as a real process.
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Port, stderrLog } from '../../src/client/port.js';
import { rateLimitWaitMs, retryAfterMs } from '../../src/client/rate-limit-retry.js';
import { CiportError } from '../../src/errors/index.js';
import { baseEnv, ensureBuilt, runCli } from '../fixtures/cli.js';
import { FakeGateway } from '../fixtures/fake-gateway.js';

class Capture extends Writable {
  text = '';
  override _write(chunk: Buffer, _enc: string, cb: () => void): void {
    this.text += chunk.toString();
    cb();
  }
}

const rateLimited: Record<string, { retryAfter: number | null; times: number }> = {};
let gw: FakeGateway;
let built: Promise<void>;

beforeAll(async () => {
  built = ensureBuilt();
  gw = await FakeGateway.start({
    targets: [{ name: 'echo', protocol: 'tcp', address: '127.0.0.1:1' }],
    tokens: { good: { allow: ['echo'] } },
    rateLimited,
    heartbeatIntervalMs: 1000,
  });
});
afterAll(async () => {
  await gw?.close();
});

async function open(env: Record<string, string> = {}) {
  const log = new Capture();
  const started = Date.now();
  try {
    const port = await Port.open({
      env: { CIPORT_ID_TOKEN: 'good', CIPORT_CA_FILE: gw.caFile, ...env },
      gateway: gw.url,
      targets: [{ name: 'echo', port: 0 }],
      log: stderrLog(log, false),
    });
    await port.close();
    return { ok: true as const, log: log.text, ms: Date.now() - started };
  } catch (err) {
    return { ok: false as const, err: err as CiportError, log: log.text, ms: Date.now() - started };
  }
}

describe('rate-limit retry', () => {
  it('waits Retry-After and tries again, one line per wait', async () => {
    rateLimited.good = { retryAfter: 1, times: 2 };
    const result = await open();
    expect(result.ok).toBe(true);
    expect(result.log.match(/^ciport: gateway rate limit, retrying in 1s$/gm)).toHaveLength(2);
    expect(result.ms).toBeGreaterThanOrEqual(2000);
    expect(result.ms).toBeLessThan(6000);
  });

  it('gives up once the next wait would pass CIPORT_RATE_LIMIT_WAIT: CIPORT_E_RATE_LIMITED, exit 5', async () => {
    rateLimited.good = { retryAfter: 1, times: 100 };
    const result = await open({ CIPORT_RATE_LIMIT_WAIT: '2500ms' });
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.err).toBeInstanceOf(CiportError);
    expect(result.err.code).toBe('CIPORT_E_RATE_LIMITED');
    expect(result.err.exitCode).toBe(5);
    // Two waits of 1-1.1 s fit in 2.5 s, a third does not.
    expect(result.log.match(/retrying in/g)).toHaveLength(2);
    expect(result.ms).toBeLessThan(4000);
  });

  it('does not wait at all when Retry-After is past the bound, or retrying is off', async () => {
    rateLimited.good = { retryAfter: 120, times: 1 };
    const far = await open();
    expect(far.ok).toBe(false);
    expect(far.log).toBe('');
    expect(far.ms).toBeLessThan(2000);
    rateLimited.good = { retryAfter: 1, times: 1 };
    const off = await open({ CIPORT_RATE_LIMIT_WAIT: '0' });
    expect(off.ok).toBe(false);
    expect(off.log).toBe('');
  });

  it('backs off 1 s, 2 s… when a 429 carries no Retry-After', async () => {
    rateLimited.good = { retryAfter: null, times: 2 };
    const result = await open();
    expect(result.ok).toBe(true);
    expect(result.log).toMatch(/retrying in 1s\n.*retrying in 2s\n/);
  });

  it('ciport exec exits 5 after the bound, as a real process', async () => {
    await built;
    rateLimited.good = { retryAfter: 1, times: 100 };
    const res = await runCli(['exec', '--gateway', gw.url, 'echo', '--', 'true'], {
      env: baseEnv({ CIPORT_ID_TOKEN: 'good', CIPORT_CA_FILE: gw.caFile, CIPORT_RATE_LIMIT_WAIT: '1500ms' }),
    });
    expect(res.code).toBe(5);
    expect(res.stderr).toMatch(/^ciport: gateway rate limit, retrying in 1s$/m);
    expect(res.stderr).toContain('CIPORT_E_RATE_LIMITED');
  });

  it('reads CIPORT_RATE_LIMIT_WAIT and Retry-After forms', () => {
    expect(rateLimitWaitMs({})).toBe(60_000);
    expect(rateLimitWaitMs({ CIPORT_RATE_LIMIT_WAIT: '2m' })).toBe(120_000);
    expect(rateLimitWaitMs({ CIPORT_RATE_LIMIT_WAIT: '15' })).toBe(15_000);
    expect(() => rateLimitWaitMs({ CIPORT_RATE_LIMIT_WAIT: 'soon' })).toThrow(/CIPORT_RATE_LIMIT_WAIT/);
    expect(retryAfterMs('3')).toBe(3000);
    expect(retryAfterMs(new Date(10_000).toUTCString(), 4_000)).toBe(6000);
    expect(retryAfterMs(undefined)).toBeUndefined();
  });
});
