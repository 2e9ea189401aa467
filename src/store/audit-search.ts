// Searching the audit log (the console's audit search and session detail; docs/console.md),
// newest first and paged by seq (keyset: never OFFSET), fast on millions of events.
//
// How: a filter on a field inside the event data uses an expression index of migration 0011
// (`auditFieldSql` is the one definition of each expression: the index and the queries must spell
// it identically, or the engines will not use the index); a filter on the type uses the
// (type, seq) index. A time range becomes a seq range first (time never runs backwards along the
// chain, so a time window is a contiguous seq range, found with two lookups on the time index),
// so every query is a range scan of one index in seq order that stops after `limit + 1` rows.
// Filters that need several such scans (several types, a target named in a session's `targets`
// list) run one query per scan and merge the pages in memory: one index order each, never a sort
// of everything that matched.
import { type Kysely, type RawBuilder, sql } from 'kysely';
import type { JsonObject } from '../audit/canonical.js';
import { AUDIT_EVENT_TYPES, type AuditEvent, type AuditEventType } from '../audit/events.js';
import { CiportError } from '../errors/index.js';
import { type Database, toInt } from './schema.js';
import type { StoreEngine } from './types.js';

/** Fields of the event data that have an index (migration 0011). */
export type AuditSearchField = 'session' | 'target' | 'project';

/**
 * The SQL of one indexed field: `session` and `target` are top-level members of the data;
 * `project` is the principal's project path, or the top-level `project` of a denial summary.
 * SQLite: rows whose data is not JSON (a tampered log) give null instead of failing the write or
 * the search. PostgreSQL casts the text (its index cannot catch a cast error; ciport never writes
 * anything but JSON).
 */
export function auditFieldSql(engine: StoreEngine, field: AuditSearchField): string {
  const at = (path: string[]) =>
    engine === 'sqlite'
      ? `(case when json_valid("data") then json_extract("data", '$.${path.join('.')}') end)`
      : `(("data")::jsonb #>> '{${path.join(',')}}')`;
  if (field === 'project') return `coalesce(${at(['principal', 'project'])}, ${at(['project'])})`;
  return at([field]);
}

/** The predicate of the partial index of closed connections (queries repeat it verbatim). */
const CLOSED = "type = 'connection.closed'";
/** SQLite's planner, without statistics, prefers the session index; this one is far smaller. */
export const CLOSED_INDEX = 'audit_events_closed_session_idx';

/**
 * The indexes of migration 0011: (type, seq); each field's expression, then seq; and the
 * session of `connection.closed` events alone (a partial index: the live sessions page sums their
 * bytes for every session it shows, and a session's other events may be thousands of queries).
 */
export function auditSearchIndexes(engine: StoreEngine): Array<{ name: string; sql: string }> {
  const on = (name: string, expr: string) => ({
    name,
    sql: `create index ${name} on audit_events ((${expr}), seq)`,
  });
  return [
    {
      name: 'audit_events_type_seq_idx',
      sql: 'create index audit_events_type_seq_idx on audit_events (type, seq)',
    },
    on('audit_events_session_idx', auditFieldSql(engine, 'session')),
    on('audit_events_target_idx', auditFieldSql(engine, 'target')),
    on('audit_events_project_idx', auditFieldSql(engine, 'project')),
    {
      name: CLOSED_INDEX,
      sql: `create index ${CLOSED_INDEX} on audit_events ((${auditFieldSql(engine, 'session')})) where ${CLOSED}`,
    },
  ];
}

/**
 * Event types that name their targets in a `targets` list rather than one `target`: a target
 * filter also finds these (one index scan per type).
 */
export const TARGET_LIST_TYPES: readonly AuditEventType[] = [
  'session.opened',
  'session.denied',
  'session.ended',
];

/**
 * Event types whose data has one `target` (src/audit/events.ts). A target filter with a type
 * outside both lists matches nothing and scans nothing.
 */
export const TARGET_FIELD_TYPES: readonly AuditEventType[] = AUDIT_EVENT_TYPES.filter(
  (t) =>
    t.startsWith('connection.') ||
    t.startsWith('credential.') ||
    t.startsWith('aws.') ||
    ['session.limit_exceeded', 'query', 'http.request', 'agent.target_refused'].includes(t),
);

/** Most rows one page may ask for. */
export const AUDIT_SEARCH_MAX_LIMIT = 500;
/** Most event types one search may name. */
export const AUDIT_SEARCH_MAX_TYPES = 8;

