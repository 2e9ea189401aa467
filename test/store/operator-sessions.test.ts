// Store contract for signed-in operators (migration 0009), on both engines: a sign-in is found
// by its secret's hash until it expires or ends, ending is final and reported once, two gateways
// sharing the store see the same sign-ins, and old rows are cleared by later sign-ins.
import { createHash, randomBytes } from 'node:crypto';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { OperatorSessionRecord, Store } from '../../src/store/index.js';
import { T0 } from './fixtures.js';
import { engines, type TestDb } from './harness.js';

const hash = () => createHash('sha256').update(randomBytes(32)).digest('hex');
const HOUR = 3_600_000;

function signIn(over: Partial<OperatorSessionRecord> = {}): Omit<OperatorSessionRecord, 'endedAt'> {
  return {
    secretHash: hash(),
    kind: 'browser',
    issuer: 'https://idp.example.com/realms/acme',
    subject: 'u-123',
    email: 'ana@example.com',
    name: 'Ana',
    username: 'ana',
    roles: ['approver', 'auditor'],
    groups: ['dba', 'compliance'],
    createdAt: T0,
    expiresAt: T0 + 8 * HOUR,
    ...over,
  };
}

for (const h of engines()) {
  describe(`store contract: operator sessions [${h.engine}]`, () => {
    let t: TestDb;
    let store: Store;
    beforeAll(() => h.setup());
    afterAll(() => h.teardown());
    beforeEach(async () => {
      t = await h.fresh();
      store = await t.open();
    });
    afterEach(() => t.dispose());

    it('a sign-in is found by its hash, with roles and groups, until it expires', async () => {
      const s = signIn({ kind: 'cli' });
      await store.createOperatorSession(s);
      expect(await store.operatorSession(s.secretHash, T0 + 1)).toEqual({ ...s, endedAt: null });
      expect(await store.operatorSession(s.secretHash, s.expiresAt)).toBeUndefined();
      expect(await store.operatorSession(hash(), T0 + 1)).toBeUndefined();
      expect(await store.operatorSession('not-a-hash', T0 + 1)).toBeUndefined();
    });

    it('signing out is final and reported once; a second gateway on the store agrees', async () => {
      const s = signIn();
      await store.createOperatorSession(s);
      const other = await t.open();
      expect(await other.operatorSession(s.secretHash, T0 + 1)).toMatchObject({ subject: 'u-123' });
      expect(await store.endOperatorSession(s.secretHash, T0 + 2)).toBe(true);
      expect(await other.endOperatorSession(s.secretHash, T0 + 3)).toBe(false);
      expect(await other.operatorSession(s.secretHash, T0 + 4)).toBeUndefined();
    });

    it('the same secret hash cannot be stored twice; a malformed hash is refused', async () => {
      const s = signIn();
      await store.createOperatorSession(s);
      await expect(store.createOperatorSession({ ...s, subject: 'someone-else' })).rejects.toThrow();
      expect((await store.operatorSession(s.secretHash, T0 + 1))?.subject).toBe('u-123');
      await expect(store.createOperatorSession(signIn({ secretHash: 'x' }))).rejects.toMatchObject({
        code: 'CIPORT_E_INTERNAL',
      });
    });

    it('a later sign-in clears rows expired or ended over a day before it', async () => {
      const old = signIn({ expiresAt: T0 + HOUR });
      const ended = signIn();
      const live = signIn({ expiresAt: T0 + 40 * HOUR });
      for (const s of [old, ended, live]) await store.createOperatorSession(s);
      await store.endOperatorSession(ended.secretHash, T0 + 2 * HOUR);
      await store.createOperatorSession(signIn({ createdAt: T0 + 30 * HOUR, expiresAt: T0 + 38 * HOUR }));
      const rows = await t.raw.query<{ secret_hash: string }>('select secret_hash from operator_sessions');
      const left = new Set(rows.map((r) => r.secret_hash));
      expect(left.has(old.secretHash)).toBe(false);
      expect(left.has(ended.secretHash)).toBe(false);
      expect(left.has(live.secretHash)).toBe(true);
      expect(left.size).toBe(2);
    });
  });
}
