// Delivery cursors of the audit sinks (docs/audit-sinks.md): per sink, the last audit `seq` its
// receiver acknowledged, and a lease naming the one gateway that delivers to it. Gateways
// sharing a PostgreSQL store thus never deliver one sink's events from two places at once, and
// a gateway that stops (or dies) hands the sink over when its lease lapses (at once on a clean
// stop: it releases the lease).
//
// A sink whose acknowledged events the log no longer holds is *halted* (docs/audit-sinks.md, "When
// the log lost events the sink acknowledged"): its lease is given to HALTED, a name no gateway
// has, for ever, so no gateway delivers to it — after a restart too, and even once the log has
// grown past the cursor again — until an operator resumes it from a seq they chose.
//
// Every statement is a single conditional write, so the database's own row locking decides a
// race: two gateways claiming one expired lease at once both run `update … where lease expired
// or mine`, and only the first to commit changes the row; the other sees an owner that is not
// itself and stands by.
import type { Kysely } from 'kysely';
import type { AuditEvent, AuditEventInput } from '../audit/events.js';
import { CiportError } from '../errors/index.js';
import { type Database, toInt } from './schema.js';

/** The lease owner of a halted sink: not a gateway id (those are `gw_…`), so no claim matches. */
const HALTED = 'halted';

/** A sink's stored delivery state. Times are epoch milliseconds. */
export interface AuditSinkCursor {
  sink: string;
  /** The last seq the receiver acknowledged (0: nothing yet). */
  seq: number;
  /** The gateway holding the delivery lease, or null. */
  owner: string | null;
  leaseUntil: number;
  updatedAt: number;
  /** Halted: no gateway delivers to it until an operator resumes it. */
  halted: boolean;
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
  /**
   * Halt `sink` if `owner` holds its lease at cursor `cursor`, appending `event`
   * (`audit.sink_halted`) in the same transaction. Resolves to the event, or undefined when the
   * lease or the cursor moved meanwhile (nothing written).
   */
  haltAuditSink(
    sink: string,
    owner: string,
    cursor: number,
    now: number,
    event: AuditEventInput,
  ): Promise<AuditEvent | undefined>;
  /**
   * Resume a halted `sink`: its cursor becomes `after` and its lease free, and the event `event`
   * makes of the cursor it was halted at (`audit.sink_resumed`) is appended in the same
   * transaction. Undefined when the sink is not halted (nothing written).
   */
  resumeAuditSink(
    sink: string,
    after: number,
    now: number,
    event: (haltedAt: number) => AuditEventInput,
  ): Promise<AuditEvent | undefined>;
}

type Write = <T>(fn: (trx: Kysely<Database>) => Promise<T>) => Promise<T>;

/** `owner` null: the caller is an operator (resume), not a gateway. */
function check(sink: string, owner: string | null, ...ints: number[]): void {
  if (typeof sink !== 'string' || sink.length === 0 || sink.length > 200) {
    throw new CiportError('CIPORT_E_INTERNAL', 'invalid audit sink name');
  }
  if (
    owner !== null &&
    (typeof owner !== 'string' || owner.length === 0 || owner.length > 200 || owner === HALTED)
  ) {
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

/** The halt itself (haltAuditSink): true when this owner held the lease at `cursor`. */
export async function haltAuditSinkRow(
  trx: Kysely<Database>,
  sink: string,
  owner: string,
  cursor: number,
  now: number,
): Promise<boolean> {
  check(sink, owner, cursor, now);
  const r = await trx
    .updateTable('audit_sink_cursors')
    .set({ owner: HALTED, lease_until: Number.MAX_SAFE_INTEGER, updated_at: now })
    .where('sink', '=', sink)
    .where('owner', '=', owner)
    .where('seq', '=', cursor)
    .executeTakeFirst();
  return r.numUpdatedRows > 0n;
}

/** The resume itself (resumeAuditSink): the cursor of the halted sink as it was, or undefined. */
export async function resumeAuditSinkRow(
  trx: Kysely<Database>,
  sink: string,
  after: number,
  now: number,
): Promise<number | undefined> {
  check(sink, null, after, now);
  const row = await trx
    .selectFrom('audit_sink_cursors')
    .select('seq')
    .where('sink', '=', sink)
    .where('owner', '=', HALTED)
    .executeTakeFirst();
  if (!row) return undefined;
  const r = await trx
    .updateTable('audit_sink_cursors')
    .set({ seq: after, owner: null, lease_until: 0, updated_at: now })
    .where('sink', '=', sink)
    .where('owner', '=', HALTED)
    .executeTakeFirst();
  return r.numUpdatedRows > 0n ? toInt(row.seq) : undefined;
}

export async function auditSinkCursors(db: Kysely<Database>): Promise<AuditSinkCursor[]> {
  const rows = await db.selectFrom('audit_sink_cursors').selectAll().orderBy('sink', 'asc').execute();
  return rows.map((r) => {
    const halted = r.owner === HALTED;
    return {
      sink: r.sink,
      seq: toInt(r.seq),
      owner: halted ? null : r.owner,
      leaseUntil: halted ? 0 : toInt(r.lease_until),
      updatedAt: toInt(r.updated_at),
      halted,
    };
  });
}
