// Agent records and one-time enrollment tokens (docs/agent.md, "Enrollment"), kept in the store's
// `agents` and `agent_enrollments` tables (migrations 0004, 0005). Only SHA-256 hashes of
// enrollment tokens and agent credentials are stored. Every change is one store transaction
// together with its audit event (`agent.enrolled`, `agent.credential_rotated`, `agent.revoked`),
// and redeeming a token or rotating a credential is a conditional UPDATE, so gateways sharing one
// PostgreSQL store cannot both redeem one token or both rotate from one credential. Credentials
// expire (default 30 days) and agents rotate them before: `rotate` exchanges the current secret
// for a new one and keeps accepting the replaced secret for a short grace period (default 1 h). Revocations committed by
// another gateway reach this one through `watchRemoteRevocations` (PostgreSQL NOTIFY, plus a
// periodic sweep for notifications lost while the listening connection was down).
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { auditEvent } from '../../audit/events.js';
import { TARGET_NAME_RE } from '../../config/target-name.js';
import { CiportError } from '../../errors/index.js';
import type { OperatorActor } from '../../identity/operator.js';
import type { AgentStore, StoredAgent } from '../../store/types.js';

/** Enrollment tokens are `cpe_` + 32 random bytes; agent credentials `cpa_<agent id>.<secret>`. */
export const ENROLLMENT_PREFIX = 'cpe_';
export const CREDENTIAL_PREFIX = 'cpa_';
const NAME_RE = /^[a-z0-9]([a-z0-9._-]{0,62})$/i;
/** How often `watchRemoteRevocations` re-reads the agents by default (lost notifications). */
export const REVOCATION_SWEEP_MS = 30_000;
/** How long an agent credential is accepted after it was issued (registration or rotation). */
export const CREDENTIAL_LIFETIME_MS = 30 * 86_400_000;
/** How long the secret a rotation replaced is still accepted (never beyond its own expiry). */
export const ROTATION_GRACE_MS = 3_600_000;

export interface AgentRegistryOptions {
  now?: () => number;
  /** Lifetime of a new credential (default CREDENTIAL_LIFETIME_MS, 30 days). */
  credentialLifetimeMs?: number;
  /** How long a rotated-away secret is still accepted (default ROTATION_GRACE_MS, 1 hour). */
  rotationGraceMs?: number;
}

/** A freshly issued agent credential: the only time the secret leaves the gateway. */
export interface IssuedCredential {
  id: string;
  name: string;
  /** `cpa_<id>.<secret>`. */
  credential: string;
  /** ISO 8601: rotate before this. */
  expires_at: string;
}

/** An agent as the API and the hub see it. Times are ISO 8601. */
export interface AgentRecord {
  id: string;
  name: string;
  created_at: string;
  revoked_at: string | null;
  last_seen_at: string | null;
  /** When the current credential expires (the agent rotates it before). */
  credential_expires_at: string;
  /** SHA-256 (hex) of the credential's secret part. */
  credential_hash: string;
  /** The targets it may serve (docs/agent.md, "Target binding"). */
  targets: string[];
}

/** A change of an agent's target binding (`ciport agents targets`). */
export type TargetEdit = { set: string[] } | { add?: string[]; remove?: string[] };

/** Validate target names for a binding (config syntax; case-insensitive like advertisements). */
export function bindingNames(value: unknown, what = 'targets'): string[] {
  if (!Array.isArray(value) || value.some((t) => typeof t !== 'string')) {
    throw new CiportError('CIPORT_E_USAGE', `${what}: a list of target names`);
  }
  const names = (value as string[]).map((t) => t.trim().toLowerCase());
  for (const t of names) {
    if (t === '*') {
      throw new CiportError('CIPORT_E_USAGE', `${what}: name each target; there is no wildcard binding`);
    }
    if (!TARGET_NAME_RE.test(t)) {
      throw new CiportError('CIPORT_E_USAGE', `${what}: "${t}" is not a target name (as in the config)`);
    }
  }
  return [...new Set(names)].sort();
}

