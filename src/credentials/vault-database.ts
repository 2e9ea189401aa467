// Per-session database credentials minted by Vault's database secrets engine
// (`credentials.vault_database` on a postgres or mysql target; docs/secrets.md): at the first
// connection of a session the exit reads `GET /v1/<mount>/creds/<role>` (Vault creates the
// account), keeps it for the session, and revokes the lease (`PUT /v1/sys/leases/revoke`, Vault
// drops the account) when the session ends. A revoke that fails is logged, audited
// (`credential.revoke_failed`), counted and retried with backoff, as for `credentials.dynamic`.
// The lease's own TTL (the Vault role's) bounds an account whose revoke never gets through.
//
// Live leases are also kept in a file (`leaseFile`, vault-lease-file.ts) so that they outlive the
// process: a reaper (at start and periodically) revokes every lease of the file, and of this
// process, whose session is over (past its expiry, or `ended` says so: the gateway asks its store).
import type { TargetConfig } from '../config/targets/index.js';
import { CiportError } from '../errors/index.js';
import type { RoleCredential, RoleEvent, RoleLog, RoleSession } from './dynamic.js';
import type { VaultClient } from './vault-client.js';
import { type LeaseEntry, readLeaseFile, writeLeaseFile } from './vault-lease-file.js';

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
  /** Keep the live leases here (`<data_dir>/vault-leases.json`); without it, only in memory. */
  leaseFile?: string | undefined;
  /** The sessions among `ids` that are over (besides expiry; the gateway asks its store). */
  ended?: ((ids: string[]) => Promise<ReadonlySet<string>>) | undefined;
}

/** Ended sessions remembered (refused a new lease); far more than end within a lease's TTL. */
const ENDED_KEPT = 10_000;

interface Lease {
  session: string;
  target: string;
  user: string;
  leaseId: string;
  /** The session's expiry, epoch ms. */
  expiresAt: number;
  failures: number;
  /** A revoke is under way or waits for its retry: the reaper leaves it alone. */
  revoking: boolean;
}

export class VaultDatabaseCredentials {
  readonly #specs: Map<string, VaultDbSpec>;
  readonly #opt: VaultDatabaseOptions;
  /** `${session}\0${target}` → the credential being read / read. */
  readonly #live = new Map<string, Promise<RoleCredential & { leaseId: string }>>();
  /** Leases whose revoke failed, retried by a timer. */
  readonly #failed = new Set<Lease>();
  readonly #timers = new Set<NodeJS.Timeout>();
  /** Every lease not yet revoked (this process's and the file's), by lease id: the file's content. */
  readonly #held = new Map<string, Lease>();
  #reaper: NodeJS.Timeout | undefined;
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
    if (options.leaseFile) {
      try {
        for (const e of readLeaseFile(options.leaseFile)) {
          const expiresAt = Date.parse(e.expires_at);
          this.#held.set(e.lease_id, {
            session: e.session,
            target: e.target,
            user: e.user,
            leaseId: e.lease_id,
            expiresAt: Number.isFinite(expiresAt) ? expiresAt : 0,
            failures: 0,
            revoking: false,
          });
        }
      } catch (err) {
        // Never fail the start for it: those leases end with their TTL, as before this file.
        (options.log.error ?? options.log.warn).call(
          options.log,
          { file: options.leaseFile, err: (err as Error).message },
          'vault lease file unreadable: its leases are left to their Vault TTL',
        );
      }
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
    this.#held.set(leaseId, {
      session: session.id,
      target,
      user,
      leaseId,
      expiresAt: session.expiresAt,
      failures: 0,
      revoking: false,
    });
    this.#save();
    return { user, password: data.password, leaseId };
  }

  /** Revoke the session's leases on `targets`. Never throws. */
  async revokeSession(sessionId: string, targets: readonly string[], reason: string): Promise<void> {
    this.#markEnded(sessionId);
    await Promise.all(
      targets
        .filter((t) => this.#specs.has(t))
        .map(async (target) => {
          const key = `${sessionId}\u0000${target}`;
          const pending = this.#live.get(key);
          this.#live.delete(key);
          await pending?.catch(() => undefined);
          // This process's lease, and any of the file's (minted before a restart).
          const mine = [...this.#held.values()].filter(
            (l) => l.session === sessionId && l.target === target && !l.revoking,
          );
          await Promise.all(mine.map((l) => this.#revoke(l, reason)));
        }),
    );
  }

  /**
   * Revoke every held lease whose session is over: past its expiry, or `ended` says so. Returns
   * how many were revoked. Throws only when `ended` does (then nothing was revoked).
   */
  async reap(now = Date.now()): Promise<number> {
    if (!this.#opt.vault) return 0;
    const candidates = [...this.#held.values()].filter((l) => !l.revoking);
    if (candidates.length === 0) return 0;
    const asked = candidates.filter((l) => l.expiresAt > now).map((l) => l.session);
    const ended =
      asked.length > 0 && this.#opt.ended ? await this.#opt.ended([...new Set(asked)]) : new Set<string>();
    const over = candidates.filter((l) => !l.revoking && (l.expiresAt <= now || ended.has(l.session)));
    for (const l of over) {
      this.#markEnded(l.session);
      this.#live.delete(`${l.session}\u0000${l.target}`);
    }
    await Promise.all(over.map((l) => this.#revoke(l, 'reaper')));
    return over.filter((l) => !this.#held.has(l.leaseId)).length;
  }

  /** Reap now (failures logged) and every `periodMs` (0: only now) until close(). */
  async startReaper(periodMs: number): Promise<void> {
    if (!this.#opt.vault) return;
    const run = () =>
      this.reap().catch((err) =>
        this.#opt.log.warn({ err: (err as Error).message }, 'vault lease reaper failed'),
      );
    await run();
    if (periodMs > 0 && !this.#reaper) {
      this.#reaper = setInterval(run, periodMs);
      this.#reaper.unref();
    }
  }

  close(): void {
    if (this.#reaper) clearInterval(this.#reaper);
    this.#reaper = undefined;
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
  }

  #markEnded(sessionId: string): void {
    this.#ended.add(sessionId);
    if (this.#ended.size > ENDED_KEPT) this.#ended.delete(this.#ended.values().next().value as string);
  }

  /** Write the held leases to the lease file. A failure is logged: the lease still serves. */
  #save(): void {
    const file = this.#opt.leaseFile;
    if (!file) return;
    const entries: LeaseEntry[] = [...this.#held.values()].map((l) => ({
      lease_id: l.leaseId,
      session: l.session,
      target: l.target,
      user: l.user,
      expires_at: new Date(l.expiresAt).toISOString(),
    }));
    try {
      writeLeaseFile(file, entries);
    } catch (err) {
      (this.#opt.log.error ?? this.#opt.log.warn).call(
        this.#opt.log,
        { file, err: (err as Error).message },
        'vault lease file not written: a restart would leave these leases to their Vault TTL',
      );
    }
  }

  async #revoke(lease: Lease, reason: string): Promise<void> {
    const vault = this.#opt.vault as VaultClient;
    lease.revoking = true;
    try {
      await vault.request('PUT', 'sys/leases/revoke', { lease_id: lease.leaseId });
    } catch (err) {
      await this.#revokeFailed(lease, reason, err);
      return;
    }
    this.#failed.delete(lease);
    this.#held.delete(lease.leaseId);
    this.#save();
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
