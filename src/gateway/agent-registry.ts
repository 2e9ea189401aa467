// Agent records and one-time enrollment tokens (docs/agent.md, "Enrollment"), kept in the store's
// `agents` and `agent_enrollments` tables (migration 0004). Only SHA-256 hashes of enrollment
// tokens and agent credentials are stored. Every change is one store transaction together with
// its audit event (`agent.enrolled`, `agent.revoked`), and redeeming a token is a conditional
// UPDATE, so gateways sharing one PostgreSQL store cannot both redeem it. Revocations committed by
// another gateway reach this one through `watchRemoteRevocations` (PostgreSQL NOTIFY, plus a
// periodic sweep for notifications lost while the listening connection was down).
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { auditEvent } from '../audit/events.js';
import { CiportError } from '../errors/index.js';
import type { Store, StoredAgent } from '../store/types.js';

/** The part of the Store this registry needs. */
export type AgentStore = Pick<
  Store,
  | 'createEnrollment'
  | 'redeemEnrollment'
  | 'getAgent'
  | 'listAgents'
  | 'touchAgent'
  | 'revokeAgents'
  | 'subscribeAgentRevoked'
>;

/** Enrollment tokens are `cpe_` + 32 random bytes; agent credentials `cpa_<agent id>.<secret>`. */
export const ENROLLMENT_PREFIX = 'cpe_';
export const CREDENTIAL_PREFIX = 'cpa_';
const NAME_RE = /^[a-z0-9]([a-z0-9._-]{0,62})$/i;
/** How often `watchRemoteRevocations` re-reads the agents by default (lost notifications). */
export const REVOCATION_SWEEP_MS = 30_000;

/** An agent as the API and the hub see it. Times are ISO 8601. */
export interface AgentRecord {
  id: string;
  name: string;
  created_at: string;
  revoked_at: string | null;
  last_seen_at: string | null;
  /** SHA-256 (hex) of the credential's secret part. */
  credential_hash: string;
}

/** What the admin API and `ciport agents list` show (no hashes). */
export type AgentSummary = Omit<AgentRecord, 'credential_hash'>;

