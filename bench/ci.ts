// The CI-shaped scenario of the peer table (issue 11): what a test job does with its database.
// A migration (node-pg-migrate, bench/migrations) and then small queries from the `pg` driver
// over connections opened and closed every `perConnection` queries, as a test suite that
// builds a client per test file does. Each run works in its own schema, dropped afterwards
// (not timed). The result is the wall time of migration + queries.
import { join } from 'node:path';
import { runner } from 'node-pg-migrate';
import pg from 'pg';

// Compiled (dist/bench/migrations/*.js) or, under vitest, the sources (bench/migrations/*.ts).
const MIGRATIONS = join(new URL('.', import.meta.url).pathname, 'migrations', '*.{js,ts}');

export interface CiOptions {
  queries: number;
  perConnection: number;
}

/** The statements of one test, cycled: inserts, point reads, an aggregate, an update, a join. */
async function query(c: pg.Client, s: string, i: number, last: { order: number }): Promise<void> {
  const account = (i % 200) + 1;
  switch (i % 5) {
    case 0: {
      const r = await c.query(`INSERT INTO ${s}.orders (account_id, amount) VALUES ($1, $2) RETURNING id`, [
        account,
        (i % 1000) / 10,
      ]);
      last.order = r.rows[0].id as number;
      break;
    }
    case 1:
      await c.query(`SELECT id, email, plan FROM ${s}.accounts WHERE id = $1`, [account]);
      break;
    case 2:
      await c.query(`SELECT count(*), coalesce(sum(amount), 0) FROM ${s}.orders WHERE account_id = $1`, [
        account,
      ]);
      break;
    case 3:
      await c.query(`UPDATE ${s}.orders SET status = 'paid' WHERE id = $1`, [last.order]);
      break;
    default:
      await c.query(
        `SELECT o.id, o.amount, a.email FROM ${s}.orders o JOIN ${s}.accounts a ON a.id = o.account_id
         WHERE o.status = $1 ORDER BY o.created_at DESC LIMIT 10`,
        ['paid'],
      );
  }
}

/** Run the scenario against `conn` in schema `schema`: wall seconds, and the query connections opened. */
export async function ciScenario(
  conn: pg.ClientConfig,
  schema: string,
  o: CiOptions,
): Promise<{ seconds: number; connections: number }> {
  if (!/^[a-z_][a-z0-9_]*$/.test(schema)) throw new Error(`bad schema name ${schema}`);
  const start = performance.now();
  await runner({
    databaseUrl: conn,
    dir: MIGRATIONS,
    useGlob: true,
    direction: 'up',
    migrationsTable: 'pgmigrations',
    migrationsSchema: schema,
    schema,
    createSchema: true,
    checkOrder: true,
    log: () => {},
  });
  const last = { order: 1 };
  let connections = 0;
  for (let done = 0; done < o.queries; ) {
    const c = new pg.Client(conn);
    await c.connect();
    connections++;
    try {
      for (let i = 0; i < o.perConnection && done < o.queries; i++, done++)
        await query(c, schema, done, last);
    } finally {
      await c.end();
    }
  }
  return { seconds: (performance.now() - start) / 1000, connections };
}

/** Drop a run's schema (and its migrations table). */
export async function dropSchema(conn: pg.ClientConfig, schema: string): Promise<void> {
  const c = new pg.Client(conn);
  await c.connect();
  try {
    await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  } finally {
    await c.end();
  }
}
