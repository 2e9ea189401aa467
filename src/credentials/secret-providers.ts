// Secrets read from a provider (docs/secrets.md): AWS Secrets Manager and Vault KV v2. Read at
// start (a failure fails the start, naming the config path), then again every `refresh` (default
// 5 min) and at once when an upstream refuses the value (Secret.refused(): at most every 5 s per
// secret), so a rotation reaches the next connection without a restart. While a provider cannot
// be read the last good value stays in use: a warn line once per outage and one when it
// recovers, `ciport_secret_stale{source}` = 1 and `ciport_secret_refresh_failures_total{source}`.
// The `source` label and every message name the secret (id, path), never its value.
import type { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { Counter, Gauge, type Registry } from 'prom-client';
import { formatPath, type Path, secretsIn } from '../config/load.js';
import type { AwsSecretsManagerSource, Secret, VaultKvSource } from '../config/secret.js';
import type { VaultConfig } from '../config/vault.js';
import { CiportError, ConfigError } from '../errors/index.js';
import { sdkErrorText } from '../errors/sdk-message.js';
import { VaultClient, type VaultLog } from './vault-client.js';

const DEFAULT_REFRESH_MS = 5 * 60_000;
/** A refused value is re-read at most this often per secret. */
const REFUSED_INTERVAL_MS = 5_000;

export interface SecretProvidersOptions {
  log: VaultLog;
  /** Where the two metrics go (gateway: its /metrics registry). */
  registry?: Registry | undefined;
  vault?: VaultConfig | undefined;
  /** The config file, for start errors (`file: path: …`). */
  file?: string | undefined;
  /** Overrides for tests: re-read period of every secret, refused-rate limit. */
  refreshMs?: number | undefined;
  refusedIntervalMs?: number | undefined;
}

interface Entry {
  secret: Secret;
  where: string;
  /** Metric label and log field: `aws_secretsmanager:<id>` / `vault:<path>`. */
  label: string;
  refreshMs: number;
  timer?: NodeJS.Timeout | undefined;
  stale: boolean;
  lastRefused: number;
  reading?: Promise<boolean> | undefined;
}

export class SecretProviders {
  readonly #entries: Entry[] = [];
  readonly #opt: SecretProvidersOptions;
  readonly #stale: Gauge<'source'> | undefined;
  readonly #failures: Counter<'source'> | undefined;
  readonly vault: VaultClient | undefined;
  #aws = new Map<string, SecretsManagerClient>();
  #closed = false;

  private constructor(options: SecretProvidersOptions) {
    this.#opt = options;
    this.vault = options.vault ? new VaultClient(options.vault, options.log) : undefined;
    const registers = options.registry ? [options.registry] : [];
    if (options.registry) {
      this.#stale = new Gauge({
        name: 'ciport_secret_stale',
        help: 'Secrets whose last read from their provider failed (the last good value is in use), by source.',
        labelNames: ['source'],
        registers,
      });
      this.#failures = new Counter({
        name: 'ciport_secret_refresh_failures_total',
        help: 'Failed reads of provider secrets (AWS Secrets Manager, Vault) after start, by source.',
        labelNames: ['source'],
        registers,
      });
    }
  }

  /**
   * Read every provider secret in `config` (its `targets`) now, then keep them fresh. Rejects
   * CIPORT_E_SECRET_UNAVAILABLE listing each secret that could not be read, by config path.
   */
  static async start(
    config: { targets: readonly unknown[] },
    options: SecretProvidersOptions,
  ): Promise<SecretProviders> {
    const providers = new SecretProviders(options);
    for (const [path, secret] of secretsIn(config.targets, ['targets'])) {
      if (secret.fromProvider) providers.#add(path, secret);
    }
    try {
      await providers.#startAll();
    } catch (err) {
      providers.close();
      throw err;
    }
    return providers;
  }

  /** Provider secrets being kept fresh. */
  get count(): number {
    return this.#entries.length;
  }

  close(): void {
    this.#closed = true;
    for (const e of this.#entries) if (e.timer) clearTimeout(e.timer);
    this.vault?.close();
    for (const c of this.#aws.values()) c.destroy();
  }

  /** Read every secret again now (tests, and `refresh` timers). Resolves when done. */
  async refreshAll(): Promise<void> {
    await Promise.all(this.#entries.map((e) => this.#refresh(e)));
  }

  #add(path: Path, secret: Secret): void {
    const s = secret.source;
    const label =
      'aws_secretsmanager' in s
        ? `aws_secretsmanager:${s.aws_secretsmanager.secret_id}`
        : `vault:${'vault' in s ? s.vault.path : '?'}`;
    const own =
      'aws_secretsmanager' in s ? s.aws_secretsmanager.refresh : 'vault' in s ? s.vault.refresh : undefined;
    const file = this.#opt.file ? `${this.#opt.file}: ` : '';
    const entry: Entry = {
      secret,
      where: `${file}${formatPath(path)}`,
      label,
      refreshMs: this.#opt.refreshMs ?? own ?? DEFAULT_REFRESH_MS,
      stale: false,
      lastRefused: 0,
    };
    secret.onRefused(() => this.#onRefused(entry));
    this.#entries.push(entry);
  }

  async #startAll(): Promise<void> {
    if (this.vault && this.#entries.some((e) => 'vault' in e.secret.source)) {
      try {
        await this.vault.ready();
      } catch (err) {
        throw new ConfigError(
          'CIPORT_E_SECRET_UNAVAILABLE',
          `vault: cannot log in to ${this.vault.address}: ${(err as Error).message}`,
          { cause: err },
        );
      }
    }
    const problems: string[] = [];
    await Promise.all(
      this.#entries.map(async (e) => {
        try {
          e.secret.update(await this.#read(e));
        } catch (err) {
          problems.push(`${e.where}: cannot read ${e.secret.origin}: ${(err as Error).message}`);
        }
      }),
    );
    if (problems.length > 0) {
      throw new ConfigError('CIPORT_E_SECRET_UNAVAILABLE', problems.sort().join('\n'), {
        details: { missing: problems.length },
      });
    }
    for (const e of this.#entries) {
      this.#stale?.set({ source: e.label }, 0);
      this.#schedule(e);
    }
  }

  #schedule(e: Entry): void {
    if (this.#closed) return;
    e.timer = setTimeout(() => {
      void this.#refresh(e).finally(() => this.#schedule(e));
    }, e.refreshMs);
    e.timer.unref();
  }

  /** An upstream refused the value: read it again unless that was done a moment ago. */
  #onRefused(e: Entry): Promise<boolean> {
    if (e.reading) return e.reading;
    const now = Date.now();
    if (now - e.lastRefused < (this.#opt.refusedIntervalMs ?? REFUSED_INTERVAL_MS))
      return Promise.resolve(false);
    e.lastRefused = now;
    this.#opt.log.info(
      { origin: e.secret.origin, source: e.label },
      'secret refused upstream: reading it again from its provider',
    );
    return this.#refresh(e);
  }

  /** Read one secret; keep the last good value on failure. Resolves whether the value changed. */
  #refresh(e: Entry): Promise<boolean> {
    e.reading ??= this.#read(e)
      .then(
        (value) => {
          if (e.stale) {
            e.stale = false;
            this.#opt.log.info(
              { origin: e.secret.origin, source: e.label },
              'secret provider readable again',
            );
          }
          this.#stale?.set({ source: e.label }, 0);
          const changed = e.secret.update(value);
          if (changed)
            this.#opt.log.info(
              { origin: e.secret.origin, source: e.label },
              'secret rotated: new value in use',
            );
          return changed;
        },
        (err: unknown) => {
          this.#failures?.inc({ source: e.label });
          this.#stale?.set({ source: e.label }, 1);
          if (!e.stale) {
            e.stale = true;
            this.#opt.log.warn(
              { origin: e.secret.origin, source: e.label, where: e.where, err: (err as Error).message },
              'secret provider unreachable: keeping the last good value',
            );
          }
          return false;
        },
      )
      .finally(() => {
        e.reading = undefined;
      });
    return e.reading;
  }

  #read(e: Entry): Promise<string> {
    const s = e.secret.source;
    if ('aws_secretsmanager' in s) return this.#readAws(s.aws_secretsmanager);
    if ('vault' in s) return this.#readVault(s.vault);
    throw new CiportError('CIPORT_E_INTERNAL', `${e.where}: not a provider secret`);
  }

  async #readAws(src: AwsSecretsManagerSource): Promise<string> {
    const region = src.region ?? '';
    // Loaded on first use: processes without Secrets Manager secrets never load the SDK (nor
    // get its Node-version warning on stderr).
    const { GetSecretValueCommand, SecretsManagerClient } = await import('@aws-sdk/client-secrets-manager');
    let client = this.#aws.get(region);
    if (!client) {
      // The SDK's own provider chain and endpoint resolution (AWS_ENDPOINT_URL_SECRETS_MANAGER…).
      client = new SecretsManagerClient({ maxAttempts: 2, ...(src.region ? { region: src.region } : {}) });
      this.#aws.set(region, client);
    }
    let out: { SecretString?: string | undefined; SecretBinary?: Uint8Array | undefined };
    try {
      out = await client.send(
        new GetSecretValueCommand({
          SecretId: src.secret_id,
          ...(src.version_stage ? { VersionStage: src.version_stage } : {}),
        }),
      );
    } catch (err) {
      // The SDK's message names the secret and the reason (AccessDenied, not found), not a value.
      throw new Error(`Secrets Manager GetSecretValue: ${sdkErrorText(err)}`);
    }
    const text =
      out.SecretString ?? (out.SecretBinary ? Buffer.from(out.SecretBinary).toString('utf8') : undefined);
    if (text === undefined) throw new Error('the secret has no SecretString');
    return pickKey(text, src.key, `secret ${src.secret_id}`);
  }

  async #readVault(src: VaultKvSource): Promise<string> {
    if (!this.vault) throw new Error('no `vault:` block in the configuration');
    const { mount, rest } = splitKvPath(src.path);
    const api = `${mount}/data/${rest}`;
    const res = await this.vault.request('GET', api);
    if (res.status === 404)
      throw new Error(`vault: ${api}: no such secret (or its current version is deleted)`);
    const data = (res.body?.data as { data?: Record<string, unknown> } | undefined)?.data;
    if (!data || typeof data !== 'object') throw new Error(`vault: ${api}: not a KV v2 answer`);
    const v = data[src.key];
    if (typeof v !== 'string' && typeof v !== 'number') {
      throw new Error(`vault: ${api}: no string field "${src.key}"`);
    }
    return String(v);
  }
}

/** `secret/ci/db` → mount `secret`, path `ci/db` (docs/secrets.md). */
export function splitKvPath(path: string): { mount: string; rest: string } {
  const slash = path.indexOf('/');
  return { mount: path.slice(0, slash), rest: path.slice(slash + 1) };
}

/** The whole SecretString, or one field of it as JSON. Errors never quote the string. */
function pickKey(text: string, key: string | undefined, what: string): string {
  if (key === undefined) return text;
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch {
    throw new Error(`${what}: key "${key}" given but the SecretString is not JSON`);
  }
  const v = obj && typeof obj === 'object' ? (obj as Record<string, unknown>)[key] : undefined;
  if (typeof v !== 'string' && typeof v !== 'number') throw new Error(`${what}: no string field "${key}"`);
  return String(v);
}
