// The Vault leases a host holds (`<data_dir>/vault-leases.json`, docs/secrets.md): written at
// each mint and revoke so that a host that restarts (or crashed) still revokes the leases of
// sessions that ended meanwhile, instead of leaving the accounts to the Vault role's TTL. An
// entry names the lease, its session and target, the account (a name, as in the audit) and the
// session's expiry: never a password. Replaced atomically (temp file 0600, then rename).
import { chmodSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

export const VAULT_LEASES_FILE = 'vault-leases.json';

export interface LeaseEntry {
  lease_id: string;
  session: string;
  target: string;
  /** The account's name (not secret: it is in the audit). */
  user: string;
  /** ISO 8601: the session's expiry (not the lease's). */
  expires_at: string;
}

/** The file's entries; [] when there is none. Throws when it is unreadable or not ours. */
export function readLeaseFile(file: string): LeaseEntry[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  const parsed = JSON.parse(text) as { leases?: unknown };
  if (!Array.isArray(parsed.leases)) throw new Error('no leases list');
  return parsed.leases.filter(
    (e): e is LeaseEntry =>
      typeof e === 'object' &&
      e !== null &&
      ['lease_id', 'session', 'target', 'user', 'expires_at'].every(
        (k) => typeof (e as Record<string, unknown>)[k] === 'string',
      ),
  );
}

export function writeLeaseFile(file: string, leases: readonly LeaseEntry[]): void {
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.tmp`;
  writeFileSync(tmp, `${JSON.stringify({ leases }, null, 2)}\n`, { mode: 0o600, flush: true });
  chmodSync(tmp, 0o600);
  renameSync(tmp, file);
}
