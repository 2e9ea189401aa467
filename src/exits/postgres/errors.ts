// Failures of the PostgreSQL handshakes and how they reach the application: every failure before
// ReadyForQuery becomes one ErrorResponse (SQLSTATE + a message that starts with the CIPORT_E_
// code), then the connection closes.
import type { Duplex } from 'node:stream';
import { asCiportError, CiportError, type ErrorCode } from '../../errors/index.js';
import { errorResponse, type PgErrorFields } from './messages.js';

/** A CiportError that also knows the SQLSTATE the application should see. */
export class PgError extends CiportError {
  readonly sqlState: string;
  readonly hint: string | undefined;

  constructor(
    code: ErrorCode,
    sqlState: string,
    message: string,
    options?: { cause?: unknown; details?: Record<string, unknown>; hint?: string },
  ) {
    super(code, message, options);
    this.sqlState = sqlState;
    this.hint = options?.hint;
  }
}

/** SQLSTATE for codes raised outside this module (gateway refusals, dial failures, …). */
const SQLSTATE_OF: Partial<Record<ErrorCode, string>> = {
  CIPORT_E_PG_AUTH: '28P01', // invalid_password
  CIPORT_E_PG_PROTOCOL: '08P01', // protocol_violation
  CIPORT_E_PG_UPSTREAM_AUTH: '28000', // invalid_authorization_specification
  CIPORT_E_UPSTREAM_UNREACHABLE: '08001', // sqlclient_unable_to_establish_sqlconnection
  CIPORT_E_GATEWAY_UNREACHABLE: '08001',
  CIPORT_E_TLS: '08001',
  CIPORT_E_CONNECTION_LIMIT: '53300', // too_many_connections
  CIPORT_E_SESSION_ENDED: '08004', // sqlserver_rejected_establishment_of_sqlconnection
  CIPORT_E_SESSION_UNAUTHORIZED: '08004',
  CIPORT_E_TARGET_NOT_GRANTED: '08004',
  CIPORT_E_TARGET_UNKNOWN: '08004',
  CIPORT_E_POLICY_DENIED: '08004',
  CIPORT_E_GATEWAY_DRAINING: '57P03', // cannot_connect_now
  CIPORT_E_NO_AGENT: '57P03', // cannot_connect_now: retry later
};

/** The ErrorResponse fields for any failure. */
export function pgErrorFields(err: unknown): PgErrorFields {
  const e = asCiportError(err);
  const code = e instanceof PgError ? e.sqlState : (SQLSTATE_OF[e.code] ?? '08006');
  return {
    code,
    message: `${e.code}: ${e.message}`,
    hint: e instanceof PgError ? e.hint : undefined,
  };
}

/**
 * Send an ErrorResponse for `err` and end the connection. Whatever the peer still sends is read
 * and discarded (unread data would make the kernel answer with a reset that can destroy the
 * error in flight); the stream is destroyed when the peer closes or after `graceMs`. Safe on a
 * stream that is already gone. Resolves once the error was handed to the stream.
 */
export function sendErrorAndClose(stream: Duplex, err: unknown, graceMs = 5000): Promise<void> {
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
    stream.end(errorResponse(pgErrorFields(err)), () => resolve());
  });
}