export interface AuditSearch {
  /** Any of these types (default: all). */
  types?: readonly AuditEventType[];
  session?: string;
  /** The event's `target`, or one of its `targets` (TARGET_LIST_TYPES). */
  target?: string;
  /** The principal's project path. */
  project?: string;
  /** Epoch ms, inclusive. */
  since?: number;
  /** Epoch ms, exclusive. */
  until?: number;
  /** Keyset: events older than this seq (the next page). */
  beforeSeq?: number;
  /** Keyset: events newer than this seq (the previous page); ignored with beforeSeq. */
  afterSeq?: number;
  /** Page size (1–AUDIT_SEARCH_MAX_LIMIT). */
  limit: number;
}

export interface AuditSearchPage {
  /** Newest first. */
  events: AuditEvent[];
  /** More events match beyond this page in the direction asked (older, or newer with afterSeq). */
  more: boolean;
}

/** Per session: its closed connections and their bytes (from `connection.closed`). */
export interface SessionTraffic {
  connections: number;
  bytesToTarget: number;
  bytesFromTarget: number;
}

type Row = {
  seq: number | string | bigint;
  time: number | string | bigint;
  type: string;
  data: string;
  hash: string;
  prev_hash: string;
};

/** A stored row as an event. */
export function toAuditEvent(row: Row): AuditEvent {
  const seq = toInt(row.seq);
  let data: JsonObject;
  try {
    data = JSON.parse(row.data) as JsonObject;
  } catch (err) {
    throw new CiportError(
      'CIPORT_E_INTERNAL',
      `audit event ${seq} has corrupt data; run \`ciport audit verify\``,
      {
        cause: err,
      },
    );
  }
  return {
    seq,
    time: toInt(row.time),
    type: row.type as AuditEventType,
    data,
    hash: row.hash,
    prevHash: row.prev_hash,
  };
}

function checkSearch(q: AuditSearch): void {
  const bad = (why: string) => new CiportError('CIPORT_E_INTERNAL', `invalid audit search: ${why}`);
  if (!Number.isSafeInteger(q.limit) || q.limit < 1 || q.limit > AUDIT_SEARCH_MAX_LIMIT) throw bad('limit');
  if (q.types && (q.types.length === 0 || q.types.length > AUDIT_SEARCH_MAX_TYPES)) throw bad('types');
  for (const n of [q.since, q.until, q.beforeSeq, q.afterSeq]) {
    if (n !== undefined && !Number.isSafeInteger(n)) throw bad('a bound is not an integer');
  }
  for (const s of [q.session, q.target, q.project]) {
    if (s !== undefined && (typeof s !== 'string' || s.length === 0 || s.length > 512)) throw bad('a value');
  }
}

/** The seq range [low, high] of the events in [since, until), or null when none is in it. */
async function seqRange(
  db: Kysely<Database>,
  since: number | undefined,
  until: number | undefined,
): Promise<{ low?: number; high?: number } | null> {
  const range: { low?: number; high?: number } = {};
  if (since !== undefined) {
    const row = await sql<{ seq: number | string | null }>`
      select min(seq) as seq from audit_events
      where time = (select min(time) from audit_events where time >= ${since})`.execute(db);
    const seq = row.rows[0]?.seq;
    if (seq === null || seq === undefined) return null;
    range.low = toInt(seq);
  }
  if (until !== undefined) {
    const row = await sql<{ seq: number | string | null }>`
      select max(seq) as seq from audit_events
      where time = (select max(time) from audit_events where time < ${until})`.execute(db);
    const seq = row.rows[0]?.seq;
    if (seq === null || seq === undefined) return null;
    range.high = toInt(seq);
  }
  if (range.low !== undefined && range.high !== undefined && range.low > range.high) return null;
  return range;
}

/** One index scan: conditions ANDed, in seq order, at most `limit` rows. */
async function scan(
  db: Kysely<Database>,
  where: RawBuilder<unknown>[],
  newestFirst: boolean,
  limit: number,
): Promise<Row[]> {
  const cond = where.length > 0 ? sql.join(where, sql` and `) : sql`1 = 1`;
  const order = newestFirst ? sql`desc` : sql`asc`;
  const result = await sql<Row>`
    select seq, time, type, data, hash, prev_hash from audit_events
    where ${cond} order by seq ${order} limit ${limit}`.execute(db);
  return result.rows;
}

/** A `targets` list holding `target` (no index: used with one type, on that type's index). */
function listHolds(engine: StoreEngine, target: string): RawBuilder<unknown> {
  return engine === 'sqlite'
    ? sql`exists (select 1 from json_each(case when json_valid("data") then "data" else '{}' end, '$.targets') where value = ${target})`
    : sql`(("data")::jsonb -> 'targets') @> jsonb_build_array(${target}::text)`;
}

