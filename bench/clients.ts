// Load-generator pieces shared by the benches: a raw TCP upload to a counting sink, and the
// environment that points libpq tools (psql, pgbench) at one path.
import { connect, type Socket } from 'node:net';

/** PostgreSQL connection parameters of one path. */
export interface PgConn {
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
}

/** The environment for libpq tools: this process's, without any PG* of the caller's, plus `c`. */
export function pgEnv(c: PgConn): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PG')) env[k] = v;
  return {
    ...env,
    PGHOST: c.host,
    PGPORT: String(c.port),
    PGUSER: c.user,
    PGPASSWORD: c.password,
    PGDATABASE: c.database,
    PGSSLMODE: 'disable',
    PGPASSFILE: '/dev/null',
    PGCONNECT_TIMEOUT: '10',
  };
}

export function connected(host: string, port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host, port, noDelay: true }, () => resolve(s));
    s.once('error', reject);
  });
}

/** Upload `bytes` to a sink that answers with the count it received, and check the count. */
export async function upload(host: string, port: number, bytes: number): Promise<void> {
  const s = await connected(host, port);
  const chunk = Buffer.alloc(256 * 1024, 7);
  let sent = 0;
  const answer = new Promise<string>((resolve, reject) => {
    let text = '';
    s.on('data', (b: Buffer) => {
      text += b.toString();
    });
    s.on('end', () => resolve(text.trim()));
    s.on('error', reject);
  });
  while (sent < bytes) {
    const n = Math.min(chunk.length, bytes - sent);
    sent += n;
    if (!s.write(n === chunk.length ? chunk : chunk.subarray(0, n)))
      await new Promise((r) => s.once('drain', r));
  }
  s.end();
  if (Number(await answer) !== bytes) throw new Error(`sink counted ${await answer} of ${bytes} bytes`);
}
