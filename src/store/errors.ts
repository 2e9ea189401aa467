import { CiportError } from '../errors/index.js';

export type StoreErrorCode =
  | 'CIPORT_E_STORE_UNAVAILABLE'
  | 'CIPORT_E_STORE_SCHEMA'
  | 'CIPORT_E_SESSION_NOT_FOUND';

/** The store cannot be reached or used, its schema is not one this version knows, or no such session. */
export class StoreError extends CiportError {
  constructor(
    code: StoreErrorCode,
    message: string,
    options?: { cause?: unknown; details?: Record<string, unknown> },
  ) {
    super(code, message, options);
  }
}

const UNAVAILABLE_ERRNO = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EPIPE',
  'EACCES',
  'EPERM',
  'ENOENT',
  'ENOTDIR',
  'EROFS',
  'ENOSPC',
]);

/** PostgreSQL SQLSTATEs meaning "the database is not there for us", not "your query is wrong". */
const UNAVAILABLE_SQLSTATE = /^(08|28|3D|53|57P)/;

const UNAVAILABLE_SQLITE = /^SQLITE_(BUSY|LOCKED|CANTOPEN|IOERR|FULL|READONLY|PERM|NOTADB|CORRUPT)/;

const UNAVAILABLE_MESSAGE =
  /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error|The database connection is not open|Cannot use a pool after calling end/i;

/** Does this driver error mean the store is unreachable or unusable (as opposed to a bug)? */
export function isUnavailable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string') {
    if (UNAVAILABLE_ERRNO.has(code) || UNAVAILABLE_SQLITE.test(code)) return true;
    if (/^[0-9A-Z]{5}$/.test(code) && UNAVAILABLE_SQLSTATE.test(code)) return true;
  }
  if (err instanceof AggregateError) return err.errors.some(isUnavailable);
  return UNAVAILABLE_MESSAGE.test(err.message);
}

/**
 * Map a driver error to a StoreError when it means "unavailable"; anything else is returned
 * unchanged. `where` names the store for the message (never a password); `scrub` lists strings
 * that must not appear in the message.
 */
export function wrapStoreError(err: unknown, where: string, scrub: readonly string[] = []): unknown {
  if (err instanceof CiportError || !isUnavailable(err)) return err;
  let reason = (err as Error).message || (err as { code?: string }).code || 'unknown error';
  if (err instanceof AggregateError && err.errors.length > 0) {
    reason = err.errors.map((e: unknown) => (e instanceof Error ? e.message : String(e))).join('; ');
  }
  for (const s of scrub) if (s) reason = reason.split(s).join('***');
  const code = (err as { code?: unknown }).code;
  return new StoreError('CIPORT_E_STORE_UNAVAILABLE', `store unavailable: ${where}: ${reason}`, {
    cause: err,
    details: typeof code === 'string' ? { store: where, driver_code: code } : { store: where },
  });
}
