// The audit vocabulary: event types, the data each carries, and the stored event shape.
// Field names are snake_case because they are what `ciport audit export` prints.

import type { JsonObject } from './canonical.js';
import type { QueryStatement } from './query-batch.js';

export const AUDIT_EVENT_TYPES = [
  'session.denied',
  'session.denied_summary',
  'session.opened',
  'session.limit_exceeded',
  'session.ended',
  'approval.requested',
  'approval.granted',
  'approval.denied',
  'approval.timed_out',
  'connection.opened',
  'connection.closed',
  'query',
  'http.request',
  'credential.created',
  'credential.revoked',
  'credential.revoke_failed',
  'ssh.certificate_issued',
  'aws.credentials_issued',
  'aws.credentials_failed',
  'agent.connected',
  'agent.disconnected',
  'agent.enrolled',
  'agent.revoked',
  'agent.credential_rotated',
  'agent.targets_changed',
  'agent.target_refused',
  'agent.event_refused',
  'config.loaded',
  'review.attested',
  'operator.signed_in',
  'operator.signed_out',
  'operator.sign_in_failed',
  'audit.sink_halted',
  'audit.sink_resumed',
] as const;
export type AuditEventType = (typeof AUDIT_EVENT_TYPES)[number];

export function isAuditEventType(value: string): value is AuditEventType {
  return (AUDIT_EVENT_TYPES as readonly string[]).includes(value);
}

/** Why a session ended (DESIGN, "Sessions"). */
/** Why a session ended: the one vocabulary of the API, the store and `session.ended` events. */
export const SESSION_END_REASONS = [
  /** The client ended it (`DELETE /v1/sessions/{id}`: command exited, `ciport close`). */
  'client_end',
  /** No heartbeat within `sessions.lease_timeout` (job killed, runner gone). */
  'lease_expired',
  /** Its TTL passed. */
  'expired',
  /** An operator revoked it. */
  'revoked',
  /** Its TTL or lease passed while no gateway was running; ended by the reaper at start. */
  'expired_while_down',
  /** The gateway drained (SIGTERM) and no other gateway serves the session. */
  'gateway_shutdown',
  /** The CI job behind the token finished (job API or webhook). */
  'job_finished',
  /** An approver denied the pending session (docs/approvals.md). */
  'approval_denied',
  /** The pending session was not approved within its rule's `approval.timeout`. */
  'approval_timeout',
] as const;
export type SessionEndReason = (typeof SESSION_END_REASONS)[number];

/**
 * The normalised principal as audit events and exports show it: who the job is. Built by the
 * identity layer from the verified token; every field but issuer and subject may be null for
 * issuers that do not have the notion (a generic OIDC issuer has no pipeline).
 */
export type PrincipalSummary = {
  issuer: string;
  subject: string;
  /** Project path (GitLab `project_path`, GitHub `repository`). */
  project: string | null;
  project_id?: string | null;
  ref: string | null;
  /** Pipeline id (GitLab) or workflow run id (GitHub). */
  pipeline: string | null;
  job: string | null;
  job_url: string | null;
  actor?: string | null;
  environment?: string | null;
};

type Base = {
  principal?: PrincipalSummary;
  session?: string;
  target?: string;
  targets?: string[];
  rule?: string | null;
};

export type SessionDeniedData = Base & {
  principal: PrincipalSummary;
  /** Targets the client asked for. */
  targets: string[];
  /** The matching deny rule, or the nearest allow rule that failed; null when none came close. */
  rule: string | null;
  reason: string;
  /** `CIPORT_E_…` code of the refusal. */
  error_code: string;
  /** The first failing condition, for denials by policy. */
  condition?: string;
};

/**
 * Denials not written one by one (docs/audit.md, "Denials"): identical denials (issuer, rule,
 * failing condition, project, code) after the first of a window, or every denial of an issuer
 * past its per-window ceiling (`overflow`). `count` of them, between `first_at` and `last_at`.
 */
export type SessionDeniedSummaryData = Base & {
  issuer: string;
  /** Project path and id (null when the issuer has no projects, or for `overflow`). */
  project: string | null;
  project_id: string | null;
  rule: string | null;
  error_code: string;
  /** The failing claim (policy denials), without the token's value. */
  condition_claim?: string;
  /** Denials summarised (not written as `session.denied`). */
  count: number;
  /** ISO 8601. */
  first_at: string;
  last_at: string;
  window_ms: number;
  /** Up to 10 distinct refs and subjects seen, and how many distinct ones there were (capped). */
  refs: string[];
  distinct_refs: number;
  subjects: string[];
  distinct_subjects: number;
  /** The issuer's per-window ceiling was reached: any rule, condition and project. */
  overflow?: boolean;
};

