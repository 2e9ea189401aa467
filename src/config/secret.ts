import { readFileSync } from 'node:fs';
import { inspect } from 'node:util';
import { ConfigError } from '../errors/index.js';

/** Where a secret comes from, as written in the config: `{env: NAME}` or `{file: PATH}`. */
export type SecretSource = { env: string } | { file: string };

/**
 * A secret named by the config. The loader resolves it once (`resolve()`); every way of
 * turning it into text (String(), JSON, util.inspect, pino) yields a redacted marker and only
 * `reveal()` gives the value, so a leak needs an explicit call.
 */
export class Secret {
  readonly source: SecretSource;
  #value: string | undefined;

  constructor(source: SecretSource, value?: string) {
    this.source = source;
    this.#value = value;
  }

  /** Human description of where the value comes from; never the value. */
  get origin(): string {
    return 'env' in this.source ? `env:${this.source.env}` : `file:${this.source.file}`;
  }

  get resolved(): boolean {
    return this.#value !== undefined;
  }

  /** Read the value from its source. `where` names the config location for error messages. */
  resolve(env: NodeJS.ProcessEnv = process.env, where = 'config'): void {
    if ('env' in this.source) {
      const v = env[this.source.env];
      if (v === undefined || v === '') {
        throw new ConfigError(
          'CIPORT_E_SECRET_UNAVAILABLE',
          `${where}: environment variable ${this.source.env} is not set`,
        );
      }
      this.#value = v;
      return;
    }
    try {
      // Files conventionally end with a newline that is not part of the secret.
      this.#value = readFileSync(this.source.file, 'utf8').replace(/\r?\n$/, '');
    } catch (err) {
      const reason = (err as NodeJS.ErrnoException).code ?? 'unreadable';
      throw new ConfigError(
        'CIPORT_E_SECRET_UNAVAILABLE',
        `${where}: cannot read secret file ${this.source.file} (${reason})`,
      );
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
