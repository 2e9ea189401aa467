// What the sink tests share: a gateway (test/gateway/helpers.ts) with one audit sink and fast
// delivery timing, torn down after each test, and a way to make audit events (sessions opened).
import { afterEach } from 'vitest';
import type { StartGatewayOptions } from '../../src/gateway/server.js';
import { type Harness, openSession, startHarness } from '../gateway/helpers.js';

/** Poll every 50 ms, retry after 50 ms doubling to 400 ms: outages end in seconds, not minutes. */
export const FAST: StartGatewayOptions = {
  auditSinkTiming: { pollMs: 50, backoffMs: 50, maxBackoffMs: 400, leaseMs: 5_000 },
};

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** Run `fn` after the current test, in reverse order of registration. */
export function onCleanup(fn: () => Promise<void> | void): void {
  cleanups.push(fn);
}

/** A gateway whose config has `sinks` as `audit.sinks`; stopped after the test. */
export async function sinkGateway(
  sinks: Record<string, unknown>[],
  options: StartGatewayOptions = {},
): Promise<Harness> {
  const h = await startHarness({ extra: { audit: { sinks } } }, { ...FAST, ...options });
  onCleanup(() => h.stop());
  return h;
}

/** Open `n` sessions (each writes `session.opened`). */
export async function openSessions(h: Harness, n: number): Promise<void> {
  const client = await h.client();
  for (let i = 0; i < n; i++) await openSession(client, await h.token(), { targets: ['echo'] });
}

/** The metric's exposition text on the harness's gateway. */
export async function metric(h: Harness, name: string): Promise<string> {
  return (await h.gateway.metrics.registry.getSingleMetricAsString(name)) ?? '';
}
