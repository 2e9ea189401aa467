// Errors the client reports: failures to reach or talk to the gateway, and error answers the
// gateway sends (`{"error": {"code", "message"}}`, docs/protocol.md) turned back into
// CiportErrors with the same stable code, so `ciport exec` exits as the contract says.
import { ERROR_CODES, type ErrorCode, ExitCode } from '../errors/codes.js';
import { CiportError } from '../errors/errors.js';

export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && Object.hasOwn(ERROR_CODES, code);
}

/** Exit code for an HTTP status when the gateway sent a code this client does not know. */
function exitForStatus(status: number): ExitCode {
  if (status === 400) return ExitCode.usage;
  if (status === 401) return ExitCode.tokenRejected;
  if (status === 403 || status === 410) return ExitCode.denied;
  return ExitCode.unreachable;
}

/**
 * An error answer from the gateway. `code` is the gateway's code when this build knows it;
 * otherwise CIPORT_E_GATEWAY_RESPONSE with the exit code derived from the HTTP status and the
 * remote code kept in `remoteCode` and the message.
 */
export class GatewayError extends CiportError {
  readonly status: number;
  readonly remoteCode: string | undefined;

  constructor(
    status: number,
    remoteCode: string | undefined,
    message: string,
    details?: Record<string, unknown>,
  ) {
    const known = isErrorCode(remoteCode) ? remoteCode : undefined;
    const text = known || !remoteCode ? message : `${remoteCode}: ${message}`;
    super(known ?? 'CIPORT_E_GATEWAY_RESPONSE', oneLine(text), {
      details: { status, ...(details ?? {}) },
    });
    this.status = status;
    this.remoteCode = remoteCode;
  }

  override get exitCode(): ExitCode {
    return isErrorCode(this.remoteCode) ? ERROR_CODES[this.remoteCode].exit : exitForStatus(this.status);
  }
}

/** The gateway could not be reached (DNS, refused, timeout, connection lost). Exit 5. */
export class GatewayUnreachableError extends CiportError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('CIPORT_E_GATEWAY_UNREACHABLE', oneLine(message), options);
  }
}

/** The TLS handshake failed (untrusted CA, wrong name, expired certificate, no h2). Exit 5. */
export class TlsError extends CiportError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('CIPORT_E_TLS', oneLine(message), options);
  }
}

/** The session ended under a running `ciport open` (revoked, lease, TTL, job finished). */
export class SessionEndedError extends CiportError {
  readonly endReason: string;
  constructor(endReason: string, message: string) {
    super('CIPORT_E_SESSION_ENDED', oneLine(message), { details: { end_reason: endReason } });
    this.endReason = endReason;
  }
}

/** Messages are printed as one line: `ciport: CODE: message`. */
export function oneLine(text: string): string {
  const lines = text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter(Boolean);
  return lines.reduce(
    (out, line) => (out === '' ? line : /[;:,.]$/.test(out) ? `${out} ${line}` : `${out}; ${line}`),
    '',
  );
}
