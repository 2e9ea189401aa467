// A job's application for test/e2e/mysql.test.ts: mysql2 with the connection ciport exported
// (DATABASE_URL, and the MYSQL_* variables for the parallel connections), run as a child
// process in the job's environment. It reports what it saw as one JSON line; the test judges.
// Usage: node client.mjs INPUT.json  (INPUT: {table, secret, blobFile})
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import mysql from 'mysql2/promise';

const input = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const t = input.table;
const blob = readFileSync(input.blobFile);
const sha = (b) => createHash('sha256').update(b).digest('hex');
const out = {};

const conn = await mysql.createConnection(process.env.DATABASE_URL);
const [[who]] = await conn.query('SELECT CURRENT_USER() AS user, DATABASE() AS db');
out.who = who;

await conn.query(
  `CREATE TABLE ${t} (id INT PRIMARY KEY, name VARCHAR(64) NOT NULL, note TEXT NULL, token VARCHAR(128) NULL, data LONGBLOB NULL) ENGINE=InnoDB`,
);
// One prepared statement, executed three times with different parameters (NULLs included).
const insert = await conn.prepare(`INSERT INTO ${t} (id, name, note, token, data) VALUES (?, ?, ?, ?, ?)`);
await insert.execute([1, 'one', null, input.secret, null]);
await insert.execute([2, 'two', 'a note', null, blob]);
await insert.execute([3, 'three', null, null, null]);
insert.close();
const [rows] = await conn.execute(
  `SELECT id, name, note, token, LENGTH(data) AS len, SHA2(data, 256) AS sha FROM ${t} WHERE id >= ? AND name <> ? ORDER BY id`,
  [1, 'nobody'],
);
out.rows = rows;
const [[back]] = await conn.execute(`SELECT data FROM ${t} WHERE id = ?`, [2]);
out.blobBack = { length: back.data.length, sha: sha(back.data) };
const [[calc]] = await conn.execute('SELECT ? + ? AS sum, CONCAT(?, ?) AS joined, ? IS NULL AS isNull', [
  40,
  2,
  'ab',
  'cd',
  null,
]);
out.calc = calc;

// A transaction that is rolled back: its row is visible inside, gone after.
await conn.beginTransaction();
await conn.execute(`INSERT INTO ${t} (id, name) VALUES (?, ?)`, [4, 'rolled back']);
const [[inside]] = await conn.query(`SELECT COUNT(*) AS n FROM ${t}`);
await conn.rollback();
const [[after]] = await conn.query(`SELECT COUNT(*) AS n FROM ${t}`);
out.transaction = { inside: Number(inside.n), after: Number(after.n) };

// 200 sequential queries on the one connection.
let sequential = 0;
for (let i = 0; i < 200; i++) {
  const [[r]] = await conn.query(`SELECT ${i} * 2 AS v`);
  if (Number(r.v) === i * 2) sequential++;
}
out.sequential = sequential;

// 20 connections open at once (from the MYSQL_* variables), each with its own upstream thread.
const parallel = await Promise.all(
  Array.from({ length: 20 }, () =>
    mysql.createConnection({
      host: process.env.MYSQL_HOST,
      port: Number(process.env.MYSQL_TCP_PORT),
      user: process.env.MYSQL_USER,
      password: process.env.MYSQL_PWD,
    }),
  ),
);
const ids = await Promise.all(
  parallel.map(async (c, i) => {
    const [[r]] = await c.execute('SELECT CONNECTION_ID() AS id, ? AS k, DATABASE() AS db', [i]);
    return r;
  }),
);
const [[seen]] = await conn.query(
  'SELECT COUNT(*) AS n FROM information_schema.processlist WHERE user = SUBSTRING_INDEX(CURRENT_USER(), "@", 1)',
);
out.parallel = {
  ids: ids.map((r) => Number(r.id)),
  keys: ids.map((r) => Number(r.k)),
  dbs: ids.map((r) => r.db),
};
out.parallel.openUpstream = Number(seen.n);
await Promise.all(parallel.map((c) => c.end()));
await conn.query(`DROP TABLE ${t}`);
await conn.end();
process.stdout.write(`${JSON.stringify(out)}\n`);
