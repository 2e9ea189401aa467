// MySQL wire basics: packets are a 3-byte little-endian payload length, a 1-byte sequence id
// and the payload. A payload of 0xffffff bytes continues in the next packet (a 16 MiB logical
// packet is sent as several); a shorter one ends it. Handshake packets are small, so every read
// here is bounded by the caller's maximum and a deadline (PacketReader), never by the peer.
import type { Readable } from 'node:stream';
import type { CiportError } from '../../errors/index.js';
import { MessageReader, type ReadFailure } from '../postgres/messages.js';

export const MAX_PAYLOAD = 0xffffff;

/** Capability flags (include/mysql_com.h). */
export const Cap = {
  LONG_PASSWORD: 1, // MariaDB: CLIENT_MYSQL, "not a MariaDB-extended client"
  FOUND_ROWS: 1 << 1,
  LONG_FLAG: 1 << 2,
  CONNECT_WITH_DB: 1 << 3,
  NO_SCHEMA: 1 << 4,
  COMPRESS: 1 << 5,
  ODBC: 1 << 6,
  LOCAL_FILES: 1 << 7,
  IGNORE_SPACE: 1 << 8,
  PROTOCOL_41: 1 << 9,
  INTERACTIVE: 1 << 10,
  SSL: 1 << 11,
  IGNORE_SIGPIPE: 1 << 12,
  TRANSACTIONS: 1 << 13,
  RESERVED: 1 << 14,
  SECURE_CONNECTION: 1 << 15,
  MULTI_STATEMENTS: 1 << 16,
  MULTI_RESULTS: 1 << 17,
  PS_MULTI_RESULTS: 1 << 18,
  PLUGIN_AUTH: 1 << 19,
  CONNECT_ATTRS: 1 << 20,
  PLUGIN_AUTH_LENENC_CLIENT_DATA: 1 << 21,
  CAN_HANDLE_EXPIRED_PASSWORDS: 1 << 22,
  SESSION_TRACK: 1 << 23,
  DEPRECATE_EOF: 1 << 24,
  OPTIONAL_RESULTSET_METADATA: 1 << 25,
  ZSTD_COMPRESSION: 1 << 26,
  QUERY_ATTRIBUTES: 1 << 27,
  MULTI_FACTOR_AUTHENTICATION: 1 << 28,
  CAPABILITY_EXTENSION: 1 << 29,
  SSL_VERIFY_SERVER_CERT: 1 << 30,
  REMEMBER_OPTIONS: 2 ** 31,
} as const;

/** Names of set flags, for error messages. */
export function capNames(flags: number): string[] {
  return Object.entries(Cap)
    .filter(([, bit]) => (flags & bit) >>> 0 !== 0)
    .map(([name]) => `CLIENT_${name}`);
}

export const Command = {
  QUIT: 0x01,
  INIT_DB: 0x02,
  QUERY: 0x03,
  FIELD_LIST: 0x04,
  STATISTICS: 0x09,
  PING: 0x0e,
  CHANGE_USER: 0x11,
  STMT_PREPARE: 0x16,
  STMT_EXECUTE: 0x17,
  STMT_SEND_LONG_DATA: 0x18,
  STMT_CLOSE: 0x19,
  STMT_RESET: 0x1a,
  SET_OPTION: 0x1b,
  STMT_FETCH: 0x1c,
  RESET_CONNECTION: 0x1f,
} as const;

/**
 * The commands a port relays: statements (audited), prepared-statement housekeeping, and what
 * clients send on their own (ping, field list, statistics, set option, reset). Everything else
 * (COM_PROCESS_KILL, COM_CHANGE_USER, COM_REFRESH, COM_SHUTDOWN, COM_DEBUG, COM_BINLOG_DUMP,
 * MariaDB's COM_STMT_BULK_EXECUTE, …) would act without a `query` event, or as someone else: refused.
 */
export const RELAYED_COMMANDS: ReadonlySet<number> = new Set(
  Object.entries(Command)
    .filter(([name]) => name !== 'CHANGE_USER')
    .map(([, code]) => code),
);

export const SERVER_STATUS_AUTOCOMMIT = 0x0002;
/** utf8mb4_general_ci: known to every MySQL ≥ 5.5 and MariaDB. */
export const DEFAULT_COLLATION = 45;

export interface Packet {
  seq: number;
  payload: Buffer;
}

/** One logical packet as wire bytes (split into 16 MiB pieces when needed). */
export function encodePacket(payload: Buffer, seq: number): Buffer {
  const parts: Buffer[] = [];
  let offset = 0;
  let s = seq;
  for (;;) {
    const n = Math.min(MAX_PAYLOAD, payload.length - offset);
    const head = Buffer.allocUnsafe(4);
    head.writeUIntLE(n, 0, 3);
    head.writeUInt8(s & 0xff, 3);
    parts.push(head, payload.subarray(offset, offset + n));
    offset += n;
    s++;
    if (n < MAX_PAYLOAD) break;
  }
  return Buffer.concat(parts);
}

/**
 * Reads whole logical packets during a handshake. `maxPayload` bounds the logical packet: a
 * length beyond it fails before any of the payload is read (a hostile peer announcing 16 MiB
 * costs nothing). Unconsumed bytes go back to the stream on `release()`.
 */
export class PacketReader {
  readonly #reader: MessageReader;
  readonly #fail: (why: ReadFailure, detail: string) => CiportError;

