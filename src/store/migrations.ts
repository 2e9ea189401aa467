// Schema migrations, in code (no files to ship or find at run time). They run on every open;
// applied ones are recorded in `ciport_migration`. The same migrations serve both engines:
// column types are chosen to mean the same thing in SQLite and PostgreSQL (bigint epoch-ms
// timestamps, text JSON); only the append-only guard differs in syntax.
//
// Never edit a released migration: add a new one.

import { type Kysely, type Migration, type MigrationProvider, sql } from 'kysely';
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
  };
}

export function migrationProvider(engine: StoreEngine): MigrationProvider {
  return { getMigrations: async () => migrations(engine) };
}

export function migrationNames(engine: StoreEngine): string[] {
  return Object.keys(migrations(engine)).sort();
}
