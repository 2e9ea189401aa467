// Two gateways on one PostgreSQL store (a throwaway database on 127.0.0.1:5432, like
// test/store): a session created on A and revoked on B has its stream on A cut within one
// second (LISTEN/NOTIFY), and the periodic sweep still cuts it when the notification is lost.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { verifyChain } from '../../src/audit/index.js';
import { agentConfig } from '../agent/harness.js';
import { FixtureIssuer } from '../fixtures/oidc-issuer.js';
import { waitFor } from '../fixtures/wait-for.js';
import { HOOK_SECRET, type LivenessHarness, startLivenessHarness } from '../jobs/gateway-harness.js';
import { PG_ADMIN_URL } from '../store/harness.js';
import { ADMIN_TOKEN, api, closed, h2, openSession, roundTrip, tunnel } from './helpers.js';

const dbName = `ciport_multi_${randomBytes(6).toString('hex')}`;
const dbUrl = (() => {
  const u = new URL(PG_ADMIN_URL);
  u.pathname = `/${dbName}`;
  return u.toString();
})();
let admin: pg.Client;
let issuer: FixtureIssuer;
const running: LivenessHarness[] = [];

beforeAll(async () => {
  admin = new pg.Client({ connectionString: PG_ADMIN_URL, connectionTimeoutMillis: 5000 });
  await admin.connect(); // PostgreSQL is required (see test/store/harness.ts): no skipping
  await admin.query(`create database ${dbName}`);
  issuer = await FixtureIssuer.start();
});
afterEach(async () => {
  for (const h of running.splice(0)) await h.stop();
});
afterAll(async () => {
  await issuer?.close();
  await admin?.query(`drop database if exists ${dbName} with (force)`);
  await admin?.end();
});

async function gateway(
  sweepIntervalMs: number,
  extra: Record<string, unknown> = {},
): Promise<LivenessHarness> {
  const h = await startLivenessHarness({
    issuer,
    extra: { store: { postgres: { url: dbUrl } }, ...extra },
    gateway: { sweepIntervalMs },
  });
  running.push(h);
  return h;
}

