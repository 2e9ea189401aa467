// Per-session database credentials minted by Vault's database secrets engine
// (`credentials.vault_database` on a postgres or mysql target; docs/secrets.md): at the first
// connection of a session the exit reads `GET /v1/<mount>/creds/<role>` (Vault creates the
// account), keeps it for the session, and revokes the lease (`PUT /v1/sys/leases/revoke`, Vault
// drops the account) when the session ends. A revoke that fails is logged, audited
// (`credential.revoke_failed`), counted and retried with backoff, as for `credentials.dynamic`.
// The lease's own TTL (the Vault role's) bounds an account whose revoke never gets through.
import type { TargetConfig } from '../config/targets/index.js';
import { CiportError } from '../errors/index.js';
import type { RoleCredential, RoleEvent, RoleLog, RoleSession } from './dynamic.js';
import type { VaultClient } from './vault-client.js';

export interface VaultDbSpec {
  target: string;
  mount: string;
  role: string;
}

export function vaultDatabaseSpecFromTarget(target: TargetConfig): VaultDbSpec | undefined {
  if (target.protocol !== 'postgres' && target.protocol !== 'mysql') return undefined;
  const v = target.credentials?.vault_database;
  return v ? { target: target.name, mount: v.mount, role: v.role } : undefined;
}

export interface VaultDatabaseOptions {
  vault: VaultClient | undefined;
  log: RoleLog;
  audit: (event: RoleEvent) => Promise<void>;
  onRevokeFailed?: ((target: string) => void) | undefined;
  /** First retry of a failed revoke after this, doubling (default 60 s), up to retryMaxMs (1 h). */
  retryBaseMs?: number;
  retryMaxMs?: number;
}

/** Ended sessions remembered (refused a new lease); far more than end within a lease's TTL. */
const ENDED_KEPT = 10_000;

interface Lease {
  session: string;
  target: string;
  user: string;
  leaseId: string;
  failures: number;
}

export class VaultDatabaseCredentials {
  readonly #specs: Map<string, VaultDbSpec>;
  readonly #opt: VaultDatabaseOptions;
  /** `${session}\0${target}` → the credential being read / read. */
  readonly #live = new Map<string, Promise<RoleCredential & { leaseId: string }>>();
  /** Leases whose revoke failed, retried by a timer. */
  readonly #failed = new Set<Lease>();
  readonly #timers = new Set<NodeJS.Timeout>();
  /**
   * Sessions whose leases were revoked (their end): a connection still on its way must not mint a
   * new lease for them, which nothing would revoke (only its TTL would end it). Bounded, oldest out.
   */
  readonly #ended = new Set<string>();

  constructor(specs: VaultDbSpec[], options: VaultDatabaseOptions) {
    this.#specs = new Map(specs.map((s) => [s.target, s]));
    this.#opt = options;
    if (specs.length > 0 && !options.vault) {
      throw new CiportError('CIPORT_E_CONFIG_INVALID', 'credentials.vault_database needs the `vault:` block');
    }
  }

