// Protocol vectors for the observer's tests: commands as the application sends them and replies
// as a MySQL/MariaDB server sends them (shapes checked against MariaDB 10.11 by hand: see
// replies.test.ts), in either framing (with or without CLIENT_DEPRECATE_EOF).
import { encodePacket, MAX_PAYLOAD } from '../../../src/exits/mysql/packets.js';
import { SERVER_MORE_RESULTS_EXISTS, SERVER_STATUS_CURSOR_EXISTS } from '../../../src/exits/mysql/replies.js';

export const AUTOCOMMIT = 0x0002;
export { SERVER_MORE_RESULTS_EXISTS as MORE, SERVER_STATUS_CURSOR_EXISTS as CURSOR };

/** A command packet (sequence id 0). */
export const cmd = (code: number, body: Buffer | string = '', seq = 0) =>
  encodePacket(Buffer.concat([Buffer.from([code]), Buffer.from(body)]), seq);

const u16 = (n: number) => [n & 0xff, n >> 8];
const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
};

export const query = (sql: string | Buffer) => cmd(0x03, sql);
export const prepare = (sql: string) => cmd(0x16, sql);
/** COM_STMT_EXECUTE with no parameters (`flags` 1: open a read-only cursor). */
export const execute = (id: number, flags = 0, tail: Buffer | string = '') =>
  cmd(0x17, Buffer.concat([u32(id), Buffer.from([flags]), u32(1), Buffer.from(tail)]));
export const fetch = (id: number, rows: number) => cmd(0x1c, Buffer.concat([u32(id), u32(rows)]));
export const close = (id: number) => cmd(0x19, u32(id));

// ---- reply payloads -----------------------------------------------------------------------------

export const ok = (status = AUTOCOMMIT) => Buffer.from([0x00, 0, 0, ...u16(status), 0, 0]);
/** The OK that ends a result set with CLIENT_DEPRECATE_EOF. */
export const okEnd = (status = AUTOCOMMIT) => Buffer.from([0xfe, 0, 0, ...u16(status), 0, 0]);
export const eof = (status = AUTOCOMMIT) => Buffer.from([0xfe, 0, 0, ...u16(status)]);
export const err = (errno = 1064, message = 'You have an error') =>
  Buffer.concat([Buffer.from([0xff, ...u16(errno)]), Buffer.from(`#42000${message}`)]);
export const columnCount = (n: number) => Buffer.from([n]);
export const columnDef = (name = 'a') =>
  Buffer.concat([
    Buffer.from([3]),
    Buffer.from('def'),
    Buffer.from([0, 0, 0, name.length]),
    Buffer.from(name),
    Buffer.from([0, 0x0c, 0x2d, 0, 0x04, 0, 0, 0, 0xfd, 0, 0, 0x27, 0, 0]),
  ]);
export const textRow = (...values: string[]) =>
  Buffer.concat(values.map((v) => Buffer.concat([Buffer.from([v.length]), Buffer.from(v)])));
export const binaryRow = () => Buffer.from([0x00, 0x00, 0x01, 0, 0, 0]);
export const prepareOk = (id: number, columns: number, params: number) =>
  Buffer.from([0x00, ...u32(id), ...u16(columns), ...u16(params), 0, 0, 0]);

/** A whole reply: its packets numbered from `seq` (1 after a one-packet command). */
export function reply(payloads: Buffer[], seq = 1): Buffer {
  let next = seq;
  return Buffer.concat(
    payloads.map((p) => {
      const wire = encodePacket(p, next & 0xff);
      next += Math.floor(p.length / MAX_PAYLOAD) + 1;
      return wire;
    }),
  );
}

/** A text result set of `rows` one-column rows, in either framing. */
export function resultSet(rows: number, deprecateEof: boolean, status = AUTOCOMMIT): Buffer[] {
  const body = Array.from({ length: rows }, (_, i) => textRow(String(i)));
  return deprecateEof
    ? [columnCount(1), columnDef(), ...body, okEnd(status)]
    : [columnCount(1), columnDef(), eof(), ...body, eof(status)];
}

/** The reply to a COM_STMT_PREPARE of a statement with `columns` and `params`. */
export function prepared(id: number, columns: number, params: number, deprecateEof: boolean): Buffer[] {
  const group = (n: number) =>
    n === 0 ? [] : [...Array.from({ length: n }, () => columnDef()), ...(deprecateEof ? [] : [eof()])];
  return [prepareOk(id, columns, params), ...group(params), ...group(columns)];
}

/** Feed `bytes` to `push` in pieces of `step` bytes. */
export function feed(push: (chunk: Buffer) => void, bytes: Buffer, step = bytes.length): void {
  for (let i = 0; i < bytes.length; i += step) push(bytes.subarray(i, i + step));
}