describe('several gateways on one PostgreSQL store', () => {
  it('revoked on B: the stream held on A is cut within one second (NOTIFY, sweep far away)', async () => {
    const a = await gateway(60_000);
    const b = await gateway(60_000);
    a.gitlab.setJob('61577203', '8222997048', 'running');
    const ca = await a.client();
    const s = await openSession(ca, await a.token(), { targets: ['echo'] });
    const stream = await tunnel(ca, s, 'echo');
    const echoed = new Promise<Buffer>((resolve) => stream.once('data', resolve));
    stream.write('before');
    expect((await echoed).toString()).toBe('before');

    const cb = await b.client();
    const started = Date.now();
    const revoked = await api(cb, 'POST', `/v1/sessions/${s.id}/revoke`, { bearer: ADMIN_TOKEN });
    expect(revoked.body).toMatchObject({ state: 'ended', end_reason: 'revoked', revoked: true });
    expect(await closed(stream)).toBe(h2.NGHTTP2_CANCEL);
    expect(Date.now() - started).toBeLessThan(1000);
    // A refuses the session from now on; the one audit chain holds both gateways' events.
    const hb = await api(ca, 'POST', `/v1/sessions/${s.id}/heartbeat`, { bearer: s.secret });
    expect(hb.status).toBe(410);
    expect((await verifyChain(b.gateway.store)).ok).toBe(true);
    const gateways = new Set(
      (await a.gateway.store.auditEvents({ limit: 10_000 }))
        .filter((e) => e.type === 'config.loaded')
        .map((e) => e.data.gateway),
    );
    expect(gateways).toEqual(new Set([a.gateway.gatewayId, b.gateway.gatewayId]));
  });

  it('a session opened on A is served and ended on B (client end on B cuts A)', async () => {
    const a = await gateway(60_000);
    const b = await gateway(60_000);
    const ca = await a.client();
    const cb = await b.client();
    const s = await openSession(ca, await a.token(), { targets: ['echo'] });
    const onA = await tunnel(ca, s, 'echo');
    const onB = await tunnel(cb, s, 'echo');
    expect((await roundTrip(onB, Buffer.from('via B'))).toString()).toBe('via B');
    const started = Date.now();
    const ended = await api(cb, 'DELETE', `/v1/sessions/${s.id}`, { bearer: s.secret });
    expect(ended.body).toEqual({ state: 'ended', end_reason: 'client_end' });
    expect(await closed(onA)).toBe(h2.NGHTTP2_CANCEL);
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it("a GitLab Job Hook reaching B ends the job's session held on A at once", async () => {
    const a = await gateway(60_000);
    const b = await gateway(60_000);
    a.gitlab.setJob('61577203', '5151', 'running');
    const ca = await a.client();
    const s = await openSession(ca, await a.token({ job_id: '5151' }), { targets: ['echo'] });
    const stream = await tunnel(ca, s, 'echo');
    const cb = await b.client();
    const started = Date.now();
    const hook = await api(cb, 'POST', '/v1/hooks/gitlab', {
      rawBody: Buffer.from(
        JSON.stringify({
          object_kind: 'build',
          build_id: 5151,
          build_status: 'failed',
          project_id: 61577203,
        }),
      ),
      headers: { 'x-gitlab-event': 'Job Hook', 'x-gitlab-token': HOOK_SECRET },
    });
    expect(hook.status).toBe(204);
    expect(await closed(stream)).toBe(h2.NGHTTP2_CANCEL);
    expect(Date.now() - started).toBeLessThan(1000);
    expect(await a.gateway.store.getSession(s.id)).toMatchObject({
      state: 'ended',
      endReason: 'job_finished',
    });
  });

  it('a lost notification is covered by the periodic sweep', async () => {
    const a = await gateway(300);
    const b = await gateway(60_000);
    const ca = await a.client();
    const s = await openSession(ca, await a.token(), { targets: ['echo'] });
    const stream = await tunnel(ca, s, 'echo');
    // Cut every LISTEN connection, then revoke at once: the notification has no listener.
    await admin.query(
      `select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and application_name = 'ciport-listen'`,
      [dbName],
    );
    const cb = await b.client();
    const started = Date.now();
    await api(cb, 'POST', `/v1/sessions/${s.id}/revoke`, { bearer: ADMIN_TOKEN });
    expect(await closed(stream)).toBe(h2.NGHTTP2_CANCEL);
    expect(Date.now() - started).toBeLessThan(1500);
    // The listener reconnects by itself: later revocations arrive by notification again.
    await waitFor(async () => {
      const r = await admin.query(
        `select count(*)::int as n from pg_stat_activity where datname = $1 and application_name = 'ciport-listen'`,
        [dbName],
      );
      return r.rows[0].n >= 2;
    }, 10_000);
  });

  it('an agent configured with A links to B too (discovered through the store); revoked on B, A cuts it', async () => {
    // One CA for the group (agents verify every gateway with one ca_file): a shared data_dir.
    const shared = mkdtempSync(join(tmpdir(), 'ciport-multi-ca-'));
    const rules = [{ name: 'all', issuer: 'gitlab', when: { ref_protected: true }, allow: ['echo', 'far'] }];
    const a = await gateway(60_000, { data_dir: shared, rules });
    const b = await gateway(60_000, { data_dir: shared, rules });
    const { token } = await a.gateway.agents.registry.createEnrollment('dc1', ['far']);
    const agentDir = mkdtempSync(join(tmpdir(), 'ciport-multi-agent-'));
    const agent = new Agent(
      agentConfig({
        gateway: a.gateway.url,
        dataDir: agentDir,
        name: 'dc1',
        targets: [{ name: 'far', protocol: 'tcp', address: `127.0.0.1:${a.echo.port}` }],
      }),
      { ca: a.gateway.caPem, env: { CIPORT_TEST_ENROLLMENT_TOKEN: token } },
    );
    try {
      await agent.start();
      await waitFor(() => a.gateway.agents.hub.serves('far') && b.gateway.agents.hub.serves('far'), 15_000);
      expect(
        agent
          .links()
          .map((l) => l.url)
          .sort(),
      ).toEqual([a.gateway.url, b.gateway.url].sort());

      // A session opened on B reaches the agent through B's own link.
      const cb = await b.client();
      const s = await openSession(cb, await b.token(), { targets: ['far'] });
      const stream = await tunnel(cb, s, 'far');
      expect((await roundTrip(stream, Buffer.from('via B and dc1'))).toString()).toBe('via B and dc1');

      // A binding narrowed on B applies on B at once and on A at its next re-read of the store.
      const narrowed = await api(cb, 'POST', '/v1/agents/dc1/targets', {
        bearer: ADMIN_TOKEN,
        body: { set: ['elsewhere'] },
      });
      expect(narrowed.status).toBe(200);
      expect(b.gateway.agents.hub.serves('far')).toBe(false);
      expect(a.gateway.agents.hub.serves('far')).toBe(true);
      await a.gateway.agents.sweepBindings();
      expect(a.gateway.agents.hub.serves('far')).toBe(false);
      await api(cb, 'POST', '/v1/agents/dc1/targets', { bearer: ADMIN_TOKEN, body: { add: ['far'] } });
      await a.gateway.agents.sweepBindings();
      expect(a.gateway.agents.hub.serves('far') && b.gateway.agents.hub.serves('far')).toBe(true);

      // Revoked on B: A learns it through the store (NOTIFY) and cuts the agent as well.
      const revoked = await api(cb, 'POST', '/v1/agents/dc1/revoke', { bearer: ADMIN_TOKEN });
      expect(revoked.status).toBe(200);
      const started = Date.now();
      await waitFor(() => !a.gateway.agents.hub.serves('far') && !b.gateway.agents.hub.serves('far'), 5_000);
      expect(Date.now() - started).toBeLessThan(2_000);
    } finally {
      await agent.close();
      rmSync(agentDir, { recursive: true, force: true });
      rmSync(shared, { recursive: true, force: true });
    }
  });
});
