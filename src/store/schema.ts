// Table types for Kysely. Timestamps are epoch-millisecond integers (`bigint` columns); the pg
// driver hands int8 back as a string unless told otherwise, so reads go through `toInt`.
// JSON is stored as text in both engines (canonical JSON for audit data).

import type { ColumnType } from 'kysely';

/** An integer column: numbers in, number (SQLite) or numeric string (PostgreSQL int8) out. */
export type IntColumn = ColumnType<number | string | bigint, number, number>;

export interface SessionsTable {
  id: string;
  secret_hash: string;
  issuer: string;
  subject: string;
  principal: string;
  targets: string;
  rule: string | null;
  state: string;
  end_reason: string | null;
  created_at: IntColumn;
  expires_at: IntColumn;
  lease_expires_at: IntColumn;
  ended_at: ColumnType<number | string | bigint | null, number | null, number | null>;
  gateway_id: string | null;
  /** JSON of the session's job reference (src/jobs JobRef), or null. */
  job_ref: ColumnType<string | null, string | null | undefined, string | null>;
  /** JSON object target -> granting rule, or null (sessions stored before migration 0003). */
  target_rules: ColumnType<string | null, string | null | undefined, string | null>;
  /** Who ended it (an operator's `token:<name>`, a job API), or null (migration 0007). */
  ended_by: ColumnType<string | null, string | null | undefined, string | null>;
  /** The operator's reason for ending it, escaped, or null (migration 0007). */
  end_note: ColumnType<string | null, string | null | undefined, string | null>;
  /** JSON of its approval terms (SessionApproval without state), or null: none needed (0010). */
  approval: ColumnType<string | null, string | null | undefined, string | null>;
  /** `pending` or `approved` when `approval` is set; null otherwise (migration 0010). */
  approval_state: ColumnType<string | null, string | null | undefined, string | null>;
  /** When its last needed approval came (migration 0010). */
  approved_at: ColumnType<number | string | bigint | null, number | null | undefined, number | null>;
}

/** One operator's decision on a pending session (migration 0010). */
export interface SessionApprovalsTable {
  session_id: string;
  /** operatorRef(): `token:<name>` or `oidc:<issuer>#<subject>`. */
  operator: string;
  /** `approve` or `deny`. */
  decision: string;
  at: IntColumn;
  note: ColumnType<string | null, string | null | undefined, string | null>;
  /** JSON array: the operator's groups the session's requirements name. */
  groups: ColumnType<string, string | undefined, string>;
}

export interface UsedJtisTable {
  issuer: string;
  jti: string;
  expires_at: IntColumn;
  session_id: string;
}

export interface AuditEventsTable {
  seq: IntColumn;
  time: IntColumn;
  type: string;
  data: string;
  hash: string;
  prev_hash: string;
}

export interface MetaTable {
  key: string;
  value: string;
}

/** A nullable integer column (epoch ms or null). */
export type NullableIntColumn = ColumnType<
  number | string | bigint | null,
  number | null | undefined,
  number | null
>;

/** Enrolled agents (migration 0004). Only the SHA-256 of the credential's secret is stored. */
export interface AgentsTable {
  id: string;
  name: string;
  credential_hash: string;
  created_at: IntColumn;
  revoked_at: NullableIntColumn;
  last_seen_at: NullableIntColumn;
  /** When the current credential stops being accepted (migration 0005). */
  credential_expires_at: IntColumn;
  /** SHA-256 of the secret the last rotation replaced, accepted until `previous_valid_until`. */
  previous_hash: ColumnType<string | null, string | null | undefined, string | null>;
  previous_valid_until: NullableIntColumn;
  /** JSON array of the target names the agent may serve (migration 0006). */
  targets: ColumnType<string, string | undefined, string>;
}

/** One-time enrollment tokens (migration 0004), by the SHA-256 of the token. */
export interface AgentEnrollmentsTable {
  token_hash: string;
  name: string;
  created_at: IntColumn;
  expires_at: IntColumn;
  used_at: NullableIntColumn;
  /** The agent the token was redeemed for (no foreign key: enrollments are pruned on their own). */
  agent_id: ColumnType<string | null, string | null | undefined, string | null>;
  /** JSON array of the target names the redeeming agent is bound to (migration 0006). */
  targets: ColumnType<string, string | undefined, string>;
}

/** Gateways sharing the store, for discovery (migration 0004). */
export interface GatewaysTable {
  id: string;
  url: string;
  started_at: IntColumn;
  last_seen_at: IntColumn;
}

/** Audit sink delivery cursors and leases (migration 0008, src/store/sink-cursors.ts). */
export interface AuditSinkCursorsTable {
  sink: string;
  seq: IntColumn;
  owner: ColumnType<string | null, string | null, string | null>;
  lease_until: IntColumn;
  updated_at: IntColumn;
}

/** Signed-in operators (migration 0009, src/store/operator-sessions.ts). */
export interface OperatorSessionsTable {
  secret_hash: string;
  kind: string;
  issuer: string;
  subject: string;
  email: string | null;
  name: string | null;
  username: string | null;
  /** JSON array of role names. */
  roles: string;
  /** JSON array of group values. */
  groups: string;
  created_at: IntColumn;
  expires_at: IntColumn;
  ended_at: ColumnType<number | string | bigint | null, number | null, number | null>;
}

export interface Database {
  sessions: SessionsTable;
  audit_events: AuditEventsTable;
  meta: MetaTable;
  used_jtis: UsedJtisTable;
  agents: AgentsTable;
  agent_enrollments: AgentEnrollmentsTable;
  gateways: GatewaysTable;
  audit_sink_cursors: AuditSinkCursorsTable;
  operator_sessions: OperatorSessionsTable;
  session_approvals: SessionApprovalsTable;
}

export function toInt(value: number | string | bigint): number {
  const n = typeof value === 'number' ? value : Number(value);
  if (!Number.isSafeInteger(n)) throw new RangeError(`not a safe integer: ${String(value)}`);
  return n;
}
