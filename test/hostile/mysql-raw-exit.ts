// For the mysql hostile tests: an exit (serveMysqlExitStream, as the gateway and agents run it)
// on a loopback port standing in for the tunnel stream, and a hostile "job" that skips the
// local listener and writes the CIMY connect request and MySQL packets of its choosing.
import { randomBytes } from 'node:crypto';
import { connect, createServer, type Socket } from 'node:net';
import mysql from 'mysql2/promise';
import { CiportError } from '../../src/errors/index.js';
import { encodeConnectFrame, type MysqlConnectRequest } from '../../src/exits/mysql/connect-wire.js';
import { type MysqlExitResult, serveMysqlExitStream } from '../../src/exits/mysql/exit.js';
import { LOCAL_CAPABILITIES } from '../../src/exits/mysql/frontend.js';
import type { MysqlQueryEvent } from '../../src/exits/mysql/observe.js';
import { encodePacket, type Packet, PacketReader } from '../../src/exits/mysql/packets.js';
import { MysqlThreadRegistry } from '../../src/exits/mysql/threads.js';
import type { MysqlUpstreamTarget } from '../../src/exits/mysql/upstream.js';

export const MARIADB_ADDRESS = '127.0.0.1:3306';

export interface TestExit {
  port: number;
  events: MysqlQueryEvent[];
  results: MysqlExitResult[];
  errors: Error[];
  close(): Promise<void>;
}

