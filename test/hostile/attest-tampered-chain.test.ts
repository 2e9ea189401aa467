// HOSTILE (r14): someone with write access to the store edits the audit log, then has a review
// of the period attested (`POST /v1/review/attest`). Held: removing an event in the middle,
// swapping two events, moving an event out of the period by its time, or editing an event after
// the period all make the attestation refuse with 409 CIPORT_E_AUDIT_CHAIN_BROKEN and write
// nothing. (Removing the newest events is not caught: see sink-cursor-truncation.test.ts. A full
// rewrite with recomputed hashes is not either: the chain is unkeyed, docs/audit.md "anchor".)
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { onCleanup, openSessions } from '../audit-sinks/harness.js';
import { ADMIN_TOKEN, api, startHarness } from '../gateway/helpers.js';
import { openRawSqlite } from '../helpers/sqlite.js';

const TAMPER: Record<string, (mid: number, last: number) => string> = {
  'delete an event in the middle': (mid) => `delete from audit_events where seq = ${mid}`,
  'swap two events': (mid) =>
    `update audit_events set seq = -1 where seq = ${mid};
     update audit_events set seq = ${mid} where seq = ${mid + 1};
     update audit_events set seq = ${mid + 1} where seq = -1;`,
  'move an event out of the period by its time': (mid) =>
    `update audit_events set time = time - 86400000 * 3 where seq = ${mid}`,
  'edit an event after the period': (_mid, last) =>
    `update audit_events set data = replace(data, '"echo"', '"pg"') where seq = ${last}`,
};

describe('hostile: attesting a review over a tampered chain', () => {
  for (const [what, sql] of Object.entries(TAMPER)) {
    it(`${what}: 409 CIPORT_E_AUDIT_CHAIN_BROKEN, nothing attested`, async () => {
      const h = await startHarness();
      onCleanup(() => h.stop());
      await openSessions(h, 4);
      await new Promise((r) => setTimeout(r, 5));
      const until = new Date(Date.now()).toISOString();
      await new Promise((r) => setTimeout(r, 5));
      await openSessions(h, 1); // an event after the period
      const last = (await h.gateway.store.auditHead())?.seq ?? 0;
      const db = openRawSqlite(join(h.dataDir, 'ciport.db'));
      db.exec(
        'drop trigger if exists audit_events_no_update; drop trigger if exists audit_events_no_delete;',
      );
      db.exec(sql(3, last));
      db.close();
      const c = await h.client();
      const res = await api(c, 'POST', '/v1/review/attest', {
        bearer: ADMIN_TOKEN,
        body: { since: '1d', until },
      });
      expect(res.status).toBe(409);
      expect(res.body).toMatchObject({ error: { code: 'CIPORT_E_AUDIT_CHAIN_BROKEN' } });
      const attested = (await h.gateway.store.auditEvents({ afterSeq: 0, limit: 1000 })).filter(
        (e) => e.type === 'review.attested',
      );
      expect(attested).toEqual([]);
    });
  }
});
