export { isUnavailable, StoreError, type StoreErrorCode } from './errors.js';
export {
  DEFAULT_SQLITE_FILE,
  type OpenStoreOptions,
  openStore,
  type StoreConfig,
  sqliteFileOf,
} from './open.js';
export type { OperatorSessionKind, OperatorSessionRecord } from './operator-sessions.js';
export type { AuditSinkCursor, AuditSinkStore } from './sink-cursors.js';
export type {
  AgentChange,
  AgentEventFor,
  AgentRevokedListener,
  ApprovalEventsFor,
  ApprovalOutcome,
  ApprovalStore,
  AuditQuery,
  EventFor,
  GatewayRecord,
  ListSessionsOptions,
  NewAgent,
  NewEnrollment,
  NewSession,
  SessionApproval,
  SessionChange,
  SessionRecord,
  SessionState,
  Store,
  StoredAgent,
  StoreEngine,
} from './types.js';
export { expiryReason } from './types.js';

import { StoreError } from './errors.js';
import type { SessionRecord, SessionStore } from './types.js';

/** getSession, or CIPORT_E_SESSION_NOT_FOUND (API 404, `ciport sessions revoke` exit 2). */
export async function requireSession(
  store: Pick<SessionStore, 'getSession'>,
  id: string,
): Promise<SessionRecord> {
  const session = await store.getSession(id);
  if (!session) throw new StoreError('CIPORT_E_SESSION_NOT_FOUND', `no session with id "${id}"`);
  return session;
}
