// SessionManager lifecycle hooks: onOpened after a session is committed, onEnded once per session
// on every end path (client, revoke, reaper at start, ended by another gateway), bounded and
// never throwing.
import { afterEach, describe, expect, it } from 'vitest';
import { auditEvent } from '../../src/audit/events.js';
import { compilePolicy } from '../../src/policy/engine.js';
import { type SessionLog, SessionManager } from '../../src/session/manager.js';
import type { EndReason } from '../../src/session/reasons.js';
import { openStore } from '../../src/store/open.js';
import type { SessionRecord, Store } from '../../src/store/types.js';
import { waitFor } from '../fixtures/wait-for.js';
import {
  ADMIN_TOKEN,
  api,
  type Harness,
  openSession,
  startHarness,
  tempDir,
  testConfig,
} from '../gateway/helpers.js';

let h: Harness | undefined;
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  await h?.stop();
  h = undefined;
  for (const c of cleanups.splice(0).reverse()) await c();
});

const quiet: SessionLog & { errors: string[] } = {
  errors: [],
  info() {},
  warn() {},
  error(obj: object, msg?: string) {
    quiet.errors.push(`${msg} ${JSON.stringify(obj)}`);
  },
};

function newRecord(id: string, now: number, over: Partial<SessionRecord> = {}) {
  return {
    id,
    secretHash: Buffer.from(id).toString('hex').padEnd(64, '0'),
    issuer: 'gitlab',
    subject: 'project_path:x',
    principal: { issuer: 'gitlab' },
    targets: ['echo'],
    rule: 'ledger-main',
    createdAt: now - 1000,
    expiresAt: now + 60_000,
    leaseExpiresAt: now + 30_000,
    gatewayId: 'gw_test',
    ...over,
  };
}

async function managerOn(store: Store, dataDir: string, gatewayId: string) {
  const config = testConfig({ dataDir, issuerUrl: 'https://issuer.invalid' });
  return new SessionManager({
    store,
    config,
    policy: compilePolicy(config),
    log: quiet,
    gatewayId,
    sweepIntervalMs: 100,
  });
}