/** What the admin API and `ciport agents list` show (no hashes). */
export type AgentSummary = Omit<AgentRecord, 'credential_hash'>;

export function agentSummary(a: AgentRecord): AgentSummary {
  const { credential_hash: _hash, ...rest } = a;
  return rest;
}

/** The operator's `by` and `note` for an audit event (nothing for changes no operator made). */
function actorFields(actor: OperatorActor | undefined): { by?: string; note?: string } {
  if (!actor) return {};
  return { by: actor.by, ...(actor.note ? { note: actor.note } : {}) };
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

function toRecord(a: StoredAgent): AgentRecord {
  return {
    id: a.id,
    name: a.name,
    created_at: new Date(a.createdAt).toISOString(),
    revoked_at: iso(a.revokedAt),
    last_seen_at: iso(a.lastSeenAt),
    credential_expires_at: new Date(a.credentialExpiresAt).toISOString(),
    credential_hash: a.credentialHash,
    targets: [...a.targets],
  };
}

const sha256 = (s: string) => createHash('sha256').update(s, 'utf8').digest('hex');
const newSecret = () => randomBytes(32).toString('base64url');

const refusal = () => new CiportError('CIPORT_E_AGENT_UNAUTHORIZED', 'unknown or revoked agent credential');
const expired = (at: number) =>
  new CiportError(
    'CIPORT_E_AGENT_UNAUTHORIZED',
    `agent credential expired at ${new Date(at).toISOString()}; enroll the agent again`,
  );

function positive(name: string, value: number | undefined, fallback: number, zeroOk = false): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value < 0 || (value === 0 && !zeroOk)) {
    throw new CiportError('CIPORT_E_USAGE', `agent registry: ${name} must be a positive integer (ms)`);
  }
  return value;
}

function sameHash(a: string, b: string): boolean {
  const x = Buffer.from(a, 'hex');
  const y = Buffer.from(b, 'hex');
  return x.length === y.length && x.length > 0 && timingSafeEqual(x, y);
}

export interface AgentRegistryEvents {
  /** An agent was revoked, here or (with `watchRemoteRevocations`) by another gateway. Once per agent. */
  revoked: [AgentRecord];
  /** An agent's target binding changed (here; other gateways' changes come with `sweepBindings`). */
  targets: [AgentRecord];
}

export class AgentRegistry extends EventEmitter<AgentRegistryEvents> {
  readonly #store: AgentStore;
  readonly #now: () => number;
  readonly #lifetimeMs: number;
  readonly #graceMs: number;
  /** Ids of revoked agents already announced ('revoked' emitted, or revoked before watching). */
  readonly #announced = new Set<string>();

  constructor(store: AgentStore, options: AgentRegistryOptions = {}) {
    super();
    this.#store = store;
    this.#now = options.now ?? Date.now;
    this.#lifetimeMs = positive('credentialLifetimeMs', options.credentialLifetimeMs, CREDENTIAL_LIFETIME_MS);
    this.#graceMs = positive('rotationGraceMs', options.rotationGraceMs, ROTATION_GRACE_MS, true);
  }

  /** Lifetime of a new credential, in ms. */
  get credentialLifetimeMs(): number {
    return this.#lifetimeMs;
  }

