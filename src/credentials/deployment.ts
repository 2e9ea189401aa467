// The deployment id: the ownership tag of every per-session database account (PostgreSQL roles,
// MySQL users). Several ciport deployments (each with its own store) may share a database
// server; each only ever touches accounts tagged with its own id (docs/credentials.md).
import { randomBytes } from 'node:crypto';

/** Store meta key of this deployment's id. */
export const DEPLOYMENT_META_KEY = 'deployment_id';

const DEPLOYMENT_RE = /^[0-9a-f]{8,32}$/;

/** A deployment id as ciport makes them (10 lower-case hex), or one received from a gateway. */
export function isDeploymentId(value: unknown): value is string {
  return typeof value === 'string' && DEPLOYMENT_RE.test(value);
}

/**
 * This deployment's id: generated once (10 random hex) and kept in the store, so every gateway
 * sharing the store, and every restart, tags and reaps the same accounts.
 */
export function deploymentIdOf(store: { initMeta(key: string, value: string): Promise<string> }) {
  return store.initMeta(DEPLOYMENT_META_KEY, randomBytes(5).toString('hex'));
}
