// Why a session ended: the `end_reason` of the API, the admin list and `session.ended` events.
// The vocabulary is the audit module's, so the store, the API and the events cannot disagree.
import { SESSION_END_REASONS, type SessionEndReason } from '../audit/events.js';

export const END_REASONS = SESSION_END_REASONS;
export type EndReason = SessionEndReason;

/** The reason as the store takes it (the same word). */
export function storeReason(reason: EndReason): SessionEndReason {
  return reason;
}
