// Two gateways on one PostgreSQL store, both configured with the same webhook sink: the lease in
// the store makes exactly one of them deliver, the receiver gets every event of both once and in
// chain order, and when the delivering gateway stops cleanly the other takes over from the cursor.
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyRows } from '../../src/audit/index.js';
import { waitFor } from '../fixtures/wait-for.js';
import { type Harness, startHarness, tempDir } from '../gateway/helpers.js';
import { PG_ADMIN_URL } from '../store/harness.js';
import { FAST, metric, onCleanup, openSessions } from './harness.js';
import { WebhookReceiver } from './receivers.js';

const SECRET = 'whsec-shared-store-0f3a';
const dbName = `ciport_sinks_${randomBytes(6).toString('hex')}`;
const dbUrl = (() => {
  const u = new URL(PG_ADMIN_URL);
  u.pathname = `/${dbName}`;
  return u.toString();
})();
let admin: pg.Client;

beforeAll(async () => {
  admin = new pg.Client({ connectionString: PG_ADMIN_URL, connectionTimeoutMillis: 5000 });
  await admin.connect(); // PostgreSQL is required (see test/store/harness.ts): no skipping
  await admin.query(`create database ${dbName}`);
});
afterAll(async () => {
  await admin?.query(`drop database if exists ${dbName} with (force)`);
  await admin?.end();
});

describe('audit sink on gateways sharing a PostgreSQL store', () => {
  it('one gateway delivers at a time; every event of both arrives once, in order, also across a hand-over', async () => {
    const receiver = await new WebhookReceiver(SECRET).start();
    onCleanup(() => receiver.stop());
    const tmp = tempDir('ciport-sink-pg-');
    onCleanup(tmp.cleanup);
    const secretFile = join(tmp.dir, 'secret');
    writeFileSync(secretFile, SECRET);
    const sink = { name: 'siem', kind: 'webhook', url: receiver.url, secret: { file: secretFile }, batch: 4 };
    const gateway = async (): Promise<Harness> => {
      const h = await startHarness(
        { extra: { store: { postgres: { url: dbUrl } }, audit: { sinks: [sink] } } },
        FAST,
      );
      onCleanup(() => h.stop());
      return h;
    };
    const a = await gateway();
    const b = await gateway();
    const expectAll = async (h: Harness) => {
      const n = (await h.gateway.store.auditHead())?.seq ?? 0;
      await waitFor(() => receiver.received.length >= n, 10_000, `${n} events`);
      expect(receiver.seqs).toEqual(Array.from({ length: n }, (_, i) => i + 1));
      expect(await verifyRows(receiver.received)).toMatchObject({ ok: true, count: n });
    };

    await openSessions(a, 3);
    await openSessions(b, 3);
    await expectAll(a);
    const [cursor] = await a.gateway.store.auditSinkCursors();
    const owner = cursor?.owner;
    expect([a.gateway.gatewayId, b.gateway.gatewayId]).toContain(owner);
    const [delivering, standby] = owner === a.gateway.gatewayId ? [a, b] : [b, a];
    expect(await metric(standby, 'ciport_audit_sink_delivered_total')).toContain('{sink="siem"} 0');

    await delivering.gateway.drain({ graceMs: 0 }); // releases the lease
    await openSessions(standby, 2);
    await expectAll(standby);
    expect((await standby.gateway.store.auditSinkCursors())[0]?.owner).toBe(standby.gateway.gatewayId);
  });
});