  constructor(stream: Readable, fail: (why: ReadFailure, detail: string) => CiportError) {
    this.#reader = new MessageReader(stream, fail);
    this.#fail = fail;
  }

  get buffered(): number {
    return this.#reader.buffered;
  }

  async read(maxPayload: number, timeoutMs: number): Promise<Packet> {
    const deadline = Date.now() + timeoutMs;
    const left = () => Math.max(1, deadline - Date.now());
    const parts: Buffer[] = [];
    let total = 0;
    let first: number | undefined;
    for (;;) {
      const head = await this.#reader.read(4, left());
      const n = head.readUIntLE(0, 3);
      first ??= head.readUInt8(3);
      total += n;
      if (total > maxPayload) throw this.#fail('too-large', `packet of ${total} bytes or more`);
      parts.push(await this.#reader.read(n, left()));
      if (n < MAX_PAYLOAD) break;
    }
    return { seq: first, payload: parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts) };
  }

  /** Raw bytes (the connect-request frame). */
  readRaw(n: number, timeoutMs: number): Promise<Buffer> {
    return this.#reader.read(n, timeoutMs);
  }

  release(): void {
    this.#reader.release();
  }
}

// ---- length-encoded values and a cursor over a payload ----------------------------------------

export function lenencInt(n: number): Buffer {
  if (n < 0xfb) return Buffer.from([n]);
  if (n < 0x10000) {
    const b = Buffer.alloc(3);
    b[0] = 0xfc;
    b.writeUInt16LE(n, 1);
    return b;
  }
  if (n < 0x1000000) {
    const b = Buffer.alloc(4);
    b[0] = 0xfd;
    b.writeUIntLE(n, 1, 3);
    return b;
  }
  const b = Buffer.alloc(9);
  b[0] = 0xfe;
  b.writeBigUInt64LE(BigInt(n), 1);
  return b;
}

export function lenencBytes(value: Buffer | string): Buffer {
  const b = typeof value === 'string' ? Buffer.from(value) : value;
  return Buffer.concat([lenencInt(b.length), b]);
}

/** Thrown by Cursor on a payload that ends early or is malformed; callers map it to their code. */
export class TruncatedPayload extends Error {}

/** Sequential reader of one payload; every read is bounds-checked. */
export class Cursor {
  pos = 0;
  constructor(readonly buf: Buffer) {}

  get left(): number {
    return this.buf.length - this.pos;
  }

  #need(n: number): void {
    if (n < 0 || this.pos + n > this.buf.length) throw new TruncatedPayload('payload ends early');
  }

  u8(): number {
    this.#need(1);
    return this.buf.readUInt8(this.pos++);
  }

  u16(): number {
    this.#need(2);
    const v = this.buf.readUInt16LE(this.pos);
    this.pos += 2;
    return v;
  }

  u32(): number {
    this.#need(4);
    const v = this.buf.readUInt32LE(this.pos);
    this.pos += 4;
    return v;
  }

  bytes(n: number): Buffer {
    this.#need(n);
    const v = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }

  /** Bytes up to a NUL (consumed); `optionalNul`: the end of the payload also ends it. */
  nulTerminated(optionalNul = false): Buffer {
    const end = this.buf.indexOf(0, this.pos);
    if (end < 0) {
      if (!optionalNul) throw new TruncatedPayload('missing NUL terminator');
      return this.bytes(this.left);
    }
    const v = this.buf.subarray(this.pos, end);
    this.pos = end + 1;
    return v;
  }

  lenencInt(): number {
    const first = this.u8();
    if (first < 0xfb) return first;
    if (first === 0xfc) return this.u16();
    if (first === 0xfd) {
      this.#need(3);
      const v = this.buf.readUIntLE(this.pos, 3);
      this.pos += 3;
      return v;
    }
    if (first === 0xfe) {
      this.#need(8);
      const v = this.buf.readBigUInt64LE(this.pos);
      this.pos += 8;
      if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new TruncatedPayload('length out of range');
      return Number(v);
    }
    throw new TruncatedPayload(`invalid length-encoded integer 0x${first.toString(16)}`);
  }

  lenencBytes(): Buffer {
    return this.bytes(this.lenencInt());
  }
}

// ---- generic response packets ------------------------------------------------------------------

/** ERR packet payload (PROTOCOL_41 form). */
export function errPayload(errno: number, sqlState: string, message: string): Buffer {
  const state = Buffer.from(sqlState.padEnd(5, '0').slice(0, 5), 'latin1');
  const head = Buffer.alloc(3);
  head[0] = 0xff;
  head.writeUInt16LE(errno, 1);
  return Buffer.concat([head, Buffer.from('#'), state, Buffer.from(message)]);
}

export interface ErrPacket {
  errno: number;
  sqlState: string;
  message: string;
}

/** Parse an ERR payload (0xff …), with or without the SQL state marker. */
export function parseErr(payload: Buffer): ErrPacket {
  if (payload[0] !== 0xff || payload.length < 3)
    return { errno: 0, sqlState: 'HY000', message: 'malformed error' };
  const errno = payload.readUInt16LE(1);
  if (payload[3] === 0x23 /* # */ && payload.length >= 9) {
    return { errno, sqlState: payload.toString('latin1', 4, 9), message: payload.toString('utf8', 9) };
  }
  return { errno, sqlState: 'HY000', message: payload.toString('utf8', 3) };
}
