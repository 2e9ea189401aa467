// The syslog sink against a real gateway and loopback collectors parsing RFC 6587 octet-counted
// RFC 5424 frames, over TCP and over TLS (certificate verified): every event once and in chain
// order, also when the collector goes down, resets or never closes; an untrusted certificate is
// refused, never sent to.
import { describe, expect, it } from 'vitest';
import { verifyRows } from '../../src/audit/index.js';
import { ensureGeneratedTls } from '../../src/transport/tls.js';
import { waitFor } from '../fixtures/wait-for.js';
import { type Harness, tempDir } from '../gateway/helpers.js';
import { metric, onCleanup, openSessions, sinkGateway } from './harness.js';
import { type SyslogMode, SyslogReceiver } from './receivers.js';

function certificates() {
  const tmp = tempDir('ciport-syslog-tls-');
  onCleanup(tmp.cleanup);
  return ensureGeneratedTls(tmp.dir, ['127.0.0.1', 'localhost']);
}

async function setup(options: { tls?: 'trusted' | 'untrusted'; timeout?: string; mode?: SyslogMode } = {}) {
  const server = options.tls ? certificates() : undefined;
  const receiver = new SyslogReceiver(server ? { cert: server.cert, key: server.key } : undefined);
  receiver.mode = options.mode ?? 'ok'; // before the gateway starts: its first event goes at once
  await receiver.start();
  onCleanup(() => receiver.stop());
  const trust = options.tls === 'untrusted' ? certificates() : server;
  const sink = {
    name: 'collector',
    kind: 'syslog',
    address: `127.0.0.1:${receiver.port}`,
    facility: 13,
    app_name: 'ciport-test',
    timeout: options.timeout ?? '2s',
    batch: 4,
    ...(trust ? { tls: { ca: { file: trust.caFile } } } : {}),
  };
  const h = await sinkGateway([sink]);
  return { h, receiver };
}

async function expectEveryEventOnce(h: Harness, receiver: SyslogReceiver): Promise<void> {
  const n = (await h.gateway.store.auditHead())?.seq ?? 0;
  await waitFor(() => receiver.frames.length >= n, 10_000, `collector has ${n} events`);
  expect(receiver.seqs).toEqual(Array.from({ length: n }, (_, i) => i + 1));
  expect(await verifyRows(receiver.frames.map((f) => f.row))).toMatchObject({ ok: true, count: n });
}

const failures = (h: Harness) => metric(h, 'ciport_audit_sink_failures_total');

for (const tls of [undefined, 'trusted'] as const) {
  describe(`syslog audit sink over ${tls ? 'TLS' : 'TCP'}`, () => {
    it('delivers every event once, in chain order, as RFC 5424 with seq, hash and prev_hash', async () => {
      const { h, receiver } = await setup({ tls });
      await openSessions(h, 6);
      await expectEveryEventOnce(h, receiver);
      const stored = await h.gateway.store.auditEvents({ limit: 10_000 });
      receiver.frames.forEach((f, i) => {
        const e = stored[i];
        expect(f.pri).toBe(13 * 8 + 6);
        expect(f.version).toBe('1');
        expect(f.app).toBe('ciport-test');
        expect(f.msgid).toBe(e?.type);
        expect(f.sd).toEqual({ seq: String(e?.seq), hash: e?.hash, prev_hash: e?.prevHash });
        expect(Date.parse(f.timestamp)).toBe(e?.time);
      });
    });

    it('a collector that goes down, resets, or never closes gets every event once when it is back', async () => {
      const { h, receiver } = await setup({ tls, timeout: '400ms' });
      await openSessions(h, 2);
      await expectEveryEventOnce(h, receiver);

      await receiver.stop();
      await openSessions(h, 3);
      await waitFor(async () => (await failures(h)).includes('CIPORT_E_AUDIT_SINK_UNREACHABLE'));

      receiver.mode = 'reset';
      await receiver.start();
      const resets = receiver.connections;
      await waitFor(() => receiver.connections >= resets + 2, 10_000, 'two reset attempts');

      receiver.mode = 'hang'; // reads everything, never closes: not an acknowledgement
      await waitFor(async () => (await failures(h)).includes('CIPORT_E_AUDIT_SINK_TIMEOUT'), 10_000);

      receiver.mode = 'ok';
      await openSessions(h, 1);
      await expectEveryEventOnce(h, receiver);
    });
  });
}

describe('syslog audit sink, hostile collectors', () => {
  it('a collector that answers without end is cut at 64 KiB and retried', async () => {
    const { h, receiver } = await setup({ mode: 'chatty' });
    await openSessions(h, 1);
    await waitFor(async () => (await failures(h)).includes('CIPORT_E_AUDIT_SINK_PROTOCOL'), 10_000);
    receiver.mode = 'ok';
    await expectEveryEventOnce(h, receiver);
  });

  it('an untrusted certificate is refused (CIPORT_E_AUDIT_SINK_TLS): nothing is sent, the gateway serves on', async () => {
    const { h, receiver } = await setup({ tls: 'untrusted' });
    await openSessions(h, 1);
    await waitFor(async () => (await failures(h)).includes('CIPORT_E_AUDIT_SINK_TLS'), 10_000);
    await openSessions(h, 1);
    expect(receiver.frames).toEqual([]);
    expect((await h.gateway.store.auditSinkCursors())[0]?.seq).toBe(0);
  });
});
