// `npm run bench -- audit`: the query-audit write path on its own. A SQLite store (the default
// engine) in a temp dir receives `query` events the way the gateway's relays hand them over
// (through the AuditBacklog, without waiting for each commit), in two shapes:
//   burst — 20 000 events as fast as the backlog lets them in (16 busy clients);
//   paced — one event per ~200 µs of other work (one client doing round trips).
// Reported per event: CPU of the main thread (the gateway's event loop), CPU of the whole
// process (main thread + writer thread + GC), and events committed per second.

import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AuditBacklog } from '../src/audit/backlog.js';
import { auditEvent } from '../src/audit/events.js';
import { openStore } from '../src/store/index.js';
import { median, table } from './stats.js';

const TICK = 100; // USER_HZ

/** CPU seconds of the main thread (its task id is the process id) from /proc. */
function mainThreadCpu(): number {
  const f = readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) / TICK;
}

function processCpu(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

const principal = {
  issuer: 'gitlab',
  subject: 'project_path:group/app:ref_type:branch:ref:main',
  project: 'group/app',
  project_id: '42',
  ref: 'main',
  pipeline: '1234',
  job: '5678',
  job_url: 'https://gitlab.example.com/group/app/-/jobs/5678',
  environment: null,
};

const queryEvent = (i: number) =>
  auditEvent('query', {
    session: 'ses_01HZX3K4Q5W6E7R8T9Y0U1I2O3',
    connection: `con_01HZX3K4Q5W6E7R8T9Y0U1I2O${i % 16}`,
    principal,
    target: 'db',
    rule: 'ci-db',
    exit: 'gateway',
    statement: `SELECT abalance FROM pgbench_accounts WHERE aid = ${i};`,
    truncated: false,
    protocol: 'simple',
    database: 'app',
  } as never);

interface Result {
  events: number;
  mainUs: number;
  totalUs: number;
  perSecond: number;
}

/** Feed `n` events the way a relay does; `append` undefined: the loop alone (its own cost). */
async function feed(
  kind: 'burst' | 'paced',
  n: number,
  append: ((i: number) => Promise<unknown>) | undefined,
): Promise<{ main: number; total: number; seconds: number }> {
  const backlog = new AuditBacklog();
  const writes: Array<Promise<unknown>> = [];
  const t0 = performance.now();
  const m0 = mainThreadCpu();
  const c0 = processCpu();
  for (let i = 1; i <= n; i++) {
    const wait = backlog.room();
    if (wait) await wait;
    if (append) writes.push(backlog.track(append(i)));
    else queryEvent(i);
    if (kind === 'paced') {
      // A round trip's worth of other work on the loop: yield, then spin ~200 µs.
      await new Promise((r) => setImmediate(r));
      const until = performance.now() + 0.2;
      while (performance.now() < until) {
        // spin
      }
    } else if (i % 64 === 0) {
      await new Promise((r) => setImmediate(r));
    }
  }
  await Promise.all(writes);
  return { main: mainThreadCpu() - m0, total: processCpu() - c0, seconds: (performance.now() - t0) / 1000 };
}

async function shape(kind: 'burst' | 'paced'): Promise<Result> {
  const dir = mkdtempSync(join(tmpdir(), 'ciport-bench-audit-'));
  const store = await openStore({ sqlite: { path: join(dir, 'ciport.db') } }, { dataDir: dir });
  try {
    await store.appendAudit(queryEvent(0)); // warm: statements prepared, writer thread up
    const n = kind === 'burst' ? 20_000 : 5_000;
    const idle = await feed(kind, n, undefined); // the loop's own cost, subtracted below
    const run = await feed(kind, n, (i) => store.appendAudit(queryEvent(i)));
    return {
      events: n,
      mainUs: ((run.main - idle.main) / n) * 1e6,
      totalUs: ((run.total - idle.total) / n) * 1e6,
      perSecond: n / run.seconds,
    };
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** 16 concurrent session lifecycles (createSession, findBySecretHash, endSession) on SQLite. */
async function sessions(): Promise<{ perSecond: number; p99: number; mainUs: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'ciport-bench-audit-'));
  const store = await openStore({ sqlite: { path: join(dir, 'ciport.db') } }, { dataDir: dir });
  const one = async () => {
    const secretHash = createHash('sha256').update(randomBytes(32)).digest('hex');
    const now = Date.now();
    const record = {
      id: randomUUID(),
      secretHash,
      issuer: principal.issuer,
      subject: principal.subject,
      principal,
      targets: ['db'],
      rule: 'ci-db',
      createdAt: now,
      expiresAt: now + 900_000,
      leaseExpiresAt: now + 30_000,
      gatewayId: 'gw-bench',
    };
    const summary = { session: record.id, principal, targets: ['db'], rule: 'ci-db' };
    await store.createSession(record, () =>
      auditEvent('session.opened', {
        ...summary,
        expires_at: new Date(now + 900_000).toISOString(),
        ttl_ms: 900_000,
      } as never),
    );
    await store.findBySecretHash(secretHash);
    await store.endSession(record.id, 'client_end', () =>
      auditEvent('session.ended', { ...summary, reason: 'client_end', duration_ms: 1 } as never),
    );
  };
  try {
    for (let i = 0; i < 50; i++) await one();
    const n = 2000;
    let next = 0;
    const latencies: number[] = [];
    const t0 = performance.now();
    const m0 = mainThreadCpu();
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (next++ < n) {
          const a = performance.now();
          await one();
          latencies.push(performance.now() - a);
        }
      }),
    );
    const seconds = (performance.now() - t0) / 1000;
    latencies.sort((a, b) => a - b);
    return {
      perSecond: n / seconds,
      p99: latencies[Math.floor(latencies.length * 0.99)] ?? Number.NaN,
      mainUs: ((mainThreadCpu() - m0) / n) * 1e6,
    };
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function benchAudit(rounds: number): Promise<string> {
  const rows = [['shape', 'main thread CPU µs/event', 'process CPU µs/event', 'events/s']];
  for (const kind of ['burst', 'paced'] as const) {
    const results: Result[] = [];
    for (let r = 0; r < rounds; r++) results.push(await shape(kind));
    rows.push([
      kind,
      median(results.map((r) => r.mainUs)).toFixed(1),
      median(results.map((r) => r.totalUs)).toFixed(1),
      median(results.map((r) => r.perSecond)).toFixed(0),
    ]);
  }
  const lifecycles: Array<Awaited<ReturnType<typeof sessions>>> = [];
  for (let r = 0; r < rounds; r++) lifecycles.push(await sessions());
  const sessionRows = [
    [
      '16 concurrent session lifecycles (create, find, end)',
      'sessions/s',
      'p99 ms',
      'main thread CPU µs/session',
    ],
    [
      'SQLite store',
      median(lifecycles.map((l) => l.perSecond)).toFixed(0),
      median(lifecycles.map((l) => l.p99)).toFixed(1),
      median(lifecycles.map((l) => l.mainUs)).toFixed(0),
    ],
  ];
  return [
    'audit: query events into a SQLite store through the AuditBacklog (burst: 20 000 as fast as allowed; paced: 5 000, one per ~200 µs of other work);',
    `median of ${rounds} rounds; CPU from /proc (main thread) and process.cpuUsage (all threads), minus the same loop without the store`,
    '',
    table(rows),
    '',
    table(sessionRows),
  ].join('\n');
}
