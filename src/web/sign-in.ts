// The console as an OpenID Connect relying party (docs/sso.md, "Console sign-in"): authorization
// code + PKCE (S256) with openid-client, a fresh state and nonce per sign-in, the ID token
// checked by openid-client (issuer, audience, expiry, nonce) when the code is redeemed at the
// provider's token endpoint over TLS. The provider's discovery document is read on first use and
// kept; a failure is retried at most every RETRY_MS, so a provider that is down shows a clear
// page and delays sign-ins without stopping the gateway.
import * as oidc from 'openid-client';
import type { SsoConfig } from '../config/sso.js';
import { CiportError } from '../errors/index.js';
import type { Logger } from '../log/logger.js';
import { printable } from '../text/printable.js';
import { LOGIN_TTL_MS } from './cookies.js';

/** After a failed discovery, the next sign-in tries again no sooner than this. */
export const RETRY_MS = 5_000;
/** Seconds openid-client waits for the provider (discovery, token endpoint). */
const PROVIDER_TIMEOUT_S = 10;

/** A sign-in in progress, kept sealed in the login cookie. */
export interface LoginTransaction {
  state: string;
  nonce: string;
  verifier: string;
  /** Where to go once signed in: a path under /ui (checked again when used). */
  returnTo: string;
  /** Epoch ms. */
  expiresAt: number;
}

export function isLoginTransaction(value: unknown): value is LoginTransaction {
  const t = value as Partial<LoginTransaction> | null;
  return (
    typeof t === 'object' &&
    t !== null &&
    typeof t.state === 'string' &&
    typeof t.nonce === 'string' &&
    typeof t.verifier === 'string' &&
    typeof t.returnTo === 'string' &&
    typeof t.expiresAt === 'number'
  );
}

function short(err: unknown): string {
  const e = err as { message?: unknown; error?: unknown; error_description?: unknown; code?: unknown };
  const parts = [e.error, e.error_description, e.message].filter((x) => typeof x === 'string' && x);
  return printable(parts.join(': ') || String(err)).slice(0, 300);
}

/** Network failures and timeouts: the provider could not be asked (retry later). */
function unreachable(err: unknown): boolean {
  const e = err as { name?: string; code?: string; cause?: unknown };
  if (e?.name === 'TimeoutError' || e?.name === 'AbortError' || e?.code === 'OAUTH_TIMEOUT') return true;
  if (err instanceof TypeError && /fetch failed/i.test(err.message)) return true;
  const cause = e?.cause as { code?: string } | undefined;
  return (
    typeof cause?.code === 'string' &&
    /^(ECONN|ENOTFOUND|EAI_|ETIMEDOUT|EHOSTUNREACH|UND_ERR)/.test(cause.code)
  );
}

export class ConsoleSignIn {
  readonly redirectUri: string;
  readonly #sso: SsoConfig;
  readonly #log: Logger;
  readonly #fetch: typeof fetch | undefined;
  readonly #now: () => number;
  #config: oidc.Configuration | undefined;
  #pending: Promise<oidc.Configuration> | undefined;
  #failedAt = Number.NEGATIVE_INFINITY;
  #lastError = '';

  constructor(options: {
    sso: SsoConfig;
    redirectUri: string;
    log: Logger;
    fetch?: typeof fetch | undefined;
    now?: () => number;
  }) {
    this.#sso = options.sso;
    this.redirectUri = options.redirectUri;
    this.#log = options.log;
    this.#fetch = options.fetch;
    this.#now = options.now ?? Date.now;
  }

