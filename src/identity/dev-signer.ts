// Signing keys of the development issuer, kept in a JSON file so that tokens minted before a
// restart still verify after it. Development only: the private keys sit in plain JSON (mode 0600).
import { randomUUID } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import {
  type CryptoKey,
  calculateJwkThumbprint,
  exportJWK,
  generateKeyPair,
  importJWK,
  type JSONWebKeySet,
  type JWK,
  type JWTHeaderParameters,
  SignJWT,
} from 'jose';
import { ConfigError } from '../errors/index.js';

const PRIVATE_MEMBERS = new Set(['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth']);

export type DevAlg = 'RS256' | 'ES256';
export const DEV_ALGS: readonly DevAlg[] = ['RS256', 'ES256'];

/** On-disk shape of the key file. The last key is the one that signs. */
export interface DevKeyFile {
  version: 1;
  /** URL of the last `ciport dev issuer` that served these keys; the default for `dev token`. */
  issuer?: string;
  keys: Array<{ kid: string; alg: DevAlg; private_jwk: JWK }>;
}

interface LoadedKey {
  kid: string;
  alg: DevAlg;
  privateJwk: JWK;
  privateKey: CryptoKey;
  publicJwk: JWK;
}

export class DevSigner {
  private constructor(
    private keys: LoadedKey[],
    /** Where keys persist; undefined for in-memory signers (tests). */
    readonly file: string | undefined,
    private issuerUrl: string | undefined,
  ) {}

  /** Load the key file, creating it with one fresh `alg` key when missing. */
  static async open(file: string, options: { alg?: DevAlg } = {}): Promise<DevSigner> {
    let text: string | undefined;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        throw new ConfigError('CIPORT_E_CONFIG_UNREADABLE', `${file}: cannot read dev issuer keys`, {
          cause: err,
        });
      }
    }
    if (text === undefined) {
      const signer = new DevSigner([await generate(options.alg ?? 'RS256')], file, undefined);
      signer.save();
      return signer;
    }
    const parsed = parseKeyFile(text, file);
    const keys = await Promise.all(parsed.keys.map((k) => load(k.kid, k.alg, k.private_jwk, file)));
    return new DevSigner(keys, file, parsed.issuer);
  }

  /** A signer that lives in memory only. */
  static async ephemeral(options: { alg?: DevAlg } = {}): Promise<DevSigner> {
    return new DevSigner([await generate(options.alg ?? 'RS256')], undefined, undefined);
  }

  get kids(): string[] {
    return this.keys.map((k) => k.kid);
  }

  /** The key that signs unless a caller picks another. */
  get current(): { kid: string; alg: DevAlg } {
    const key = this.keys.at(-1);
    if (!key) throw new Error('dev signer has no keys');
    return { kid: key.kid, alg: key.alg };
  }

  get issuer(): string | undefined {
    return this.issuerUrl;
  }

  /** Record the URL the keys are served at, so `dev token` can default to it. */
  rememberIssuer(url: string): void {
    if (this.issuerUrl === url) return;
    this.issuerUrl = url;
    this.save();
  }

  /** Generate a key that becomes the signing key (rotation); the old ones stay published. */
  async addKey(alg: DevAlg = this.current.alg): Promise<string> {
    const key = await generate(alg);
    this.keys = [...this.keys, key];
    this.save();
    return key.kid;
  }

  /** Stop publishing (and signing with) a key. */
  removeKey(kid: string): void {
    this.keys = this.keys.filter((k) => k.kid !== kid);
    this.save();
  }

  /** The public key set the issuer serves. */
  jwks(): JSONWebKeySet {
    return { keys: this.keys.map((k) => ({ ...k.publicJwk })) };
  }

  /**
   * Sign `payload` as a JWT. `header` is merged over `{alg, kid, typ: 'JWT'}`; tests use it to
   * forge hostile headers.
   */
  async sign(
    payload: Record<string, unknown>,
    options: { kid?: string; header?: Partial<JWTHeaderParameters> } = {},
  ): Promise<string> {
    const kid = options.kid ?? this.current.kid;
    const key = this.keys.find((k) => k.kid === kid);
    if (!key) throw new Error(`dev signer has no key ${kid}`);
    return new SignJWT(payload)
      .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'JWT', ...options.header })
      .sign(key.privateKey);
  }

  private save(): void {
    if (this.file === undefined) return;
    const content: DevKeyFile = {
      version: 1,
      ...(this.issuerUrl === undefined ? {} : { issuer: this.issuerUrl }),
      keys: this.keys.map((k) => ({ kid: k.kid, alg: k.alg, private_jwk: k.privateJwk })),
    };
    mkdirSync(dirname(this.file), { recursive: true });
    // Write then rename: a reader never sees half a file.
    const tmp = `${this.file}.${randomUUID()}.tmp`;
    writeFileSync(tmp, `${JSON.stringify(content, null, 2)}\n`, { mode: 0o600 });
    renameSync(tmp, this.file);
  }
}

async function generate(alg: DevAlg): Promise<LoadedKey> {
  const { privateKey } = await generateKeyPair(alg, { extractable: true });
  const privateJwk = await exportJWK(privateKey);
  const kid = await calculateJwkThumbprint(privateJwk);
  return load(kid, alg, privateJwk, undefined);
}

async function load(kid: string, alg: DevAlg, privateJwk: JWK, file: string | undefined): Promise<LoadedKey> {
  try {
    const privateKey = (await importJWK(privateJwk, alg)) as CryptoKey;
    const publicPart = Object.fromEntries(
      Object.entries(privateJwk).filter(([name]) => !PRIVATE_MEMBERS.has(name)),
    );
    return { kid, alg, privateJwk, privateKey, publicJwk: { ...publicPart, kid, alg, use: 'sig' } };
  } catch (cause) {
    throw new ConfigError(
      'CIPORT_E_CONFIG_INVALID',
      `${file ?? 'dev key'}: key ${kid} is not a usable ${alg} private key`,
      {
        cause,
      },
    );
  }
}

function parseKeyFile(text: string, file: string): DevKeyFile {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (cause) {
    throw new ConfigError('CIPORT_E_CONFIG_INVALID', `${file}: not JSON`, { cause });
  }
  const f = data as Partial<DevKeyFile> | null;
  const valid =
    f !== null &&
    typeof f === 'object' &&
    f.version === 1 &&
    Array.isArray(f.keys) &&
    f.keys.length > 0 &&
    f.keys.every(
      (k) =>
        typeof k?.kid === 'string' &&
        DEV_ALGS.includes(k.alg) &&
        typeof k.private_jwk === 'object' &&
        k.private_jwk !== null &&
        typeof k.private_jwk.d === 'string',
    ) &&
    (f.issuer === undefined || typeof f.issuer === 'string');
  if (!valid) {
    throw new ConfigError(
      'CIPORT_E_CONFIG_INVALID',
      `${file}: not a ciport dev issuer key file (version 1, keys[])`,
    );
  }
  return f as DevKeyFile;
}