describe('session lifecycle hooks', () => {
  it('onOpened and onEnded run for API-opened sessions (client end and revoke)', async () => {
    h = await startHarness();
    const opened: string[] = [];
    const ended: [string, EndReason, string][] = [];
    h.gateway.manager.onOpened((r) => {
      opened.push(r.id);
    });
    h.gateway.manager.onEnded(async (r, reason) => {
      await new Promise((res) => setTimeout(res, 20));
      ended.push([r.id, reason, r.state]);
    });
    const c = await h.client();
    const a = await openSession(c, await h.token(), { targets: ['echo'] });
    const b = await openSession(c, await h.token(), { targets: ['echo'] });
    expect(opened).toEqual([a.id, b.id]);
    expect((await api(c, 'DELETE', `/v1/sessions/${a.id}`, { bearer: a.secret })).status).toBeLessThan(300);
    expect((await api(c, 'POST', `/v1/sessions/${b.id}/revoke`, { bearer: ADMIN_TOKEN })).status).toBe(200);
    // Awaited: the hooks finished before the API answered.
    expect(ended).toEqual([
      [a.id, 'client_end', 'ended'],
      [b.id, 'revoked', 'ended'],
    ]);
    // A second end of the same session does not run the hooks again.
    await h.gateway.manager.revoke(b.id);
    expect(ended).toHaveLength(2);
  });

  it('the sweep notices which of several live sessions another gateway ended, and only those', async () => {
    const { dir, cleanup } = tempDir();
    cleanups.push(cleanup);
    const store = await openStore(undefined, { dataDir: dir });
    cleanups.push(() => store.close());
    const now = Date.now();
    const ids = ['ses_keep1', 'ses_gone', 'ses_keep2'];
    for (const id of ids) {
      await store.createSession(newRecord(id, now), auditEvent('session.opened', { session: id } as never));
    }
    const m = await managerOn(store, dir, 'gw_a');
    const ended: string[] = [];
    m.onEnded((r, reason) => {
      ended.push(`${r.id}:${reason}`);
    });
    await m.start();
    cleanups.push(() => m.stop());
    expect(m.liveCount).toBe(3);
    // Ended through the store alone, as another gateway would (no notification on SQLite).
    await store.endSession('ses_gone', 'revoked', (s) =>
      auditEvent('session.ended', { session: s.id } as never),
    );
    await waitFor(() => expect(ended).toEqual(['ses_gone:revoked']));
    expect(m.liveCount).toBe(2);
  });

  it('synchronous and asynchronous onEnded hooks both run, in order, before end() resolves', async () => {
    const { dir, cleanup } = tempDir();
    cleanups.push(cleanup);
    const store = await openStore(undefined, { dataDir: dir });
    cleanups.push(() => store.close());
    const m = await managerOn(store, dir, 'gw_a');
    const order: string[] = [];
    m.onEnded((r) => {
      order.push(`sync ${r.id}`);
    });
    m.onEnded(async (r) => {
      await new Promise((resolve) => setTimeout(resolve, 20));
      order.push(`async ${r.id}`);
    });
    const now = Date.now();
    await store.createSession(
      newRecord('ses_hooks', now),
      auditEvent('session.opened', { session: 'ses_hooks' } as never),
    );
    await m.start();
    cleanups.push(() => m.stop());
    await m.end('ses_hooks', 'revoked');
    expect(order).toEqual(['sync ses_hooks', 'async ses_hooks']);
  });

  it('a throwing or hanging hook is logged and does not stop the end or the other hooks', async () => {
    const { dir, cleanup } = tempDir();
    cleanups.push(cleanup);
    const store = await openStore(undefined, { dataDir: dir });
    cleanups.push(() => store.close());
    const now = Date.now();
    await store.createSession(
      newRecord('ses_throw', now),
      auditEvent('session.opened', { session: 'ses_throw' } as never),
    );
    const m = await managerOn(store, dir, 'gw_a');
    const seen: string[] = [];
    m.onEnded(() => {
      throw new Error('boom');
    });
    m.onEnded((r, reason) => {
      seen.push(`${r.id}:${reason}`);
    });
    const off = m.onEnded(() => {
      seen.push('unsubscribed');
    });
    off();
    await m.start();
    cleanups.push(() => m.stop());
    const result = await m.end('ses_throw', 'revoked');
    expect(result?.state).toBe('ended');
    expect(seen).toEqual(['ses_throw:revoked']);
    expect(quiet.errors.some((e) => e.includes('boom'))).toBe(true);
  });

  it('runs for sessions reaped at start (expired_while_down) and for sessions ended by another gateway', async () => {
    const { dir, cleanup } = tempDir();
    cleanups.push(cleanup);
    const store = await openStore(undefined, { dataDir: dir });
    cleanups.push(() => store.close());
    const now = Date.now();
    const ev = (id: string) => auditEvent('session.opened', { session: id } as never);
    await store.createSession(newRecord('ses_stale', now, { leaseExpiresAt: now - 5000 }), ev('ses_stale'));
    await store.createSession(newRecord('ses_live', now), ev('ses_live'));
    const a = await managerOn(store, dir, 'gw_a');
    const seen: string[] = [];
    a.onEnded((r, reason) => {
      seen.push(`${r.id}:${reason}`);
    });
    const started = await a.start();
    cleanups.push(() => a.stop());
    expect(started).toEqual({ reaped: 1, adopted: 1 });
    expect(seen).toEqual(['ses_stale:expired_while_down']);
    // Another gateway on the same store revokes the live one; A notices on its sweep.
    const b = await managerOn(store, dir, 'gw_b');
    await b.revoke('ses_live', 'admin');
    await waitFor(() => seen.includes('ses_live:revoked'), 3000);
    expect(a.liveCount).toBe(0);
    expect(seen).toHaveLength(2);
  });
});
