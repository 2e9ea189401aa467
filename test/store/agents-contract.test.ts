// Store contract for agents (enrollment, redemption, credential rotation, revocation and its
// notification) and the gateway registry, on both engines (migrations 0004, 0005).

import { createHash, randomBytes } from 'node:crypto';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { auditEvent, verifyChain } from '../../src/audit/index.js';
import { auditSearchIndexes } from '../../src/store/audit-search.js';
import type { NewAgent, Store, StoredAgent } from '../../src/store/index.js';
import { EXISTING_AGENTS_LIFETIME_MS, MIGRATION_TABLE } from '../../src/store/migrations.js';
import { HOUR, MINUTE, T0 } from './fixtures.js';

const DAY_MS = 24 * HOUR;

import { waitFor } from '../fixtures/wait-for.js';
import { engines, type TestDb } from './harness.js';

const sha = (s: string) => createHash('sha256').update(s).digest('hex');

const enrolled = (name: string) =>
  auditEvent('agent.enrolled', {
    agent: name,
    stage: 'token_created',
    expires_at: '2025-01-15T13:00:00.000Z',
  });
const registered = (a: StoredAgent) =>
  auditEvent('agent.enrolled', { agent: a.name, agent_id: a.id, stage: 'registered' });
const revokedEvent = (a: StoredAgent) => auditEvent('agent.revoked', { agent: a.name, agent_id: a.id });
const rotatedEvent = (expiresAt: number) => (a: StoredAgent) =>
  auditEvent('agent.credential_rotated', {
    agent: a.name,
    agent_id: a.id,
    expires_at: new Date(expiresAt).toISOString(),
  });
const LIFETIME = 30 * DAY_MS;
/** Migrations after the agent ones, rolled back with them (see undoLaterMigrations). */
const LATER_MIGRATIONS = [
  '0007_session_ended_by',
  '0008_audit_sink_cursors',
  '0009_operator_sessions',
  '0010_session_approvals',
  '0011_audit_search',
];
/** `?, ?, …`: one SQL placeholder per value. */
const placeholders = (n: number) => Array(n).fill('?').join(', ');

function newAgent(createdAt = T0): NewAgent {
  return {
    id: `agt_${randomBytes(8).toString('hex')}`,
    credentialHash: sha(randomBytes(32).toString('base64url')),
    createdAt,
    credentialExpiresAt: createdAt + LIFETIME,
  };
}

/** Store an enrollment; returns its token hash. */
async function enroll(
  store: Store,
  name: string,
  options: { createdAt?: number; expiresAt?: number; targets?: string[] } = {},
): Promise<string> {
  const createdAt = options.createdAt ?? T0;
  const tokenHash = sha(`cpe_${randomBytes(32).toString('base64url')}`);
  await store.createEnrollment(
    {
      tokenHash,
      name,
      targets: options.targets ?? ['ledger-db', 'api'],
      createdAt,
      expiresAt: options.expiresAt ?? createdAt + HOUR,
    },
    enrolled(name),
  );
  return tokenHash;
}

async function register(store: Store, name: string, at = T0): Promise<StoredAgent> {
  const tokenHash = await enroll(store, name, { createdAt: at });
  const change = await store.redeemEnrollment(tokenHash, at, newAgent(at), registered);
  if (!change) throw new Error('redeem failed');
  return change.agent;
}

