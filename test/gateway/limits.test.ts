// Issue 10, item 4: a rule's `limits.bytes` is a budget for the whole session — every byte its
// tunnels carry, both ways, over all its connections (through the gateway's own exits and through
// an agent) — and `limits.connections` caps its open tunnels. Real traffic through a TCP echo
// server: the stream that crosses the budget is reset near the limit (not megabytes later),
// `session.limit_exceeded` is written, and the session refuses new connections.
import { mkdtempSync, rmSync } from 'node:fs';
import type { ClientHttp2Stream } from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { agentConfig } from '../agent/harness.js';
import { waitFor } from '../fixtures/wait-for.js';
import {
  closed,
  connectTunnel,
  type Harness,
  h2,
  openSession,
  roundTrip,
  startHarness,
  tunnel,
} from './helpers.js';

const LIMIT = 100_000;

const rules = [
  {
    name: 'budgeted',
    issuer: 'gitlab',
    when: { project_id: '61577203', ref_protected: true },
    allow: ['echo', 'far'],
    limits: { bytes: LIMIT, connections: 3 },
  },
];

let h: Harness;
beforeAll(async () => {
  h = await startHarness({ rules });
});
afterAll(async () => {
  await h?.stop();
});

/** Write `total` bytes in 16 KiB chunks as fast as flow control allows; count what comes back. */
function pump(stream: ClientHttp2Stream, total: number): Promise<{ received: number; rst: number }> {
  let received = 0;
  stream.on('data', (c: Buffer) => {
    received += c.length;
  });
  const chunk = Buffer.alloc(16_384, 0x61);
  let sent = 0;
  const write = () => {
    while (sent < total && !stream.destroyed && !stream.closed) {
      sent += chunk.length;
      if (!stream.write(chunk)) {
        stream.once('drain', write);
        return;
      }
    }
  };
  write();
  return new Promise((resolve) =>
    stream.once('close', () => resolve({ received, rst: stream.rstCode ?? 0 })),
  );
}

async function limitEvents(session: string) {
  const events = await h.gateway.store.auditEvents({ limit: 10_000 });
  return events.filter((e) => e.type === 'session.limit_exceeded' && e.data.session === session);
}

/** The session's first `session.limit_exceeded` event, once it has been written. */
async function firstLimitEvent(session: string) {
  const [event] = await waitFor(async () => {
    const found = await limitEvents(session);
    return found.length > 0 ? found : undefined;
  });
  return event;
}

