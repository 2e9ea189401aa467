// The console's audit search on a large log (docs/console.md, "Audit search"): a store of
// BENCH_AUDIT_EVENTS events (default 1,000,000) shaped like a busy gateway's — mostly queries and
// connections, a few percent session and denial events, 200 projects, 30 targets — loaded with
// the search indexes of migration 0011 in place, then each kind of search the console makes, as
// the median wall time of `rounds` runs. Both engines: SQLite in a temp file, PostgreSQL in a
// throwaway database on 127.0.0.1:5432 (BENCH_PG_URL to use another server). The rows are
// inserted directly (the chain's hashes are placeholders): this measures the queries and the
// cost of the indexes on inserts, not the chain.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import pg from 'pg';
import type { AuditSearch } from '../src/store/audit-search.js';
import { auditSearchIndexes } from '../src/store/audit-search.js';
import { openStore, type Store } from '../src/store/index.js';

const EVENTS = Number(process.env.BENCH_AUDIT_EVENTS ?? 1_000_000);
const PG_URL = process.env.BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const BATCH = 1000;
const T0 = Date.UTC(2026, 10, 1);

interface Row {
  seq: number;
  time: number;
  type: string;
  data: string;
}

/** Event i of the synthetic log (deterministic). */
function event(i: number): Row {
  const r = (i * 2654435761) % 1000;
  const project = `group${i % 17}/app-${i % 200}`;
  const target = `db-${i % 30}`;
  const session = `ses_${Math.floor(i / 40).toString(36)}`;
  const principal = {
    issuer: 'gitlab',
    subject: `project_path:${project}:ref_type:branch:ref:main`,
    project,
    project_id: String(i % 200),
    ref: 'main',
    pipeline: String(1000 + Math.floor(i / 400)),
    job: String(5000 + Math.floor(i / 40)),
    job_url: `https://gitlab.example.com/${project}/-/jobs/${5000 + Math.floor(i / 40)}`,
  };
  const base = { session, connection: `con_${i}`, principal, target, rule: 'r1', exit: 'gateway' };
  let type: string;
  let data: object;
  if (r < 600) {
    type = 'query';
    data = {
      ...base,
      statements: [{ at: new Date(T0 + i).toISOString(), statement: 'select * from t where id = $1' }],
    };
  } else if (r < 750) {
    type = 'connection.opened';
    data = base;
  } else if (r < 900) {
    type = 'connection.closed';
    data = { ...base, bytes_to_target: 1234, bytes_from_target: 56789, duration_ms: 12 };
  } else if (r < 950) {
    type = 'session.opened';
    data = {
      session,
      principal,
      targets: [target, `db-${(i + 1) % 30}`],
      rule: 'r1',
      expires_at: 'x',
      ttl_ms: 1,
    };
  } else if (r < 980) {
    type = 'session.ended';
    data = { session, principal, targets: [target], rule: 'r1', reason: 'client_end', duration_ms: 1 };
  } else {
    type = 'session.denied';
    data = {
      principal,
      targets: [target],
      rule: null,
      reason: 'no rule',
      error_code: 'CIPORT_E_POLICY_DENIED',
    };
  }
  return { seq: i, time: T0 + i * 10, type, data: JSON.stringify(data) };
}

const HASH = '0'.repeat(64);

/** Events loaded for the write-cost comparison (with and without the search indexes). */
const COMPARE = Math.min(EVENTS, 200_000);

async function loadSqlite(file: string, events = EVENTS): Promise<number> {
  const db = new BetterSqlite3(file);
  try {
    db.pragma('journal_mode = WAL');
    const insert = db.prepare(
      'insert into audit_events (seq, time, type, data, hash, prev_hash) values (?, ?, ?, ?, ?, ?)',
    );
    const batch = db.transaction((from: number) => {
      for (let i = from; i < Math.min(from + BATCH, events + 1); i++) {
        const e = event(i);
        insert.run(e.seq, e.time, e.type, e.data, HASH, HASH);
      }
    });
    const t0 = performance.now();
    for (let i = 1; i <= events; i += BATCH) batch(i);
    return performance.now() - t0;
  } finally {
    db.close();
  }
}

async function loadPostgres(url: string, events = EVENTS): Promise<number> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const t0 = performance.now();
    for (let i = 1; i <= events; i += BATCH) {
      const values: unknown[] = [];
      const rows: string[] = [];
      for (let j = i; j < Math.min(i + BATCH, events + 1); j++) {
        const e = event(j);
        const n = values.length;
        rows.push(`($${n + 1}, $${n + 2}, $${n + 3}, $${n + 4}, $${n + 5}, $${n + 5})`);
        values.push(e.seq, e.time, e.type, e.data, HASH);
      }
      await client.query(
        `insert into audit_events (seq, time, type, data, hash, prev_hash) values ${rows.join(', ')}`,
        values,
      );
    }
    const took = performance.now() - t0;
    // What autovacuum would have done by now on a log this size.
    await client.query('analyze audit_events');
    return took;
  } finally {
    await client.end();
  }
}

