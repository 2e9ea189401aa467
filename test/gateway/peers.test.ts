// The gateways sharing one PostgreSQL store know each other through its `gateways` table
// (src/gateway/peers.ts): gateways starting at once all find each other (one row each, no
// read-modify-write of a shared value), a draining gateway leaves its sessions to a live peer,
// and the last one ends them.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { GatewayPeers } from '../../src/gateway/peers.js';
import { silentLogger } from '../../src/log/logger.js';
import { openStore } from '../../src/store/open.js';
import { FixtureIssuer } from '../fixtures/oidc-issuer.js';
import { createTestDatabase, type TestDatabase } from '../fixtures/pg-database.js';
import { type LivenessHarness, startLivenessHarness } from '../jobs/gateway-harness.js';
import { openSession, roundTrip, tunnel } from './helpers.js';

let db: TestDatabase;
let issuer: FixtureIssuer;
const running: LivenessHarness[] = [];

beforeAll(async () => {
  db = await createTestDatabase('ciport_peers');
  issuer = await FixtureIssuer.start();
});
afterEach(async () => {
  for (const h of running.splice(0)) await h.stop();
});
afterAll(async () => {
  await issuer?.close();
  await db?.drop();
});

async function gateway(): Promise<LivenessHarness> {
  const h = await startLivenessHarness({ issuer, extra: { store: { postgres: { url: db.url } } } });
  running.push(h);
  return h;
}

describe('gateways sharing a PostgreSQL store', () => {
  it('twelve gateways registering at once all see each other; each leaves on close', async () => {
    const stores = await Promise.all(
      Array.from({ length: 12 }, () => openStore({ postgres: { url: db.url } }, { dataDir: '/nonexistent' })),
    );
    try {
      const peers = stores.map((s, i) => new GatewayPeers(s, `gw_peer${i}`, silentLogger()));
      await Promise.all(peers.map((p, i) => p.register(`https://10.0.0.${i}:8443`)));
      const mine = (ids: string[]) => ids.filter((id) => id.startsWith('gw_peer')).sort();
      const all = peers.map((p) => p.id).sort();
      for (const p of peers) {
        expect(mine(await p.others())).toEqual(all.filter((id) => id !== p.id));
      }
      await Promise.all(peers.slice(0, 6).map((p) => p.close()));
      const left = peers.slice(6, 11).map((p) => p.id);
      expect(mine(await (peers[11] as GatewayPeers).others())).toEqual(left.sort());
      await Promise.all(peers.slice(6).map((p) => p.close()));
    } finally {
      await Promise.all(stores.map((s) => s.close()));
    }
  });

  it('draining A while B runs leaves the session to B; draining B, the last, ends it', async () => {
    const a = await gateway();
    const b = await gateway();
    const ca = await a.client();
    const s = await openSession(ca, await a.token(), { targets: ['echo'] });
    await a.gateway.drain({ graceMs: 0 });
    const cb = await b.client();
    const onB = await tunnel(cb, s, 'echo');
    expect((await roundTrip(onB, Buffer.from('served by B'))).toString()).toBe('served by B');
    const store = await openStore({ postgres: { url: db.url } }, { dataDir: '/nonexistent' });
    try {
      expect(await store.getSession(s.id)).toMatchObject({ state: 'active' });
      onB.close();
      await b.gateway.drain({ graceMs: 0 });
      expect(await store.getSession(s.id)).toMatchObject({ state: 'ended', endReason: 'gateway_shutdown' });
    } finally {
      await store.close();
    }
  });
});