  /**
   * Operator: a one-time token that lets one agent named `name` register (default 1 h). The
   * token's hash and its `agent.enrolled` (stage `token_created`) event commit together.
   */
  async createEnrollment(
    name: string,
    targets: readonly string[],
    ttlMs = 3_600_000,
    actor?: OperatorActor,
  ): Promise<{ token: string; expires_at: string; targets: string[] }> {
    if (!NAME_RE.test(name)) {
      throw new CiportError('CIPORT_E_USAGE', 'agent name: letters, digits, ".", "_", "-" (at most 63)');
    }
    const bound = bindingNames(targets);
    if (bound.length === 0) {
      throw new CiportError('CIPORT_E_USAGE', 'targets: name at least one target the agent may serve');
    }
    if (!Number.isFinite(ttlMs) || ttlMs <= 0) {
      throw new CiportError('CIPORT_E_USAGE', 'enrollment ttl must be positive');
    }
    const token = `${ENROLLMENT_PREFIX}${randomBytes(32).toString('base64url')}`;
    const now = this.#now();
    const expiresAt = now + Math.ceil(ttlMs);
    const expires_at = new Date(expiresAt).toISOString();
    await this.#store.createEnrollment(
      { tokenHash: sha256(token), name, targets: bound, createdAt: now, expiresAt },
      auditEvent(
        'agent.enrolled',
        { agent: name, stage: 'token_created', expires_at, targets: bound, ...actorFields(actor) },
        now,
      ),
    );
    return { token, expires_at, targets: bound };
  }

  /**
   * Agent: exchange an enrollment token (once) for a long-lived credential. A second agent
   * record with the same name is allowed (several agents may share a name, e.g. replicas). Of
   * concurrent registrations with one token, on any gateway, exactly one succeeds; the others
   * get CIPORT_E_ENROLLMENT_INVALID like an unknown or expired token.
   */
  async register(token: string): Promise<IssuedCredential> {
    const now = this.#now();
    const id = `agt_${randomBytes(8).toString('hex')}`;
    const secret = newSecret();
    const expiresAt = now + this.#lifetimeMs;
    const change =
      typeof token === 'string' && token.length > 0
        ? await this.#store.redeemEnrollment(
            sha256(token),
            now,
            { id, credentialHash: sha256(secret), createdAt: now, credentialExpiresAt: expiresAt },
            (agent) =>
              auditEvent(
                'agent.enrolled',
                { agent: agent.name, agent_id: agent.id, stage: 'registered', targets: agent.targets },
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
    return {
      id,
      name: change.agent.name,
      credential: `${CREDENTIAL_PREFIX}${id}.${secret}`,
      expires_at: new Date(expiresAt).toISOString(),
    };
  }

  /**
   * Check an agent credential: the current secret while `now < credential_expires_at`, or the
   * secret the last rotation replaced while `now < previous_valid_until` (an agent that rotated
   * but did not save the answer, or a second link still using the old secret, is not locked out
   * at once). Throws CIPORT_E_AGENT_UNAUTHORIZED; its message says "expired" when the secret was
   * right but its time is over, and never which part failed otherwise.
   */
  async authenticate(credential: string | undefined): Promise<AgentRecord> {
    return toRecord((await this.#check(credential, 'current or previous')).agent);
  }

  /**
   * Agent: exchange the CURRENT (unexpired) credential for a new one with a fresh lifetime. The
   * replaced secret stays valid for the grace period (never beyond its own expiry). One store
   * transaction with `agent.credential_rotated`; of concurrent rotations with one credential
   * exactly one succeeds, the others get CIPORT_E_AGENT_UNAUTHORIZED — as do the previous secret,
   * expired, revoked and unknown credentials.
   */
  async rotate(credential: string | undefined): Promise<IssuedCredential> {
    const { agent, hash } = await this.#check(credential, 'current');
    const now = this.#now();
    const secret = newSecret();
    const expiresAt = now + this.#lifetimeMs;
    const graceUntil = Math.max(now, Math.min(now + this.#graceMs, agent.credentialExpiresAt));
    const expires_at = new Date(expiresAt).toISOString();
    const change = await this.#store.rotateAgentCredential(
      agent.id,
      hash,
      sha256(secret),
      now,
      expiresAt,
      graceUntil,
      (a) => auditEvent('agent.credential_rotated', { agent: a.name, agent_id: a.id, expires_at }, now),
    );
    // Lost a race with another rotation, or revoked/expired in between.
    if (!change) throw refusal();
    return {
      id: agent.id,
      name: change.agent.name,
      credential: `${CREDENTIAL_PREFIX}${agent.id}.${secret}`,
      expires_at,
    };
  }

  /** Parse and check a credential; `hash` is the SHA-256 of the secret it presented. */
  async #check(
    credential: string | undefined,
    accept: 'current' | 'current or previous',
  ): Promise<{ agent: StoredAgent; hash: string }> {
    if (typeof credential !== 'string' || !credential.startsWith(CREDENTIAL_PREFIX)) throw refusal();
    const dot = credential.indexOf('.');
    if (dot < 0) throw refusal();
    const id = credential.slice(CREDENTIAL_PREFIX.length, dot);
    const secret = credential.slice(dot + 1);
    if (id.length === 0 || id.length > 200 || secret.length === 0) throw refusal();
    const agent = await this.#store.getAgent(id);
    if (!agent || agent.revokedAt !== null) throw refusal();
    const hash = sha256(secret);
    const now = this.#now();
    if (sameHash(agent.credentialHash, hash)) {
      if (now < agent.credentialExpiresAt) return { agent, hash };
      throw expired(agent.credentialExpiresAt);
    }
    if (
      accept === 'current or previous' &&
      agent.previousHash !== null &&
      agent.previousValidUntil !== null &&
      sameHash(agent.previousHash, hash)
    ) {
      if (now < agent.previousValidUntil) return { agent, hash };
      throw expired(agent.previousValidUntil);
    }
    throw refusal();
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
  async revoke(idOrName: string, actor?: OperatorActor): Promise<AgentSummary[]> {
    const changes = await this.#store.revokeAgents(idOrName, this.#now(), (a) =>
      auditEvent('agent.revoked', { agent: a.name, agent_id: a.id, ...actorFields(actor) }),
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
   * Admin: change which targets the agents with this id or name may serve (`set` replaces the
   * list; `add` / `remove` edit it). One `agent.targets_changed` per agent changed, in the
   * transaction of the change; emits 'targets' for each. CIPORT_E_NOT_FOUND when no live agent
   * has that id or name. Returns every live agent matched, changed or not.
   */
  async setTargets(idOrName: string, edit: TargetEdit, actor?: OperatorActor): Promise<AgentSummary[]> {
    const set = 'set' in edit ? bindingNames(edit.set, 'set') : undefined;
    const add = 'set' in edit ? [] : bindingNames(edit.add ?? [], 'add');
    const remove = 'set' in edit ? [] : bindingNames(edit.remove ?? [], 'remove');
    if (!set && add.length === 0 && remove.length === 0) {
      throw new CiportError('CIPORT_E_USAGE', 'give the new targets ({"set": […]}) or {"add"/"remove": […]}');
    }
    const next = (current: readonly string[]) =>
      set ?? [...current.filter((t) => !remove.includes(t)), ...add.filter((t) => !remove.includes(t))];
    const changes = await this.#store.setAgentTargets(idOrName, this.#now(), next, (a, before) =>
      auditEvent('agent.targets_changed', {
        agent: a.name,
        agent_id: a.id,
        before: [...before],
        targets: a.targets,
        ...actorFields(actor),
      }),
    );
    for (const c of changes) this.emit('targets', toRecord(c.agent));
    const matched = (await this.#store.listAgents()).filter(
      (a) => (a.id === idOrName || a.name === idOrName) && a.revokedAt === null,
    );
    if (matched.length === 0) throw new CiportError('CIPORT_E_NOT_FOUND', `no live agent ${idOrName}`);
    return matched.map((a) => agentSummary(toRecord(a)));
  }

  /** Every agent's current binding (other gateways' changes reach this one with a re-read). */
  async bindings(): Promise<Map<string, string[]>> {
    return new Map((await this.#store.listAgents()).map((a) => [a.id, a.targets]));
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