/** The searches the console makes, named as in docs/console.md. */
function searches(): Array<[string, AuditSearch]> {
  const late = T0 + Math.floor(EVENTS * 0.9) * 10;
  return [
    ['newest page, no filter', { limit: 50 }],
    [
      'one session (session detail)',
      { session: `ses_${Math.floor(EVENTS / 2 / 40).toString(36)}`, limit: 200 },
    ],
    ['project', { project: 'group3/app-37', limit: 50 }],
    ['target (events and session lists)', { target: 'db-7', limit: 50 }],
    ['type session.denied', { types: ['session.denied'], limit: 50 }],
    [
      'decision deny (2 types) + target',
      { types: ['session.denied', 'session.denied_summary'], target: 'db-7', limit: 50 },
    ],
    [
      'project + type + last 10% of time',
      { project: 'group3/app-37', types: ['session.opened'], since: late, limit: 50 },
    ],
    [
      'deep page (before the middle seq)',
      { beforeSeq: Math.floor(EVENTS / 2), project: 'group5/app-5', limit: 50 },
    ],
    [
      'no match: project + review.attested',
      { project: 'group3/app-37', types: ['review.attested'], limit: 50 },
    ],
  ];
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
}

async function measure(store: Store, rounds: number): Promise<string[]> {
  const lines: string[] = [];
  for (const [name, q] of searches()) {
    const times: number[] = [];
    let found = 0;
    for (let r = 0; r < rounds; r++) {
      const t0 = performance.now();
      found = (await store.searchAudit(q)).events.length;
      times.push(performance.now() - t0);
    }
    lines.push(`  ${name.padEnd(40)} ${median(times).toFixed(1).padStart(8)} ms   (${found} events)`);
  }
  const ids = Array.from({ length: 200 }, (_, k) => `ses_${(k * 97).toString(36)}`);
  const times: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const t0 = performance.now();
    await store.sessionTraffic(ids);
    times.push(performance.now() - t0);
  }
  lines.push(
    `  ${'traffic of 200 sessions (live table)'.padEnd(40)} ${median(times).toFixed(1).padStart(8)} ms`,
  );
  return lines;
}

/** µs per event loading COMPARE events with the search indexes, and without them. */
async function writeCost(
  open: () => Promise<Store>,
  load: (events: number) => Promise<number>,
  dropIndexes: () => Promise<void>,
  reset: () => Promise<void>,
): Promise<string> {
  await (await open()).close();
  const withIdx = await load(COMPARE);
  await reset();
  await (await open()).close();
  await dropIndexes();
  const without = await load(COMPARE);
  const us = (ms: number) => ((ms * 1000) / COMPARE).toFixed(1);
  return `  write cost (${COMPARE.toLocaleString('en')} events): ${us(withIdx)} µs/event with the search indexes, ${us(without)} without`;
}

export async function benchAuditSearch(rounds: number): Promise<string> {
  const out = [`audit search: ${EVENTS.toLocaleString('en')} events, median of ${rounds} runs`];
  const dir = mkdtempSync(join(tmpdir(), 'ciport-bench-search-'));
  try {
    const file = join(dir, 'ciport.db');
    await (await openStore({ sqlite: { path: file } }, { dataDir: dir })).close();
    const loadMs = await loadSqlite(file);
    out.push(
      `sqlite: loaded in ${(loadMs / 1000).toFixed(1)} s (${((loadMs * 1000) / EVENTS).toFixed(1)} µs/event with the ${auditSearchIndexes('sqlite').length} search indexes)`,
    );
    const store = await openStore({ sqlite: { path: file } }, { dataDir: dir });
    try {
      out.push(...(await measure(store, rounds)));
    } finally {
      await store.close();
    }
    let n = 0;
    let cmp = join(dir, `cmp-${n}.db`);
    out.push(
      await writeCost(
        () => openStore({ sqlite: { path: cmp } }, { dataDir: dir }),
        (events) => loadSqlite(cmp, events),
        async () => {
          const db = new BetterSqlite3(cmp);
          for (const index of auditSearchIndexes('sqlite')) db.exec(`drop index ${index.name}`);
          db.close();
        },
        async () => {
          cmp = join(dir, `cmp-${++n}.db`);
        },
      ),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const name = `ciport_bench_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: PG_URL });
  await admin.connect();
  try {
    await admin.query(`create database ${name}`);
    const url = new URL(PG_URL);
    url.pathname = `/${name}`;
    await (await openStore({ postgres: { url: url.toString() } }, { dataDir: tmpdir() })).close();
    const loadMs = await loadPostgres(url.toString());
    out.push(
      `postgres: loaded in ${(loadMs / 1000).toFixed(1)} s (${((loadMs * 1000) / EVENTS).toFixed(1)} µs/event with the ${auditSearchIndexes('postgres').length} search indexes)`,
    );
    const store = await openStore({ postgres: { url: url.toString() } }, { dataDir: tmpdir() });
    try {
      out.push(...(await measure(store, rounds)));
    } finally {
      await store.close();
    }
    const sqlOn = async (text: string) => {
      const c = new pg.Client({ connectionString: url.toString() });
      await c.connect();
      try {
        await c.query(text);
      } finally {
        await c.end();
      }
    };
    const fresh = async () => sqlOn('drop schema public cascade; create schema public;');
    await fresh();
    out.push(
      await writeCost(
        () => openStore({ postgres: { url: url.toString() } }, { dataDir: tmpdir() }),
        (events) => loadPostgres(url.toString(), events),
        async () => {
          for (const index of auditSearchIndexes('postgres')) await sqlOn(`drop index ${index.name}`);
        },
        fresh,
      ),
    );
  } finally {
    await admin.query(`drop database if exists ${name} with (force)`).catch(() => {});
    await admin.end();
  }
  return out.join('\n');
}
