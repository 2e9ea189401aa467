// Delivery cursors of the audit sinks (docs/audit-sinks.md): per sink, the last audit `seq` its
// receiver acknowledged, and a lease naming the one gateway that delivers to it. Gateways
// sharing a PostgreSQL store thus never deliver one sink's events from two places at once, and
// a gateway that stops (or dies) hands the sink over when its lease lapses (at once on a clean
// stop: it releases the lease).
//
// Every statement is a single conditional write, so the database's own row locking decides a
// race: two gateways claiming one expired lease at once both run `update … where lease expired
// or mine`, and only the first to commit changes the row; the other sees an owner that is not
// itself and stands by.
import type { Kysely } from 'kysely';
import { CiportError } from '../errors/index.js';
import { type Database, toInt } from './schema.js';

/** A sink's stored delivery state. Times are epoch milliseconds. */
export interface AuditSinkCursor {
  sink: string;
  /** The last seq the receiver acknowledged (0: nothing yet). */
  seq: number;
  /** The gateway holding the delivery lease, or null. */
  owner: string | null;
  leaseUntil: number;
  updatedAt: number;
}

/** The store part the audit sinks use (src/audit/sinks). */
export interface AuditSinkStore {
  /**
   * Claim or renew the delivery lease of `sink` for `owner` until `until`, creating the sink's
   * row (cursor 0) on first use. Resolves to the cursor when `owner` holds the lease now, or
   * undefined when another owner's lease runs past `now`.
   */
  claimAuditSink(sink: string, owner: string, now: number, until: number): Promise<number | undefined>;
  /**
   * Move the cursor of `sink` from `from` to `to` (> from) if `owner` still holds the lease and
   * the cursor is still `from`. False otherwise (the lease went to another gateway): the caller
   * stops delivering and claims again.
   */
  advanceAuditSink(sink: string, owner: string, from: number, to: number, now: number): Promise<boolean>;
  /** Give the lease up (clean stop), so another gateway or the next start takes over at once. */
  releaseAuditSink(sink: string, owner: string): Promise<void>;
  /** Every sink's delivery state, by name. */
  auditSinkCursors(): Promise<AuditSinkCursor[]>;
}

type Write = <T>(fn: (trx: Kysely<Database>) => Promise<T>) => Promise<T>;

function check(sink: string, owner: string, ...ints: number[]): void {
  if (typeof sink !== 'string' || sink.length === 0 || sink.length > 200) {
    throw new CiportError('CIPORT_E_INTERNAL', 'invalid audit sink name');
  }
  if (typeof owner !== 'string' || owner.length === 0 || owner.length > 200) {
    throw new CiportError('CIPORT_E_INTERNAL', 'invalid audit sink owner');
  }
  for (const n of ints) {
    if (!Number.isSafeInteger(n) || n < 0) throw new CiportError('CIPORT_E_INTERNAL', 'invalid integer');
  }
}

export async function claimAuditSink(
  write: Write,
  sink: string,
  owner: string,
  now: number,
  until: number,
): Promise<number | undefined> {
  check(sink, owner, now, until);
  return write(async (trx) => {
    await trx
      .insertInto('audit_sink_cursors')
      .values({ sink, seq: 0, owner: null, lease_until: 0, updated_at: now })
      .onConflict((oc) => oc.column('sink').doNothing())
      .execute();
    const claimed = await trx
      .updateTable('audit_sink_cursors')
      .set({ owner, lease_until: until })
      .where('sink', '=', sink)
      .where((eb) => eb.or([eb('owner', '=', owner), eb('owner', 'is', null), eb('lease_until', '<=', now)]))
      .executeTakeFirst();
    if (claimed.numUpdatedRows === 0n) return undefined;
    const row = await trx
      .selectFrom('audit_sink_cursors')
      .select('seq')
      .where('sink', '=', sink)
      .executeTakeFirstOrThrow();
    return toInt(row.seq);
  });
}

export async function advanceAuditSink(
  write: Write,
  sink: string,
  owner: string,
  from: number,
  to: number,
  now: number,
): Promise<boolean> {
  check(sink, owner, from, to, now);
  if (to <= from) throw new CiportError('CIPORT_E_INTERNAL', 'an audit sink cursor only moves forward');
  return write(async (trx) => {
    const r = await trx
      .updateTable('audit_sink_cursors')
      .set({ seq: to, updated_at: now })
      .where('sink', '=', sink)
      .where('owner', '=', owner)
      .where('seq', '=', from)
      .executeTakeFirst();
    return r.numUpdatedRows > 0n;
  });
}

export async function releaseAuditSink(write: Write, sink: string, owner: string): Promise<void> {
  check(sink, owner);
  await write(async (trx) => {
    await trx
      .updateTable('audit_sink_cursors')
      .set({ owner: null, lease_until: 0 })
      .where('sink', '=', sink)
      .where('owner', '=', owner)
      .execute();
  });
}

export async function auditSinkCursors(db: Kysely<Database>): Promise<AuditSinkCursor[]> {
  const rows = await db.selectFrom('audit_sink_cursors').selectAll().orderBy('sink', 'asc').execute();
  return rows.map((r) => ({
    sink: r.sink,
    seq: toInt(r.seq),
    owner: r.owner,
    leaseUntil: toInt(r.lease_until),
    updatedAt: toInt(r.updated_at),
  }));
}
