// A migration tool's shape, for test/e2e/mysql.test.ts: apply DIR's *.sql files in name order
// over one connection (DATABASE_URL), each file once, recorded in a bookkeeping table. A failing
// file stops the run: its name and the server's message on stderr, exit 1.
// Usage: node migrate.mjs DIR BOOKKEEPING_TABLE
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import mysql from 'mysql2/promise';

const [dir, table] = process.argv.slice(2);
const conn = await mysql.createConnection({ uri: process.env.DATABASE_URL, multipleStatements: true });
await conn.query(
  `CREATE TABLE IF NOT EXISTS ${table} (name VARCHAR(255) PRIMARY KEY, applied_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3))`,
);
const [done] = await conn.query(`SELECT name FROM ${table}`);
const applied = new Set(done.map((r) => r.name));
const pending = readdirSync(dir)
  .filter((f) => f.endsWith('.sql') && !applied.has(f))
  .sort();
if (pending.length === 0) console.log('nothing to apply');
for (const file of pending) {
  try {
    await conn.query(readFileSync(join(dir, file), 'utf8'));
    await conn.execute(`INSERT INTO ${table} (name) VALUES (?)`, [file]);
  } catch (err) {
    console.error(`migration ${file} failed: ${err.message}`);
    await conn.end();
    process.exit(1);
  }
  console.log(`applied ${file}`);
}
await conn.end();