/** A session went past a limit of its rule (`limits.bytes`): the crossing stream was reset. */
export type SessionLimitExceededData = Base & {
  session: string;
  principal: PrincipalSummary;
  rule: string | null;
  /** Which limit: `bytes`. */
  limit: 'bytes';
  /** The rule's limit. */
  max: number;
  /** Bytes carried when it was reached (both ways, all connections, through this gateway). */
  bytes: number;
  /** The connection whose chunk would have crossed it. */
  connection: string;
  target: string;
};

export type SessionOpenedData = Base & {
  session: string;
  principal: PrincipalSummary;
  targets: string[];
  rule: string;
  /** ISO 8601. */
  expires_at: string;
  ttl_ms: number;
  gateway?: string;
  /** A session that waited for approval: its approvers (operator refs), in the order they approved. */
  approved_by?: string[];
};

/** One requirement of a pending session: `count` approvers of `groups` (rule `approval:`). */
export type ApprovalRequirementData = { rule: string; groups: string[]; count: number };

/**
 * A session some granting rule guards with `approval:` was created pending (docs/approvals.md):
 * it opens nothing until approved (`session.opened` follows the last needed approval).
 */
export type ApprovalRequestedData = Base & {
  session: string;
  principal: PrincipalSummary;
  targets: string[];
  rule: string;
  requirements: ApprovalRequirementData[];
  /** ISO 8601: unapproved by then, the session ends (`approval.timed_out`). */
  expires_at: string;
  /** The session's TTL once approved. */
  ttl_ms: number;
  gateway?: string;
};

/** One approver approved (one event per distinct approver; `by` is the approver). */
export type ApprovalGrantedData = Base & {
  session: string;
  principal: PrincipalSummary;
  targets: string[];
  rule: string | null;
  /** The approver's groups that the session's requirements name. */
  groups: string[];
  /** Distinct approvers so far, this one included. */
  approvals: number;
  /** Whether the session's requirements are now met (a `session.opened` follows). */
  met: boolean;
} & OperatorFields;

/** An approver denied the session; it ended (`session.ended`, reason `approval_denied`). */
export type ApprovalDeniedData = Base & {
  session: string;
  principal: PrincipalSummary;
  targets: string[];
  rule: string | null;
  groups: string[];
  /** Approvals given before the denial. */
  approved_by: string[];
} & OperatorFields;

/** Nobody approved in time; the session ended (`session.ended`, reason `approval_timeout`). */
export type ApprovalTimedOutData = Base & {
  session: string;
  principal: PrincipalSummary;
  targets: string[];
  rule: string | null;
  requirements: ApprovalRequirementData[];
  /** Approvals given, not enough. */
  approved_by: string[];
};

/**
 * Who made a change through the admin API (docs/operators.md): `by` is the operator as one
 * stable string (`token:<name>`, `oidc:<issuer>#<subject>`), `note` their `--reason`. Events
 * written before named tokens have `by: "admin"` (session.ended) or no `by` (agent.*).
 */
type OperatorFields = {
  by?: string;
  note?: string;
};

export type SessionEndedData = Base & {
  session: string;
  principal: PrincipalSummary;
  targets: string[];
  rule: string | null;
  reason: SessionEndReason;
  duration_ms: number;
  // `by`: for `revoked` the operator (OperatorFields); for `job_finished` the job API or webhook
  // that saw the job end. `note`: the operator's `--reason`.
} & OperatorFields;

type ConnectionBase = Base & {
  session: string;
  connection: string;
  principal: PrincipalSummary;
  target: string;
  rule: string | null;
  /**
   * Where the connection left ciport: `gateway` (dialled by the gateway itself) or `agent` (carried
   * by an agent; older events put the agent's name here instead).
   */
  exit: string;
  /** The name of the agent that carried the connection, when an agent did. */
  agent?: string;
  /** The id (`agt_…`) of the agent that carried the connection, when an agent did. */
  agent_id?: string;
};

