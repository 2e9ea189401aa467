import { join } from 'node:path';
import type { GatewayConfig } from '../config/schema.js';
import { openPostgresEngine, openSqliteEngine } from './engines.js';
import { KyselyStore } from './kysely-store.js';
import type { Store } from './types.js';

/** The `store:` section of the gateway config. */
export type StoreConfig = NonNullable<GatewayConfig['store']>;

export interface OpenStoreOptions {
  /** Where the default SQLite file lives when the config has no `store:` section. */
  dataDir: string;
  /** Epoch-ms clock; tests inject one. */
  clock?: () => number;
}

export const DEFAULT_SQLITE_FILE = 'ciport.db';

/** The SQLite file a config names (undefined for PostgreSQL). */
export function sqliteFileOf(config: StoreConfig | undefined, dataDir: string): string | undefined {
  if (config === undefined) return join(dataDir, DEFAULT_SQLITE_FILE);
  return 'sqlite' in config ? config.sqlite.path : undefined;
}

/**
 * Open the configured store and bring its schema up to date. Without a `store:` section the
 * embedded default is SQLite at `<dataDir>/ciport.db`. A relative SQLite path is relative to the
 * working directory, like `data_dir`. Fails with CIPORT_E_STORE_UNAVAILABLE when the database
 * cannot be reached and CIPORT_E_STORE_SCHEMA when its schema is not one this version can use.
 */
export async function openStore(config: StoreConfig | undefined, options: OpenStoreOptions): Promise<Store> {
  const sqlite = sqliteFileOf(config, options.dataDir);
  const engine =
    sqlite !== undefined
      ? await openSqliteEngine(sqlite)
      : await openPostgresEngine(
          config && 'postgres' in config
            ? typeof config.postgres.url === 'string'
              ? config.postgres.url
              : config.postgres.url.reveal()
            : '',
        );
  return KyselyStore.open(engine, options.clock);
}
