// MySQL through the port with the applications jobs really run (issue 13): the mysql2 driver and a
// migration tool's shape, as child processes in the job's environment (what `ciport open`
// exported), through the gateway's exit and through an agent's, against the machine's MariaDB.
// Then the secrets sweep: the upstream password and the one-time password stay where they belong.
// The world (gateway, agent, upstream user and database) is the exit contract suite's.
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { AuditEvent } from '../../src/audit/events.js';
import type { Held, JobPort } from '../contract/driver.js';
import { mysqlDriver } from '../contract/drivers/mysql.js';
import { startUpstreams, type Upstreams } from '../contract/upstreams.js';
import { AGENT, startWorld, targetName, type World } from '../contract/world.js';
import { auditedStatements } from '../fixtures/queries.js';
import { waitFor } from '../fixtures/wait-for.js';

const JOB_SCRIPTS = new URL('./mysql-job/', import.meta.url).pathname;
const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

let up: Upstreams;
let world: World;
const logLines: string[] = [];
const holding = new Set<Held>();

beforeAll(async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ciport-e2e-mysql-'));
  up = await startUpstreams(dir);
  world = await startWorld(dir, [mysqlDriver], up, { logLines });
}, 120_000);

afterEach(async () => {
  for (const h of holding) h.release();
  holding.clear();
  await world?.endJobs();
});

afterAll(async () => {
  await world?.stop();
  await up?.stop();
});

/** Run one of mysql-job/'s scripts with node, as the job would: its env, its scratch dir. */
const node = (job: JobPort, script: string, ...args: string[]) =>
  job.run([process.execPath, join(JOB_SCRIPTS, script), ...args], { timeoutMs: 30_000 });

/** End the job, then the session's events once its end is audited (query batches flushed). */
async function endAndCollect(job: JobPort): Promise<AuditEvent[]> {
  await job.end();
  await waitFor(
    async () => (await world.eventsOf(job.session)).some((e) => e.type === 'session.ended'),
    10_000,
    'session.ended',
  );
  return world.eventsOf(job.session);
}

const allAudit = async () => JSON.stringify(await world.gateway.store.auditEvents({ limit: 100_000 }));

interface ClientReport {
  who: { user: string; db: string };
  rows: {
    id: number;
    name: string;
    note: string | null;
    token: string | null;
    len: number | null;
    sha: string | null;
  }[];
  blobBack: { length: number; sha: string };
  calc: { sum: number | string; joined: string; isNull: number };
  transaction: { inside: number; after: number };
  sequential: number;
  parallel: { ids: number[]; keys: number[]; dbs: string[]; openUpstream: number };
}

const HOSTS = [
  { name: 'the gateway', host: 'gateway', exit: 'gateway' },
  { name: 'an agent', host: 'agent', exit: AGENT },
] as const;

