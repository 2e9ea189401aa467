// The same attacks through a real gateway (the gateway is the exit): a job that holds its
// session id and secret opens the CONNECT stream itself, skips the local listener and writes the
// CIMY connect request and MySQL packets of its choosing. The gateway's audit log must record
// what ran, not what the job made up — and never the injected password.
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import type { ClientHttp2Stream } from 'node:http2';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import mysql from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CiportError } from '../../src/errors/index.js';
import { encodeConnectFrame } from '../../src/exits/mysql/connect-wire.js';
import { LOCAL_CAPABILITIES } from '../../src/exits/mysql/frontend.js';
import { encodePacket, type Packet, PacketReader } from '../../src/exits/mysql/packets.js';
import { createLogger } from '../../src/log/logger.js';
import { auditedStatements } from '../fixtures/queries.js';
import { type Harness, openSession, startHarness, tempDir, tunnel } from '../gateway/helpers.js';

const S = randomBytes(4).toString('hex');
const USER = `hostile_gw_${S}`;
const DB = `hostile_gw_${S}`;
const PW = `gw-Secret-${randomBytes(12).toString('hex')}`;
// The password of a target whose credentials the server refuses (errors are where secrets leak).
const WRONG_PW = `gw-Wrong-${randomBytes(12).toString('hex')}`;
const logLines: string[] = [];
let h: Harness;
let secrets: ReturnType<typeof tempDir>;

beforeAll(async () => {
  const root = await mysql.createConnection({ host: '127.0.0.1', port: 3306, user: 'root' });
  await root.query(`CREATE DATABASE ${DB}`);
  await root.query(`CREATE USER '${USER}'@'127.0.0.1' IDENTIFIED BY '${PW}'`);
  await root.query(`GRANT ALL ON ${DB}.* TO '${USER}'@'127.0.0.1'`);
  await root.end();
  secrets = tempDir('ciport-hostile-my-');
  const pwFile = join(secrets.dir, 'pw');
  writeFileSync(pwFile, PW, { mode: 0o600 });
  const wrongFile = join(secrets.dir, 'wrong');
  writeFileSync(wrongFile, WRONG_PW, { mode: 0o600 });
  const logger = createLogger({
    level: 'debug',
    destination: new Writable({
      write(chunk, _enc, cb) {
        logLines.push(...chunk.toString().split('\n').filter(Boolean));
        cb();
      },
    }) as never,
  });
  h = await startHarness(
    {
      targets: [
        {
          name: 'my',
          protocol: 'mysql',
          address: '127.0.0.1:3306',
          database: DB,
          credentials: { user: USER, password: { file: pwFile } },
        },
        {
          name: 'mybad',
          protocol: 'mysql',
          address: '127.0.0.1:3306',
          credentials: { user: USER, password: { file: wrongFile } },
        },
      ],
    },
    { logger },
  );
});

afterAll(async () => {
  await h?.stop();
  secrets?.cleanup();
  const root = await mysql.createConnection({ host: '127.0.0.1', port: 3306, user: 'root' });
  const [rows] = await root.query('SELECT id FROM information_schema.processlist WHERE user = ?', [USER]);
  for (const r of rows as { id: number }[]) await root.query(`KILL ${r.id}`).catch(() => {});
  await root.query(`DROP USER IF EXISTS '${USER}'@'127.0.0.1'`);
  await root.query(`DROP DATABASE IF EXISTS ${DB}`);
  await root.end();
});

async function directStream(target = 'my'): Promise<{
  stream: ClientHttp2Stream;
  read: () => Promise<Packet>;
  session: string;
}> {
  const c = await h.client();
  const s = await openSession(c, await h.token(), { targets: [target] });
  const stream = await tunnel(c, s, target);
  const reader = new PacketReader(stream, (why, d) => new CiportError('CIPORT_E_INTERNAL', `${why}: ${d}`));
  stream.write(
    encodeConnectFrame({
      kind: 'connect',
      user: 'root',
      database: 'mysql',
      collation: 45,
      capabilities: LOCAL_CAPABILITIES,
      maxPacketSize: 16 * 1024 * 1024,
      attributes: {},
    }),
  );
  return { stream, read: () => reader.read(1 << 20, 10_000), session: s.id };
}

