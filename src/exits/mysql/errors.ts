// Failures of the MySQL handshakes and how they reach the application: every failure before the
// final OK becomes one ERR packet (error number, SQL state, a message that starts with the
// CIPORT_E_ code), then the connection closes.
import type { Duplex } from 'node:stream';
import { asCiportError, CiportError, type ErrorCode } from '../../errors/index.js';
import { encodePacket, errPayload } from './packets.js';

/** A CiportError that also knows the MySQL error number and SQL state the application sees. */
export class MysqlError extends CiportError {
  readonly errno: number;
  readonly sqlState: string;

  constructor(
    code: ErrorCode,
    errno: number,
    sqlState: string,
    message: string,
    options?: { cause?: unknown; details?: Record<string, unknown> },
  ) {
    super(code, message, options);
    this.errno = errno;
    this.sqlState = sqlState;
  }
}

// Server error numbers (include/mysqld_error.h) for codes raised outside this module.
const ER_ACCESS_DENIED = 1045;
const ER_HANDSHAKE = 1043; // "Bad handshake", SQL state 08S01
const ER_CON_COUNT = 1040; // "Too many connections"
const ER_UNKNOWN = 1105;

const ERRNO_OF: Partial<Record<ErrorCode, [number, string]>> = {
  CIPORT_E_MYSQL_AUTH: [ER_ACCESS_DENIED, '28000'],
  CIPORT_E_MYSQL_PROTOCOL: [ER_HANDSHAKE, '08S01'],
  CIPORT_E_MYSQL_UPSTREAM_AUTH: [ER_ACCESS_DENIED, '28000'],
  CIPORT_E_MYSQL_UPSTREAM_REFUSED: [ER_HANDSHAKE, '08004'],
  // Not the client-side numbers (2003 "Can't connect", 2026 "SSL error"): libmariadb reports an
  // ERR packet with a number in the client range as "Received malformed packet" (2027).
  CIPORT_E_UPSTREAM_UNREACHABLE: [ER_UNKNOWN, '08001'],
  CIPORT_E_GATEWAY_UNREACHABLE: [ER_UNKNOWN, '08001'],
  CIPORT_E_TLS: [ER_UNKNOWN, '08001'],
  CIPORT_E_CONNECTION_LIMIT: [ER_CON_COUNT, '08004'],
  CIPORT_E_SESSION_ENDED: [ER_HANDSHAKE, '08004'],
  CIPORT_E_SESSION_UNAUTHORIZED: [ER_ACCESS_DENIED, '28000'],
  CIPORT_E_TARGET_NOT_GRANTED: [ER_ACCESS_DENIED, '28000'],
  CIPORT_E_TARGET_UNKNOWN: [ER_HANDSHAKE, '08004'],
  CIPORT_E_POLICY_DENIED: [ER_ACCESS_DENIED, '28000'],
  CIPORT_E_GATEWAY_DRAINING: [ER_CON_COUNT, '08004'],
  CIPORT_E_NO_AGENT: [ER_CON_COUNT, '08004'],
};

/** The ERR payload for any failure: the message starts with the CIPORT_E_ code. */
export function mysqlErrPayload(err: unknown): Buffer {
  const e = asCiportError(err);
  const [errno, sqlState] =
    e instanceof MysqlError ? [e.errno, e.sqlState] : (ERRNO_OF[e.code] ?? [ER_UNKNOWN, 'HY000']);
  return errPayload(errno, sqlState, `${e.code}: ${e.message}`);
}

/**
 * Send an ERR packet for `err` with sequence id `seq` and end the connection. Whatever the peer
 * still sends is read and discarded (unread data would make the kernel answer with a reset that
 * can destroy the error in flight); the stream is destroyed when the peer closes or after
 * `graceMs`. Safe on a stream that is already gone.
 */
export function sendErrorAndClose(stream: Duplex, err: unknown, seq: number, graceMs = 5000): Promise<void> {
  return new Promise((resolve) => {
    stream.on('error', () => {});
    if (stream.destroyed || !stream.writable) {
      stream.destroy();
      resolve();
      return;
    }
    const timer = setTimeout(() => stream.destroy(), graceMs);
    timer.unref();
    stream.once('close', () => clearTimeout(timer));
    stream.on('end', () => stream.destroy());
    stream.resume();
    stream.end(encodePacket(mysqlErrPayload(err), seq), () => resolve());
  });
}
