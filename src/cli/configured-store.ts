// The store a gateway configuration names, opened by the offline commands (`ciport audit`,
// `ciport review --config`) on the operator's or auditor's machine.
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { loadGatewayConfig } from '../config/load.js';
import { Secret } from '../config/secret.js';
import { CiportError } from '../errors/index.js';
import { openStore, type Store, sqliteFileOf } from '../store/index.js';

/**
 * Open the store a gateway config names, resolving only the store's own secret: an auditor's
 * machine need not hold the gateway's TLS key or admin tokens. A SQLite file that does not exist
 * is refused (CIPORT_E_STORE_UNAVAILABLE) unless `create` (what fills a new store, e.g. tests).
 */
export async function openConfiguredStore(
  file: string,
  env: NodeJS.ProcessEnv,
  options: { create?: boolean } = {},
): Promise<Store> {
  const cfg = loadGatewayConfig(file, { resolveSecrets: false });
  const url = cfg.store && 'postgres' in cfg.store ? cfg.store.postgres.url : undefined;
  if (url instanceof Secret && !url.resolved) url.resolve(env, `${file}: store.postgres.url`);
  // Reading commands (audit export and verify, review) must not create an empty store where the
  // gateway's is not: a relative data_dir read from another directory would give "0 events,
  // chain intact" for a store nobody read.
  const sqlite = sqliteFileOf(cfg.store, cfg.data_dir);
  if (!options.create && sqlite !== undefined && !existsSync(sqlite)) {
    throw new CiportError(
      'CIPORT_E_STORE_UNAVAILABLE',
      `no store at ${resolve(sqlite)} (${file}: a relative data_dir or store path is read from the working directory, ${process.cwd()})`,
    );
  }
  return openStore(cfg.store, { dataDir: cfg.data_dir });
}

export async function withStore<T>(
  file: string,
  env: NodeJS.ProcessEnv,
  fn: (store: Store) => Promise<T>,
): Promise<T> {
  const store = await openConfiguredStore(file, env);
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}