describe('limits.bytes', () => {
  it('cuts a 5 MB stream at the limit, audits it, and refuses new connections', async () => {
    const c = await h.client();
    const s = await openSession(c, await h.token(), { targets: ['echo'] });
    const stream = await tunnel(c, s, 'echo');
    const { received, rst } = await pump(stream, 5 * 1024 * 1024);
    expect(rst).toBe(h2.NGHTTP2_ENHANCE_YOUR_CALM);
    // Both directions count: what came back is at most half the budget.
    expect(received).toBeLessThanOrEqual(LIMIT / 2);

    const event = await firstLimitEvent(s.id);
    expect(event?.data).toMatchObject({ limit: 'bytes', max: LIMIT, target: 'echo', rule: 'budgeted' });
    expect(event?.data.bytes as number).toBeLessThanOrEqual(LIMIT);
    expect(event?.data.bytes as number).toBeGreaterThan(LIMIT - 2 * 16_384);
    const closedEvent = await waitFor(async () =>
      (await h.gateway.store.auditEvents({ limit: 10_000 })).find(
        (e) => e.type === 'connection.closed' && e.data.session === s.id,
      ),
    );
    expect(closedEvent.data.error).toMatch(/CIPORT_E_BYTE_LIMIT/);
    expect(
      (closedEvent.data.bytes_to_target as number) + (closedEvent.data.bytes_from_target as number),
    ).toBeLessThanOrEqual(LIMIT);

    const again = await connectTunnel(c, s, 'echo');
    expect(again.status).toBe(429);
    expect(again.headers['ciport-error']).toBe('CIPORT_E_BYTE_LIMIT');
    expect(await limitEvents(s.id)).toHaveLength(1);
  });

  it('adds up many connections: the one that crosses the budget is reset, the rest refused', async () => {
    const c = await h.client();
    const s = await openSession(c, await h.token(), { targets: ['echo'] });
    // Each round trip carries 2 × 15 000 bytes: three fit in 100 000, the fourth crosses.
    const payload = Buffer.alloc(15_000, 0x62);
    const outcomes: string[] = [];
    for (let i = 0; i < 8; i++) {
      const answer = await connectTunnel(c, s, 'echo');
      if (answer.status !== 200) {
        outcomes.push(`refused ${answer.headers['ciport-error']}`);
        continue;
      }
      const done = closed(answer.stream);
      const back = await roundTrip(answer.stream, payload).catch(() => Buffer.alloc(0));
      const rst = await done;
      outcomes.push(rst === 0 && back.length === payload.length ? 'ok' : `reset ${rst}`);
    }
    expect(outcomes).toEqual([
      'ok',
      'ok',
      'ok',
      `reset ${h2.NGHTTP2_ENHANCE_YOUR_CALM}`,
      ...Array(4).fill('refused CIPORT_E_BYTE_LIMIT'),
    ]);
    const event = await firstLimitEvent(s.id);
    expect(event?.data.bytes).toBeGreaterThanOrEqual(90_000);
    expect(event?.data.bytes).toBeLessThanOrEqual(LIMIT);
  });

  it('resets the session’s other open streams too, and leaves other sessions alone', async () => {
    const c = await h.client();
    const s = await openSession(c, await h.token(), { targets: ['echo'] });
    const other = await openSession(c, await h.token(), { targets: ['echo'] });
    const idle = await tunnel(c, s, 'echo');
    const idleClosed = closed(idle);
    const bystander = await tunnel(c, other, 'echo');
    const heavy = await tunnel(c, s, 'echo');
    await pump(heavy, 1024 * 1024);
    expect(await idleClosed).toBe(h2.NGHTTP2_ENHANCE_YOUR_CALM);
    expect((await roundTrip(bystander, Buffer.from('still here'))).toString()).toBe('still here');
  });

  it('counts the bytes an agent carries', async () => {
    const { token } = await h.gateway.agents.registry.createEnrollment('dc-limits', ['far']);
    const agentDir = mkdtempSync(join(tmpdir(), 'ciport-limits-agent-'));
    const agent = new Agent(
      agentConfig({
        gateway: h.gateway.url,
        dataDir: agentDir,
        name: 'dc-limits',
        targets: [{ name: 'far', protocol: 'tcp', address: `127.0.0.1:${h.echo.port}` }],
      }),
      { ca: h.gateway.caPem, env: { CIPORT_TEST_ENROLLMENT_TOKEN: token } },
    );
    try {
      await agent.start();
      await waitFor(() => h.gateway.agents.hub.serves('far'), 15_000);
      const c = await h.client();
      const s = await openSession(c, await h.token(), { targets: ['far'] });
      const stream = await tunnel(c, s, 'far');
      const { received, rst } = await pump(stream, 5 * 1024 * 1024);
      expect(rst).toBe(h2.NGHTTP2_ENHANCE_YOUR_CALM);
      expect(received).toBeLessThanOrEqual(LIMIT / 2);
      const event = await firstLimitEvent(s.id);
      expect(event?.data).toMatchObject({ limit: 'bytes', max: LIMIT, target: 'far' });
      const again = await connectTunnel(c, s, 'far');
      expect(again.headers['ciport-error']).toBe('CIPORT_E_BYTE_LIMIT');
    } finally {
      await agent.close();
      rmSync(agentDir, { recursive: true, force: true });
    }
  });
});

describe('limits.connections', () => {
  it('caps a session at its rule’s connection limit (below sessions.max_connections)', async () => {
    const c = await h.client();
    const s = await openSession(c, await h.token(), { targets: ['echo'] });
    const open = await Promise.all([1, 2, 3].map(() => tunnel(c, s, 'echo')));
    const fourth = await connectTunnel(c, s, 'echo');
    expect(fourth.status).toBe(429);
    expect(fourth.headers['ciport-error']).toBe('CIPORT_E_CONNECTION_LIMIT');
    // Closing one frees a slot.
    await roundTrip(open[0] as ClientHttp2Stream, Buffer.from('x'));
    await waitFor(async () => (await connectTunnel(c, s, 'echo')).status === 200);
    for (const stream of open) stream.close();
  });
});
