// HOSTILE (r14): someone with write access to the store removes the newest audit events (the
// tail: the one edit a hash chain cannot reveal on its own, docs/audit.md "Verifying"). The
// gateway has an anchor for free: each audit sink's cursor in the same store says which seq the
// SIEM already acknowledged. Nothing reads it that way, so:
// 1. the events appended after the truncation reuse the removed seqs, which are at or below the
//    sink's cursor, and are never delivered: the SIEM silently stops seeing them until the chain
//    grows past the old cursor (and never sees those seqs' new contents);
// 2. an access review over the truncated chain reports `verification.ok` and can be attested,
//    although the gateway's own cursor proves events were removed.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseJsonlLine } from '../../src/audit/index.js';
import { FAST, onCleanup, openSessions, sinkGateway } from '../audit-sinks/harness.js';
import { waitFor } from '../fixtures/wait-for.js';
import { ADMIN_TOKEN, api, type Harness, tempDir } from '../gateway/helpers.js';
import { openRawSqlite } from '../helpers/sqlite.js';

function lines(file: string) {
  return readFileSync(file, 'utf8').split('\n').filter(Boolean).map(parseJsonlLine);
}

/** A file sink that acknowledged 6 sessions; then its last 4 acknowledged events are removed and the gateway restarts. */
async function truncated(): Promise<{ h: Harness; file: string; cursor: number; head: number }> {
  const tmp = tempDir('ciport-hostile-trunc-');
  onCleanup(tmp.cleanup);
  const file = join(tmp.dir, 'siem.jsonl');
  const h = await sinkGateway([{ name: 'siem', kind: 'file', path: file, batch: 50 }]);
  await openSessions(h, 6);
  const n = (await h.gateway.store.auditHead())?.seq ?? 0;
  await waitFor(async () => (await h.gateway.store.auditSinkCursors())[0]?.seq === n, 10_000, 'delivered');
  await h.gateway.drain({ graceMs: 0 });
  await h.gateway.close();
  const db = openRawSqlite(join(h.dataDir, 'ciport.db'));
  db.exec('drop trigger if exists audit_events_no_update; drop trigger if exists audit_events_no_delete;');
  // The sink acknowledged up to `cursor`; remove its last 4 (acknowledged) events and all after.
  const cursor = (
    db.prepare("select seq from audit_sink_cursors where sink = 'siem'").get() as { seq: number }
  ).seq;
  db.prepare('delete from audit_events where seq > ?').run(cursor - 4);
  db.close();
  await h.restart(undefined, FAST);
  return { h, file, cursor, head: cursor - 4 };
}

describe('hostile: tail truncation of the audit log under an audit sink', () => {
  // HOLE: events written after the truncation get seqs <= the sink's cursor and are skipped; the
  // gateway neither delivers them nor says anything (no failing state, no log, lag metric 0).
  it.fails('every event written after a tail truncation still reaches the SIEM', async () => {
    const { h, file, cursor, head } = await truncated();
    await openSessions(h, 6);
    const after = await h.gateway.store.auditEvents({ afterSeq: head, limit: 100 });
    // The new events reuse the removed seqs (at or below the cursor), and go past it.
    expect(after[0]?.seq).toBe(head + 1);
    expect(after.at(-1)?.seq).toBeGreaterThan(cursor);
    // The SIEM gets the ones past the old cursor (by hash: the seqs at or below it were
    // delivered before, with other contents)...
    const hashes = () => new Set(lines(file).map((r) => r.hash));
    await waitFor(
      () => after.filter((e) => e.seq > cursor).every((e) => hashes().has(e.hash)),
      10_000,
      'events past the old cursor delivered',
    );
    // ...but never those that reused a removed seq: this is where it fails.
    expect(after.filter((e) => !hashes().has(e.hash)).map((e) => e.seq)).toEqual([]);
  });

  // HOLE (arguably the documented "truncation needs an anchor" limit, but the gateway holds an
  // anchor in the same store): the review of the truncated log verifies and is attested.
  it.fails('an access review refuses to attest a chain shorter than what a sink already acknowledged', async () => {
    const { h, cursor, head } = await truncated();
    expect(head).toBeLessThan(cursor);
    const c = await h.client();
    await new Promise((r) => setTimeout(r, 5));
    const until = new Date(Date.now() - 1).toISOString();
    const res = await api(c, 'POST', '/v1/review/attest', {
      bearer: ADMIN_TOKEN,
      body: { since: '1d', until },
    });
    expect(res.status).toBe(409);
  });
});