export type ConnectionOpenedData = ConnectionBase & { client?: string };

/**
 * Who ended a connection on purpose, when nothing failed: the client (the app closed it, or the
 * port closed), the session's end (`end_reason` says which), or the idle timeout. Without it
 * and without `error`, both sides finished normally.
 */
export type ConnectionClosedBy = 'client' | 'session' | 'idle_timeout';

export type ConnectionClosedData = ConnectionBase & {
  /** Bytes the app sent towards the target. */
  bytes_to_target: number;
  /** Bytes the target sent back to the app. */
  bytes_from_target: number;
  duration_ms: number;
  closed_by?: ConnectionClosedBy;
  /** With `closed_by: session`: why the session ended. */
  end_reason?: SessionEndReason;
  /** Only for real failures: upstream errors, a lost agent, a protocol error. */
  error?: string;
};

/** A connection's statements of one short window, in the order the app sent them (QueryBatch). */
export type QueryData = ConnectionBase & {
  statements: QueryStatement[];
  database?: string;
  user?: string;
};

/** One request through an `http` target (no bodies, no header values, no secrets). */
export type HttpRequestData = ConnectionBase & {
  method: string;
  path: string;
  status: number;
  bytes_in: number;
  bytes_out: number;
  duration_ms: number;
  upgrade?: boolean;
  aborted?: boolean;
  error?: string;
};

/**
 * An `aws` target's exit assumed its role for a session (docs/aws.md): what names the credentials
 * in IAM and CloudTrail. Never the secret access key or the session token.
 */
export type AwsCredentialsIssuedData = ConnectionBase & {
  role_arn: string;
  role_session_name: string;
  access_key_id: string;
  /** ISO 8601: when STS says the credentials expire. */
  expiration: string;
  duration_s: number;
  /** ISO 8601: from then on the session policy denies every action (the session's expiry). */
  deny_after: string;
  tags: Record<string, string>;
};

/** The exit's AssumeRole failed: ciport's code and STS's (never STS's message). */
export type AwsCredentialsFailedData = ConnectionBase & {
  role_arn: string;
  code: string;
  sts_code?: string;
};

/**
 * A per-session database role created (`credential.created`), dropped (`credential.revoked`),
 * or not dropped (`credential.revoke_failed`, retried with backoff).
 */
export type CredentialData = Base & {
  /** Absent only when the reaper drops a MySQL user (its name says the deployment, not the session). */
  session?: string;
  target: string;
  /** The role name (never its password). */
  role: string;
  /** Roles granted to it (created) — what the policy allowed. */
  granted?: string[];
  /** ISO 8601 `VALID UNTIL`. */
  valid_until?: string;
  /** revoked: `session_ended:<reason>` or `reaper`. */
  reason?: string;
  /** Backends terminated at revocation. */
  terminated?: number;
  error?: string;
  /** revoke_failed: `CIPORT_E_PG_ROLE_REVOKE_FAILED` or `CIPORT_E_MYSQL_USER_REVOKE_FAILED`. */
  code?: string;
  /** revoke_failed: consecutive failed attempts for this role. */
  attempt?: number;
  /** revoke_failed: ISO 8601, when the next attempt is due. */
  next_attempt?: string;
  /** Minted by Vault (`credentials.vault_database`): its lease id (never the password). */
  lease_id?: string;
  /** Reported by an agent: its name, id (`agt_…`) and `<agent id>:<event id>`. */
  agent?: string;
  agent_id?: string;
  agent_event?: string;
};

/** An SSH user certificate signed for a session (docs/ssh.md): what it allows, never a key. */
export type SshCertificateIssuedData = Base & {
  session: string;
  target: string;
  key_id: string;
  /** The login names granted (what ssh_config's `User` takes). */
  principals: string[];
  /** What the certificate carries: `ciport:<target>:<login>` per login (docs/ssh.md). */
  certificate_principals: string[];
  /** ISO 8601 validity bounds (`valid_before` is the session's expiry). */
  valid_after: string;
  valid_before: string;
  /** Decimal, as sshd logs it. */
  serial: string;
  extensions: string[];
  source_address?: string[];
  /** SHA256 fingerprints: the job's public key and the CA's. */
  key_fingerprint: string;
  ca_fingerprint: string;
};

export type AgentConnectedData = Base & {
  agent: string;
  targets: string[];
  remote?: string;
  version?: string;
};

