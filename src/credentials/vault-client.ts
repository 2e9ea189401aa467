// A small HashiCorp Vault client (docs/secrets.md, "Vault"): token or AppRole login, the token
// renewed while renewable and replaced (AppRole: a new login) when it expires or Vault answers
// 403, X-Vault-Token / X-Vault-Namespace on every request. Tokens and secret values never reach
// an error message or a log line: errors name the method, the path and Vault's `errors`.
import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { VaultConfig } from '../config/vault.js';
import { CiportError } from '../errors/index.js';

export interface VaultLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface VaultResponse {
  status: number;
  body: Record<string, unknown> | undefined;
}

/** Vault's answer to a login or lookup, the part kept. */
interface TokenState {
  token: string;
  renewable: boolean;
  /** ms epoch; undefined: never expires (root tokens, ttl 0). */
  expiresAt: number | undefined;
}

/** Answers longer than this are refused (a KV secret or a creds answer is small). */
const MAX_BODY = 1 << 20;
const TIMEOUT_MS = 10_000;

export class VaultClient {
  readonly #cfg: VaultConfig;
  readonly #log: VaultLog;
  readonly #ca: string | undefined;
  #state: TokenState | undefined;
  #login: Promise<TokenState> | undefined;
  #renewTimer: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(config: VaultConfig, log: VaultLog) {
    this.#cfg = config;
    this.#log = log;
    this.#ca = config.ca ? readFileSync(config.ca.file, 'utf8') : undefined;
  }

  get address(): string {
    return this.#cfg.address.replace(/\/+$/, '');
  }

  /**
   * `method /v1/<path>` with the current token; a 403 gets one fresh login (an expired or
   * revoked token answers 403) and one retry. Resolves with 2xx and 404 answers (the caller
   * decides what a missing secret means); rejects CIPORT_E_VAULT_REFUSED / _UNREACHABLE.
   */
  async request(method: string, path: string, body?: object): Promise<VaultResponse> {
    let state = await this.#token();
    let res = await this.#raw(method, path, body, state.token);
    if (res.status === 403) {
      this.#log.warn({ vault: this.address, path }, 'vault: permission denied; logging in again');
      state = await this.#token(state);
      res = await this.#raw(method, path, body, state.token);
    }
    if ((res.status >= 200 && res.status < 300) || res.status === 404) return res;
    throw refusal(method, path, res);
  }

  /** Log in now (start: a bad token or AppRole fails the start). */
  async ready(): Promise<void> {
    await this.#token();
  }

  close(): void {
    this.#closed = true;
    if (this.#renewTimer) clearTimeout(this.#renewTimer);
  }

  /** The current token, or a fresh one when `stale` is the one that was refused. */
  async #token(stale?: TokenState): Promise<TokenState> {
    if (this.#state && this.#state !== stale && !expired(this.#state)) return this.#state;
    this.#login ??= this.#authenticate().finally(() => {
      this.#login = undefined;
    });
    return this.#login;
  }

  async #authenticate(): Promise<TokenState> {
    const auth = this.#cfg.auth;
    let state: TokenState;
    if ('approle' in auth) {
      const mount = auth.approle.mount;
      const path = `auth/${mount}/login`;
      const res = await this.#raw('POST', path, {
        role_id: auth.approle.role_id,
        secret_id: auth.approle.secret_id.reveal(),
      });
      if (res.status !== 200) throw refusal('POST', path, res);
      state = tokenFromAuth(res.body?.auth, path);
    } else {
      const token = auth.token.reveal();
      const res = await this.#raw('GET', 'auth/token/lookup-self', undefined, token);
      if (res.status !== 200) throw refusal('GET', 'auth/token/lookup-self', res);
      const data = res.body?.data as { ttl?: unknown; renewable?: unknown } | undefined;
      const ttl = typeof data?.ttl === 'number' ? data.ttl : 0;
      state = {
        token,
        renewable: data?.renewable === true,
        expiresAt: ttl > 0 ? Date.now() + ttl * 1000 : undefined,
      };
    }
    this.#state = state;
    this.#scheduleRenewal(state);
    return state;
  }

  /** Renew at two thirds of the remaining TTL; a failed renewal logs in again (AppRole). */
  #scheduleRenewal(state: TokenState): void {
    if (this.#renewTimer) clearTimeout(this.#renewTimer);
    if (this.#closed || state.expiresAt === undefined) return;
    const delay = Math.max(1000, ((state.expiresAt - Date.now()) * 2) / 3);
    this.#renewTimer = setTimeout(() => void this.#renew(state), delay);
    this.#renewTimer.unref();
  }

  async #renew(state: TokenState): Promise<void> {
    if (this.#closed || this.#state !== state) return;
    try {
      if (!state.renewable) throw new Error('token not renewable');
      const res = await this.#raw('POST', 'auth/token/renew-self', {}, state.token);
      if (res.status !== 200) throw refusal('POST', 'auth/token/renew-self', res);
      const next = tokenFromAuth(res.body?.auth, 'auth/token/renew-self', state.token);
      this.#state = next;
      this.#scheduleRenewal(next);
    } catch (err) {
      if ('approle' in this.#cfg.auth) {
        // A renewal refused (max TTL reached) or impossible: the next request logs in again.
        this.#state = undefined;
        return;
      }
      this.#log.warn(
        { vault: this.address, err: (err as Error).message },
        'vault: the token could not be renewed; it will expire',
      );
    }
  }

  /** One HTTP exchange with Vault; never retries. */
  #raw(method: string, path: string, body: object | undefined, token?: string): Promise<VaultResponse> {
    const url = new URL(`${this.address}/v1/${path}`);
    const headers: Record<string, string> = { accept: 'application/json' };
    if (token !== undefined) headers['x-vault-token'] = token;
    if (this.#cfg.namespace) headers['x-vault-namespace'] = this.#cfg.namespace;
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    if (payload) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = String(payload.length);
    }
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise((resolve, reject) => {
      const unreachable = (why: string) =>
        reject(
          new CiportError('CIPORT_E_VAULT_UNREACHABLE', `vault ${this.address}: ${method} ${path}: ${why}`),
        );
      const req = send(
        url,
        { method, headers, timeout: TIMEOUT_MS, ...(this.#ca ? { ca: this.#ca } : {}) },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (c: Buffer) => {
            size += c.length;
            if (size > MAX_BODY) req.destroy(new Error('answer too large'));
            else chunks.push(c);
          });
          res.on('error', (e) => unreachable(e.message));
          res.on('end', () => {
            const status = res.statusCode ?? 0;
            if (status >= 500) return unreachable(`HTTP ${status}`);
            let parsed: Record<string, unknown> | undefined;
            const text = Buffer.concat(chunks).toString('utf8');
            try {
              parsed = text ? (JSON.parse(text) as Record<string, unknown>) : undefined;
            } catch {
              parsed = undefined;
            }
            resolve({ status, body: parsed });
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error(`no answer within ${TIMEOUT_MS} ms`)));
      req.on('error', (e: NodeJS.ErrnoException) => unreachable(e.code ?? e.message));
      req.end(payload);
    });
  }
}