describe.each(HOSTS)('mysql through $name', ({ host, exit }) => {
  const target = targetName('mysql', host);

  it('mysql2 from the job: query, prepared statements, a 200 KiB blob, rollback, 200 sequential and 20 parallel', async () => {
    const job = await world.open(target);
    const table = `e2e_${host}_${randomBytes(3).toString('hex')}`;
    const secret = `sk_live_${randomBytes(12).toString('hex')}`;
    // Binary, with a recognisable ASCII run the audit check can look for.
    const blobMarker = `blob-marker-${randomBytes(8).toString('hex')}`;
    const blob = Buffer.concat([
      randomBytes(1000),
      Buffer.from(blobMarker),
      randomBytes(200 * 1024 - 1000 - blobMarker.length),
    ]);
    const blobFile = join(job.dir, 'blob.bin');
    writeFileSync(blobFile, blob);
    const input = join(job.dir, 'input.json');
    writeFileSync(input, JSON.stringify({ table, secret, blobFile }));

    const r = await node(job, 'client.mjs', input);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as ClientReport;

    expect(out.who).toEqual({ user: `${up.mysqlUser}@127.0.0.1`, db: up.mysqlDb });
    expect(out.rows).toEqual([
      { id: 1, name: 'one', note: null, token: secret, len: null, sha: null },
      { id: 2, name: 'two', note: 'a note', token: null, len: blob.length, sha: sha(blob) },
      { id: 3, name: 'three', note: null, token: null, len: null, sha: null },
    ]);
    expect(out.blobBack).toEqual({ length: blob.length, sha: sha(blob) });
    expect(out.calc).toEqual({ sum: 42, joined: 'abcd', isNull: 1 });
    expect(out.transaction).toEqual({ inside: 4, after: 3 });
    expect(out.sequential).toBe(200);
    expect(out.parallel.keys).toEqual(Array.from({ length: 20 }, (_, i) => i));
    expect(out.parallel.dbs).toEqual(Array(20).fill(up.mysqlDb));
    // 20 distinct upstream threads, all open at once (plus the first connection).
    expect(new Set(out.parallel.ids).size).toBe(20);
    expect(out.parallel.openUpstream).toBeGreaterThanOrEqual(21);

    const events = await endAndCollect(job);
    const statements = auditedStatements(events);
    for (const s of statements) expect(s.event.data).toMatchObject({ exit });
    const texts = statements.map((s) => s.statement);
    const insert = `INSERT INTO ${table} (id, name, note, token, data) VALUES (?, ?, ?, ?, ?)`;
    // One prepare and three executes of the reused statement, each with the prepared text.
    expect(statements.filter((s) => s.statement === insert).map((s) => s.protocol)).toEqual([
      'extended',
      'extended',
      'extended',
      'extended',
    ]);
    expect(texts).toContain('SELECT ? + ? AS sum, CONCAT(?, ?) AS joined, ? IS NULL AS isNull');
    expect(texts).toContain('SELECT CURRENT_USER() AS user, DATABASE() AS db');
    expect(texts).toContain('ROLLBACK');
    // Each of the 20 parallel connections: one prepare and one execute.
    const parallelSql = 'SELECT CONNECTION_ID() AS id, ? AS k, DATABASE() AS db';
    expect(texts.filter((t) => t === parallelSql)).toHaveLength(40);
    for (let i = 0; i < 200; i++) expect(texts).toContain(`SELECT ${i} * 2 AS v`);
    // The parameter values never: not the secret-looking one, not the blob, in no event or log.
    const audit = await allAudit();
    expect(audit.includes(secret), 'parameter value in the audit').toBe(false);
    expect(audit.includes(blobMarker), 'blob parameter in the audit').toBe(false);
    expect(logLines.join('\n').includes(secret), 'parameter value in the gateway log').toBe(false);
    expect(world.agentStderr().includes(secret), 'parameter value in the agent log').toBe(false);
  }, 45_000);

  it('a migration tool: files applied in order over one connection, a re-run is a no-op, a failure stops it', async () => {
    const job = await world.open(target);
    const s = randomBytes(3).toString('hex');
    const [widgets, book] = [`widgets_${host}_${s}`, `schema_migrations_${host}_${s}`];
    const dir = join(job.dir, 'migrations');
    mkdirSync(dir);
    const write = (name: string, sql: string) => writeFileSync(join(dir, name), sql);
    write(
      '001_widgets.sql',
      `CREATE TABLE ${widgets} (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(64) NOT NULL);\n`,
    );
    write(
      '002_seed.sql',
      `INSERT INTO ${widgets} (name) VALUES ('a'), ('b');\nALTER TABLE ${widgets} ADD COLUMN price INT NOT NULL DEFAULT 0;\n`,
    );
    write(
      '003_price.sql',
      `UPDATE ${widgets} SET price = 10 WHERE name = 'a';\nCREATE INDEX ${widgets}_name ON ${widgets} (name);\n`,
    );
    const state = async () => ({
      rows: await up.mysqlAdmin(`SELECT name, price FROM ${up.mysqlDb}.${widgets} ORDER BY id`),
      applied: await up.mysqlAdmin(`SELECT name FROM ${up.mysqlDb}.${book} ORDER BY name`),
    });
    const migrated = { rows: 'a\t10\nb\t0\n', applied: '001_widgets.sql\n002_seed.sql\n003_price.sql\n' };

    const first = await node(job, 'migrate.mjs', dir, book);
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    expect(first.stdout).toBe('applied 001_widgets.sql\napplied 002_seed.sql\napplied 003_price.sql\n');
    expect(await state()).toEqual(migrated);

    const again = await node(job, 'migrate.mjs', dir, book);
    expect(again.code).toBe(0);
    expect(again.stdout).toBe('nothing to apply\n');
    expect(await state()).toEqual(migrated);

    write(
      '004_broken.sql',
      `INSERT INTO ${widgets} (name) VALUES ('c');\nINSERT INTO no_such_table_${s} VALUES (1);\n`,
    );
    write('005_after.sql', `INSERT INTO ${widgets} (name) VALUES ('d');\n`);
    const broken = await node(job, 'migrate.mjs', dir, book);
    expect(broken.code).toBe(1);
    expect(broken.stdout).toBe('');
    expect(broken.stderr).toMatch(
      new RegExp(
        `^migration 004_broken\\.sql failed: Table '${up.mysqlDb}\\.no_such_table_${s}' doesn't exist\\n$`,
      ),
    );
    const after = await state();
    expect(after.applied).toBe(migrated.applied);
    expect(after.rows).not.toContain('d');

    const texts = auditedStatements(await endAndCollect(job)).map((x) => x.statement);
    expect(texts).toContain(readFileSync(join(dir, '001_widgets.sql'), 'utf8'));
    expect(texts).toContain(`INSERT INTO ${book} (name) VALUES (?)`);
  }, 45_000);

  it('secrets: while a query runs, the upstream password is in no argv, log, audit event or job env; the OTP in no audit or log', async () => {
    const job = await world.open(target);
    const held = await mysqlDriver.hold(job, up);
    holding.add(held);
    const cmdlines: string[] = [];
    for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
      try {
        cmdlines.push(readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' '));
      } catch {
        // gone
      }
    }
    const env = await job.run(['env']);
    expect(held.closed()).toBe(false);
    held.release();
    holding.delete(held);
    await endAndCollect(job);
    // The exit that served the session logged it (the agent: killing the statement left running).
    const exitLog = () => (host === 'agent' ? world.agentStderr() : logLines.join('\n'));
    await waitFor(() => exitLog().includes(job.session), 10_000, 'the exit to log the session');

    const password = up.secrets.MYSQL_PW;
    const otp = job.exported.MYSQL_PWD as string;
    const audit = await allAudit();
    const haystacks = {
      argv: cmdlines.join('\n'),
      'gateway log': logLines.join('\n'),
      'agent stderr': world.agentStderr(),
      audit,
      'job env': `${env.stdout}\n${JSON.stringify(job.env)}\n${JSON.stringify(job.exported)}`,
    };
    for (const [where, text] of Object.entries(haystacks))
      expect(text.includes(password), `upstream password in ${where}`).toBe(false);
    for (const where of ['gateway log', 'agent stderr', 'audit'] as const)
      expect(haystacks[where].includes(otp), `one-time password in ${where}`).toBe(false);

    // The sweep looked where the secrets could have been: the running client and the agent were
    // among the processes, the gateway logged, the job had its OTP, the agent has the password.
    expect(cmdlines.some((c) => c.includes('SLEEP(60)'))).toBe(true);
    expect(cmdlines.some((c) => c.includes('agent --config'))).toBe(true);
    expect(logLines.length).toBeGreaterThan(10);
    expect(otp).toMatch(/.{20,}/);
    expect(env.stdout).toContain(`MYSQL_PWD=${otp}\n`);
    expect(readFileSync(`/proc/${world.agentPid()}/environ`, 'utf8')).toContain(`MYSQL_PW=${password}`);
    expect(audit).toContain(job.session);
  }, 30_000);
});