async function auditOf(session: string): Promise<string> {
  const events = (await h.gateway.store.auditEvents({ limit: 100_000 })).filter(
    (e) => (e.data as { session?: string }).session === session,
  );
  return JSON.stringify(events);
}

const waitForAudit = async (session: string, needle: string) => {
  for (let i = 0; i < 100; i++) {
    const text = await auditOf(session);
    if (text.includes(needle)) return text;
    await new Promise((r) => setTimeout(r, 50));
  }
  return auditOf(session);
};

const query = (sql: string) => encodePacket(Buffer.concat([Buffer.from([0x03]), Buffer.from(sql)]), 0);

describe('mysql through the gateway, listener skipped', () => {
  it('a forged statement inside LOAD DATA LOCAL content does not reach the audit log', async () => {
    const { stream, read, session } = await directStream();
    expect((await read()).payload[0]).toBe(0x00);
    stream.write(query(`CREATE TABLE ${DB}.t (a TEXT)`));
    expect((await read()).payload[0]).toBe(0x00);
    stream.write(query(`LOAD DATA LOCAL INFILE 'x' INTO TABLE ${DB}.t`));
    // Refused by the server (LOCAL_FILES never negotiated); then former file content, refused by
    // the exit at the first out-of-sequence packet, with nothing after it relayed or audited.
    expect((await read()).payload[0]).toBe(0xff);
    for (let seq = 2; seq <= 255; seq++) stream.write(encodePacket(Buffer.from('x\n'), seq));
    const forged = 'DROP DATABASE forged_through_gateway';
    stream.write(encodePacket(Buffer.from(`\x03${forged}\n`), 0));
    stream.write(encodePacket(Buffer.alloc(0), 1));
    expect((await read()).payload.toString('utf8')).toContain('CIPORT_E_MYSQL_PROTOCOL');
    stream.end();
    const audit = await waitForAudit(session, 'connection.closed');
    expect(audit).toContain('LOAD DATA LOCAL INFILE');
    expect(audit, 'the forged statement is in the audit log').not.toContain(forged);
    // Never the injected password, wherever the connection went.
    expect(audit).not.toContain(PW);
  });

  it('a statement pipelined behind a KILL CONNECTION of itself is stored as unanswered, never as run', async () => {
    const { stream, read, session } = await directStream();
    expect((await read()).payload[0]).toBe(0x00);
    const planted = 'DROP DATABASE planted_behind_kill';
    stream.write(Buffer.concat([query('KILL CONNECTION CONNECTION_ID()'), query(planted)]));
    expect((await read()).payload.readUInt16LE(1)).toBe(1927); // Connection was killed
    stream.end();
    const audit = await waitForAudit(session, 'connection.closed');
    const statements = auditedStatements(JSON.parse(audit));
    expect(statements.map((st) => [st.statement, st.outcome])).toEqual([
      ['KILL CONNECTION CONNECTION_ID()', 'error'],
      [planted, 'unanswered'],
    ]);
    // Each with the time it was sent, and chained before the connection's end.
    for (const st of statements) expect(Date.parse(st.at)).toBeGreaterThan(0);
  });

  it('a refused injected password is in no ERR, audit event or log line', async () => {
    const { stream, read, session } = await directStream('mybad');
    const refused = await read();
    expect(refused.payload[0]).toBe(0xff);
    const text = refused.payload.toString('utf8');
    expect(text).toContain('CIPORT_E_MYSQL_UPSTREAM_AUTH');
    stream.end();
    const audit = await waitForAudit(session, 'connection.closed');
    expect(logLines.length, 'the gateway logged nothing: the check below would be empty').toBeGreaterThan(0);
    for (const secret of [WRONG_PW, PW]) {
      expect(text).not.toContain(secret);
      expect(audit).not.toContain(secret);
      expect(logLines.join('\n')).not.toContain(secret);
    }
  });
});