export type AgentDisconnectedData = Base & {
  agent: string;
  reason: string;
  remote?: string;
};

/** Agent enrollment (docs/agent.md): an operator created a token, or an agent redeemed one. */
export type AgentEnrolledData = Base & {
  /** The agent's name. */
  agent: string;
  /** The new agent's id (`agt_…`); stage `registered` only. */
  agent_id?: string;
  /** `token_created`: an operator created a one-time enrollment token; `registered`: an agent redeemed it. */
  stage: 'token_created' | 'registered';
  /** ISO 8601: when the enrollment token expires (stage `token_created`). */
  expires_at?: string;
  /** The targets the agent is bound to (docs/agent.md, "Target binding"). */
  targets?: string[];
} & OperatorFields;

/** An agent's credential was revoked (one event per revoked agent). */
export type AgentRevokedData = Base & {
  /** The agent's name. */
  agent: string;
  agent_id: string;
  /** Live connections of the agent cut on the gateway that revoked it, when known. */
  connections?: number;
} & OperatorFields;

/**
 * An agent exchanged its current credential for a new one (`POST /v1/agents/rotate`); the old
 * secret stays valid for a short grace period. Never carries either secret.
 */
export type AgentCredentialRotatedData = Base & {
  /** The agent's name. */
  agent: string;
  agent_id: string;
  /** ISO 8601: when the new credential expires. */
  expires_at: string;
};

/** An admin changed which targets an agent may serve (one event per agent changed). */
export type AgentTargetsChangedData = Base & {
  agent: string;
  agent_id: string;
  /** The binding before and after the change. */
  before: string[];
  targets: string[];
} & OperatorFields;

/**
 * An agent advertised a target it is not bound to: the gateway routes nothing of that target to
 * it. At most one event per agent, target and gateway process in `REFUSAL_AUDIT_INTERVAL`
 * (a reconnect loop does not flood the log); `repeats` counts the refusals not audited since.
 */
export type AgentTargetRefusedData = Base & {
  agent: string;
  agent_id: string;
  target: string;
  /** The agent connection that advertised it. */
  connection: string;
  remote?: string;
  repeats?: number;
  /**
   * Absent: not bound. `protocol_changed`: bound, advertised with another protocol than pinned.
   * `ssh_changed`: a bound ssh target advertised with other ssh facts than pinned.
   */
  reason?: 'not_bound' | 'protocol_changed' | 'ssh_changed' | 'too_many_names';
  /** The pinned and advertised protocol, or (ssh_changed) digests of the ssh facts. */
  pinned?: string;
  advertised?: string;
  /** ssh_changed: which facts differ (principals, host_keys, host_ca, host_key_alias, source_address). */
  changed?: string[];
  /** reason too_many_names (`target` is `*`): distinct names refused without their own event. */
  distinct?: number;
};

/**
 * Events an agent reported about a session or target this gateway never routed to it (or no longer
 * bound to it): not recorded. At most one per agent and window; `count` is how many were refused
 * in it, the first one's type, session and target are given as a sample.
 */
export type AgentEventRefusedData = Base & {
  agent: string;
  agent_id: string;
  count: number;
  /** The window (ms) `count` covers: from the first refusal on. */
  window_ms: number;
  sample_type: string;
  sample_session: string;
  sample_target: string;
};

export type ConfigLoadedData = Base & {
  /** Where the configuration came from (file path). */
  source: string;
  /** SHA-256 of the canonical, secret-free configuration. */
  config_hash: string;
  /** A reload (SIGHUP): the hash of the configuration it replaced. */
  previous_hash?: string;
  issuers: string[];
  targets: string[];
  rules: string[];
  /** The admin tokens in force: name and roles (docs/operators.md); absent in older events. */
  operators?: Array<{ name: string; roles: string[]; groups?: string[] }>;
};

/**
 * A gateway found that the log no longer holds what an audit sink acknowledged (events removed
 * from its end, or rewritten), and stopped delivering to that sink (docs/audit-sinks.md, "When the
 * log lost events the sink acknowledged").
 */
export type AuditSinkHaltedData = Base & {
  sink: string;
  /** The last seq the sink acknowledged (its stored cursor). */
  cursor: number;
  /** The log's newest seq when the gateway looked. */
  head: number;
  /** What the gateway saw, e.g. "the log ends at seq 40, below the cursor 44". */
  reason: string;
  /** Where to resume, estimated from event times (src/audit/sinks/continuity.ts). */
  resume_after: number;
  gateway: string;
};

