// AgentRegistry on a real store, both engines: enrollment tokens are one-time and expire,
// credentials are checked against hashes, expire and are rotated (the replaced secret has a
// grace period), revocation (by id or name) is audited atomically and reaches other gateways'
// registries.

import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { verifyChain } from '../../../src/audit/index.js';
import {
  type AgentRecord,
  AgentRegistry,
  CREDENTIAL_LIFETIME_MS,
  CREDENTIAL_PREFIX,
  ENROLLMENT_PREFIX,
} from '../../../src/gateway/agents/registry.js';
import type { Store } from '../../../src/store/index.js';
import { HOUR, MINUTE, T0, testClock } from '../../store/fixtures.js';

const DAY = 24 * HOUR;
const iso = (ms: number) => new Date(ms).toISOString();
const secretOf = (credential: string) => credential.split('.')[1] as string;

import { waitFor } from '../../fixtures/wait-for.js';
import { engines, type TestDb } from '../../store/harness.js';

for (const h of engines()) {
  describe(`AgentRegistry [${h.engine}]`, () => {
    let t: TestDb;
    let store: Store;
    let clock: ReturnType<typeof testClock>;
    let registry: AgentRegistry;
    beforeAll(() => h.setup());
    afterAll(() => h.teardown());
    beforeEach(async () => {
      t = await h.fresh();
      clock = testClock();
      store = await t.open({ clock: clock.now });
      registry = new AgentRegistry(store, { now: clock.now });
    });
    afterEach(() => t.dispose());

    it('an enrollment token registers one agent, once', async () => {
      const { token, expires_at } = await registry.createEnrollment('dc1', ['echo'], 10 * MINUTE);
      expect(token.startsWith(ENROLLMENT_PREFIX)).toBe(true);
      expect(expires_at).toBe(new Date(T0 + 10 * MINUTE).toISOString());
      clock.advance(1000);
      const agent = await registry.register(token);
      expect(agent.name).toBe('dc1');
      expect(agent.id).toMatch(/^agt_[0-9a-f]{16}$/);
      expect(agent.expires_at).toBe(iso(T0 + 1000 + 30 * DAY));
      expect(agent.credential.startsWith(`${CREDENTIAL_PREFIX}${agent.id}.`)).toBe(true);
      await expect(registry.register(token)).rejects.toMatchObject({ code: 'CIPORT_E_ENROLLMENT_INVALID' });

      const record = await registry.authenticate(agent.credential);
      expect(record).toMatchObject({
        id: agent.id,
        name: 'dc1',
        created_at: new Date(T0 + 1000).toISOString(),
        revoked_at: null,
        last_seen_at: null,
        credential_expires_at: agent.expires_at,
      });
      expect(await registry.list()).toEqual([
        {
          id: agent.id,
          name: 'dc1',
          created_at: new Date(T0 + 1000).toISOString(),
          revoked_at: null,
          last_seen_at: null,
          credential_expires_at: agent.expires_at,
          targets: ['echo'],
        },
      ]);
    });

    it('binds the agent to the enrollment targets; an admin changes the binding, audited', async () => {
      await expect(registry.createEnrollment('dc1', [])).rejects.toMatchObject({ code: 'CIPORT_E_USAGE' });
      await expect(registry.createEnrollment('dc1', ['*'])).rejects.toThrow(/no wildcard/);
      await expect(registry.createEnrollment('dc1', ['no spaces'])).rejects.toMatchObject({
        code: 'CIPORT_E_USAGE',
      });
      const { targets, token } = await registry.createEnrollment('dc1', ['Ledger-DB', 'api', 'api']);
      expect(targets).toEqual(['api', 'ledger-db']);
      const agent = await registry.register(token);
      expect((await registry.authenticate(agent.credential)).targets).toEqual(['api', 'ledger-db']);
      const heard: string[][] = [];
      registry.on('targets', (a) => heard.push(a.targets));

      expect((await registry.setTargets('dc1', { add: ['cache'], remove: ['api'] }))[0]?.targets).toEqual([
        'cache',
        'ledger-db',
      ]);
      expect((await registry.setTargets(agent.id, { set: ['x'] }))[0]?.targets).toEqual(['x']);
      // Nothing changes: no event, nothing emitted, the agent still answered.
      expect((await registry.setTargets('dc1', { add: ['x'] }))[0]?.targets).toEqual(['x']);
      expect(heard).toEqual([['cache', 'ledger-db'], ['x']]);
      await expect(registry.setTargets('dc1', {})).rejects.toMatchObject({ code: 'CIPORT_E_USAGE' });
      await expect(registry.setTargets('nobody', { add: ['x'] })).rejects.toMatchObject({
        code: 'CIPORT_E_NOT_FOUND',
      });
      const changed = (await store.auditEvents()).filter((e) => e.type === 'agent.targets_changed');
      expect(changed.map((e) => e.data)).toEqual([
        { agent: 'dc1', agent_id: agent.id, before: ['api', 'ledger-db'], targets: ['cache', 'ledger-db'] },
        { agent: 'dc1', agent_id: agent.id, before: ['cache', 'ledger-db'], targets: ['x'] },
      ]);
      await registry.revoke('dc1');
      await expect(registry.setTargets('dc1', { add: ['y'] })).rejects.toMatchObject({
        code: 'CIPORT_E_NOT_FOUND',
      });
    });

    it('of two concurrent registrations with one token exactly one succeeds', async () => {
      const other = new AgentRegistry(await t.open({ clock: clock.now }), { now: clock.now });
      const { token } = await registry.createEnrollment('dc1', ['echo']);
      const results = await Promise.allSettled([registry.register(token), other.register(token)]);
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
      const refused = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
      expect(refused.reason).toMatchObject({ code: 'CIPORT_E_ENROLLMENT_INVALID' });
      expect(await registry.list()).toHaveLength(1);
    });

    it('an expired token is refused', async () => {
      const { token } = await registry.createEnrollment('dc1', ['echo'], MINUTE);
      clock.advance(MINUTE);
      await expect(registry.register(token)).rejects.toMatchObject({ code: 'CIPORT_E_ENROLLMENT_INVALID' });
      expect(await registry.list()).toEqual([]);
    });

    it('an unknown or malformed token is refused', async () => {
      await registry.createEnrollment('dc1', ['echo']);
      for (const token of [`${ENROLLMENT_PREFIX}nope`, '', 'x'.repeat(5000)]) {
        await expect(registry.register(token)).rejects.toMatchObject({ code: 'CIPORT_E_ENROLLMENT_INVALID' });
      }
      expect(await registry.list()).toEqual([]);
    });

    it('refuses bad names and ttls', async () => {
      await expect(registry.createEnrollment('no spaces', ['echo'])).rejects.toMatchObject({
        code: 'CIPORT_E_USAGE',
      });
      await expect(registry.createEnrollment('x'.repeat(64), ['echo'])).rejects.toMatchObject({
        code: 'CIPORT_E_USAGE',
      });
      await expect(registry.createEnrollment('dc1', ['echo'], 0)).rejects.toMatchObject({
        code: 'CIPORT_E_USAGE',
      });
      expect(await store.auditEvents()).toEqual([]);
    });

    it('authenticate refuses wrong secrets, malformed credentials and revoked agents alike', async () => {
      const { token } = await registry.createEnrollment('dc1', ['echo']);
      const agent = await registry.register(token);
      const [head] = agent.credential.split('.');
      for (const bad of [
        undefined,
        '',
        `${head}.wrong`,
        `${head}`,
        `${head}.`,
        `${CREDENTIAL_PREFIX}agt_0000000000000000.${agent.credential.split('.')[1]}`,
        agent.credential.replace(CREDENTIAL_PREFIX, 'cpx_'),
      ]) {
        await expect(registry.authenticate(bad)).rejects.toMatchObject({
          code: 'CIPORT_E_AGENT_UNAUTHORIZED',
        });
      }
      await registry.revoke(agent.id);
      await expect(registry.authenticate(agent.credential)).rejects.toMatchObject({
        code: 'CIPORT_E_AGENT_UNAUTHORIZED',
      });
    });

    it('touch records when an agent was last seen', async () => {
      const agent = await registry.register((await registry.createEnrollment('dc1', ['echo'])).token);
      clock.advance(5 * MINUTE);
      await registry.touch(agent.id);
      expect((await registry.list())[0]?.last_seen_at).toBe(new Date(T0 + 5 * MINUTE).toISOString());
      await registry.touch('agt_unknown'); // no-op
    });

    it('revoke by name revokes every agent of that name, by id one; emits revoked once each', async () => {
      const enrollAndRegister = async (name: string) =>
        registry.register((await registry.createEnrollment(name, ['echo'])).token);
      const a1 = await enrollAndRegister('dc1');
      clock.advance(1);
      const a2 = await enrollAndRegister('dc1');
      const b = await enrollAndRegister('dc2');
      const emitted: AgentRecord[] = [];
      registry.on('revoked', (r) => emitted.push(r));

      clock.advance(MINUTE);
      const revoked = await registry.revoke('dc1');
      expect(revoked.map((r) => r.id)).toEqual([a1.id, a2.id]);
      expect(revoked[0]?.revoked_at).toBe(new Date(clock.now()).toISOString());
      expect(JSON.stringify(revoked)).not.toContain('credential_hash');
      expect(emitted.map((r) => r.id)).toEqual([a1.id, a2.id]);
      expect(emitted[0]?.credential_hash).toMatch(/^[0-9a-f]{64}$/);

      expect(await registry.revoke('dc1')).toEqual([]); // already revoked: nothing, no error
      await expect(registry.revoke('nobody')).rejects.toMatchObject({ code: 'CIPORT_E_NOT_FOUND' });
      expect((await registry.revoke(b.id)).map((r) => r.name)).toEqual(['dc2']);
      expect(emitted).toHaveLength(3);
      await expect(registry.authenticate(a2.credential)).rejects.toMatchObject({
        code: 'CIPORT_E_AGENT_UNAUTHORIZED',
      });
    });

    it('writes agent.enrolled and agent.revoked events, hashes only, and the chain verifies', async () => {
      const { token, expires_at } = await registry.createEnrollment('dc1', ['echo']);
      clock.advance(1000);
      const agent = await registry.register(token);
      clock.advance(1000);
      await registry.revoke('dc1');
      const events = await store.auditEvents();
      expect(events.map((e) => [e.type, e.time])).toEqual([
        ['agent.enrolled', T0],
        ['agent.enrolled', T0 + 1000],
        ['agent.revoked', T0 + 2000],
      ]);
      expect(events.map((e) => e.data)).toEqual([
        { agent: 'dc1', stage: 'token_created', expires_at, targets: ['echo'] },
        { agent: 'dc1', agent_id: agent.id, stage: 'registered', targets: ['echo'] },
        { agent: 'dc1', agent_id: agent.id },
      ]);
      const secret = agent.credential.split('.')[1] as string;
      const stored = JSON.stringify(await store.auditRows());
      expect(stored).not.toContain(token);
      expect(stored).not.toContain(secret);
      expect(await verifyChain(store)).toMatchObject({ ok: true, count: 3 });
    });

    describe('credential expiry and rotation', () => {
      const enrollOne = async (r = registry, name = 'dc1') =>
        r.register((await r.createEnrollment(name, ['echo'])).token);

      it('a credential is accepted until its expiry, then refused as expired (same code)', async () => {
        expect(CREDENTIAL_LIFETIME_MS).toBe(30 * DAY);
        const agent = await enrollOne();
        clock.advance(30 * DAY - 1);
        await expect(registry.authenticate(agent.credential)).resolves.toMatchObject({ id: agent.id });
        clock.advance(1);
        const refusal = await registry.authenticate(agent.credential).catch((e: unknown) => e);
        expect(refusal).toMatchObject({ code: 'CIPORT_E_AGENT_UNAUTHORIZED' });
        expect((refusal as Error).message).toMatch(/expired/);
        expect((refusal as Error).message).not.toContain(secretOf(agent.credential));
        // A wrong secret says nothing about expiry.
        const wrong = await registry
          .authenticate(`${agent.credential.split('.')[0]}.nope`)
          .catch((e: unknown) => e as Error);
        expect(wrong).toMatchObject({ code: 'CIPORT_E_AGENT_UNAUTHORIZED' });
        expect((wrong as Error).message).not.toMatch(/expired/);
        // An expired credential cannot rotate either.
        await expect(registry.rotate(agent.credential)).rejects.toMatchObject({
          code: 'CIPORT_E_AGENT_UNAUTHORIZED',
          message: expect.stringMatching(/expired/),
        });
      });

      it('the lifetime and the grace come from the options', async () => {
        const short = new AgentRegistry(store, {
          now: clock.now,
          credentialLifetimeMs: 4_000,
          rotationGraceMs: 500,
        });
        expect(() => new AgentRegistry(store, { credentialLifetimeMs: 0 })).toThrow(/credentialLifetimeMs/);
        const agent = await enrollOne(short);
        expect(agent.expires_at).toBe(iso(T0 + 4_000));
        clock.advance(2_000);
        const rotated = await short.rotate(agent.credential);
        expect(rotated.expires_at).toBe(iso(T0 + 6_000));
        clock.advance(499);
        await expect(short.authenticate(agent.credential)).resolves.toMatchObject({ id: agent.id });
        clock.advance(1);
        await expect(short.authenticate(agent.credential)).rejects.toMatchObject({
          code: 'CIPORT_E_AGENT_UNAUTHORIZED',
          message: expect.stringMatching(/expired/),
        });
        await expect(short.authenticate(rotated.credential)).resolves.toMatchObject({
          credential_expires_at: iso(T0 + 6_000),
        });
      });

      it('rotate: a new secret with a fresh lifetime; the old one has a grace period, never beyond its expiry', async () => {
        const agent = await enrollOne();
        clock.advance(20 * DAY);
        const rotated = await registry.rotate(agent.credential);
        expect(rotated).toEqual({
          id: agent.id,
          name: 'dc1',
          credential: expect.stringMatching(
            new RegExp(`^${CREDENTIAL_PREFIX}${agent.id}\\.[A-Za-z0-9_-]{43}$`),
          ),
          expires_at: iso(T0 + 50 * DAY),
        });
        expect(rotated.credential).not.toBe(agent.credential);
        // Both work during the grace period (default 1 h): a second link, a crash before saving.
        await expect(registry.authenticate(rotated.credential)).resolves.toMatchObject({ id: agent.id });
        await expect(registry.authenticate(agent.credential)).resolves.toMatchObject({ id: agent.id });
        // …but only the current one can rotate.
        await expect(registry.rotate(agent.credential)).rejects.toMatchObject({
          code: 'CIPORT_E_AGENT_UNAUTHORIZED',
        });
        clock.advance(HOUR);
        await expect(registry.authenticate(agent.credential)).rejects.toMatchObject({
          code: 'CIPORT_E_AGENT_UNAUTHORIZED',
          message: expect.stringMatching(/expired/),
        });
        await expect(registry.authenticate(rotated.credential)).resolves.toMatchObject({ id: agent.id });

        // Rotating 10 minutes before the expiry: the old secret is accepted until its expiry only.
        clock.set(T0 + 20 * DAY + 30 * DAY - 10 * MINUTE);
        const late = await registry.rotate(rotated.credential);
        clock.advance(10 * MINUTE - 1);
        await expect(registry.authenticate(rotated.credential)).resolves.toMatchObject({ id: agent.id });
        clock.advance(1);
        await expect(registry.authenticate(rotated.credential)).rejects.toMatchObject({
          code: 'CIPORT_E_AGENT_UNAUTHORIZED',
        });
        await expect(registry.authenticate(late.credential)).resolves.toMatchObject({ id: agent.id });
        // Two rotations back is not the previous secret any more.
        await expect(registry.authenticate(agent.credential)).rejects.toMatchObject({
          code: 'CIPORT_E_AGENT_UNAUTHORIZED',
        });
      });

      it('a revoked agent cannot rotate, nor use either secret', async () => {
        const agent = await enrollOne();
        const rotated = await registry.rotate(agent.credential);
        await registry.revoke(agent.id);
        for (const c of [agent.credential, rotated.credential]) {
          await expect(registry.rotate(c)).rejects.toMatchObject({ code: 'CIPORT_E_AGENT_UNAUTHORIZED' });
          await expect(registry.authenticate(c)).rejects.toMatchObject({
            code: 'CIPORT_E_AGENT_UNAUTHORIZED',
          });
        }
        for (const bad of [undefined, '', 'cpa_x', `${agent.credential}x`]) {
          await expect(registry.rotate(bad)).rejects.toMatchObject({ code: 'CIPORT_E_AGENT_UNAUTHORIZED' });
        }
      });

      it('of concurrent rotations with one credential, on two gateways, exactly one succeeds', async () => {
        const other = new AgentRegistry(await t.open({ clock: clock.now }), { now: clock.now });
        const agent = await enrollOne();
        const results = await Promise.allSettled([
          registry.rotate(agent.credential),
          other.rotate(agent.credential),
          registry.rotate(agent.credential),
        ]);
        const won = results.filter((r) => r.status === 'fulfilled');
        expect(won).toHaveLength(1);
        for (const r of results.filter((x) => x.status === 'rejected')) {
          expect((r as PromiseRejectedResult).reason).toMatchObject({ code: 'CIPORT_E_AGENT_UNAUTHORIZED' });
        }
        const winner = (won[0] as PromiseFulfilledResult<{ credential: string }>).value;
        await expect(registry.authenticate(winner.credential)).resolves.toMatchObject({ id: agent.id });
        const events = await store.auditEvents();
        expect(events.filter((e) => e.type === 'agent.credential_rotated')).toHaveLength(1);
      });

      it('writes agent.credential_rotated with the rotation, no secret, and the chain verifies', async () => {
        const { token } = await registry.createEnrollment('dc1', ['echo']);
        const agent = await registry.register(token);
        clock.advance(MINUTE);
        const r1 = await registry.rotate(agent.credential);
        clock.advance(MINUTE);
        const r2 = await registry.rotate(r1.credential);
        const events = await store.auditEvents();
        expect(events.map((e) => [e.type, e.time])).toEqual([
          ['agent.enrolled', T0],
          ['agent.enrolled', T0],
          ['agent.credential_rotated', T0 + MINUTE],
          ['agent.credential_rotated', T0 + 2 * MINUTE],
        ]);
        expect(events.slice(2).map((e) => e.data)).toEqual([
          { agent: 'dc1', agent_id: agent.id, expires_at: r1.expires_at },
          { agent: 'dc1', agent_id: agent.id, expires_at: r2.expires_at },
        ]);
        const stored = JSON.stringify(await store.auditRows());
        for (const c of [agent.credential, r1.credential, r2.credential]) {
          expect(stored).not.toContain(secretOf(c));
        }
        expect(stored).not.toContain(token);
        expect(await verifyChain(store)).toMatchObject({ ok: true, count: 4 });
      });
    });

    it('a revocation committed through another store is announced by watchRemoteRevocations', async () => {
      const remoteStore = await t.open({ clock: clock.now });
      const remote = new AgentRegistry(remoteStore, { now: clock.now });
      const old = await remote.register((await remote.createEnrollment('old', ['echo'])).token);
      await remote.revoke(old.id); // before watching: not announced
      const agent = await remote.register((await remote.createEnrollment('dc1', ['echo'])).token);
      const local = await registry.register((await registry.createEnrollment('dc2', ['echo'])).token);

      const emitted: AgentRecord[] = [];
      registry.on('revoked', (r) => emitted.push(r));
      // SQLite has no notifications: the sweep does it there.
      const unwatch = await registry.watchRemoteRevocations({ sweepMs: h.engine === 'sqlite' ? 50 : 60_000 });
      try {
        expect(emitted).toEqual([]);
        await remote.revoke('dc1');
        await waitFor(() => emitted.length === 1, 3_000);
        expect(emitted[0]).toMatchObject({ id: agent.id, name: 'dc1' });
        expect(emitted[0]?.revoked_at).not.toBeNull();

        // Revoked here: announced once, not again when the notification or the sweep comes by.
        await registry.revoke(local.id);
        expect(emitted.map((r) => r.id)).toEqual([agent.id, local.id]);
        await new Promise((r) => setTimeout(r, 200));
        expect(await registry.sweepRevocations()).toEqual([]);
        expect(emitted).toHaveLength(2);
      } finally {
        await unwatch();
        await unwatch();
      }
    });
  });
}