for (const h of engines()) {
  describe(`store contract: agents and gateways [${h.engine}]`, () => {
    let t: TestDb;
    beforeAll(() => h.setup());
    afterAll(() => h.teardown());
    beforeEach(async () => {
      t = await h.fresh();
    });
    afterEach(() => t.dispose());

    // Migrations after 0006 (they touch no agent table): undone too when a test goes back to
    // an older schema, or the migrator would find them applied before the ones it re-runs.
    const undoLaterMigrations = async () => {
      await t.raw.exec('alter table sessions drop column ended_by');
      await t.raw.exec('alter table sessions drop column end_note');
      await t.raw.exec('drop table audit_sink_cursors');
      await t.raw.exec('drop table operator_sessions');
      for (const column of ['approval', 'approval_state', 'approved_at'])
        await t.raw.exec(`alter table sessions drop column ${column}`);
      await t.raw.exec('drop table session_approvals');
      for (const index of auditSearchIndexes(h.engine)) await t.raw.exec(`drop index ${index.name}`);
    };

    const count = async (table: string) => {
      const [row] = await t.raw.query<{ n: number | string }>(`select count(*) as n from ${table}`);
      return Number(row?.n);
    };
    const listening = async () => {
      const [row] = await t.raw.query<{ n: number | string }>(
        `select count(*) as n from pg_stat_activity where datname = current_database() and application_name = 'ciport-listen'`,
      );
      return Number(row?.n);
    };

    describe('enrollments', () => {
      it('createEnrollment stores the hash with its agent.enrolled event', async () => {
        const store = await t.open();
        const tokenHash = await enroll(store, 'dc1', { expiresAt: T0 + HOUR });
        const rows = await t.raw.query<Record<string, unknown>>('select * from agent_enrollments');
        expect(rows).toHaveLength(1);
        expect(rows[0]).toMatchObject({ token_hash: tokenHash, name: 'dc1', used_at: null, agent_id: null });
        expect(Number(rows[0]?.created_at)).toBe(T0);
        expect(Number(rows[0]?.expires_at)).toBe(T0 + HOUR);
        const events = await store.auditEvents();
        expect(events).toHaveLength(1);
        expect(events[0]).toMatchObject({ seq: 1, type: 'agent.enrolled', time: T0 });
        expect(events[0]?.data).toMatchObject({ agent: 'dc1', stage: 'token_created' });
      });

      it('refuses a token instead of its hash, and a duplicate hash, writing nothing', async () => {
        const store = await t.open();
        const token = `cpe_${randomBytes(32).toString('base64url')}`;
        await expect(
          store.createEnrollment(
            { tokenHash: token, name: 'dc1', targets: ['db'], createdAt: T0, expiresAt: T0 + HOUR },
            enrolled('dc1'),
          ),
        ).rejects.toMatchObject({ code: 'CIPORT_E_INTERNAL' });
        const tokenHash = await enroll(store, 'dc1');
        await expect(
          store.createEnrollment(
            { tokenHash, name: 'dc2', targets: ['db'], createdAt: T0, expiresAt: T0 + HOUR },
            enrolled('dc2'),
          ),
        ).rejects.toThrow();
        expect(await count('agent_enrollments')).toBe(1);
        expect(await count('audit_events')).toBe(1);
      });

      it('a failing audit insert rolls the enrollment back', async () => {
        const store = await t.open();
        await t.raw.failAuditInserts();
        await expect(enroll(store, 'dc1')).rejects.toThrow(/injected failure/);
        expect(await count('agent_enrollments')).toBe(0);
      });

      it('prunes enrollments spent or expired more than a day ago', async () => {
        const store = await t.open();
        const spentLongAgo = await enroll(store, 'a', { createdAt: T0 });
        await store.redeemEnrollment(spentLongAgo, T0 + MINUTE, newAgent(T0 + MINUTE), registered);
        await enroll(store, 'b', { createdAt: T0, expiresAt: T0 + HOUR }); // expired long ago
        const spentRecently = await enroll(store, 'c', { createdAt: T0 + DAY_MS });
        await store.redeemEnrollment(spentRecently, T0 + DAY_MS, newAgent(T0 + DAY_MS), registered);
        await enroll(store, 'd', { createdAt: T0, expiresAt: T0 + DAY_MS + HOUR }); // expired recently
        await enroll(store, 'e', { createdAt: T0 + DAY_MS, expiresAt: T0 + 3 * DAY_MS }); // pending

        await enroll(store, 'f', { createdAt: T0 + 2 * DAY_MS - HOUR }); // cutoff: T0 + 1 day - 1 h
        const rows = await t.raw.query<{ name: string }>('select name from agent_enrollments order by name');
        expect(rows.map((r) => r.name)).toEqual(['c', 'd', 'e', 'f']);
        // The agents themselves stay.
        expect((await store.listAgents()).map((a) => a.name)).toEqual(['a', 'c']);
      });
    });

    describe('redeemEnrollment', () => {
      it('creates the agent named after the enrollment, with its event, exactly once', async () => {
        const store = await t.open();
        const tokenHash = await enroll(store, 'dc1');
        const input = newAgent(T0 + MINUTE);
        const change = await store.redeemEnrollment(tokenHash, T0 + MINUTE, input, registered);
        const agent: StoredAgent = {
          id: input.id,
          name: 'dc1',
          credentialHash: input.credentialHash,
          createdAt: T0 + MINUTE,
          revokedAt: null,
          lastSeenAt: null,
          credentialExpiresAt: T0 + MINUTE + LIFETIME,
          previousHash: null,
          previousValidUntil: null,
          targets: ['api', 'ledger-db'],
        };
        expect(change?.agent).toEqual(agent);
        expect(change?.event).toMatchObject({ seq: 2, type: 'agent.enrolled', time: T0 + MINUTE });
        expect(change?.event.data).toEqual({ agent: 'dc1', agent_id: input.id, stage: 'registered' });
        expect(await store.getAgent(input.id)).toEqual(agent);
        const [row] = await t.raw.query<{ used_at: unknown; agent_id: string }>(
          'select used_at, agent_id from agent_enrollments',
        );
        expect(Number(row?.used_at)).toBe(T0 + MINUTE);
        expect(row?.agent_id).toBe(input.id);

        // Used: a second redemption writes nothing.
        expect(
          await store.redeemEnrollment(tokenHash, T0 + 2 * MINUTE, newAgent(), registered),
        ).toBeUndefined();
        expect(await count('agents')).toBe(1);
        expect(await count('audit_events')).toBe(2);
      });

      it('refuses unknown, expired and malformed tokens without writing', async () => {
        const store = await t.open();
        const tokenHash = await enroll(store, 'dc1', { expiresAt: T0 + HOUR });
        expect(await store.redeemEnrollment(sha('unknown'), T0, newAgent(), registered)).toBeUndefined();
        expect(await store.redeemEnrollment('cpe_not-a-hash', T0, newAgent(), registered)).toBeUndefined();
        // expires_at is exclusive: at T0 + HOUR the token is already expired.
        expect(await store.redeemEnrollment(tokenHash, T0 + HOUR, newAgent(), registered)).toBeUndefined();
        expect(await count('agents')).toBe(0);
        expect(await count('audit_events')).toBe(1);
        // Still unused, so one millisecond earlier it works.
        expect(await store.redeemEnrollment(tokenHash, T0 + HOUR - 1, newAgent(), registered)).toBeDefined();
      });

      it('rolls back when the event builder or the audit insert fails; the token stays usable', async () => {
        const store = await t.open();
        const tokenHash = await enroll(store, 'dc1');
        const boom = () => {
          throw new Error('builder failed');
        };
        await expect(store.redeemEnrollment(tokenHash, T0, newAgent(), boom)).rejects.toThrow(
          'builder failed',
        );
        expect(await count('agents')).toBe(0);
        await t.raw.failAuditInserts();
        await expect(store.redeemEnrollment(tokenHash, T0, newAgent(), registered)).rejects.toThrow(
          /injected failure/,
        );
        expect(await count('agents')).toBe(0);
        const [row] = await t.raw.query<{ used_at: unknown }>('select used_at from agent_enrollments');
        expect(row?.used_at).toBeNull();
      });

      it('never stores a credential secret: only a hex SHA-256 is accepted', async () => {
        const store = await t.open();
        const tokenHash = await enroll(store, 'dc1');
        await expect(
          store.redeemEnrollment(tokenHash, T0, { ...newAgent(), credentialHash: 'secret' }, registered),
        ).rejects.toMatchObject({ code: 'CIPORT_E_INTERNAL' });
        expect(await count('agents')).toBe(0);
      });

      it('of concurrent redemptions on two store instances exactly one wins per token', async () => {
        const a = await t.open();
        const b = await t.open();
        const tokens: string[] = [];
        for (let i = 0; i < 6; i++) tokens.push(await enroll(a, `dc${i}`));
        const results = await Promise.all(
          tokens.flatMap((tokenHash) =>
            [a, b, a, b].map((s) =>
              s.redeemEnrollment(tokenHash, T0 + MINUTE, newAgent(T0 + MINUTE), registered),
            ),
          ),
        );
        for (let i = 0; i < tokens.length; i++) {
          const winners = results.slice(i * 4, i * 4 + 4).filter(Boolean);
          expect(winners).toHaveLength(1);
          expect(winners[0]?.agent.name).toBe(`dc${i}`);
        }
        expect(await count('agents')).toBe(tokens.length);
        const events = await b.auditEvents();
        expect(events.filter((e) => e.data.stage === 'registered')).toHaveLength(tokens.length);
        expect(await verifyChain(a)).toMatchObject({ ok: true, count: 2 * tokens.length });
      });
    });

    describe('agents', () => {
      it('getAgent, listAgents (oldest first, revoked too) and touchAgent', async () => {
        const store = await t.open();
        const one = await register(store, 'dc1', T0);
        const two = await register(store, 'dc2', T0 + 1);
        expect(await store.getAgent('agt_unknown')).toBeUndefined();
        expect((await store.listAgents()).map((a) => a.id)).toEqual([one.id, two.id]);
        expect((await store.getAgent(one.id))?.createdAt).toBeTypeOf('number');

        expect(await store.touchAgent(one.id, T0 + HOUR)).toBe(true);
        expect((await store.getAgent(one.id))?.lastSeenAt).toBe(T0 + HOUR);
        expect(await store.touchAgent('agt_unknown', T0 + HOUR)).toBe(false);
        await store.revokeAgents(two.id, T0 + HOUR, revokedEvent);
        expect(await store.touchAgent(two.id, T0 + 2 * HOUR)).toBe(false);
        expect((await store.getAgent(two.id))?.lastSeenAt).toBeNull();
        expect((await store.listAgents()).map((a) => [a.name, a.revokedAt])).toEqual([
          ['dc1', null],
          ['dc2', T0 + HOUR],
        ]);
      });

      it('revokeAgents: by name every live agent of the name, one event each; by id one; never twice', async () => {
        const store = await t.open();
        const r1 = await register(store, 'dc1', T0);
        const r2 = await register(store, 'dc1', T0 + 1);
        const other = await register(store, 'dc2', T0 + 2);
        const before = await count('audit_events');

        const byName = await store.revokeAgents('dc1', T0 + HOUR, revokedEvent);
        expect(byName.map((c) => c.agent.id)).toEqual([r1.id, r2.id]);
        expect(byName.map((c) => c.agent.revokedAt)).toEqual([T0 + HOUR, T0 + HOUR]);
        expect(byName.map((c) => c.event.type)).toEqual(['agent.revoked', 'agent.revoked']);
        expect(byName[1]?.event.data).toEqual({ agent: 'dc1', agent_id: r2.id });
        expect(byName[1]?.event.time).toBe(T0 + HOUR);
        expect(await count('audit_events')).toBe(before + 2);

        expect(await store.revokeAgents('dc1', T0 + 2 * HOUR, revokedEvent)).toEqual([]);
        expect(await store.revokeAgents(r1.id, T0 + 2 * HOUR, revokedEvent)).toEqual([]);
        expect(await store.revokeAgents('nobody', T0 + 2 * HOUR, revokedEvent)).toEqual([]);
        expect((await store.getAgent(r1.id))?.revokedAt).toBe(T0 + HOUR);
        expect((await store.getAgent(other.id))?.revokedAt).toBeNull();

        const byId = await store.revokeAgents(other.id, T0 + 3 * HOUR, revokedEvent);
        expect(byId.map((c) => c.agent.name)).toEqual(['dc2']);
        expect(await count('audit_events')).toBe(before + 3);
        expect(await verifyChain(store)).toMatchObject({ ok: true });
      });

      it('a failing audit insert leaves the agents unrevoked', async () => {
        const store = await t.open();
        const agent = await register(store, 'dc1');
        await t.raw.failAuditInserts();
        await expect(store.revokeAgents('dc1', T0 + HOUR, revokedEvent)).rejects.toThrow(/injected failure/);
        expect((await store.getAgent(agent.id))?.revokedAt).toBeNull();
      });

      it('of concurrent revokers on two store instances each agent is revoked once', async () => {
        const a = await t.open();
        const b = await t.open();
        const agents = [await register(a, 'dc1'), await register(a, 'dc1', T0 + 1), await register(a, 'dc2')];
        const results = await Promise.all([
          a.revokeAgents('dc1', T0 + HOUR, revokedEvent),
          b.revokeAgents('dc1', T0 + HOUR, revokedEvent),
          b.revokeAgents(agents[0]?.id as string, T0 + HOUR, revokedEvent),
          a.revokeAgents('dc2', T0 + HOUR, revokedEvent),
          b.revokeAgents('dc2', T0 + HOUR, revokedEvent),
        ]);
        const revoked = results.flat().map((c) => c.agent.id);
        expect(revoked.sort()).toEqual(agents.map((x) => x.id).sort());
        const events = await a.auditEvents();
        expect(events.filter((e) => e.type === 'agent.revoked')).toHaveLength(3);
      });

      it('setAgentTargets: set/add/remove per live agent of a name or id, one event each, no-ops write nothing', async () => {
        const store = await t.open();
        const a1 = await register(store, 'dc1');
        const a2 = await register(store, 'dc1', T0 + 1);
        const other = await register(store, 'dc2', T0 + 2);
        const gone = await register(store, 'dc1', T0 + 3);
        await store.revokeAgents(gone.id, T0 + 4, revokedEvent);
        const changed = (a: StoredAgent, before: readonly string[]) =>
          auditEvent('agent.targets_changed', {
            agent: a.name,
            agent_id: a.id,
            before: [...before],
            targets: a.targets,
          });
        const add = (names: string[]) => (cur: readonly string[]) => [...cur, ...names];
        const events = await count('audit_events');

        // By name: both live dc1 agents, in creation order; the revoked one untouched.
        const byName = await store.setAgentTargets('dc1', T0 + HOUR, add(['Cache', 'api']), changed);
        expect(byName.map((c) => c.agent.id)).toEqual([a1.id, a2.id]);
        for (const c of byName) {
          expect(c.agent.targets).toEqual(['api', 'cache', 'ledger-db']);
          expect(c.event).toMatchObject({ type: 'agent.targets_changed', time: T0 + HOUR });
          expect(c.event.data).toMatchObject({
            before: ['api', 'ledger-db'],
            targets: ['api', 'cache', 'ledger-db'],
          });
        }
        expect((await store.getAgent(gone.id))?.targets).toEqual(['api', 'ledger-db']);
        expect((await store.getAgent(other.id))?.targets).toEqual(['api', 'ledger-db']);
        // By id, a replacement: only that agent.
        const byId = await store.setAgentTargets(a2.id, T0 + HOUR, () => ['x'], changed);
        expect(byId.map((c) => c.agent.targets)).toEqual([['x']]);
        expect((await store.getAgent(a1.id))?.targets).toEqual(['api', 'cache', 'ledger-db']);
        // Removing everything is allowed (the agent then serves nothing).
        expect((await store.setAgentTargets(a2.id, T0 + HOUR, () => [], changed))[0]?.agent.targets).toEqual(
          [],
        );
        expect(await count('audit_events')).toBe(events + 4);
        // Nothing to change, unknown and revoked agents: nothing written.
        expect(await store.setAgentTargets(a1.id, T0 + HOUR, (cur) => [...cur], changed)).toEqual([]);
        expect(await store.setAgentTargets('nobody', T0 + HOUR, () => ['y'], changed)).toEqual([]);
        expect(await store.setAgentTargets(gone.id, T0 + HOUR, () => ['y'], changed)).toEqual([]);
        // Invalid names and a failing audit insert change nothing.
        await expect(
          store.setAgentTargets(a1.id, T0 + HOUR, () => ['no spaces'], changed),
        ).rejects.toMatchObject({
          code: 'CIPORT_E_INTERNAL',
        });
        await t.raw.failAuditInserts();
        await expect(store.setAgentTargets(a1.id, T0 + HOUR, () => ['z'], changed)).rejects.toThrow(
          /injected failure/,
        );
        expect((await store.getAgent(a1.id))?.targets).toEqual(['api', 'cache', 'ledger-db']);
        expect(await count('audit_events')).toBe(events + 4);
        const [row] = await t.raw.query<{ targets: string }>('select targets from agents where id = ?', [
          a1.id,
        ]);
        expect(JSON.parse(row?.targets ?? '')).toEqual(['api', 'cache', 'ledger-db']);
      });

      it('of concurrent binding changes on two store instances none is lost', async () => {
        const a = await t.open();
        const b = await t.open();
        const agent = await register(a, 'dc1');
        const changed = (x: StoredAgent, before: readonly string[]) =>
          auditEvent('agent.targets_changed', {
            agent: x.name,
            agent_id: x.id,
            before: [...before],
            targets: x.targets,
          });
        const names = Array.from({ length: 8 }, (_, i) => `t${i}`);
        await Promise.all(
          names.map((n, i) =>
            (i % 2 ? a : b).setAgentTargets(agent.id, T0 + HOUR, (cur) => [...cur, n], changed),
          ),
        );
        expect((await b.getAgent(agent.id))?.targets).toEqual(['api', 'ledger-db', ...names].sort());
        expect((await a.auditEvents()).filter((e) => e.type === 'agent.targets_changed')).toHaveLength(8);
      });

      it('subscribeAgentRevoked: revocations committed through another store are announced', async () => {
        const a = await t.open();
        const b = await t.open();
        const heard: string[] = [];
        const unsubscribe = await a.subscribeAgentRevoked((id) => heard.push(id));
        const x1 = await register(b, 'dc1');
        const x2 = await register(b, 'dc1', T0 + 1);
        const started = Date.now();
        await b.revokeAgents('dc1', T0 + HOUR, revokedEvent);
        if (h.engine === 'postgres') {
          await waitFor(() => heard.length === 2, 3_000);
          expect(heard.sort()).toEqual([x1.id, x2.id].sort());
          expect(Date.now() - started).toBeLessThan(1000);
          // Nothing revoked (already revoked), nothing announced; a rolled-back revocation neither.
          await b.revokeAgents('dc1', T0 + HOUR, revokedEvent);
          const x3 = await register(b, 'dc3');
          await t.raw.failAuditInserts();
          await expect(b.revokeAgents('dc3', T0 + HOUR, revokedEvent)).rejects.toThrow(/injected failure/);
          await new Promise((r) => setTimeout(r, 200));
          expect(heard).toHaveLength(2);
          expect((await a.getAgent(x3.id))?.revokedAt).toBeNull();
          await unsubscribe();
          await unsubscribe(); // idempotent
        } else {
          // SQLite: one process per file, nothing to tell; callers sweep listAgents.
          await new Promise((r) => setTimeout(r, 50));
          expect(heard).toEqual([]);
          await unsubscribe();
        }
      });

      if (h.engine === 'postgres') {
        it('session ends and agent revocations share one listening connection, which reconnects', async () => {
          const a = await t.open();
          const b = await t.open();
          const agentsHeard: string[] = [];
          const sessionsHeard: string[] = [];
          const unAgents = await a.subscribeAgentRevoked((id) => agentsHeard.push(id));
          const unSessions = await a.subscribe((id) => sessionsHeard.push(id));
          const unAgents2 = await a.subscribeAgentRevoked((id) => agentsHeard.push(`again:${id}`));
          await waitFor(async () => (await listening()) === 1, 3_000);

          const x = await register(b, 'dc1');
          await b.revokeAgents(x.id, T0 + HOUR, revokedEvent);
          await waitFor(() => agentsHeard.length === 2, 3_000);
          expect(agentsHeard.sort()).toEqual([`again:${x.id}`, x.id]);
          expect(sessionsHeard).toEqual([]);

          // Cut the connection: it comes back by itself, listening on both channels again.
          const [old] = await t.raw.query<{ pid: number }>(
            `select pid from pg_stat_activity where datname = current_database() and application_name = 'ciport-listen'`,
          );
          await t.raw.query('select pg_terminate_backend(?)', [old?.pid]);
          // Back, and done with its LISTENs (channels are listened in subscription order).
          await waitFor(async () => {
            const rows = await t.raw.query(
              `select 1 from pg_stat_activity where datname = current_database() and application_name = 'ciport-listen' and pid <> ? and state = 'idle' and query = 'listen ciport_session_ended'`,
              [old?.pid],
            );
            return rows.length === 1;
          }, 10_000);
          await waitFor(async () => (await listening()) === 1, 3_000);
          expect(await listening()).toBe(1);
          const y = await register(b, 'dc2');
          await b.revokeAgents(y.id, T0 + HOUR, revokedEvent);
          await waitFor(() => agentsHeard.length === 4, 5000);

          // The connection closes when the last listener leaves.
          await unAgents();
          await unAgents2();
          expect(await listening()).toBe(1);
          await unSessions();
          await waitFor(async () => (await listening()) === 0, 3_000);
        });
      }
    });

    describe('rotateAgentCredential', () => {
      const NEW_EXPIRY = T0 + HOUR + LIFETIME;
      const GRACE = T0 + 2 * HOUR;

      it('swaps the hash, keeps the old one as previous with its grace, and writes the event', async () => {
        const store = await t.open();
        const agent = await register(store, 'dc1');
        const before = await count('audit_events');
        const next = sha('next secret');
        const change = await store.rotateAgentCredential(
          agent.id,
          agent.credentialHash,
          next,
          T0 + HOUR,
          NEW_EXPIRY,
          GRACE,
          rotatedEvent(NEW_EXPIRY),
        );
        const rotated: StoredAgent = {
          ...agent,
          credentialHash: next,
          credentialExpiresAt: NEW_EXPIRY,
          previousHash: agent.credentialHash,
          previousValidUntil: GRACE,
        };
        expect(change?.agent).toEqual(rotated);
        expect(change?.event).toMatchObject({ type: 'agent.credential_rotated', time: T0 + HOUR });
        expect(change?.event.data).toEqual({
          agent: 'dc1',
          agent_id: agent.id,
          expires_at: new Date(NEW_EXPIRY).toISOString(),
        });
        expect(await store.getAgent(agent.id)).toEqual(rotated);
        expect(await count('audit_events')).toBe(before + 1);

        // The old hash is no longer current: rotating from it again changes nothing.
        expect(
          await store.rotateAgentCredential(
            agent.id,
            agent.credentialHash,
            sha('other'),
            T0 + HOUR + 1,
            NEW_EXPIRY + 1,
            GRACE + 1,
            rotatedEvent(NEW_EXPIRY + 1),
          ),
        ).toBeUndefined();
        // A second rotation from the new one: the previous is now the first rotation's secret.
        const third = await store.rotateAgentCredential(
          agent.id,
          next,
          sha('third'),
          T0 + 2 * HOUR,
          NEW_EXPIRY + HOUR,
          T0 + 3 * HOUR,
          rotatedEvent(NEW_EXPIRY + HOUR),
        );
        expect(third?.agent).toMatchObject({ credentialHash: sha('third'), previousHash: next });
        expect(await count('audit_events')).toBe(before + 2);
        expect(await verifyChain(store)).toMatchObject({ ok: true });
      });

      it('refuses unknown, revoked and expired agents and a wrong current hash, writing nothing', async () => {
        const store = await t.open();
        const agent = await register(store, 'dc1');
        const revoked = await register(store, 'dc2');
        await store.revokeAgents(revoked.id, T0 + MINUTE, revokedEvent);
        const before = await count('audit_events');
        const rotate = (id: string, current: string, at: number) =>
          store.rotateAgentCredential(id, current, sha('new'), at, at + LIFETIME, at + HOUR, rotatedEvent(0));
        expect(await rotate('agt_unknown', agent.credentialHash, T0 + HOUR)).toBeUndefined();
        expect(await rotate(agent.id, sha('wrong'), T0 + HOUR)).toBeUndefined();
        expect(await rotate(revoked.id, revoked.credentialHash, T0 + HOUR)).toBeUndefined();
        // credential_expires_at is exclusive: at the expiry the credential cannot rotate any more.
        expect(await rotate(agent.id, agent.credentialHash, T0 + LIFETIME)).toBeUndefined();
        expect(await count('audit_events')).toBe(before);
        expect(await store.getAgent(agent.id)).toEqual(agent);
        expect(await rotate(agent.id, agent.credentialHash, T0 + LIFETIME - 1)).toBeDefined();
      });

      it('accepts hashes only, and a new one', async () => {
        const store = await t.open();
        const agent = await register(store, 'dc1');
        for (const [current, next] of [
          [agent.credentialHash, 'plain secret'],
          ['plain secret', sha('x')],
          [agent.credentialHash, agent.credentialHash],
        ] as const) {
          await expect(
            store.rotateAgentCredential(
              agent.id,
              current,
              next,
              T0,
              T0 + LIFETIME,
              T0 + HOUR,
              rotatedEvent(0),
            ),
          ).rejects.toMatchObject({ code: 'CIPORT_E_INTERNAL' });
        }
        expect(await store.getAgent(agent.id)).toEqual(agent);
      });

      it('rolls back when the event builder or the audit insert fails', async () => {
        const store = await t.open();
        const agent = await register(store, 'dc1');
        const boom = () => {
          throw new Error('builder failed');
        };
        const rotate = (event: Parameters<Store['rotateAgentCredential']>[6]) =>
          store.rotateAgentCredential(agent.id, agent.credentialHash, sha('n'), T0, NEW_EXPIRY, GRACE, event);
        await expect(rotate(boom)).rejects.toThrow('builder failed');
        expect(await store.getAgent(agent.id)).toEqual(agent);
        await t.raw.failAuditInserts();
        await expect(rotate(rotatedEvent(NEW_EXPIRY))).rejects.toThrow(/injected failure/);
        expect(await store.getAgent(agent.id)).toEqual(agent);
      });

      it('of concurrent rotations with one current hash on two store instances exactly one wins', async () => {
        const a = await t.open();
        const b = await t.open();
        const agents: StoredAgent[] = [];
        for (let i = 0; i < 5; i++) agents.push(await register(a, `dc${i}`, T0 + i));
        const before = await count('audit_events');
        const results = await Promise.all(
          agents.flatMap((agent) =>
            [a, b, a, b].map((s, k) =>
              s.rotateAgentCredential(
                agent.id,
                agent.credentialHash,
                sha(`${agent.id}:${k}`),
                T0 + HOUR,
                NEW_EXPIRY,
                GRACE,
                rotatedEvent(NEW_EXPIRY),
              ),
            ),
          ),
        );
        for (let i = 0; i < agents.length; i++) {
          const agent = agents[i] as StoredAgent;
          const winners = results.slice(i * 4, i * 4 + 4).filter((r) => r !== undefined);
          expect(winners).toHaveLength(1);
          const stored = await b.getAgent(agent.id);
          expect(stored?.credentialHash).toBe(winners[0]?.agent.credentialHash);
          expect(stored?.previousHash).toBe(agent.credentialHash);
        }
        const events = await b.auditEvents();
        expect(events.filter((e) => e.type === 'agent.credential_rotated')).toHaveLength(agents.length);
        expect(await count('audit_events')).toBe(before + agents.length);
        expect(await verifyChain(a)).toMatchObject({ ok: true });
      });
    });

    describe('gateways', () => {
      it('register (upsert), heartbeat, list the live ones, remove', async () => {
        const store = await t.open();
        await store.registerGateway({ id: 'gw-a', url: 'https://a.example:8443', at: T0 });
        await store.registerGateway({ id: 'gw-b', url: 'https://b.example:8443', at: T0 + 1000 });
        expect(await store.listGateways(T0)).toEqual([
          { id: 'gw-a', url: 'https://a.example:8443', startedAt: T0, lastSeenAt: T0 },
          { id: 'gw-b', url: 'https://b.example:8443', startedAt: T0 + 1000, lastSeenAt: T0 + 1000 },
        ]);
        expect(await store.heartbeatGateway('gw-a', T0 + MINUTE)).toBe(true);
        expect(await store.heartbeatGateway('gw-unknown', T0 + MINUTE)).toBe(false);
        expect((await store.listGateways(T0 + 30_000)).map((g) => g.id)).toEqual(['gw-a']);
        expect(await store.listGateways(T0 + MINUTE)).toEqual([
          { id: 'gw-a', url: 'https://a.example:8443', startedAt: T0, lastSeenAt: T0 + MINUTE },
        ]);

        // A restart under the same id replaces the entry.
        await store.registerGateway({ id: 'gw-b', url: 'https://b2.example:8443', at: T0 + HOUR });
        expect(await store.listGateways(T0 + HOUR)).toEqual([
          { id: 'gw-b', url: 'https://b2.example:8443', startedAt: T0 + HOUR, lastSeenAt: T0 + HOUR },
        ]);
        expect(await store.removeGateway('gw-b')).toBe(true);
        expect(await store.removeGateway('gw-b')).toBe(false);
        expect((await store.listGateways(0)).map((g) => g.id)).toEqual(['gw-a']);
        expect(await count('audit_events')).toBe(0);
      });
    });

    describe('migration 0006', () => {
      it('binds live agents to what their name last advertised; others, and pending tokens, to nothing', async () => {
        const first = await t.open();
        const dc1 = await register(first, 'dc1', T0);
        const dc1b = await register(first, 'dc1', T0 + 1);
        const dc2 = await register(first, 'dc2', T0 + 2);
        const quiet = await register(first, 'quiet', T0 + 3);
        const revoked = await register(first, 'old', T0 + 4);
        await first.revokeAgents(revoked.id, T0 + 5, revokedEvent);
        const connected = (agent: string, targets: string[]) =>
          first.appendAudit(auditEvent('agent.connected', { agent, targets }));
        await connected('dc1', ['ledger-db', 'stale']);
        await connected('dc2', ['cache']);
        await connected('old', ['ledger-db']);
        await connected('dc1', ['ledger-db', 'api', 'Bad Name']); // the last one counts
        await enroll(first, 'pending', { createdAt: T0 + 6, expiresAt: Date.now() + HOUR });
        await first.close();
        // Back to the schema before 0006 (SQLite 3.35+ and PostgreSQL drop columns alike).
        await t.raw.exec(
          `delete from ${MIGRATION_TABLE} where name in (${placeholders(1 + LATER_MIGRATIONS.length)})`,
          ['0006_agent_targets', ...LATER_MIGRATIONS],
        );
        await undoLaterMigrations();
        await t.raw.exec('alter table agents drop column targets');
        await t.raw.exec('alter table agent_enrollments drop column targets');

        const store = await t.open();
        const bound = new Map((await store.listAgents()).map((a) => [a.id, a.targets]));
        expect(bound.get(dc1.id)).toEqual(['api', 'ledger-db']);
        expect(bound.get(dc1b.id)).toEqual(['api', 'ledger-db']);
        expect(bound.get(dc2.id)).toEqual(['cache']);
        expect(bound.get(quiet.id)).toEqual([]);
        expect(bound.get(revoked.id)).toEqual([]);
        const [row] = await t.raw.query<{ targets: string }>(
          'select targets from agent_enrollments where name = ?',
          ['pending'],
        );
        expect(JSON.parse(row?.targets ?? 'null')).toEqual([]);
        expect(await verifyChain(store)).toMatchObject({ ok: true });
      });
    });

    describe('migration 0005', () => {
      it('existing agents get 30 days from the migration, no previous secret; the default fails closed', async () => {
        const first = await t.open();
        const agent = await register(first, 'dc1', T0);
        await first.close();
        // Back to the schema before 0005.
        await t.raw.exec(
          `delete from ${MIGRATION_TABLE} where name in (${placeholders(2 + LATER_MIGRATIONS.length)})`,
          ['0005_agent_credential_rotation', '0006_agent_targets', ...LATER_MIGRATIONS],
        );
        await undoLaterMigrations();
        for (const column of ['credential_expires_at', 'previous_hash', 'previous_valid_until', 'targets'])
          await t.raw.exec(`alter table agents drop column ${column}`);
        await t.raw.exec('alter table agent_enrollments drop column targets');

        const before = Date.now();
        const store = await t.open();
        const after = Date.now();
        const migrated = await store.getAgent(agent.id);
        expect(migrated).toMatchObject({ credentialHash: agent.credentialHash, previousHash: null });
        expect(migrated?.previousValidUntil).toBeNull();
        expect(migrated?.credentialExpiresAt).toBeGreaterThanOrEqual(before + EXISTING_AGENTS_LIFETIME_MS);
        expect(migrated?.credentialExpiresAt).toBeLessThanOrEqual(after + EXISTING_AGENTS_LIFETIME_MS);

        // A row written without the column (an older writer) is expired, not immortal.
        await t.raw.exec('insert into agents (id, name, credential_hash, created_at) values (?, ?, ?, ?)', [
          'agt_0000000000000009',
          'old-writer',
          sha('s9'),
          T0,
        ]);
        expect((await store.getAgent('agt_0000000000000009'))?.credentialExpiresAt).toBe(0);
      });
    });

    describe('migration 0004', () => {
      it('imports the legacy agents.v1 meta document', async () => {
        const first = await t.open();
        await first.close();
        // Back to the schema before 0004, holding a document the old registry wrote.
        await t.raw.exec(
          `delete from ${MIGRATION_TABLE} where name in (${placeholders(3 + LATER_MIGRATIONS.length)})`,
          ['0004_agents', '0005_agent_credential_rotation', '0006_agent_targets', ...LATER_MIGRATIONS],
        );
        await undoLaterMigrations();
        for (const table of ['agents', 'agent_enrollments', 'gateways'])
          await t.raw.exec(`drop table ${table}`);
        const iso = (ms: number) => new Date(ms).toISOString();
        const doc = {
          agents: [
            {
              id: 'agt_0000000000000001',
              name: 'dc1',
              created_at: iso(T0),
              revoked_at: null,
              last_seen_at: iso(T0 + HOUR),
              credential_hash: sha('s1'),
            },
            {
              id: 'agt_0000000000000002',
              name: 'dc2',
              created_at: iso(T0 + 1),
              revoked_at: iso(T0 + 2 * HOUR),
              last_seen_at: null,
              credential_hash: sha('s2'),
            },
            { id: 'agt_broken', name: 'x' },
          ],
          enrollments: [
            {
              token_hash: sha('pending'),
              name: 'dc3',
              created_at: iso(T0),
              expires_at: iso(T0 + HOUR),
              used_at: null,
              agent: null,
            },
            {
              token_hash: sha('spent'),
              name: 'dc1',
              created_at: iso(T0),
              expires_at: iso(T0 + HOUR),
              used_at: iso(T0 + 1),
              agent: 'agt_0000000000000001',
            },
          ],
        };
        await t.raw.exec('insert into meta (key, value) values (?, ?)', ['agents.v1', JSON.stringify(doc)]);

        const before = Date.now();
        const store = await t.open();
        const after = Date.now();
        const agents = await store.listAgents();
        const legacy = {
          credentialExpiresAt: expect.any(Number),
          previousHash: null,
          previousValidUntil: null,
          targets: [],
        };
        expect(agents).toEqual([
          {
            id: 'agt_0000000000000001',
            name: 'dc1',
            credentialHash: sha('s1'),
            createdAt: T0,
            revokedAt: null,
            lastSeenAt: T0 + HOUR,
            ...legacy,
          },
          {
            id: 'agt_0000000000000002',
            name: 'dc2',
            credentialHash: sha('s2'),
            createdAt: T0 + 1,
            revokedAt: T0 + 2 * HOUR,
            lastSeenAt: null,
            ...legacy,
          },
        ]);
        // 0005 then gave them 30 days from the migration.
        for (const a of agents) {
          expect(a.credentialExpiresAt).toBeGreaterThanOrEqual(before + EXISTING_AGENTS_LIFETIME_MS);
          expect(a.credentialExpiresAt).toBeLessThanOrEqual(after + EXISTING_AGENTS_LIFETIME_MS);
        }
        expect(await store.getMeta('agents.v1')).toBeUndefined();
        const change = await store.redeemEnrollment(sha('pending'), T0 + MINUTE, newAgent(), registered);
        expect(change?.agent.name).toBe('dc3');
        expect(
          await store.redeemEnrollment(sha('spent'), T0 + MINUTE, newAgent(), registered),
        ).toBeUndefined();
      });
    });
  });
}