  get targets(): string[] {
    return [...this.#specs.keys()];
  }

  has(target: string): boolean {
    return this.#specs.has(target);
  }

  /** Leases waiting for a retried revoke. */
  get failing(): number {
    return this.#failed.size;
  }

  /** The session's credential on `target`, read from Vault on first use (shared by concurrent callers). */
  ensure(session: RoleSession, target: string): Promise<RoleCredential> {
    if (this.#ended.has(session.id) || session.expiresAt <= Date.now()) {
      return Promise.reject(
        new CiportError(
          'CIPORT_E_SESSION_ENDED',
          `session ${session.id} has ended: no Vault credential for it`,
        ),
      );
    }
    const key = `${session.id}\u0000${target}`;
    let pending = this.#live.get(key);
    if (!pending) {
      pending = this.#mint(session, target);
      this.#live.set(key, pending);
      pending.catch(() => this.#live.delete(key));
    }
    return pending.then(({ user, password }) => ({ user, password }));
  }

  async #mint(session: RoleSession, target: string): Promise<RoleCredential & { leaseId: string }> {
    const spec = this.#specs.get(target);
    const vault = this.#opt.vault;
    if (!spec || !vault)
      throw new CiportError('CIPORT_E_CONFIG_INVALID', `target ${target} has no vault_database`);
    const path = `${spec.mount}/creds/${spec.role}`;
    const res = await vault.request('GET', path);
    if (res.status === 404)
      throw new CiportError('CIPORT_E_VAULT_REFUSED', `vault: GET ${path}: no such role`);
    const data = res.body?.data as { username?: unknown; password?: unknown } | undefined;
    const leaseId = res.body?.lease_id;
    const ttl = res.body?.lease_duration;
    if (
      typeof data?.username !== 'string' ||
      typeof data.password !== 'string' ||
      typeof leaseId !== 'string'
    ) {
      throw new CiportError(
        'CIPORT_E_VAULT_REFUSED',
        `vault: GET ${path}: not a database credentials answer`,
      );
    }
    const user = data.username;
    const validUntil =
      typeof ttl === 'number' && ttl > 0 ? new Date(Date.now() + ttl * 1000).toISOString() : undefined;
    this.#opt.log.info(
      { session: session.id, target, role: user, lease_id: leaseId },
      'vault database credential created',
    );
    await this.#audit({
      type: 'credential.created',
      session: session.id,
      target,
      role: user,
      lease_id: leaseId,
      ...(validUntil ? { valid_until: validUntil } : {}),
    });
    return { user, password: data.password, leaseId };
  }

  /** Revoke the session's leases on `targets`. Never throws. */
  async revokeSession(sessionId: string, targets: readonly string[], reason: string): Promise<void> {
    this.#ended.add(sessionId);
    if (this.#ended.size > ENDED_KEPT) this.#ended.delete(this.#ended.values().next().value as string);
    await Promise.all(
      targets
        .filter((t) => this.#specs.has(t))
        .map(async (target) => {
          const key = `${sessionId}\u0000${target}`;
          const pending = this.#live.get(key);
          this.#live.delete(key);
          const made = await pending?.catch(() => undefined);
          if (!made) return;
          await this.#revoke(
            { session: sessionId, target, user: made.user, leaseId: made.leaseId, failures: 0 },
            reason,
          );
        }),
    );
  }

  close(): void {
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
  }

  async #revoke(lease: Lease, reason: string): Promise<void> {
    const vault = this.#opt.vault as VaultClient;
    try {
      await vault.request('PUT', 'sys/leases/revoke', { lease_id: lease.leaseId });
    } catch (err) {
      await this.#revokeFailed(lease, reason, err);
      return;
    }
    this.#failed.delete(lease);
    this.#opt.log.info(
      { session: lease.session, target: lease.target, role: lease.user, lease_id: lease.leaseId, reason },
      'vault database lease revoked',
    );
    await this.#audit({
      type: 'credential.revoked',
      session: lease.session,
      target: lease.target,
      role: lease.user,
      lease_id: lease.leaseId,
      reason,
    });
  }

  async #revokeFailed(lease: Lease, reason: string, err: unknown): Promise<void> {
    lease.failures += 1;
    this.#failed.add(lease);
    const base = this.#opt.retryBaseMs ?? 60_000;
    const delay = Math.min(this.#opt.retryMaxMs ?? 3_600_000, base * 2 ** Math.min(lease.failures - 1, 30));
    const next = new Date(Date.now() + delay).toISOString();
    const code = 'CIPORT_E_VAULT_LEASE_REVOKE_FAILED';
    const error = (err as Error).message;
    (this.#opt.log.error ?? this.#opt.log.warn).call(
      this.#opt.log,
      {
        session: lease.session,
        target: lease.target,
        role: lease.user,
        lease_id: lease.leaseId,
        code,
        attempt: lease.failures,
        next_attempt: next,
        err: error,
      },
      `vault database lease not revoked (${code}); retried with backoff`,
    );
    try {
      this.#opt.onRevokeFailed?.(lease.target);
    } catch {
      // metrics never break a revocation
    }
    await this.#audit({
      type: 'credential.revoke_failed',
      session: lease.session,
      target: lease.target,
      role: lease.user,
      lease_id: lease.leaseId,
      reason,
      error,
      code,
      attempt: lease.failures,
      next_attempt: next,
    });
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      if (this.#failed.has(lease)) void this.#revoke(lease, reason);
    }, delay);
    timer.unref();
    this.#timers.add(timer);
  }

  async #audit(event: RoleEvent): Promise<void> {
    try {
      await this.#opt.audit(event);
    } catch (err) {
      this.#opt.log.warn(
        { session: event.session, err: (err as Error).message },
        `audit ${event.type} failed`,
      );
    }
  }
}
