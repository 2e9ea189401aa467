// The one table of failure kinds. Every `CIPORT_E_…` code the program can emit is here, with
// the CLI exit code and HTTP status it maps to; docs/errors.md documents the same set and a
// test keeps the two in step.

/** Exit codes of every command (DESIGN, "Contract the tests rely on"). */
export const ExitCode = {
  ok: 0,
  problemsFound: 1,
  usage: 2,
  denied: 3,
  tokenRejected: 4,
  unreachable: 5,
  internal: 70,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

interface CodeSpec {
  readonly exit: ExitCode;
  readonly http: number;
}

const usage = { exit: ExitCode.usage, http: 400 } as const;
const token = { exit: ExitCode.tokenRejected, http: 401 } as const;

export const ERROR_CODES = {
  // usage and configuration
  CIPORT_E_USAGE: usage,
  CIPORT_E_CONFIG_INVALID: usage,
  CIPORT_E_CONFIG_UNREADABLE: usage,
  CIPORT_E_SECRET_UNAVAILABLE: usage,
  CIPORT_E_CLAIMS_INVALID: usage,
  // token verification
  CIPORT_E_TOKEN_MALFORMED: token,
  CIPORT_E_TOKEN_TOO_LARGE: token,
  CIPORT_E_TOKEN_UNKNOWN_ISSUER: token,
  CIPORT_E_TOKEN_WRONG_AUDIENCE: token,
  CIPORT_E_TOKEN_EXPIRED: token,
  CIPORT_E_TOKEN_NOT_YET_VALID: token,
  CIPORT_E_TOKEN_UNKNOWN_KEY: token,
  CIPORT_E_TOKEN_BAD_SIGNATURE: token,
  CIPORT_E_TOKEN_ALG_NOT_ALLOWED: token,
  CIPORT_E_TOKEN_MISSING_CLAIM: token,
  CIPORT_E_JWKS_UNAVAILABLE: { exit: ExitCode.tokenRejected, http: 503 },
  // policy
  CIPORT_E_POLICY_DENIED: { exit: ExitCode.denied, http: 403 },
  // everything we did not foresee
  CIPORT_E_INTERNAL: { exit: ExitCode.internal, http: 500 },
} as const satisfies Record<string, CodeSpec>;

export type ErrorCode = keyof typeof ERROR_CODES;

export function specOf(code: ErrorCode): CodeSpec {
  return ERROR_CODES[code];
}
