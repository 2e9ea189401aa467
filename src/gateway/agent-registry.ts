// Agent records and one-time enrollment tokens (docs/agent.md, "Enrollment"). Kept as one JSON
// document under the store's meta key `agents.v1` (no migration needed); only SHA-256 hashes of
// enrollment tokens and agent credentials are stored. Updates are serialised in-process; several
// gateways sharing one PostgreSQL store could race on the document (a table replaces it later).
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { CiportError } from '../errors/index.js';

/** The part of the Store this registry needs. */
export interface MetaStore {
  getMeta(key: string): Promise<string | undefined>;
  setMeta(key: string, value: string): Promise<void>;
}

export const AGENTS_META_KEY = 'agents.v1';
/** Enrollment tokens are `cpe_` + 32 random bytes; agent credentials `cpa_<agent id>.<secret>`. */
export const ENROLLMENT_PREFIX = 'cpe_';
export const CREDENTIAL_PREFIX = 'cpa_';
const NAME_RE = /^[a-z0-9]([a-z0-9._-]{0,62})$/i;

export interface AgentRecord {
  id: string;
  name: string;
  created_at: string;
  revoked_at: string | null;
  last_seen_at: string | null;
  /** SHA-256 (hex) of the credential's secret part. */
  credential_hash: string;
}

interface EnrollmentRecord {
  token_hash: string;
  name: string;
  created_at: string;
  expires_at: string;
  used_at: string | null;
  agent: string | null;
}

interface Doc {
  agents: AgentRecord[];
  enrollments: EnrollmentRecord[];
}

/** What the admin API and `ciport agents list` show (no hashes). */
export type AgentSummary = Omit<AgentRecord, 'credential_hash'>;

export function agentSummary(a: AgentRecord): AgentSummary {
  const { credential_hash: _hash, ...rest } = a;
  return rest;
}

const sha256 = (s: string) => createHash('sha256').update(s, 'utf8').digest('hex');

function sameHash(a: string, b: string): boolean {
  const x = Buffer.from(a, 'hex');
  const y = Buffer.from(b, 'hex');
  return x.length === y.length && x.length > 0 && timingSafeEqual(x, y);
}

export interface AgentRegistryEvents {
  revoked: [AgentRecord];
}

export class AgentRegistry extends EventEmitter<AgentRegistryEvents> {
  readonly #store: MetaStore;
  readonly #now: () => number;
  #queue: Promise<unknown> = Promise.resolve();

  constructor(store: MetaStore, options: { now?: () => number } = {}) {
    super();
    this.#store = store;
    this.#now = options.now ?? Date.now;
  }

  async #read(): Promise<Doc> {
    const raw = await this.#store.getMeta(AGENTS_META_KEY);
    if (!raw) return { agents: [], enrollments: [] };
    const doc = JSON.parse(raw) as Partial<Doc>;
    return { agents: doc.agents ?? [], enrollments: doc.enrollments ?? [] };
  }

  /** Read-modify-write of the document, one at a time. */
  #update<T>(fn: (doc: Doc) => T): Promise<T> {
    const run = this.#queue.then(async () => {
      const doc = await this.#read();
      const result = fn(doc);
      await this.#store.setMeta(AGENTS_META_KEY, JSON.stringify(doc));
      return result;
    });
    this.#queue = run.catch(() => {});
    return run;
  }

  /** Operator: a one-time token that lets one agent named `name` register (default 1 h). */
  async createEnrollment(name: string, ttlMs = 3_600_000): Promise<{ token: string; expires_at: string }> {
    if (!NAME_RE.test(name)) {
      throw new CiportError('CIPORT_E_USAGE', 'agent name: letters, digits, ".", "_", "-" (at most 63)');
    }
    const token = `${ENROLLMENT_PREFIX}${randomBytes(32).toString('base64url')}`;
    const now = this.#now();
    const expires_at = new Date(now + ttlMs).toISOString();
    await this.#update((doc) => {
      // Drop spent or expired enrollments so the document stays small.
      doc.enrollments = doc.enrollments.filter((e) => !e.used_at && Date.parse(e.expires_at) > now);
      doc.enrollments.push({
        token_hash: sha256(token),
        name,
        created_at: new Date(now).toISOString(),
        expires_at,
        used_at: null,
        agent: null,
      });
    });
    return { token, expires_at };
  }

  /**
   * Agent: exchange an enrollment token (once) for a long-lived credential. A second agent
   * record with the same name is allowed (several agents may share a name, e.g. replicas).
   */
  async register(token: string): Promise<{ id: string; name: string; credential: string }> {
    const hash = sha256(token);
    const now = this.#now();
    return this.#update((doc) => {
      const e = doc.enrollments.find((x) => sameHash(x.token_hash, hash));
      if (!e || e.used_at || Date.parse(e.expires_at) <= now) {
        throw new CiportError(
          'CIPORT_E_ENROLLMENT_INVALID',
          'enrollment token unknown, expired or already used',
        );
      }
      const id = `agt_${randomBytes(8).toString('hex')}`;
      const secret = randomBytes(32).toString('base64url');
      e.used_at = new Date(now).toISOString();
      e.agent = id;
      doc.agents.push({
        id,
        name: e.name,
        created_at: new Date(now).toISOString(),
        revoked_at: null,
        last_seen_at: null,
        credential_hash: sha256(secret),
      });
      return { id, name: e.name, credential: `${CREDENTIAL_PREFIX}${id}.${secret}` };
    });
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
    await this.#queue;
    const doc = await this.#read();
    const agent = doc.agents.find((a) => a.id === id);
    if (!agent || agent.revoked_at || !sameHash(agent.credential_hash, sha256(secret))) throw refuse();
    return agent;
  }

  async touch(id: string): Promise<void> {
    await this.#update((doc) => {
      const a = doc.agents.find((x) => x.id === id);
      if (a) a.last_seen_at = new Date(this.#now()).toISOString();
    });
  }

  async list(): Promise<AgentSummary[]> {
    await this.#queue;
    return (await this.#read()).agents.map(agentSummary);
  }

  /** Revoke by id, or by name (every agent of that name). Emits 'revoked' for each. */
  async revoke(idOrName: string): Promise<AgentSummary[]> {
    const now = new Date(this.#now()).toISOString();
    const revoked = await this.#update((doc) => {
      const hit = doc.agents.filter((a) => (a.id === idOrName || a.name === idOrName) && !a.revoked_at);
      if (hit.length === 0 && !doc.agents.some((a) => a.id === idOrName || a.name === idOrName)) {
        throw new CiportError('CIPORT_E_NOT_FOUND', `no agent ${idOrName}`);
      }
      for (const a of hit) a.revoked_at = now;
      return hit.map((a) => ({ ...a }));
    });
    for (const a of revoked) this.emit('revoked', a);
    return revoked.map(agentSummary);
  }
}
