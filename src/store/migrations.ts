// Schema migrations, in code (no files to ship or find at run time). They run on every open;
// applied ones are recorded in `ciport_migration`. The same migrations serve both engines:
// column types are chosen to mean the same thing in SQLite and PostgreSQL (bigint epoch-ms
// timestamps, text JSON); only the append-only guard differs in syntax.
//
// Never edit a released migration: add a new one.

import { type Kysely, type Migration, type MigrationProvider, sql } from 'kysely';
import { TARGET_NAME_RE } from '../config/target-name.js';
import { auditSearchIndexes } from './audit-search.js';
import type { StoreEngine } from './types.js';

export const MIGRATION_TABLE = 'ciport_migration';
export const MIGRATION_LOCK_TABLE = 'ciport_migration_lock';

// biome-ignore lint/suspicious/noExplicitAny: migrations operate on the schema, not on typed tables
type AnyDb = Kysely<any>;

function migrations(engine: StoreEngine): Record<string, Migration> {
  return {
    '0001_initial': {
      async up(db: AnyDb) {
        await db.schema
          .createTable('sessions')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('secret_hash', 'text', (c) => c.notNull().unique())
          .addColumn('issuer', 'text', (c) => c.notNull())
          .addColumn('subject', 'text', (c) => c.notNull())
          .addColumn('principal', 'text', (c) => c.notNull())
          .addColumn('targets', 'text', (c) => c.notNull())
          .addColumn('rule', 'text')
          .addColumn('state', 'text', (c) => c.notNull())
          .addColumn('end_reason', 'text')
          .addColumn('created_at', 'bigint', (c) => c.notNull())
          .addColumn('expires_at', 'bigint', (c) => c.notNull())
          .addColumn('lease_expires_at', 'bigint', (c) => c.notNull())
          .addColumn('ended_at', 'bigint')
          .addColumn('gateway_id', 'text')
          .addCheckConstraint('sessions_state_check', sql`state in ('active', 'ended')`)
          .addCheckConstraint(
            'sessions_ended_check',
            sql`(state = 'active' and ended_at is null and end_reason is null) or (state = 'ended' and ended_at is not null and end_reason is not null)`,
          )
          .execute();
        await db.schema.createIndex('sessions_created_at_idx').on('sessions').column('created_at').execute();
        await db.schema
          .createIndex('sessions_state_idx')
          .on('sessions')
          .columns(['state', 'expires_at'])
          .execute();

        await db.schema
          .createTable('audit_events')
          .addColumn('seq', 'bigint', (c) => c.primaryKey())
          .addColumn('time', 'bigint', (c) => c.notNull())
          .addColumn('type', 'text', (c) => c.notNull())
          .addColumn('data', 'text', (c) => c.notNull())
          .addColumn('hash', 'text', (c) => c.notNull())
          .addColumn('prev_hash', 'text', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('audit_events_time_idx').on('audit_events').column('time').execute();

        await db.schema
          .createTable('meta')
          .addColumn('key', 'text', (c) => c.primaryKey())
          .addColumn('value', 'text', (c) => c.notNull())
          .execute();

        // Append-only guard. Not a security boundary (whoever owns the database can drop it; the
        // hash chain is what detects that), but it stops accidental edits and bulk deletes.
        if (engine === 'sqlite') {
          for (const op of ['update', 'delete']) {
            await sql
              .raw(
                `create trigger audit_events_no_${op} before ${op} on audit_events ` +
                  `begin select raise(abort, 'audit_events is append-only'); end`,
              )
              .execute(db);
          }
        } else {
          await sql`
            create function ciport_audit_append_only() returns trigger language plpgsql as $$
            begin
              raise exception 'audit_events is append-only' using errcode = '42501';
            end $$`.execute(db);
          await sql`
            create trigger audit_events_append_only before update or delete or truncate on audit_events
            for each statement execute function ciport_audit_append_only()`.execute(db);
        }
      },
    },
    // Job liveness (docs/job-liveness.md): the job a session is bound to, so a restarted gateway
    // watches it again; and the `jti`s of single-use issuers, each opening at most one session.
    '0002_job_ref_and_used_jtis': {
      async up(db: AnyDb) {
        await db.schema.alterTable('sessions').addColumn('job_ref', 'text').execute();
        await db.schema
          .createTable('used_jtis')
          .addColumn('issuer', 'text', (c) => c.notNull())
          .addColumn('jti', 'text', (c) => c.notNull())
          .addColumn('expires_at', 'bigint', (c) => c.notNull())
          .addColumn('session_id', 'text', (c) => c.notNull())
          .addPrimaryKeyConstraint('used_jtis_pk', ['issuer', 'jti'])
          .execute();
        await db.schema
          .createIndex('used_jtis_expires_at_idx')
          .on('used_jtis')
          .column('expires_at')
          .execute();
      },
    },
    // Which rule granted each target (target -> rule), so per-target choices such as a rule's
    // `grants` for per-session roles follow the rule that actually granted that target.
    '0003_target_rules': {
      async up(db: AnyDb) {
        await db.schema.alterTable('sessions').addColumn('target_rules', 'text').execute();
      },
    },
    // Agents and their one-time enrollment tokens as real rows (they were one JSON document in
    // `meta`, which several gateways sharing a PostgreSQL store could race on), so redeeming a
    // token is one conditional UPDATE; and the gateways sharing the store, for discovery.
    '0004_agents': {
      async up(db: AnyDb) {
        await db.schema
          .createTable('agents')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('name', 'text', (c) => c.notNull())
          .addColumn('credential_hash', 'text', (c) => c.notNull())
          .addColumn('created_at', 'bigint', (c) => c.notNull())
          .addColumn('revoked_at', 'bigint')
          .addColumn('last_seen_at', 'bigint')
          .execute();
        await db.schema.createIndex('agents_name_idx').on('agents').column('name').execute();

        await db.schema
          .createTable('agent_enrollments')
          .addColumn('token_hash', 'text', (c) => c.primaryKey())
          .addColumn('name', 'text', (c) => c.notNull())
          .addColumn('created_at', 'bigint', (c) => c.notNull())
          .addColumn('expires_at', 'bigint', (c) => c.notNull())
          .addColumn('used_at', 'bigint')
          .addColumn('agent_id', 'text')
          .addCheckConstraint(
            'agent_enrollments_used_check',
            sql`(used_at is null and agent_id is null) or (used_at is not null and agent_id is not null)`,
          )
          .execute();
        await db.schema
          .createIndex('agent_enrollments_expires_at_idx')
          .on('agent_enrollments')
          .column('expires_at')
          .execute();

        await db.schema
          .createTable('gateways')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('url', 'text', (c) => c.notNull())
          .addColumn('started_at', 'bigint', (c) => c.notNull())
          .addColumn('last_seen_at', 'bigint', (c) => c.notNull())
          .execute();

        await importAgentsDocument(db);
      },
    },
    // Agent credentials expire and are rotated before (docs/agent.md, "Enrollment and the agent
    // credential"): the current credential's expiry, and the secret the last rotation replaced
    // with the end of its grace period. The column default 0 means "expired": a writer that
    // forgets the column fails closed. Agents enrolled before this migration get
    // `now + 30 days` (the time the migration runs), not `created_at + 30 days`: an agent enrolled
    // longer ago would otherwise be expired at once, and an expired credential cannot rotate, so
    // every existing agent would need a new enrollment at upgrade. This way each has 30 days from
    // the upgrade to rotate (an upgraded agent does so at its next start).
    '0005_agent_credential_rotation': {
      async up(db: AnyDb) {
        await db.schema
          .alterTable('agents')
          .addColumn('credential_expires_at', 'bigint', (c) => c.notNull().defaultTo(0))
          .execute();
        await db.schema.alterTable('agents').addColumn('previous_hash', 'text').execute();
        await db.schema.alterTable('agents').addColumn('previous_valid_until', 'bigint').execute();
        await db
          .updateTable('agents')
          .set({ credential_expires_at: Date.now() + EXISTING_AGENTS_LIFETIME_MS })
          .execute();
      },
    },
    // Which targets each agent may serve (docs/agent.md, "Target binding"): the gateway routes
    // nothing else to an agent, whatever it advertises. Agents enrolled before this migration
    // keep what they served: each live agent is bound to the targets its name advertised in its
    // last `agent.connected` event (the audit log is the only per-agent record of it), so an
    // upgrade does not cut working agents off. An agent that never connected, and tokens not
    // yet redeemed, are bound to nothing: an admin binds them (`ciport agents targets`).
    '0006_agent_targets': {
      async up(db: AnyDb) {
        await db.schema
          .alterTable('agents')
          .addColumn('targets', 'text', (c) => c.notNull().defaultTo('[]'))
          .execute();
        await db.schema
          .alterTable('agent_enrollments')
          .addColumn('targets', 'text', (c) => c.notNull().defaultTo('[]'))
          .execute();
        await bindExistingAgents(db);
      },
    },
    // Who ended a session and why (docs/operators.md): `sessions list` shows the operator and
    // their reason without searching the audit log. Null for sessions ended before.
    '0007_session_ended_by': {
      async up(db: AnyDb) {
        await db.schema.alterTable('sessions').addColumn('ended_by', 'text').execute();
        await db.schema.alterTable('sessions').addColumn('end_note', 'text').execute();
      },
    },
    // Audit sinks (docs/audit-sinks.md): per sink, the last seq its receiver acknowledged and the
    // lease of the one gateway delivering to it, so delivery resumes after a restart and gateways
    // sharing a store never deliver one sink twice at once.
    '0008_audit_sink_cursors': {
      async up(db: AnyDb) {
        await db.schema
          .createTable('audit_sink_cursors')
          .addColumn('sink', 'text', (c) => c.primaryKey())
          .addColumn('seq', 'bigint', (c) => c.notNull())
          .addColumn('owner', 'text')
          .addColumn('lease_until', 'bigint', (c) => c.notNull())
          .addColumn('updated_at', 'bigint', (c) => c.notNull())
          .execute();
      },
    },
    // Signed-in operators (docs/sso.md): console cookies and `ciport login` tokens, by the hash
    // of their secret, shared by every gateway of the store.
    '0009_operator_sessions': {
      async up(db: AnyDb) {
        await db.schema
          .createTable('operator_sessions')
          .addColumn('secret_hash', 'text', (c) => c.primaryKey())
          .addColumn('kind', 'text', (c) => c.notNull())
          .addColumn('issuer', 'text', (c) => c.notNull())
          .addColumn('subject', 'text', (c) => c.notNull())
          .addColumn('email', 'text')
          .addColumn('name', 'text')
          .addColumn('username', 'text')
          .addColumn('roles', 'text', (c) => c.notNull())
          .addColumn('groups', 'text', (c) => c.notNull())
          .addColumn('created_at', 'bigint', (c) => c.notNull())
          .addColumn('expires_at', 'bigint', (c) => c.notNull())
          .addColumn('ended_at', 'bigint')
          .execute();
        await db.schema
          .createIndex('operator_sessions_expires_at')
          .on('operator_sessions')
          .column('expires_at')
          .execute();
      },
    },
    // Approvals (docs/approvals.md): a session whose rule has `approval:` is created pending. The
    // session row keeps its terms (`approval`, JSON: requirements, deadline, TTL, the job's user)
    // and whether it is `pending` or `approved` (and when); each operator's decision is a row of
    // `session_approvals`, whose primary key makes a second approval by the same operator count
    // once, on every gateway sharing the store.
    '0010_session_approvals': {
      async up(db: AnyDb) {
        await db.schema.alterTable('sessions').addColumn('approval', 'text').execute();
        await db.schema.alterTable('sessions').addColumn('approval_state', 'text').execute();
        await db.schema.alterTable('sessions').addColumn('approved_at', 'bigint').execute();
        await db.schema
          .createTable('session_approvals')
          .addColumn('session_id', 'text', (c) => c.notNull())
          .addColumn('operator', 'text', (c) => c.notNull())
          .addColumn('decision', 'text', (c) => c.notNull())
          .addColumn('at', 'bigint', (c) => c.notNull())
          .addColumn('note', 'text')
          .addColumn('groups', 'text', (c) => c.notNull().defaultTo('[]'))
          .addPrimaryKeyConstraint('session_approvals_pk', ['session_id', 'operator'])
          .addCheckConstraint('session_approvals_decision_check', sql`decision in ('approve', 'deny')`)
          .execute();
      },
    },
    // The console's audit search (docs/console.md, "Audit search"): an index on
    // (type, seq) and, per field searched inside the event data (session, target, project), an
    // expression index on (field, seq), so each search is a range scan in seq order that stops
    // after one page. Expressions only: the append-only rows are never rewritten, and the write
    // path is unchanged (each index costs the writer a few microseconds per event; the figures are
    // in docs/console.md). On an existing log this runs once over every event.
    '0011_audit_search': {
      async up(db: AnyDb) {
        for (const index of auditSearchIndexes(engine)) await sql.raw(index.sql).execute(db);
      },
    },
  };
}

/**
 * Migration 0006: bind every live agent to the targets its name last advertised, read from the
 * `agent.connected` audit events newest first (in batches; stops once every name is found).
 */
async function bindExistingAgents(db: AnyDb): Promise<void> {
  const live = (await db
    .selectFrom('agents')
    .select(['id', 'name'])
    .where('revoked_at', 'is', null)
    .execute()) as {
    id: string;
    name: string;
  }[];
  const wanted = new Set(live.map((a) => a.name));
  const found = new Map<string, string[]>();
  let before: number | undefined;
  while (found.size < wanted.size) {
    let q = db
      .selectFrom('audit_events')
      .select(['seq', 'data'])
      .where('type', '=', 'agent.connected')
      .orderBy('seq', 'desc')
      .limit(1000);
    if (before !== undefined) q = q.where('seq', '<', before);
    const rows = (await q.execute()) as { seq: number | string; data: string }[];
    if (rows.length === 0) break;
    for (const row of rows) {
      let data: { agent?: unknown; targets?: unknown };
      try {
        data = JSON.parse(row.data) as typeof data;
      } catch {
        continue;
      }
      const name = typeof data.agent === 'string' ? data.agent : undefined;
      if (!name || !wanted.has(name) || found.has(name)) continue;
      const targets = Array.isArray(data.targets)
        ? data.targets.filter((t): t is string => typeof t === 'string' && TARGET_NAME_RE.test(t))
        : [];
      found.set(name, [...new Set(targets)].sort());
    }
    before = Number(rows[rows.length - 1]?.seq);
  }
  for (const a of live) {
    const targets = found.get(a.name);
    if (targets && targets.length > 0) {
      await db
        .updateTable('agents')
        .set({ targets: JSON.stringify(targets) })
        .where('id', '=', a.id)
        .execute();
    }
  }
}

/** What agents enrolled before migration 0005 get: their credential expires 30 days after it. */
export const EXISTING_AGENTS_LIFETIME_MS = 30 * 86_400_000;

/** The meta key under which agents were kept before migration 0004. */
const LEGACY_AGENTS_META_KEY = 'agents.v1';

/**
 * Move the agents and still-pending enrollments of the legacy `agents.v1` meta document into the
 * new tables (ISO 8601 times to epoch ms), then drop the document. Malformed entries are skipped.
 */
async function importAgentsDocument(db: AnyDb): Promise<void> {
  const row = (await db
    .selectFrom('meta')
    .select('value')
    .where('key', '=', LEGACY_AGENTS_META_KEY)
    .executeTakeFirst()) as { value: string } | undefined;
  if (!row) return;
  let doc: { agents?: unknown; enrollments?: unknown };
  try {
    doc = JSON.parse(row.value) as typeof doc;
  } catch {
    doc = {};
  }
  const str = (v: unknown): v is string => typeof v === 'string' && v.length > 0;
  const ms = (v: unknown): number | null => {
    if (!str(v)) return null;
    const n = Date.parse(v);
    return Number.isSafeInteger(n) ? n : null;
  };
  const seen = new Set<string>();
  for (const a of Array.isArray(doc.agents) ? (doc.agents as Record<string, unknown>[]) : []) {
    const createdAt = ms(a?.created_at);
    if (!str(a?.id) || !str(a.name) || !str(a.credential_hash) || createdAt === null || seen.has(a.id)) {
      continue;
    }
    seen.add(a.id);
    await db
      .insertInto('agents')
      .values({
        id: a.id,
        name: a.name,
        credential_hash: a.credential_hash,
        created_at: createdAt,
        revoked_at: a.revoked_at ? ms(a.revoked_at) : null,
        last_seen_at: a.last_seen_at ? ms(a.last_seen_at) : null,
      })
      .execute();
  }
  const tokens = new Set<string>();
  for (const e of Array.isArray(doc.enrollments) ? (doc.enrollments as Record<string, unknown>[]) : []) {
    const createdAt = ms(e?.created_at);
    const expiresAt = ms(e?.expires_at);
    if (!str(e?.token_hash) || !str(e.name) || createdAt === null || expiresAt === null) continue;
    if (e.used_at || tokens.has(e.token_hash)) continue; // spent tokens are of no further use
    tokens.add(e.token_hash);
    await db
      .insertInto('agent_enrollments')
      .values({ token_hash: e.token_hash, name: e.name, created_at: createdAt, expires_at: expiresAt })
      .execute();
  }
  await db.deleteFrom('meta').where('key', '=', LEGACY_AGENTS_META_KEY).execute();
}

export function migrationProvider(engine: StoreEngine): MigrationProvider {
  return { getMigrations: async () => migrations(engine) };
}

export function migrationNames(engine: StoreEngine): string[] {
  return Object.keys(migrations(engine)).sort();
}
