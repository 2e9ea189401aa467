// Security review (issue 10): `limits.bytes` was bypassed by short connections. Bytes a CONNECT
// stream delivered before the meter was installed (it ran only after the dial / agent handoff)
// were never charged: 30 sequential streams sending 60 000 bytes each right after opening got
// 1.8 MB to the target against a 100 000 budget, and `connection.closed` said 0 bytes. The
// meter now runs from the moment the stream is accepted. Counted at the target, for the
// gateway's own tcp exit and for an agent.
import { mkdtempSync, rmSync } from 'node:fs';
import type { ClientHttp2Session } from 'node:http2';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import type { AuditEvent } from '../../src/audit/events.js';
import { agentConfig } from '../agent/harness.js';
import { waitFor } from '../fixtures/wait-for.js';
import { type EchoServer, type Harness, openSession, startEcho, startHarness } from './helpers.js';

const LIMIT = 100_000;

const rules = [
  {
    name: 'budgeted',
    issuer: 'gitlab',
    when: { project_id: '61577203', ref_protected: true },
    allow: ['echo', 'recho', 'far'],
    limits: { bytes: LIMIT, connections: 64 },
  },
  {
    name: 'unbudgeted',
    issuer: 'gitlab',
    when: { project_id: '61577204' },
    allow: ['echo'],
  },
];

let h: Harness;
let agent: Agent | undefined;
let recho: EchoServer | undefined;
let agentDir: string | undefined;
/** Bytes the echo target received (over all its connections), and per connection once closed. */
let atTarget = 0;
const perConnection: number[] = [];

beforeAll(async () => {
  // recho: an echo server as a `redis` target without credentials (the redis exit's raw relay),
  // so that the target can count what it receives.
  recho = await startEcho();
  h = await startHarness({
    rules,
    targets: [{ name: 'recho', protocol: 'redis', address: `127.0.0.1:${recho.port}` }],
  });
  for (const echo of [h.echo, recho]) {
    echo.server.on('connection', (socket: Socket) => {
      let n = 0;
      socket.on('data', (c: Buffer) => {
        atTarget += c.length;
        n += c.length;
      });
      socket.once('close', () => perConnection.push(n));
    });
  }
  const { token } = await h.gateway.agents.registry.createEnrollment('dc-early', ['far']);
  agentDir = mkdtempSync(join(tmpdir(), 'ciport-early-agent-'));
  agent = new Agent(
    agentConfig({
      gateway: h.gateway.url,
      dataDir: agentDir,
      name: 'dc-early',
      targets: [{ name: 'far', protocol: 'tcp', address: `127.0.0.1:${h.echo.port}` }],
    }),
    { ca: h.gateway.caPem, env: { CIPORT_TEST_ENROLLMENT_TOKEN: token } },
  );
  await agent.start();
  await waitFor(() => h.gateway.agents.hub.serves('far'), 15_000);
});
afterAll(async () => {
  await agent?.close();
  if (agentDir) rmSync(agentDir, { recursive: true, force: true });
  await h?.stop();
  await recho?.close();
});

/**
 * The reviewer's stream: CONNECT and `size` bytes with END_STREAM in the same flight, without
 * waiting for the answer. Resolves with its status (or `reset`) once it is over.
 */
function early(c: ClientHttp2Session, s: { id: string; secret: string }, target: string, size: number) {
  return new Promise<string>((resolve) => {
    let status = 'reset';
    const stream = c.request({
      ':method': 'CONNECT',
      ':authority': `${target}:443`,
      authorization: `Bearer ${s.secret}`,
      'ciport-session': s.id,
    });
    stream.on('response', (headers) => {
      status = `${headers[':status']}${headers['ciport-error'] ? ` ${headers['ciport-error']}` : ''}`;
    });
    stream.on('data', () => {});
    stream.on('error', () => {});
    stream.once('close', () => resolve(status));
    stream.end(Buffer.alloc(size, 0x63));
  });
}

/** Wait until the target has seen no new bytes for a while (every relay has drained). */
async function settled(): Promise<number> {
  let last = -1;
  await waitFor(async () => {
    const now = atTarget;
    const quiet = now === last;
    last = now;
    await new Promise((r) => setTimeout(r, 300));
    return quiet && atTarget === now;
  }, 15_000);
  return atTarget;
}

async function closedEvents(session: string): Promise<AuditEvent[]> {
  const events = await h.gateway.store.auditEvents({ limit: 100_000 });
  return events.filter((e) => e.type === 'connection.closed' && e.data.session === session);
}

describe.each(['echo', 'recho', 'far'])('limits.bytes with early data (target %s)', (target) => {
  it('30 sequential streams of 60 000 bytes sent at once: the target gets no more than the budget', async () => {
    const c = await h.client();
    const s = await openSession(c, await h.token(), { targets: [target] });
    await settled();
    const before = atTarget;
    const statuses: string[] = [];
    for (let i = 0; i < 30; i++) statuses.push(await early(c, s, target, 60_000));
    const delivered = (await settled()) - before;
    expect(delivered).toBeLessThanOrEqual(LIMIT);
    // The budget was in use (not refused from the start), and later streams were refused.
    expect(delivered).toBeGreaterThan(0);
    expect(statuses.filter((x) => x === '429 CIPORT_E_BYTE_LIMIT').length).toBeGreaterThanOrEqual(25);
    const limit = (await h.gateway.store.auditEvents({ limit: 100_000 })).filter(
      (e) => e.type === 'session.limit_exceeded' && e.data.session === s.id,
    );
    expect(limit).toHaveLength(1);
  });

  it('40 parallel streams of 64 000 bytes sent at once: the target gets no more than the budget', async () => {
    const c = await h.client();
    const s = await openSession(c, await h.token(), { targets: [target] });
    await settled();
    const before = atTarget;
    const statuses = await Promise.all(Array.from({ length: 40 }, () => early(c, s, target, 64_000)));
    const delivered = (await settled()) - before;
    expect(delivered).toBeLessThanOrEqual(LIMIT);
    expect(statuses.filter((x) => x === '200').length).toBeLessThan(40);
    expect(statuses.some((x) => x === '429 CIPORT_E_BYTE_LIMIT' || x === 'reset')).toBe(true);
  });
});

describe('connection.closed counts early data', () => {
  it.each([
    ['echo', 'gateway', 'a budgeted session', '61577203'],
    ['echo', 'gateway', 'a session without a byte limit', '61577204'],
    ['recho', 'gateway', 'a budgeted session', '61577203'],
    ['far', 'dc-early', 'a budgeted session', '61577203'],
  ])(
    'target %s (exit %s), for %s: bytes_to_target is what the target received',
    async (target, exit, _, project) => {
      const c = await h.client();
      const token = await h.token({ project_id: project, job_project_id: project });
      const s = await openSession(c, token, { targets: [target] });
      await settled();
      const connectionsBefore = perConnection.length;
      // 20 000 bytes in the same flight as the CONNECT: buffered while the session is looked up
      // and the target dialled (or the stream handed to the agent).
      for (let i = 0; i < 2; i++) expect(await early(c, s, target, 20_000)).toBe('200');
      const events = await waitFor(async () => {
        const found = await closedEvents(s.id);
        return found.length === 2 ? found : undefined;
      });
      await waitFor(() => perConnection.length === connectionsBefore + 2);
      expect(perConnection.slice(connectionsBefore)).toEqual([20_000, 20_000]);
      for (const event of events) {
        expect(event.data).toMatchObject({ bytes_to_target: 20_000, bytes_from_target: 20_000, exit });
      }
    },
  );
});