export function agentSummary(a: AgentRecord): AgentSummary {
  const { credential_hash: _hash, ...rest } = a;
  return rest;
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

function toRecord(a: StoredAgent): AgentRecord {
  return {
    id: a.id,
    name: a.name,
    created_at: new Date(a.createdAt).toISOString(),
    revoked_at: iso(a.revokedAt),
    last_seen_at: iso(a.lastSeenAt),
    credential_hash: a.credentialHash,
  };
}

const sha256 = (s: string) => createHash('sha256').update(s, 'utf8').digest('hex');

function sameHash(a: string, b: string): boolean {
  const x = Buffer.from(a, 'hex');
  const y = Buffer.from(b, 'hex');
  return x.length === y.length && x.length > 0 && timingSafeEqual(x, y);
}

export interface AgentRegistryEvents {
  /** An agent was revoked, here or (with `watchRemoteRevocations`) by another gateway. Once per agent. */
  revoked: [AgentRecord];
}

export class AgentRegistry extends EventEmitter<AgentRegistryEvents> {
  readonly #store: AgentStore;
  readonly #now: () => number;
  /** Ids of revoked agents already announced ('revoked' emitted, or revoked before watching). */
  readonly #announced = new Set<string>();

  constructor(store: AgentStore, options: { now?: () => number } = {}) {
    super();
    this.#store = store;
    this.#now = options.now ?? Date.now;
  }

  /**
   * Operator: a one-time token that lets one agent named `name` register (default 1 h). The
   * token's hash and its `agent.enrolled` (stage `token_created`) event commit together.
   */
  async createEnrollment(name: string, ttlMs = 3_600_000): Promise<{ token: string; expires_at: string }> {
    if (!NAME_RE.test(name)) {
      throw new CiportError('CIPORT_E_USAGE', 'agent name: letters, digits, ".", "_", "-" (at most 63)');
    }
    if (!Number.isFinite(ttlMs) || ttlMs <= 0) {
      throw new CiportError('CIPORT_E_USAGE', 'enrollment ttl must be positive');
    }
    const token = `${ENROLLMENT_PREFIX}${randomBytes(32).toString('base64url')}`;
    const now = this.#now();
    const expiresAt = now + Math.ceil(ttlMs);
    const expires_at = new Date(expiresAt).toISOString();
    await this.#store.createEnrollment(
      { tokenHash: sha256(token), name, createdAt: now, expiresAt },
      auditEvent('agent.enrolled', { agent: name, stage: 'token_created', expires_at }, now),
    );
    return { token, expires_at };
  }

  /**
   * Agent: exchange an enrollment token (once) for a long-lived credential. A second agent
   * record with the same name is allowed (several agents may share a name, e.g. replicas). Of
   * concurrent registrations with one token, on any gateway, exactly one succeeds; the others
   * get CIPORT_E_ENROLLMENT_INVALID like an unknown or expired token.
   */
  async register(token: string): Promise<{ id: string; name: string; credential: string }> {
    const now = this.#now();
    const id = `agt_${randomBytes(8).toString('hex')}`;
    const secret = randomBytes(32).toString('base64url');
    const change =
      typeof token === 'string' && token.length > 0
        ? await this.#store.redeemEnrollment(
            sha256(token),
            now,
            { id, credentialHash: sha256(secret), createdAt: now },
            (agent) =>
              auditEvent(
                'agent.enrolled',
                { agent: agent.name, agent_id: agent.id, stage: 'registered' },
                now,
              ),
          )
        : undefined;
    if (!change) {
      throw new CiportError(
        'CIPORT_E_ENROLLMENT_INVALID',
        'enrollment token unknown, expired or already used',
      );
    }
    return { id, name: change.agent.name, credential: `${CREDENTIAL_PREFIX}${id}.${secret}` };
  }

  /** Check an agent credential; throws CIPORT_E_AGENT_UNAUTHORIZED (never says which part failed). */
  async authenticate(credential: string | undefined): Promise<AgentRecord> {
    const refuse = () =>
      new CiportError('CIPORT_E_AGENT_UNAUTHORIZED', 'unknown or revoked agent credential');
    if (!credential?.startsWith(CREDENTIAL_PREFIX)) throw refuse();
    const dot = credential.indexOf('.');
    if (dot < 0) throw refuse();
    const id = credential.slice(CREDENTIAL_PREFIX.length, dot);
    const secret = credential.slice(dot + 1);
    if (id.length === 0 || id.length > 200 || secret.length === 0) throw refuse();
    const agent = await this.#store.getAgent(id);
    if (!agent || agent.revokedAt !== null || !sameHash(agent.credentialHash, sha256(secret))) throw refuse();
    return toRecord(agent);
  }

  /** Record that the agent was seen now (a revoked or unknown agent is left alone). */
  async touch(id: string): Promise<void> {
    await this.#store.touchAgent(id, this.#now());
  }

  /** Every agent, revoked ones included, oldest first. */
  async list(): Promise<AgentSummary[]> {
    return (await this.#store.listAgents()).map((a) => agentSummary(toRecord(a)));
  }

  /**
   * Revoke by id, or by name (every agent of that name), each with its `agent.revoked` event in
   * the same transaction. Emits 'revoked' for each. Empty when every match was revoked already;
   * CIPORT_E_NOT_FOUND when no agent has that id or name.
   */
  async revoke(idOrName: string): Promise<AgentSummary[]> {
    const changes = await this.#store.revokeAgents(idOrName, this.#now(), (a) =>
      auditEvent('agent.revoked', { agent: a.name, agent_id: a.id }),
    );
    if (changes.length === 0) {
      const all = await this.#store.listAgents();
      if (!all.some((a) => a.id === idOrName || a.name === idOrName)) {
        throw new CiportError('CIPORT_E_NOT_FOUND', `no agent ${idOrName}`);
      }
    }
    const records = changes.map((c) => toRecord(c.agent));
    for (const r of records) this.#announce(r);
    return records.map(agentSummary);
  }

  /**
   * Also emit 'revoked' for agents revoked by other gateways sharing the store: subscribes to the
   * store's revocation notifications (PostgreSQL; a no-op on SQLite) and, every `sweepMs`
   * (default 30 s, 0: never), re-reads the agents to catch notifications lost while the
   * listening connection was down. Agents revoked before the call are not announced. Resolves
   * once listening, to a function that stops watching.
   */
  async watchRemoteRevocations(options: { sweepMs?: number } = {}): Promise<() => Promise<void>> {
    // Revoked before we started: nothing of theirs can be connected here (authenticate refuses).
    for (const a of await this.#store.listAgents()) if (a.revokedAt !== null) this.#announced.add(a.id);
    const unsubscribe = await this.#store.subscribeAgentRevoked((id) => {
      if (this.#announced.has(id)) return; // revoked here, already announced
      this.#store.getAgent(id).then(
        (a) => {
          if (a && a.revokedAt !== null) this.#announce(toRecord(a));
        },
        () => {
          // The store is unreachable right now; the sweep picks the revocation up later.
        },
      );
    });
    // Revocations committed between the first read and LISTEN.
    await this.sweepRevocations().catch(() => {});
    const sweepMs = options.sweepMs ?? REVOCATION_SWEEP_MS;
    const timer =
      sweepMs > 0
        ? setInterval(() => {
            this.sweepRevocations().catch(() => {});
          }, sweepMs)
        : undefined;
    timer?.unref();
    let stopped = false;
    return async () => {
      if (stopped) return;
      stopped = true;
      if (timer) clearInterval(timer);
      await unsubscribe();
    };
  }

  /** Emit 'revoked' for every revoked agent not announced yet; returns those. */
  async sweepRevocations(): Promise<AgentRecord[]> {
    const fresh = (await this.#store.listAgents()).filter(
      (a) => a.revokedAt !== null && !this.#announced.has(a.id),
    );
    return fresh.map(toRecord).filter((r) => this.#announce(r));
  }

  /** Emit 'revoked' once per agent id, whichever path (local, notification, sweep) gets there first. */
  #announce(record: AgentRecord): boolean {
    if (this.#announced.has(record.id)) return false;
    this.#announced.add(record.id);
    this.emit('revoked', record);
    return true;
  }
}
