// The first frame on a mysql tunnel stream: what the local listener learned from the
// application's handshake response, which the exit needs to open a compatible upstream
// connection. After it, the exit answers with one MySQL packet (the upstream's OK, or an ERR)
// and the stream carries plain MySQL protocol both ways.
//
//   offset 0  4 bytes   "CIMY"
//          4  1 byte    version, 1
//          5  uint32BE  length N of the payload (≤ MAX_CONNECT_FRAME_PAYLOAD)
//          9  N bytes   UTF-8 JSON: {"kind":"connect","user":"app","database":"shop",
//                         "collation":45,"capabilities":…,"maxPacketSize":…,"attributes":{…},
//                         "connectionId":2147483650}
//
// The exit must not trust it (it comes from the job's machine): bounded, read with a deadline,
// validated here; which capabilities and attributes reach the upstream is decided at the exit.
import type { Readable } from 'node:stream';
import { decodeJsonFrame, encodeJsonFrame, readJsonFrame } from '../json-frame.js';
import { collationClass } from './charset.js';
import { MysqlError } from './errors.js';
import { PacketReader } from './packets.js';

export interface MysqlConnectRequest {
  kind: 'connect';
  /** The user name the application logged in with locally (informational; never sent upstream). */
  user: string;
  /** The schema the application asked for, if any. */
  database?: string | undefined;
  collation: number;
  /** Capabilities the application and the local listener agreed on. */
  capabilities: number;
  maxPacketSize: number;
  /** The application's connection attributes (program_name, _client_name, …). */
  attributes: Record<string, string>;
  /** The connection id the listener's handshake gave the application (threads.ts). */
  connectionId?: number | undefined;
}

export const MAX_CONNECT_FRAME_PAYLOAD = 32 * 1024;
const MAX_NAME = 256;

function bad(message: string): MysqlError {
  return new MysqlError('CIPORT_E_MYSQL_PROTOCOL', 1043, '08S01', `mysql stream header: ${message}`);
}

const FRAME = { magic: Buffer.from('CIMY'), version: 1, maxPayload: MAX_CONNECT_FRAME_PAYLOAD, bad };

const isU32 = (n: unknown): n is number =>
  Number.isInteger(n) && (n as number) >= 0 && (n as number) < 2 ** 32;
const isName = (s: unknown): s is string =>
  typeof s === 'string' && s.length <= MAX_NAME && !s.includes('\0');

function validate(value: unknown): MysqlConnectRequest {
  if (typeof value !== 'object' || value === null) throw bad('not an object');
  const v = value as Record<string, unknown>;
  if (v.kind !== 'connect') throw bad('unknown kind');
  if (!isName(v.user)) throw bad('user must be a string without NUL');
  if (v.database !== undefined && (!isName(v.database) || v.database === ''))
    throw bad('database must be a non-empty string without NUL');
  if (!Number.isInteger(v.collation) || (v.collation as number) < 1 || (v.collation as number) > 255)
    throw bad('collation must be 1..255');
  if (!isU32(v.capabilities) || !isU32(v.maxPacketSize)) throw bad('capabilities/maxPacketSize not uint32');
  if (typeof v.attributes !== 'object' || v.attributes === null || Array.isArray(v.attributes))
    throw bad('attributes missing');
  if (v.connectionId !== undefined && !isU32(v.connectionId)) throw bad('connectionId not uint32');
  const attributes: Record<string, string> = Object.create(null);
  for (const [k, val] of Object.entries(v.attributes as Record<string, unknown>)) {
    if (k === '' || typeof val !== 'string') throw bad('attributes must map names to strings');
    attributes[k] = val;
  }
  return {
    kind: 'connect',
    user: v.user,
    database: v.database as string | undefined,
    collation: v.collation as number,
    capabilities: v.capabilities,
    maxPacketSize: v.maxPacketSize,
    attributes,
    connectionId: v.connectionId as number | undefined,
  };
}

export function encodeConnectFrame(request: MysqlConnectRequest): Buffer {
  return encodeJsonFrame(FRAME, validate(request));
}

export function decodeConnectFrame(frame: Buffer): MysqlConnectRequest {
  return validate(decodeJsonFrame(FRAME, frame));
}

/**
 * Read the frame from the start of a stream; bytes after it stay in the (paused) stream. The
 * exit's checks: a collation of a character set the audit cannot read (charset.ts) is refused.
 */
export async function readConnectFrame(stream: Readable, timeoutMs = 10_000): Promise<MysqlConnectRequest> {
  const reader = new PacketReader(stream, (why, detail) =>
    why === 'timeout' ? bad(`not received: ${detail}`) : bad(`${why}: ${detail}`),
  );
  let request: MysqlConnectRequest;
  try {
    request = decodeConnectFrame(await readJsonFrame(FRAME, (n, ms) => reader.readRaw(n, ms), timeoutMs));
  } finally {
    reader.release();
  }
  if (collationClass(request.collation) === 'refused') {
    throw new MysqlError(
      'CIPORT_E_MYSQL_CHARSET',
      1115,
      '42000',
      `collation ${request.collation} is not allowed through a ciport port: the client character set must be UTF-8 (utf8mb4, utf8mb3), ascii, binary or a single-byte one like latin1, which the audit can read as the server does; connect with utf8mb4 (mysql/mariadb --default-character-set=utf8mb4, mysql2 charset: 'utf8mb4')`,
    );
  }
  return request;
}