function expired(state: TokenState): boolean {
  return state.expiresAt !== undefined && state.expiresAt - Date.now() < 5000;
}

function tokenFromAuth(auth: unknown, path: string, fallbackToken?: string): TokenState {
  const a = auth as { client_token?: unknown; lease_duration?: unknown; renewable?: unknown } | undefined;
  const token = typeof a?.client_token === 'string' ? a.client_token : fallbackToken;
  if (!token)
    throw new CiportError('CIPORT_E_VAULT_REFUSED', `vault ${path}: the answer has no auth.client_token`);
  const ttl = typeof a?.lease_duration === 'number' ? a.lease_duration : 0;
  return {
    token,
    renewable: a?.renewable === true,
    expiresAt: ttl > 0 ? Date.now() + ttl * 1000 : undefined,
  };
}

/** Vault's `errors` array, bounded: it names the problem ("permission denied"), never a value. */
function refusal(method: string, path: string, res: VaultResponse): CiportError {
  const errors = Array.isArray(res.body?.errors) ? (res.body.errors as unknown[]).map(String) : [];
  const text = errors.join('; ').slice(0, 300) || `HTTP ${res.status}`;
  return new CiportError('CIPORT_E_VAULT_REFUSED', `vault: ${method} ${path}: ${text}`, {
    details: { status: res.status },
  });
}
