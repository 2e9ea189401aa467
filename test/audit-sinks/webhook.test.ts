// The webhook sink against a real gateway and a loopback receiver that checks the HMAC: every
// event arrives once and in chain order, also when the receiver refuses connections, answers
// 500, hangs, trickles, or answers far too much, and across a clean gateway restart.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { verifyRows } from '../../src/audit/index.js';
import type { StartGatewayOptions } from '../../src/gateway/server.js';
import { createLogger } from '../../src/log/logger.js';
import { waitFor } from '../fixtures/wait-for.js';
import { Capture, type Harness, tempDir } from '../gateway/helpers.js';
import { FAST, metric, onCleanup, openSessions, sinkGateway } from './harness.js';
import { type WebhookMode, WebhookReceiver } from './receivers.js';

const SECRET = 'whsec-test-7c1d0e5b9a2f4e8d';
async function setup(
  options: {
    secret?: string;
    timeout?: string;
    batch?: number;
    mode?: WebhookMode;
    gateway?: StartGatewayOptions;
  } = {},
) {
  const receiver = new WebhookReceiver(SECRET);
  receiver.mode = options.mode ?? 'ok'; // before the gateway starts: its first event goes at once
  await receiver.start();
  onCleanup(() => receiver.stop());
  const tmp = tempDir('ciport-sink-');
  onCleanup(tmp.cleanup);
  const secretFile = join(tmp.dir, 'webhook.secret');
  writeFileSync(secretFile, `${options.secret ?? SECRET}\n`, { mode: 0o600 });
  const sink = {
    name: 'siem',
    kind: 'webhook',
    url: receiver.url,
    secret: { file: secretFile },
    timeout: options.timeout ?? '2s',
    batch: options.batch ?? 5,
  };
  const h = await sinkGateway([sink], options.gateway);
  return { h, receiver };
}

/** Wait until the receiver holds every stored event, then check: once each, in order, verifiable. */
async function expectEveryEventOnce(h: Harness, receiver: WebhookReceiver): Promise<void> {
  const head = await h.gateway.store.auditHead();
  const n = head?.seq ?? 0;
  await waitFor(() => receiver.received.length >= n, 10_000, `receiver has ${n} events`);
  expect(receiver.seqs).toEqual(Array.from({ length: n }, (_, i) => i + 1));
  expect(await verifyRows(receiver.received)).toMatchObject({ ok: true, count: n });
  const stored = await h.gateway.store.auditEvents({ limit: 10_000 });
  expect(receiver.received.map((r) => r.hash)).toEqual(stored.map((e) => e.hash));
}

