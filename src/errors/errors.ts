import { ERROR_CODES, type ErrorCode, type ExitCode } from './codes.js';

/** Codes of one failure family, so each class only accepts the codes that belong to it. */
type CodesStartingWith<P extends string> = Extract<ErrorCode, `${P}${string}`>;

/**
 * Base of every error ciport reports on purpose. `code` is stable and documented in
 * docs/errors.md; `message` is for humans and never carries a secret.
 */
export class CiportError extends Error {
  readonly code: ErrorCode;
  /** Structured, secret-free facts for `--json` output and API bodies. */
  readonly details: Readonly<Record<string, unknown>> | undefined;

  constructor(
    code: ErrorCode,
    message: string,
    options?: { cause?: unknown; details?: Record<string, unknown> },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.details = options?.details;
  }

  override get name(): string {
    return this.constructor.name;
  }

  get exitCode(): ExitCode {
    return ERROR_CODES[this.code].exit;
  }

  get httpStatus(): number {
    return ERROR_CODES[this.code].http;
  }

  toJSON(): { code: ErrorCode; message: string } {
    return { code: this.code, message: this.message };
  }
}

/** Bad command line or arguments. */
export class UsageError extends CiportError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('CIPORT_E_USAGE', message, options);
  }
}

/** Configuration that cannot be read, parsed or validated, or a secret it names that is missing. */
export class ConfigError extends CiportError {
  constructor(
    code: CodesStartingWith<'CIPORT_E_CONFIG_'> | 'CIPORT_E_SECRET_UNAVAILABLE' | 'CIPORT_E_CLAIMS_INVALID',
    message: string,
    options?: { cause?: unknown; details?: Record<string, unknown> },
  ) {
    super(code, message, options);
  }
}

/** A presented ID token that ciport refuses; the code says which check failed. */
export class TokenRejectedError extends CiportError {
  constructor(
    code: CodesStartingWith<'CIPORT_E_TOKEN_'> | 'CIPORT_E_JWKS_UNAVAILABLE',
    message: string,
    options?: { cause?: unknown; details?: Record<string, unknown> },
  ) {
    super(code, message, options);
  }
}

/** Policy said no. `details` carries the decision's explanation. */
export class PolicyDeniedError extends CiportError {
  constructor(message: string, options?: { details?: Record<string, unknown> }) {
    super('CIPORT_E_POLICY_DENIED', message, options);
  }
}

/** An audit sink (webhook, syslog, file) did not take a batch; the deliverer retries it. */
export class AuditSinkError extends CiportError {
  constructor(
    code: CodesStartingWith<'CIPORT_E_AUDIT_SINK_'>,
    message: string,
    options?: { cause?: unknown; details?: Record<string, unknown> },
  ) {
    super(code, message, options);
  }
}

/** Wrap anything into a CiportError so that every failure has a code. */
export function asCiportError(err: unknown): CiportError {
  if (err instanceof CiportError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new CiportError('CIPORT_E_INTERNAL', `unexpected error: ${message}`, { cause: err });
}