/** An operator resumed a halted sink (`ciport audit sinks resume`): it delivers after `after`. */
export type AuditSinkResumedData = Base & {
  sink: string;
  /** The cursor it was halted at. */
  cursor: number;
  after: number;
} & OperatorFields;

export type ReviewAttestedData = Base & {
  reviewer: { issuer: string; subject: string; name?: string; email?: string };
  /** The reviewed period, ISO 8601. */
  since: string;
  until: string;
  /** SHA-256 of the review document the reviewer signed off. */
  review_hash: string;
  comment?: string;
};

/** Who signed in or out (docs/sso.md): never the secret, the code or a token. */
export type OperatorSignInData = {
  /** `oidc:<issuer>#<subject>`, as later operator events' `by`. */
  by: string;
  issuer: string;
  subject: string;
  email?: string;
  name?: string;
  roles: string[];
  /** `browser` (console cookie) or `cli` (`ciport login` bearer token). */
  via: 'browser' | 'cli';
  /** When the sign-in ends, ISO 8601 (signed_in only). */
  expires_at?: string;
};

/** A sign-in refused after the provider answered (no role, a bad ID token, a state mismatch). */
export type OperatorSignInFailedData = {
  code: string;
  reason: string;
  via: 'browser' | 'cli';
  /** The person, when the ID token verified (e.g. refused for having no role). */
  issuer?: string;
  subject?: string;
  email?: string;
};

export interface AuditDataMap {
  'session.denied': SessionDeniedData;
  'session.denied_summary': SessionDeniedSummaryData;
  'session.limit_exceeded': SessionLimitExceededData;
  'session.opened': SessionOpenedData;
  'session.ended': SessionEndedData;
  'approval.requested': ApprovalRequestedData;
  'approval.granted': ApprovalGrantedData;
  'approval.denied': ApprovalDeniedData;
  'approval.timed_out': ApprovalTimedOutData;
  'connection.opened': ConnectionOpenedData;
  'connection.closed': ConnectionClosedData;
  query: QueryData;
  'http.request': HttpRequestData;
  'credential.created': CredentialData;
  'credential.revoked': CredentialData;
  'credential.revoke_failed': CredentialData;
  'ssh.certificate_issued': SshCertificateIssuedData;
  'aws.credentials_issued': AwsCredentialsIssuedData;
  'aws.credentials_failed': AwsCredentialsFailedData;
  'agent.connected': AgentConnectedData;
  'agent.disconnected': AgentDisconnectedData;
  'agent.enrolled': AgentEnrolledData;
  'agent.revoked': AgentRevokedData;
  'agent.credential_rotated': AgentCredentialRotatedData;
  'agent.targets_changed': AgentTargetsChangedData;
  'agent.target_refused': AgentTargetRefusedData;
  'agent.event_refused': AgentEventRefusedData;
  'config.loaded': ConfigLoadedData;
  'review.attested': ReviewAttestedData;
  'operator.signed_in': OperatorSignInData;
  'operator.signed_out': OperatorSignInData;
  'operator.sign_in_failed': OperatorSignInFailedData;
  'audit.sink_halted': AuditSinkHaltedData;
  'audit.sink_resumed': AuditSinkResumedData;
}

/** What a caller hands the store: the type and its data; seq, time and hashes are the store's. */
export type AuditEventInput = {
  [T in AuditEventType]: {
    type: T;
    data: AuditDataMap[T];
    /** Epoch ms; defaults to the store's clock. Never earlier than the previous event's time. */
    time?: number;
  };
}[AuditEventType];

/** A committed event, as read back from the store. */
export interface AuditEvent {
  seq: number;
  /** Epoch milliseconds. */
  time: number;
  type: AuditEventType;
  data: JsonObject;
  hash: string;
  prevHash: string;
}

/** Build an event input with the data type checked against the event type. */
export function auditEvent<T extends AuditEventType>(
  type: T,
  data: AuditDataMap[T],
  time?: number,
): Extract<AuditEventInput, { type: T }> {
  return (time === undefined ? { type, data } : { type, data, time }) as Extract<
    AuditEventInput,
    { type: T }
  >;
}