describe('webhook audit sink', () => {
  it('delivers every event once, in chain order, signed; the secret appears in no metric', async () => {
    const { h, receiver } = await setup();
    await openSessions(h, 12);
    await expectEveryEventOnce(h, receiver);
    expect(receiver.badSignatures).toBe(0);
    // Batches of at most 5: more than one request carried them.
    expect(receiver.requests).toBeGreaterThanOrEqual(Math.ceil(receiver.received.length / 5));
    // The counter moves once the cursor is stored, just after the receiver answered.
    const delivered = `ciport_audit_sink_delivered_total{sink="siem"} ${receiver.received.length}`;
    await waitFor(async () => (await metric(h, 'ciport_audit_sink_delivered_total')).includes(delivered));
    await waitFor(async () => (await metric(h, 'ciport_audit_sink_lag_events')).includes('{sink="siem"} 0'));
    expect(await h.gateway.metrics.registry.metrics()).not.toContain(SECRET);
    const cursors = await h.gateway.store.auditSinkCursors();
    expect(cursors).toEqual([
      expect.objectContaining({ sink: 'siem', seq: receiver.received.length, owner: h.gateway.gatewayId }),
    ]);
  });

  it('a receiver that refuses connections, then answers 500, then comes back gets every event once, in order', async () => {
    const { h, receiver } = await setup();
    await openSessions(h, 3);
    await expectEveryEventOnce(h, receiver);

    await receiver.stop(); // ECONNREFUSED
    await openSessions(h, 4);
    await waitFor(async () =>
      (await metric(h, 'ciport_audit_sink_failures_total')).includes('CIPORT_E_AUDIT_SINK_UNREACHABLE'),
    );
    expect(await metric(h, 'ciport_audit_sink_failing')).toContain('{sink="siem"} 1');
    // The lag counts what the sink has not acknowledged: the four sessions' events at least.
    const lag = /ciport_audit_sink_lag_events\{sink="siem"\} (\d+)/.exec(
      await metric(h, 'ciport_audit_sink_lag_events'),
    );
    expect(Number(lag?.[1])).toBeGreaterThanOrEqual(4);

    receiver.mode = 'fail';
    await receiver.start(); // same port, now HTTP 500
    await waitFor(async () =>
      (await metric(h, 'ciport_audit_sink_failures_total')).includes('CIPORT_E_AUDIT_SINK_REJECTED'),
    );
    await openSessions(h, 2);

    receiver.mode = 'ok';
    await expectEveryEventOnce(h, receiver);
    expect(await metric(h, 'ciport_audit_sink_failing')).toContain('{sink="siem"} 0');
  });

  for (const mode of ['hang', 'slow', 'huge', 'endless'] as const) {
    it(`a receiver that ${mode === 'hang' ? 'never answers' : mode === 'slow' ? 'trickles its answer' : mode === 'huge' ? 'answers 1 MiB' : 'answers without end'} ends in retries, then delivers once it behaves`, async () => {
      const { h, receiver } = await setup({ timeout: '300ms', mode });
      await openSessions(h, 2);
      const code =
        mode === 'huge' || mode === 'endless'
          ? 'CIPORT_E_AUDIT_SINK_PROTOCOL'
          : 'CIPORT_E_AUDIT_SINK_TIMEOUT';
      await waitFor(async () => (await metric(h, 'ciport_audit_sink_failures_total')).includes(code), 10_000);
      await waitFor(() => receiver.requests >= 3, 10_000, 'three attempts');
      expect(receiver.received).toEqual([]);
      // The gateway still serves while its sink misbehaves.
      await openSessions(h, 1);
      receiver.mode = 'ok';
      await expectEveryEventOnce(h, receiver);
    });
  }

  it('the warning says what happened: a refused batch or a timeout is not called "unreachable"', async () => {
    for (const [mode, code, msg] of [
      ['fail', 'CIPORT_E_AUDIT_SINK_REJECTED', 'audit sink refused the batch'],
      ['hang', 'CIPORT_E_AUDIT_SINK_TIMEOUT', 'audit sink did not acknowledge in time'],
    ] as const) {
      const logs = new Capture();
      const logger = createLogger({ level: 'info', destination: logs });
      const { h } = await setup({ mode, timeout: '300ms', gateway: { logger } });
      await openSessions(h, 1);
      await waitFor(() => logs.text.includes(code), 10_000, `a ${code} warning`);
      const warned = logs.text
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l))
        .filter((l) => l.code === code);
      expect(warned).toEqual([
        expect.objectContaining({ msg: `${msg}: delivery paused, retrying with backoff`, sink: 'siem' }),
      ]);
      expect(logs.text).not.toContain('unreachable');
    }
  });

  it('a wrong secret is detected by the receiver, and nothing is acknowledged with it', async () => {
    const { h, receiver } = await setup({ secret: 'not-the-shared-secret' });
    await openSessions(h, 1);
    await waitFor(() => receiver.badSignatures >= 2, 10_000, 'two refused signatures');
    expect(receiver.received).toEqual([]);
    expect(await metric(h, 'ciport_audit_sink_failures_total')).toContain(
      'code="CIPORT_E_AUDIT_SINK_REJECTED"',
    );
    expect((await h.gateway.store.auditSinkCursors())[0]?.seq).toBe(0);
  });

  it('a clean restart in the middle neither loses nor repeats an event; delivery resumes from the stored cursor', async () => {
    const { h, receiver } = await setup();
    await openSessions(h, 3);
    await expectEveryEventOnce(h, receiver);
    receiver.mode = 'fail';
    await openSessions(h, 3); // queued behind the failing receiver
    await waitFor(() => receiver.requests > 0 && receiver.mode === 'fail' && receiver.received.length > 0);
    await h.gateway.drain({ graceMs: 0 });
    receiver.mode = 'ok';
    await h.restart(undefined, FAST);
    await openSessions(h, 2);
    await expectEveryEventOnce(h, receiver);
  });

  it('a restart while a delivery hangs redelivers that batch: at least once, receivers dedupe by seq', async () => {
    const { h, receiver } = await setup({ timeout: '5s' });
    await openSessions(h, 2);
    await expectEveryEventOnce(h, receiver);
    receiver.mode = 'hang';
    const before = receiver.requests;
    await openSessions(h, 2);
    await waitFor(() => receiver.requests > before, 5_000, 'a delivery in flight');
    await h.gateway.close(); // abort it, as a crash would
    receiver.mode = 'ok';
    await h.restart(undefined, FAST);
    const head = (await h.gateway.store.auditHead())?.seq ?? 0;
    await waitFor(() => new Set(receiver.seqs).size >= head, 10_000);
    const deduped = [...new Set(receiver.seqs)];
    expect(deduped).toEqual(Array.from({ length: head }, (_, i) => i + 1));
  });

  it('logs once per state change, never per attempt, and never the secret (logs, events, metrics)', async () => {
    const logs = new Capture();
    const logger = createLogger({ level: 'debug', destination: logs });
    const { h, receiver } = await setup({ gateway: { logger } });
    await openSessions(h, 1);
    await expectEveryEventOnce(h, receiver);
    await receiver.stop();
    await openSessions(h, 1);
    await waitFor(
      () => logs.text.split('audit sink delivery failed again').length > 4,
      10_000,
      'four more failures',
    );
    await receiver.start();
    await expectEveryEventOnce(h, receiver);
    await waitFor(() => logs.text.includes('audit sink delivering again'));
    const lines = logs.text
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l));
    const warned = lines.filter((l) => l.msg.startsWith('audit sink unreachable'));
    expect(warned).toHaveLength(1);
    expect(warned[0]).toMatchObject({
      sink: 'siem',
      kind: 'webhook',
      code: 'CIPORT_E_AUDIT_SINK_UNREACHABLE',
    });
    expect(lines.filter((l) => l.msg === 'audit sink delivering again')).toHaveLength(1);
    expect(logs.text).not.toContain(SECRET);
    const events = await h.gateway.store.auditEvents({ limit: 10_000 });
    expect(JSON.stringify(events)).not.toContain(SECRET);
    expect(await h.gateway.metrics.registry.metrics()).not.toContain(SECRET);
  });
});
