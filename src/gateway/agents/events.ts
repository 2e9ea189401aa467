// The events agents report (docs/agent.md, "Exits on the agent"): per-session roles created
// and dropped, `http.request`. Each is audited with the session's principal and rule from the
// store, once (a resent event is not recorded twice), and only about what this gateway routed to
// that agent; anything else is refused (event-refusals.ts).
import { auditEvent } from '../../audit/events.js';
import { principalSummary } from '../../session/principal.js';
import type { Store } from '../../store/types.js';
import type { AgentEventLine } from '../../transport/wire.js';
import type { EventRefusals } from './event-refusals.js';
import type { AgentHub, AgentIdentity } from './hub.js';

/** Event ids recently recorded, per gateway process (a resent event is not recorded twice). */
const SEEN_EVENTS = 10_000;

const str = (v: unknown) => (typeof v === 'string' ? v.slice(0, 1024) : undefined);
const num = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);

/** At most 50 string → string entries (session tags), each bounded. */
function stringRecord(v: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (!v || typeof v !== 'object' || Array.isArray(v)) return out;
  for (const [k, x] of Object.entries(v).slice(0, 50))
    if (typeof x === 'string') out[k.slice(0, 128)] = x.slice(0, 256);
  return out;
}

/** The metric label of an agent's event type: its own type strings never become labels. */
export const typeLabel = (type: string) => (REPORTED_TYPES.has(type) ? type : 'other');

const REPORTED_TYPES = new Set([
  'credential.created',
  'credential.revoked',
  'credential.revoke_failed',
  'http.request',
  'aws.credentials_issued',
  'aws.credentials_failed',
]);

/**
 * Audit one event an agent reported, with the session's principal and rule from the store.
 * Only known types and fields are taken (the agent is authenticated; its JSON is still input),
 * and only about a (session, target) this gateway routed to that agent, on a target still bound
 * to it (hub.mayReport): anything else is refused (acknowledged, counted, not recorded).
 */
export async function recordAgentEvent(
  store: Store,
  agent: AgentIdentity,
  event: AgentEventLine,
  seen: Set<string>,
  hub: AgentHub,
  refusals: EventRefusals,
): Promise<'recorded' | 'duplicate' | 'refused'> {
  const eventId = `${agent.id}:${str(event.id) ?? event.seq}`;
  if (seen.has(eventId)) return 'duplicate';
  const d = event.data;
  const sessionId = str(d.session) ?? '';
  const target = (str(d.target) ?? '').toLowerCase();
  if (REPORTED_TYPES.has(event.type) && !hub.mayReport(agent.id, sessionId, target)) {
    await refusals.refuse(agent, event.type, sessionId, target);
    return 'refused';
  }
  const session = sessionId ? await store.getSession(sessionId) : undefined;
  const context = session ? { principal: principalSummary(session.principal), rule: session.rule } : {};
  const from = { agent: agent.name, agent_id: agent.id, agent_event: eventId };
  if (
    event.type === 'credential.created' ||
    event.type === 'credential.revoked' ||
    event.type === 'credential.revoke_failed'
  ) {
    const granted = Array.isArray(d.granted) ? d.granted.filter((g) => typeof g === 'string') : undefined;
    await store.appendAudit(
      auditEvent(event.type, {
        ...context,
        session: sessionId,
        target,
        role: str(d.role) ?? '',
        ...(granted ? { granted } : {}),
        ...(str(d.valid_until) ? { valid_until: str(d.valid_until) } : {}),
        ...(str(d.reason) ? { reason: str(d.reason) } : {}),
        ...(num(d.terminated) !== undefined ? { terminated: num(d.terminated) } : {}),
        ...(str(d.error) ? { error: str(d.error) } : {}),
        ...(str(d.code) ? { code: str(d.code) } : {}),
        ...(num(d.attempt) !== undefined ? { attempt: num(d.attempt) } : {}),
        ...(str(d.next_attempt) ? { next_attempt: str(d.next_attempt) } : {}),
        ...(str(d.lease_id) ? { lease_id: str(d.lease_id) } : {}),
        ...from,
      } as Parameters<typeof auditEvent<'credential.created'>>[1]),
    );
  } else if (event.type === 'http.request') {
    await store.appendAudit(
      auditEvent('http.request', {
        session: sessionId,
        connection: str(d.connection) ?? '',
        principal: session ? principalSummary(session.principal) : ({} as never),
        target,
        rule: session?.rule ?? null,
        exit: agent.name,
        agent: agent.name,
        agent_id: agent.id,
        method: str(d.method) ?? '',
        path: str(d.path) ?? '',
        status: num(d.status) ?? 0,
        bytes_in: num(d.bytes_in) ?? 0,
        bytes_out: num(d.bytes_out) ?? 0,
        duration_ms: num(d.duration_ms) ?? 0,
        ...(d.upgrade === true ? { upgrade: true } : {}),
        ...(d.aborted === true ? { aborted: true } : {}),
        ...(str(d.error) ? { error: str(d.error) } : {}),
        agent_event: eventId,
      } as Parameters<typeof auditEvent<'http.request'>>[1]),
    );
  } else if (event.type === 'aws.credentials_issued' || event.type === 'aws.credentials_failed') {
    const connection = {
      session: sessionId,
      connection: str(d.connection) ?? '',
      principal: session ? principalSummary(session.principal) : ({} as never),
      target,
      rule: session?.rule ?? null,
      exit: agent.name,
      agent: agent.name,
      agent_id: agent.id,
      role_arn: str(d.role_arn) ?? '',
      agent_event: eventId,
    };
    await store.appendAudit(
      event.type === 'aws.credentials_issued'
        ? auditEvent('aws.credentials_issued', {
            ...connection,
            role_session_name: str(d.role_session_name) ?? '',
            access_key_id: str(d.access_key_id) ?? '',
            expiration: str(d.expiration) ?? '',
            duration_s: num(d.duration_s) ?? 0,
            deny_after: str(d.deny_after) ?? '',
            tags: stringRecord(d.tags),
          } as Parameters<typeof auditEvent<'aws.credentials_issued'>>[1])
        : auditEvent('aws.credentials_failed', {
            ...connection,
            code: str(d.code) ?? '',
            ...(str(d.sts_code) ? { sts_code: str(d.sts_code) } : {}),
          } as Parameters<typeof auditEvent<'aws.credentials_failed'>>[1]),
    );
  }
  // Unknown types are acknowledged and dropped: a newer agent may report more than we record.
  seen.add(eventId);
  if (seen.size > SEEN_EVENTS) seen.delete(seen.values().next().value as string);
  return 'recorded';
}
