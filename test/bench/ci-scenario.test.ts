// The peer table's CI scenario (bench/ci.ts) against a throwaway PostgreSQL: the node-pg-migrate
// migrations run in the run's own schema, the queries do what they say, connections are opened
// and closed every `perConnection` queries, and dropSchema leaves nothing behind.
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ciScenario, dropSchema } from '../../bench/ci.js';
import { type PgServer, startPgServer } from '../fixtures/pg-server.js';

describe('CI scenario', () => {
  let server: PgServer;
  const password = 'ci-scenario-pw';
  const conn = () => ({ host: server.host, port: server.port, user: 'app', password, database: 'app' });

  beforeAll(async () => {
    server = await startPgServer({ roles: [{ name: 'app', password }], databases: { app: 'app' } });
  });
  afterAll(async () => {
    await server?.stop();
  });

  it('migrates its schema, runs the queries over a new connection every N, and drops the schema', async () => {
    const run = await ciScenario(conn(), 'ci_test', { queries: 120, perConnection: 50 });
    expect(run.seconds).toBeGreaterThan(0);
    expect(run.connections).toBe(3);
    const count = async (sql: string) => {
      const c = new pg.Client(conn());
      await c.connect();
      try {
        return Number((await c.query(sql)).rows[0].n);
      } finally {
        await c.end();
      }
    };
    expect(await count('SELECT count(*) AS n FROM ci_test.pgmigrations')).toBe(2);
    expect(await count("SELECT count(*) AS n FROM ci_test.accounts WHERE plan = 'pro'")).toBe(20);
    // one insert in every 5 queries, each paid by the update 3 queries later
    expect(await count('SELECT count(*) AS n FROM ci_test.orders')).toBe(24);
    expect(await count("SELECT count(*) AS n FROM ci_test.orders WHERE status = 'paid'")).toBe(24);
    await dropSchema(conn(), 'ci_test');
    expect(await count("SELECT count(*) AS n FROM pg_namespace WHERE nspname = 'ci_test'")).toBe(0);
  }, 60_000);

  it('refuses a schema name it would have to quote', async () => {
    await expect(ciScenario(conn(), 'x; drop', { queries: 1, perConnection: 1 })).rejects.toThrow(
      /bad schema name/,
    );
  });
});