  /** The provider's configuration, discovered once (single flight; retried after RETRY_MS). */
  async configuration(): Promise<oidc.Configuration> {
    if (this.#config) return this.#config;
    if (this.#now() - this.#failedAt < RETRY_MS) {
      throw new CiportError(
        'CIPORT_E_SSO_UNAVAILABLE',
        `the identity provider ${this.#sso.issuer} could not be reached (${this.#lastError}); try again in a few seconds`,
      );
    }
    this.#pending ??= this.#discover().finally(() => {
      this.#pending = undefined;
    });
    return this.#pending;
  }

  async #discover(): Promise<oidc.Configuration> {
    const sso = this.#sso;
    const issuer = new URL(sso.issuer);
    const secret = sso.client_secret?.reveal();
    try {
      const config = await oidc.discovery(
        issuer,
        sso.client_id,
        undefined,
        secret ? oidc.ClientSecretBasic(secret) : oidc.None(),
        {
          timeout: PROVIDER_TIMEOUT_S,
          // http only on loopback (the config refuses it elsewhere): a provider on this machine.
          ...(issuer.protocol === 'http:' ? { execute: [oidc.allowInsecureRequests] } : {}),
          ...(this.#fetch ? { [oidc.customFetch]: this.#fetch as oidc.CustomFetch } : {}),
        },
      );
      this.#config = config;
      this.#log.info({ issuer: sso.issuer }, 'console sign-in: identity provider discovered');
      return config;
    } catch (err) {
      this.#failedAt = this.#now();
      this.#lastError = short(err);
      this.#log.warn({ issuer: sso.issuer, err: this.#lastError }, 'console sign-in: discovery failed');
      throw new CiportError(
        'CIPORT_E_SSO_UNAVAILABLE',
        `the identity provider ${sso.issuer} could not be reached (${this.#lastError}); try again in a few seconds`,
        { cause: err },
      );
    }
  }

  /** A new sign-in: the provider's authorization URL and the transaction to keep until the callback. */
  async start(returnTo: string): Promise<{ url: string; transaction: LoginTransaction }> {
    const config = await this.configuration();
    const transaction: LoginTransaction = {
      state: oidc.randomState(),
      nonce: oidc.randomNonce(),
      verifier: oidc.randomPKCECodeVerifier(),
      returnTo,
      expiresAt: this.#now() + LOGIN_TTL_MS,
    };
    const scopes = new Set(['openid', ...this.#sso.scopes]);
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: this.redirectUri,
      scope: [...scopes].join(' '),
      code_challenge: await oidc.calculatePKCECodeChallenge(transaction.verifier),
      code_challenge_method: 'S256',
      state: transaction.state,
      nonce: transaction.nonce,
    });
    return { url: url.toString(), transaction };
  }

  /**
   * Redeem the callback's code (state, nonce and PKCE checked against `transaction`): the ID
   * token's verified claims. CIPORT_E_SSO_FAILED for a refusal or a mismatch,
   * CIPORT_E_SSO_UNAVAILABLE when the provider cannot be reached.
   */
  async finish(callback: URL, transaction: LoginTransaction): Promise<Record<string, unknown>> {
    if (transaction.expiresAt <= this.#now()) {
      throw new CiportError('CIPORT_E_SSO_FAILED', 'the sign-in took too long; start again');
    }
    const returned = callback.searchParams.get('state');
    if (returned !== transaction.state) {
      throw new CiportError(
        'CIPORT_E_SSO_FAILED',
        'the sign-in response does not belong to the sign-in this browser started (state mismatch)',
      );
    }
    const error = callback.searchParams.get('error');
    if (error) {
      const description = callback.searchParams.get('error_description');
      throw new CiportError(
        'CIPORT_E_SSO_FAILED',
        `the identity provider refused the sign-in: ${printable(error).slice(0, 100)}${description ? `: ${printable(description).slice(0, 300)}` : ''}`,
      );
    }
    const config = await this.configuration();
    try {
      const tokens = await oidc.authorizationCodeGrant(config, callback, {
        expectedState: transaction.state,
        expectedNonce: transaction.nonce,
        pkceCodeVerifier: transaction.verifier,
        idTokenExpected: true,
      });
      const claims = tokens.claims();
      if (!claims) throw new CiportError('CIPORT_E_SSO_FAILED', 'the provider returned no ID token');
      return { ...claims };
    } catch (err) {
      if (err instanceof CiportError) throw err;
      if (unreachable(err)) {
        throw new CiportError(
          'CIPORT_E_SSO_UNAVAILABLE',
          `the identity provider could not be reached to complete the sign-in (${short(err)}); start again`,
          { cause: err },
        );
      }
      throw new CiportError('CIPORT_E_SSO_FAILED', `the sign-in could not be completed: ${short(err)}`, {
        cause: err,
      });
    }
  }
}
