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
  CIPORT_E_CONFIG_RELOAD_REFUSED: usage,
  CIPORT_E_SECRET_UNAVAILABLE: usage,
  CIPORT_E_CLAIMS_INVALID: usage,
  // token verification
  CIPORT_E_TOKEN_MALFORMED: token,
  CIPORT_E_TOKEN_TOO_LARGE: token,
  CIPORT_E_TOKEN_UNKNOWN_ISSUER: token,
  CIPORT_E_TOKEN_WRONG_AUDIENCE: token,
  CIPORT_E_TOKEN_EXPIRED: token,
  CIPORT_E_TOKEN_REPLAYED: token,
  CIPORT_E_TOKEN_NOT_YET_VALID: token,
  CIPORT_E_TOKEN_UNKNOWN_KEY: token,
  CIPORT_E_TOKEN_BAD_SIGNATURE: token,
  CIPORT_E_TOKEN_ALG_NOT_ALLOWED: token,
  CIPORT_E_TOKEN_MISSING_CLAIM: token,
  CIPORT_E_TOKEN_LIFETIME_TOO_LONG: token,
  CIPORT_E_JWKS_UNAVAILABLE: { exit: ExitCode.tokenRejected, http: 503 },
  // policy
  CIPORT_E_POLICY_DENIED: { exit: ExitCode.denied, http: 403 },
  CIPORT_E_JOB_NOT_RUNNING: { exit: ExitCode.denied, http: 403 },
  CIPORT_E_STORE_UNAVAILABLE: { exit: ExitCode.unreachable, http: 503 },
  CIPORT_E_STORE_SCHEMA: { exit: ExitCode.usage, http: 503 },
  CIPORT_E_SESSION_NOT_FOUND: { exit: ExitCode.usage, http: 404 },
  // gateway: sessions, admin API, tunnels
  CIPORT_E_SESSION_UNAUTHORIZED: { exit: ExitCode.tokenRejected, http: 401 },
  CIPORT_E_SESSION_ENDED: { exit: ExitCode.denied, http: 410 },
  CIPORT_E_ADMIN_UNAUTHORIZED: { exit: ExitCode.tokenRejected, http: 401 },
  CIPORT_E_ADMIN_FORBIDDEN: { exit: ExitCode.denied, http: 403 },
  // operator sign-in (docs/sso.md)
  CIPORT_E_SSO_FAILED: { exit: ExitCode.tokenRejected, http: 401 },
  CIPORT_E_SSO_NO_ROLE: { exit: ExitCode.denied, http: 403 },
  CIPORT_E_SSO_NOT_CONFIGURED: { exit: ExitCode.usage, http: 404 },
  // `ciport login`'s cache (docs/login.md): no live sign-in for the gateway, an unsafe cache file
  CIPORT_E_LOGIN_REQUIRED: { exit: ExitCode.tokenRejected, http: 401 },
  CIPORT_E_CREDENTIALS_INSECURE: usage,
  // the identity provider's discovery or token endpoint could not be reached: retry later
  CIPORT_E_SSO_UNAVAILABLE: { exit: ExitCode.unreachable, http: 503 },
  // the console (docs/console.md): a state change without a valid CSRF token or from another origin
  CIPORT_E_CSRF_REFUSED: { exit: ExitCode.denied, http: 403 },
  CIPORT_E_WEBHOOK_UNAUTHORIZED: { exit: ExitCode.tokenRejected, http: 401 },
  CIPORT_E_RATE_LIMITED: { exit: ExitCode.unreachable, http: 429 },
  CIPORT_E_GATEWAY_DRAINING: { exit: ExitCode.unreachable, http: 503 },
  CIPORT_E_NOT_FOUND: { exit: ExitCode.usage, http: 404 },
  CIPORT_E_METHOD_NOT_ALLOWED: { exit: ExitCode.usage, http: 405 },
  // approvals (docs/approvals.md): the job waiting, and the operators deciding
  CIPORT_E_APPROVAL_PENDING: { exit: ExitCode.denied, http: 409 },
  CIPORT_E_APPROVAL_DENIED: { exit: ExitCode.denied, http: 410 },
  CIPORT_E_APPROVAL_TIMEOUT: { exit: ExitCode.denied, http: 410 },
  CIPORT_E_APPROVAL_SELF: { exit: ExitCode.denied, http: 403 },
  CIPORT_E_APPROVAL_NOT_IN_GROUP: { exit: ExitCode.denied, http: 403 },
  CIPORT_E_APPROVAL_NOT_PENDING: { exit: ExitCode.denied, http: 409 },
  CIPORT_E_APPROVAL_DECIDED: { exit: ExitCode.denied, http: 409 },
  // access reviews: an attestation refused because the audit chain does not verify
  CIPORT_E_AUDIT_CHAIN_BROKEN: { exit: ExitCode.problemsFound, http: 409 },
  // an attestation of a review the reviewer did not see: the period's events changed since
  CIPORT_E_REVIEW_CHANGED: { exit: ExitCode.problemsFound, http: 409 },
  // downloads for jobs (GET /v1/client/linux-x64, GET /v1/ca.crt)
  CIPORT_E_CLIENT_UNAVAILABLE: { exit: ExitCode.usage, http: 404 },
  CIPORT_E_CA_UNAVAILABLE: { exit: ExitCode.usage, http: 404 },
  CIPORT_E_BODY_TOO_LARGE: { exit: ExitCode.usage, http: 413 },
  CIPORT_E_HEADERS_TOO_LARGE: { exit: ExitCode.usage, http: 431 },
  CIPORT_E_REQUEST_TIMEOUT: { exit: ExitCode.unreachable, http: 408 },
  CIPORT_E_TARGET_NOT_GRANTED: { exit: ExitCode.denied, http: 403 },
  CIPORT_E_TARGET_UNKNOWN: { exit: ExitCode.usage, http: 404 },
  CIPORT_E_CONNECTION_LIMIT: { exit: ExitCode.denied, http: 429 },
  CIPORT_E_BYTE_LIMIT: { exit: ExitCode.denied, http: 429 },
  CIPORT_E_UPSTREAM_UNREACHABLE: { exit: ExitCode.unreachable, http: 502 },
  CIPORT_E_UPSTREAM_AUTH: { exit: ExitCode.unreachable, http: 502 },
  CIPORT_E_HTTP_UPSTREAM: { exit: ExitCode.unreachable, http: 502 },
  // issue 15: what the exit signs with its own AWS credentials (aws_sigv4, aws_rds_iam)
  CIPORT_E_AWS_CREDENTIALS_UNAVAILABLE: { exit: ExitCode.unreachable, http: 502 },
  CIPORT_E_AWS_SIGV4_BODY_TOO_LARGE: { exit: ExitCode.usage, http: 413 },
  CIPORT_E_AWS_SIGV4_BUSY: { exit: ExitCode.unreachable, http: 503 },
  CIPORT_E_PROTOCOL_NOT_IMPLEMENTED: { exit: ExitCode.usage, http: 501 },
  CIPORT_E_PG_AUTH: { exit: ExitCode.tokenRejected, http: 401 },
  CIPORT_E_REDIS_AUTH: { exit: ExitCode.tokenRejected, http: 401 },
  CIPORT_E_LOCAL_PEER_REFUSED: { exit: ExitCode.denied, http: 403 },
  CIPORT_E_PG_PROTOCOL: { exit: ExitCode.usage, http: 400 },
  CIPORT_E_PG_UPSTREAM_AUTH: { exit: ExitCode.unreachable, http: 502 },
  CIPORT_E_PG_UPSTREAM_REFUSED: { exit: ExitCode.unreachable, http: 502 },
  CIPORT_E_PG_ROLE_REVOKE_FAILED: { exit: ExitCode.unreachable, http: 502 },
  CIPORT_E_MYSQL_AUTH: { exit: ExitCode.tokenRejected, http: 401 },
  CIPORT_E_MYSQL_PROTOCOL: { exit: ExitCode.usage, http: 400 },
  CIPORT_E_MYSQL_CHARSET: { exit: ExitCode.usage, http: 400 },
  CIPORT_E_MYSQL_UPSTREAM_AUTH: { exit: ExitCode.unreachable, http: 502 },
  CIPORT_E_MYSQL_UPSTREAM_REFUSED: { exit: ExitCode.unreachable, http: 502 },
  CIPORT_E_MYSQL_USER_REVOKE_FAILED: { exit: ExitCode.unreachable, http: 502 },
  // HashiCorp Vault (docs/secrets.md): unreachable or 5xx; refused (403, 4xx); a lease not revoked
  CIPORT_E_VAULT_UNREACHABLE: { exit: ExitCode.unreachable, http: 502 },
  CIPORT_E_VAULT_REFUSED: { exit: ExitCode.unreachable, http: 502 },
  CIPORT_E_VAULT_LEASE_REVOKE_FAILED: { exit: ExitCode.unreachable, http: 502 },
  // ssh targets (docs/ssh.md): the user CA, and a certificate the gateway will not sign
  CIPORT_E_SSH_CA_INVALID: usage,
  CIPORT_E_SSH_CERTIFICATE_REFUSED: { exit: ExitCode.denied, http: 403 },
  // aws targets (docs/aws.md): STS refused or failed the AssumeRole (its error code in details),
  // the gateway's own provider chain found no credentials, the job's loopback endpoint refused
  CIPORT_E_AWS_ASSUME_ROLE_DENIED: { exit: ExitCode.denied, http: 403 },
  CIPORT_E_AWS_ASSUME_ROLE_FAILED: { exit: ExitCode.unreachable, http: 502 },
  CIPORT_E_AWS_NO_CREDENTIALS: { exit: ExitCode.unreachable, http: 502 },
  CIPORT_E_AWS_AUTHORIZATION_MISSING: { exit: ExitCode.tokenRejected, http: 401 },
  CIPORT_E_AWS_AUTHORIZATION_WRONG: { exit: ExitCode.denied, http: 403 },
  CIPORT_E_AWS_BAD_REQUEST: { exit: ExitCode.usage, http: 400 },
  // Retryable: no agent serving the target is connected right now (a restart, a partition).
  CIPORT_E_NO_AGENT: { exit: ExitCode.unreachable, http: 503 },
  CIPORT_E_AGENT_UNAUTHORIZED: { exit: ExitCode.tokenRejected, http: 401 },
  CIPORT_E_ENROLLMENT_INVALID: { exit: ExitCode.tokenRejected, http: 401 },
  // audit sinks (docs/audit-sinks.md): delivery failures, retried with backoff
  CIPORT_E_AUDIT_SINK_UNREACHABLE: { exit: ExitCode.unreachable, http: 502 },
  CIPORT_E_AUDIT_SINK_TLS: { exit: ExitCode.unreachable, http: 502 },
  CIPORT_E_AUDIT_SINK_TIMEOUT: { exit: ExitCode.unreachable, http: 504 },
  CIPORT_E_AUDIT_SINK_REJECTED: { exit: ExitCode.unreachable, http: 502 },
  CIPORT_E_AUDIT_SINK_PROTOCOL: { exit: ExitCode.unreachable, http: 502 },
  CIPORT_E_AUDIT_SINK_WRITE: { exit: ExitCode.unreachable, http: 502 },
  // not retried: the log lost events a sink had acknowledged; the sink is halted
  CIPORT_E_AUDIT_LOG_TRUNCATED: { exit: ExitCode.problemsFound, http: 409 },
  // client (ciport exec|open|close|whoami)
  CIPORT_E_NO_TOKEN: { exit: ExitCode.usage, http: 401 },
  CIPORT_E_TOKEN_UNAVAILABLE: { exit: ExitCode.tokenRejected, http: 401 },
  CIPORT_E_GATEWAY_UNREACHABLE: { exit: ExitCode.unreachable, http: 502 },
  CIPORT_E_TLS: { exit: ExitCode.unreachable, http: 502 },
  CIPORT_E_GATEWAY_RESPONSE: { exit: ExitCode.unreachable, http: 502 },
  // the GitHub Action (action.yml)
  CIPORT_E_RUNNER_FILE: usage,
  // everything we did not foresee
  CIPORT_E_INTERNAL: { exit: ExitCode.internal, http: 500 },
} as const satisfies Record<string, CodeSpec>;

export type ErrorCode = keyof typeof ERROR_CODES;

export function specOf(code: ErrorCode): CodeSpec {
  return ERROR_CODES[code];
}
