import { readFileSync } from 'node:fs';
import { inspect } from 'node:util';
import { ConfigError } from '../errors/index.js';

/** `{aws_secretsmanager: …}`: a secret of AWS Secrets Manager (docs/secrets.md). */
export interface AwsSecretsManagerSource {
  secret_id: string;
  /** A field of a JSON SecretString; absent: the whole string. */
  key?: string | undefined;
  version_stage?: string | undefined;
  region?: string | undefined;
  /** Re-read period in ms (default 5 min). */
  refresh?: number | undefined;
}

/** `{vault: …}`: a field of a Vault KV v2 secret, `path` = `<mount>/<path>` (docs/secrets.md). */
export interface VaultKvSource {
  path: string;
  key: string;
  refresh?: number | undefined;
}

/** Sources read by a provider at start and re-read on a schedule (credentials/providers.ts). */
export type ProviderSource = { aws_secretsmanager: AwsSecretsManagerSource } | { vault: VaultKvSource };

/** Where a secret comes from, as written in the config: `{env}`, `{file}` or a provider. */
export type SecretSource = { env: string } | { file: string } | ProviderSource;

export function isProviderSource(source: SecretSource): source is ProviderSource {
  return 'aws_secretsmanager' in source || 'vault' in source;
}

/**
 * A secret named by the config. `{env}`/`{file}` are read by the loader (`resolve()`); provider
 * sources by the secret providers at start (`update()`), which also re-read them on a schedule
 * and when an upstream refuses the value (`refused()`). Every way of turning a Secret into text
 * (String(), JSON, util.inspect, pino) yields a redacted marker and only `reveal()` gives the
 * value — the current one: exits call it per connection, so a rotated value is used at once.
 */
export class Secret {
  readonly source: SecretSource;
  #value: string | undefined;
  #onRefused: (() => Promise<boolean>) | undefined;

  constructor(source: SecretSource, value?: string) {
    this.source = source;
    this.#value = value;
  }

  /** Human description of where the value comes from; never the value. */
  get origin(): string {
    const s = this.source;
    if ('env' in s) return `env:${s.env}`;
    if ('file' in s) return `file:${s.file}`;
    if ('vault' in s) return `vault:${s.vault.path}#${s.vault.key}`;
    const a = s.aws_secretsmanager;
    return `aws_secretsmanager:${a.secret_id}${a.key !== undefined ? `#${a.key}` : ''}`;
  }

  /** Read by a provider (AWS Secrets Manager, Vault) rather than the loader. */
  get fromProvider(): boolean {
    return isProviderSource(this.source);
  }

  get resolved(): boolean {
    return this.#value !== undefined;
  }

  /**
   * Read the value from its source. `where` names the config location for error messages.
   * Provider sources are left to the providers (they are read asynchronously at start).
   */
  resolve(env: NodeJS.ProcessEnv = process.env, where = 'config'): void {
    const source = this.source;
    if (isProviderSource(source)) return;
    if ('env' in source) {
      const v = env[source.env];
      if (v === undefined || v === '') {
        throw new ConfigError(
          'CIPORT_E_SECRET_UNAVAILABLE',
          `${where}: environment variable ${source.env} is not set`,
        );
      }
      this.#value = v;
      return;
    }
    try {
      // Files conventionally end with a newline that is not part of the secret.
      this.#value = readFileSync(source.file, 'utf8').replace(/\r?\n$/, '');
    } catch (err) {
      const reason = (err as NodeJS.ErrnoException).code ?? 'unreadable';
      throw new ConfigError(
        'CIPORT_E_SECRET_UNAVAILABLE',
        `${where}: cannot read secret file ${source.file} (${reason})`,
      );
    }
  }

  /** A provider read a (possibly new) value. Returns whether it changed. */
  update(value: string): boolean {
    const changed = this.#value !== value;
    this.#value = value;
    return changed;
  }

  /** What `refused()` does: the providers re-read the secret (rate-limited). */
  onRefused(handler: () => Promise<boolean>): void {
    this.#onRefused = handler;
  }

  /**
   * The upstream refused this value (authentication failed): a provider-backed secret is read
   * again at once (at most every few seconds), so a rotation is picked up by the next
   * connection. Resolves true when the value changed. Never throws; env/file: false.
   */
  async refused(): Promise<boolean> {
    if (!this.#onRefused) return false;
    try {
      return await this.#onRefused();
    } catch {
      return false;
    }
  }

  reveal(): string {
    if (this.#value === undefined) {
      throw new ConfigError('CIPORT_E_SECRET_UNAVAILABLE', `secret ${this.origin} was not resolved`);
    }
    return this.#value;
  }

  toString(): string {
    return `[secret ${this.origin}]`;
  }

  toJSON(): SecretSource {
    return this.source;
  }

  [inspect.custom](): string {
    return this.toString();
  }
}
