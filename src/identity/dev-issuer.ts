// A small, real OIDC issuer on loopback for development and tests: discovery document, JWKS
// (at GitLab's `/oauth/discovery/keys` and GitHub's `/.well-known/jwks`), and minting of tokens
// shaped like the platforms'. Plain http is fine because the verifier accepts http only on
// loopback — so this issuer can never be trusted from elsewhere.
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { JWTHeaderParameters } from 'jose';
import { type PresetName, parseSetPairs, presetClaims, presetNotBeforeSkew } from './dev-presets.js';
import { type DevAlg, DevSigner } from './dev-signer.js';

export const DEV_ISSUER_DEFAULT_PORT = 8473;
export const DEV_DEFAULT_KEY_FILE = '.ciport/dev-issuer.json';
export const DEV_DEFAULT_AUDIENCE = 'ciport';
export const DEV_DEFAULT_TTL_MS = 10 * 60_000;

export type DevIssuerKind = 'gitlab' | 'github';

export const JWKS_PATHS = { gitlab: '/oauth/discovery/keys', github: '/.well-known/jwks' } as const;
export const DISCOVERY_PATH = '/.well-known/openid-configuration';

export interface MintOptions {
  /** Platform claims to start from. */
  preset?: PresetName;
  /** `--set key=value` strings, applied after `claims` (see parseSetPairs for typing). */
  set?: readonly string[];
  /** Claims to delete last (e.g. `exp`, to test rejections). */
  unset?: readonly string[];
  /** `aud`; default `ciport`. */
  audience?: string | string[];
  /** Lifetime in milliseconds; default 10 minutes. */
  ttlMs?: number;
  /** Signing key; default the newest. */
  kid?: string;
  /** Extra protected-header members (tests forge hostile headers with it). */
  header?: Partial<JWTHeaderParameters>;
  /** Issue time in epoch milliseconds; default now. */
  now?: number;
}

/**
 * Mint a token: standard claims, then the preset's, then `claims`, then `set`, then `unset`.
 * Later layers win, so tests can override `exp`, `iss` or anything else.
 */
export async function mintToken(
  signer: DevSigner,
  issuer: string,
  claims: Record<string, unknown> = {},
  options: MintOptions = {},
): Promise<string> {
  const iat = Math.floor((options.now ?? Date.now()) / 1000);
  const ttl = Math.floor((options.ttlMs ?? DEV_DEFAULT_TTL_MS) / 1000);
  const payload: Record<string, unknown> = {
    jti: randomUUID(),
    iss: issuer,
    aud: options.audience ?? DEV_DEFAULT_AUDIENCE,
    iat,
    nbf: iat - presetNotBeforeSkew(options.preset),
    exp: iat + ttl,
    ...(options.preset ? presetClaims(options.preset, issuer) : { sub: 'dev-user' }),
    ...claims,
    ...parseSetPairs(options.set ?? [], options.preset),
  };
  for (const name of options.unset ?? []) delete payload[name];
  return signer.sign(payload, {
    ...(options.kid === undefined ? {} : { kid: options.kid }),
    ...(options.header === undefined ? {} : { header: options.header }),
  });
}

/**
 * The issuer's routes as a request handler, so that test fixtures can wrap it (count
 * requests, fail on purpose) around the very code the CLI serves.
 * @returns true when it handled the request, false for an unknown path (caller sends 404).
 */
export function handleIssuerRequest(
  req: IncomingMessage,
  res: ServerResponse,
  ctx: { signer: DevSigner; issuer: string; kind: DevIssuerKind },
): boolean {
  const path = new URL(req.url ?? '/', 'http://localhost').pathname;
  if (req.method !== 'GET' && req.method !== 'HEAD') return false;
  if (path === DISCOVERY_PATH) {
    sendJson(res, discoveryDocument(ctx.issuer, ctx.kind, ctx.signer));
    return true;
  }
  if (path === JWKS_PATHS.gitlab || path === JWKS_PATHS.github) {
    sendJson(res, ctx.signer.jwks());
    return true;
  }
  return false;
}

function discoveryDocument(issuer: string, kind: DevIssuerKind, signer: DevSigner): Record<string, unknown> {
  const algs = [...new Set(signer.jwks().keys.map((k) => k.alg))];
  return {
    issuer,
    jwks_uri: `${issuer}${JWKS_PATHS[kind]}`,
    response_types_supported: ['id_token'],
    subject_types_supported: ['public', 'pairwise'],
    id_token_signing_alg_values_supported: algs,
    scopes_supported: ['openid'],
    claims_supported: ['sub', 'aud', 'exp', 'iat', 'iss', 'jti', 'nbf', 'ref', 'sha'],
  };
}

function sendJson(res: ServerResponse, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(200, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
  });
  res.end(text);
}

export function sendNotFound(res: ServerResponse): void {
  res.writeHead(404, { 'content-type': 'text/plain' });
  res.end('not found\n');
}

export interface DevIssuerOptions {
  /** TCP port on 127.0.0.1; 0 picks a free one. Default 8473. */
  port?: number;
  /** Key file (created when missing); ignored when `signer` is given. */
  keyFile?: string;
  /** Use this signer instead of a key file (tests: ephemeral keys). */
  signer?: DevSigner;
  kind?: DevIssuerKind;
  /** Algorithm of a newly created key. Default RS256, as GitLab and GitHub use. */
  alg?: DevAlg;
}

/** A running development issuer. */
export class DevIssuer {
  private constructor(
    private readonly server: Server,
    readonly signer: DevSigner,
    /** The issuer URL (`iss`), e.g. `http://127.0.0.1:8473`. */
    readonly url: string,
    readonly kind: DevIssuerKind,
  ) {}

  static async start(options: DevIssuerOptions = {}): Promise<DevIssuer> {
    const kind = options.kind ?? 'gitlab';
    const signer =
      options.signer ??
      (await DevSigner.open(options.keyFile ?? DEV_DEFAULT_KEY_FILE, { alg: options.alg ?? 'RS256' }));
    const ctx = { signer, issuer: '', kind };
    const server = createServer((req, res) => {
      if (!handleIssuerRequest(req, res, ctx)) sendNotFound(res);
    });
    const port = await listen(server, options.port ?? DEV_ISSUER_DEFAULT_PORT);
    ctx.issuer = `http://127.0.0.1:${port}`;
    if (signer.file !== undefined) signer.rememberIssuer(ctx.issuer);
    return new DevIssuer(server, signer, ctx.issuer, kind);
  }

  get jwksUri(): string {
    return `${this.url}${JWKS_PATHS[this.kind]}`;
  }

  mint(claims: Record<string, unknown> = {}, options: MintOptions = {}): Promise<string> {
    return mintToken(this.signer, this.url, claims, options);
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}

/** Listen on 127.0.0.1:`port`; resolves to the bound port. */
export function listen(server: Server, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}