/** One exit; `sessionId` is the session every stream to it belongs to. */
export async function startExit(
  upstream: MysqlUpstreamTarget,
  sessionId: string,
  threads = new MysqlThreadRegistry(),
): Promise<TestExit> {
  const sockets = new Set<Socket>();
  const exit: TestExit = { port: 0, events: [], results: [], errors: [], close: async () => {} };
  const server = createServer({ allowHalfOpen: true }, (stream) => {
    sockets.add(stream);
    stream.on('close', () => sockets.delete(stream));
    stream.on('error', () => {});
    serveMysqlExitStream(stream, {
      upstream,
      sessionId,
      threads,
      onQuery: (e) => exit.events.push(e),
    }).then(
      (r) => exit.results.push(r),
      (e: Error) => exit.errors.push(e),
    );
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  exit.port = (server.address() as { port: number }).port;
  exit.close = async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  };
  return exit;
}

/** A job speaking to the exit's stream directly. */
export class HostileStream {
  readonly reader: PacketReader;
  private constructor(readonly socket: Socket) {
    this.reader = new PacketReader(socket, (why, d) => new CiportError('CIPORT_E_INTERNAL', `${why}: ${d}`));
  }

  static async open(port: number, request: Partial<MysqlConnectRequest> = {}): Promise<HostileStream> {
    const socket = connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    socket.on('error', () => {});
    const s = new HostileStream(socket);
    socket.write(
      encodeConnectFrame({
        kind: 'connect',
        user: 'app',
        collation: 45,
        capabilities: LOCAL_CAPABILITIES,
        maxPacketSize: 16 * 1024 * 1024,
        attributes: {},
        ...request,
      }),
    );
    return s;
  }

  read(timeoutMs = 10_000): Promise<Packet> {
    return this.reader.read(32 * 1024 * 1024, timeoutMs);
  }

  send(payload: Buffer, seq = 0): void {
    this.socket.write(encodePacket(payload, seq));
  }

  query(sql: string): void {
    this.send(Buffer.concat([Buffer.from([0x03]), Buffer.from(sql)]));
  }

  /** Read packets until an OK/ERR that ends a response (text protocol, no DEPRECATE_EOF games). */
  async readUntilEnd(timeoutMs = 10_000): Promise<Packet[]> {
    const out: Packet[] = [];
    let eofs = 0;
    for (;;) {
      const p = await this.read(timeoutMs);
      out.push(p);
      const first = p.payload[0];
      if (first === 0xff) return out;
      if (out.length === 1 && first === 0x00) return out;
      // DEPRECATE_EOF is in LOCAL_CAPABILITIES: a result set ends with an OK-like 0xfe packet.
      if (first === 0xfe && p.payload.length < 0xffffff) {
        eofs++;
        if (eofs >= 1) return out;
      }
    }
  }

  close(): void {
    this.socket.destroy();
  }
}

/** A least-privilege user with a database of its own, as a target's injected identity. */
export async function makeTargetUser(): Promise<{
  upstream: MysqlUpstreamTarget;
  user: string;
  db: string;
  drop(): Promise<void>;
}> {
  const suffix = randomBytes(4).toString('hex');
  const user = `hostile_${suffix}`;
  const db = `hostile_${suffix}`;
  const password = `pw-${randomBytes(12).toString('hex')}`;
  const admin = await mysql.createConnection({ host: '127.0.0.1', port: 3306, user: 'root' });
  await admin.query(`CREATE DATABASE ${db}`);
  await admin.query(`CREATE USER '${user}'@'127.0.0.1' IDENTIFIED BY '${password}'`);
  await admin.query(`GRANT ALL ON ${db}.* TO '${user}'@'127.0.0.1'`);
  await admin.end();
  return {
    upstream: { address: MARIADB_ADDRESS, user, password, database: db },
    user,
    db,
    async drop() {
      const a = await mysql.createConnection({ host: '127.0.0.1', port: 3306, user: 'root' });
      const [rows] = await a.query(`SELECT id FROM information_schema.processlist WHERE user = ?`, [user]);
      for (const r of rows as { id: number }[]) await a.query(`KILL ${r.id}`).catch(() => {});
      await a.query(`DROP USER IF EXISTS '${user}'@'127.0.0.1'`);
      await a.query(`DROP DATABASE IF EXISTS ${db}`);
      await a.end();
    },
  };
}

/** Text of the first column of the first row of a text result set (DEPRECATE_EOF framing). */
export function firstCell(packets: Packet[]): string | undefined {
  // [column count n][n column definitions][rows…][OK 0xfe]
  const count = packets[0]?.payload[0];
  if (count === undefined || count === 0x00 || count === 0xff) return undefined;
  const row = packets[1 + count]?.payload;
  if (!row || row[0] === 0xfe || row[0] === 0xff) return undefined;
  const n = row[0] as number;
  return row.toString('utf8', 1, 1 + n);
}

/** The upstream thread id running `statement` (as root, polled up to 5 s). */
export async function threadRunning(statement: string): Promise<number> {
  const admin = await mysql.createConnection({ host: '127.0.0.1', port: 3306, user: 'root' });
  try {
    for (let i = 0; i < 100; i++) {
      const [rows] = await admin.query('SELECT id FROM information_schema.processlist WHERE info = ?', [
        statement,
      ]);
      const row = (rows as { id: number }[])[0];
      if (row) return row.id;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`${statement} never showed up`);
  } finally {
    await admin.end();
  }
}

/**
 * A job's "watchdog": a compound statement (MariaDB, no privilege needed) that loops for ever
 * with a CONTINUE HANDLER (KILL QUERY does not end it, nor does its client going away),
 * re-passwords its user to `the-job-knows-this` (so that nobody else can log in as it), kills
 * every other thread of its user, and proves it lives by inserting a row into `table`.
 */
export function watchdogSql(table: string): string {
  return `BEGIN NOT ATOMIC
  DECLARE CONTINUE HANDLER FOR SQLEXCEPTION BEGIN END;
  WHILE 1 DO
    SET PASSWORD = PASSWORD('the-job-knows-this');
    FOR r IN (SELECT ID FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID()) DO
      KILL CONNECTION r.ID;
    END FOR;
    INSERT INTO ${table} VALUES (1);
    DO SLEEP(0.002);
  END WHILE;
END`;
}