/** One page of events matching `q`, newest first. */
export async function searchAudit(
  db: Kysely<Database>,
  engine: StoreEngine,
  q: AuditSearch,
): Promise<AuditSearchPage> {
  checkSearch(q);
  const range = await seqRange(db, q.since, q.until);
  if (!range) return { events: [], more: false };
  const newestFirst = q.afterSeq === undefined || q.beforeSeq !== undefined;
  const common: RawBuilder<unknown>[] = [];
  if (range.low !== undefined) common.push(sql`seq >= ${range.low}`);
  if (range.high !== undefined) common.push(sql`seq <= ${range.high}`);
  if (q.beforeSeq !== undefined) common.push(sql`seq < ${q.beforeSeq}`);
  else if (q.afterSeq !== undefined) common.push(sql`seq > ${q.afterSeq}`);
  const field = (name: AuditSearchField, value: string) =>
    sql`${sql.raw(auditFieldSql(engine, name))} = ${value}`;
  if (q.session !== undefined) common.push(field('session', q.session));
  if (q.project !== undefined) common.push(field('project', q.project));

  // One scan per type (each on the (type, seq) index), or one over all types.
  const types: Array<AuditEventType | undefined> = q.types ? [...new Set(q.types)] : [undefined];
  const scans: RawBuilder<unknown>[][] = [];
  for (const type of types) {
    const byType = type === undefined ? [] : [sql`type = ${type}`];
    if (q.target === undefined) {
      scans.push([...common, ...byType]);
      continue;
    }
    if (type === undefined || TARGET_FIELD_TYPES.includes(type)) {
      scans.push([...common, ...byType, field('target', q.target)]);
    }
    for (const listType of TARGET_LIST_TYPES) {
      if (type === undefined || type === listType) {
        scans.push([...common, sql`type = ${listType}`, listHolds(engine, q.target)]);
      }
    }
  }
  const fetch = q.limit + 1;
  const seen = new Map<number, Row>();
  for (const where of scans) {
    for (const row of await scan(db, where, newestFirst, fetch)) seen.set(toInt(row.seq), row);
  }
  const ordered = [...seen.values()].sort((a, b) =>
    newestFirst ? toInt(b.seq) - toInt(a.seq) : toInt(a.seq) - toInt(b.seq),
  );
  const page = ordered.slice(0, q.limit).map(toAuditEvent);
  if (!newestFirst) page.reverse();
  return { events: page, more: ordered.length > q.limit };
}

/** Most sessions one sessionTraffic call may ask about. */
export const SESSION_TRAFFIC_MAX = 500;

/** Closed connections and bytes per session, summed from `connection.closed` (session index). */
export async function sessionTraffic(
  db: Kysely<Database>,
  engine: StoreEngine,
  ids: readonly string[],
): Promise<Map<string, SessionTraffic>> {
  const out = new Map<string, SessionTraffic>();
  const wanted = [...new Set(ids)].filter(
    (id) => typeof id === 'string' && id.length > 0 && id.length <= 200,
  );
  if (wanted.length === 0) return out;
  if (wanted.length > SESSION_TRAFFIC_MAX) {
    throw new CiportError('CIPORT_E_INTERNAL', `at most ${SESSION_TRAFFIC_MAX} sessions per traffic query`);
  }
  const session = sql.raw(auditFieldSql(engine, 'session'));
  const num = (member: string) =>
    engine === 'sqlite'
      ? sql.raw(`coalesce(sum(json_extract("data", '$.${member}')), 0)`)
      : sql.raw(`coalesce(sum((("data")::jsonb ->> '${member}')::bigint), 0)`);
  const result = await sql<{
    session: string;
    n: number | string;
    up: number | string;
    down: number | string;
  }>`
    select ${session} as session, count(*) as n, ${num('bytes_to_target')} as up, ${num('bytes_from_target')} as down
    from audit_events ${sql.raw(engine === 'sqlite' ? `indexed by ${CLOSED_INDEX}` : '')}
    where ${session} in (${sql.join(wanted)}) and ${sql.raw(CLOSED)}
    group by ${session}`.execute(db);
  for (const r of result.rows) {
    out.set(r.session, {
      connections: toInt(r.n),
      bytesToTarget: toInt(r.up),
      bytesFromTarget: toInt(r.down),
    });
  }
  return out;
}
