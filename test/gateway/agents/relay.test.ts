// A session's tunnel to a target an agent serves (tunnel.ts: Tunnel.runViaAgent), through the
// real gateway: audited with the agent as the exit and the bytes it carried, and cut (CANCEL,
// upstream closed on the agent) when the session ends.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../../../src/agent/agent.js';
import type { AuditEvent } from '../../../src/audit/events.js';
import { agentConfig } from '../../agent/harness.js';
import { waitFor } from '../../fixtures/wait-for.js';
import {
  ADMIN_TOKEN,
  api,
  closed,
  type Harness,
  h2,
  openSession,
  roundTrip,
  startHarness,
  tunnel,
} from '../helpers.js';

let h: Harness;
let agent: Agent | undefined;
let agentDir: string | undefined;

beforeAll(async () => {
  h = await startHarness({
    rules: [{ name: 'via-agent', issuer: 'gitlab', when: { project_id: '61577203' }, allow: ['far'] }],
  });
  const { token } = await h.gateway.agents.registry.createEnrollment('dc1', ['far']);
  agentDir = mkdtempSync(join(tmpdir(), 'ciport-agent-exit-'));
  agent = new Agent(
    agentConfig({
      gateway: h.gateway.url,
      dataDir: agentDir,
      name: 'dc1',
      targets: [{ name: 'far', protocol: 'tcp', address: `127.0.0.1:${h.echo.port}` }],
    }),
    { ca: h.gateway.caPem, env: { CIPORT_TEST_ENROLLMENT_TOKEN: token } },
  );
  await agent.start();
  await waitFor(() => h.gateway.agents.hub.serves('far'), 15_000, 'the agent to serve far');
});
afterAll(async () => {
  await agent?.close();
  if (agentDir) rmSync(agentDir, { recursive: true, force: true });
  await h?.stop();
});

/** The session's connection events, once `count` of them are written. */
async function connectionEvents(session: string, count: number): Promise<AuditEvent[]> {
  return waitFor(
    async () => {
      const events = (await h.gateway.store.auditEvents({ limit: 10_000 })).filter(
        (e) => e.type.startsWith('connection.') && e.data.session === session,
      );
      return events.length >= count ? events : undefined;
    },
    5_000,
    `${count} connection events of ${session}`,
  );
}

describe('a tunnel an agent carries', () => {
  it('is audited opened/closed with the agent as exit and the bytes both ways', async () => {
    const c = await h.client();
    const s = await openSession(c, await h.token(), { targets: ['far'] });
    const payload = randomBytes(100_000);
    const back = await roundTrip(await tunnel(c, s, 'far'), payload);
    expect(back.equals(payload)).toBe(true);
    const [opened, closedEvent] = await connectionEvents(s.id, 2);
    expect(opened).toMatchObject({ type: 'connection.opened', data: { exit: 'dc1', target: 'far' } });
    expect(closedEvent).toMatchObject({
      type: 'connection.closed',
      data: { exit: 'dc1', bytes_to_target: 100_000, bytes_from_target: 100_000 },
    });
    expect(closedEvent?.data.connection).toBe(opened?.data.connection);
  });

  it('is reset with CANCEL when its session is revoked, and the agent closes the upstream', async () => {
    const c = await h.client();
    const s = await openSession(c, await h.token(), { targets: ['far'] });
    const stream = await tunnel(c, s, 'far');
    stream.write('x');
    await waitFor(() => agent?.streams === 1, 2_000, 'the agent to open the upstream');
    const rst = closed(stream);
    const revoked = await api(c, 'POST', `/v1/sessions/${s.id}/revoke`, { bearer: ADMIN_TOKEN });
    expect(revoked.body).toMatchObject({ state: 'ended', end_reason: 'revoked', revoked: true });
    expect(await rst).toBe(h2.NGHTTP2_CANCEL);
    await waitFor(() => agent?.streams === 0, 2_000, 'the agent to close the upstream');
    const [, closedEvent] = await connectionEvents(s.id, 2);
    expect(closedEvent).toMatchObject({
      type: 'connection.closed',
      data: { exit: 'dc1', closed_by: 'session', end_reason: 'revoked' },
    });
  });
});
