// Token verification: from an untrusted string to a verified identity, or a TokenRejectedError
// whose code says which check failed. Crypto and claim checks are jose's; this file decides
// the order, the options and the error codes.
import {
  type CryptoKey,
  decodeJwt,
  decodeProtectedHeader,
  jwtVerify,
  type ProtectedHeaderParameters,
} from 'jose';
import type { IssuerConfig } from '../config/schema.js';
import { TokenRejectedError } from '../errors/index.js';
import {
  createKeySource,
  type KeySource,
  type KeySourceOptions,
  type KeySourceStatus,
} from './key-source.js';
import { assertLifetime } from './lifetime.js';
import { type ClaimFacts, normalize, type Principal } from './principal.js';
import { fromJoseError, reject } from './rejections.js';

/** Tokens longer than this are refused unread (GitLab and GitHub tokens are 1–2 KiB). */
export const MAX_TOKEN_BYTES = 8 * 1024;

/** Claims every token must carry, whatever its issuer. */
export const REQUIRED_CLAIMS = ['exp', 'iat', 'iss', 'aud'] as const;

export interface VerifiedToken {
  /** The configured issuer that vouched for the token. */
  issuer: IssuerConfig;
  /** The verified claims, as the issuer sent them. */
  claims: Record<string, unknown>;
  principal: Principal;
  facts: ClaimFacts;
}

export interface TokenVerifierOptions {
  /** Used for discovery and JWKS requests (tests pass their own). */
  fetch?: typeof fetch;
  /** Clock in epoch milliseconds, for token times and key-refresh decisions. */
  now?: () => number;
  /** Deadline of one discovery or JWKS request, in milliseconds (default 5000). */
  fetchTimeoutMs?: number;
  /** Largest accepted discovery or JWKS response, in bytes (default 1 MiB). */
  maxBodyBytes?: number;
}

// Three base64url segments; the signature may be empty only so that `alg: none` tokens reach
// the algorithm check and get its precise code rather than "malformed".
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

interface Trusted {
  config: IssuerConfig;
  keys: KeySource;
}

export class TokenVerifier {
  private readonly trusted: readonly Trusted[];
  private readonly now: () => number;

  /**
   * @throws ConfigError when an issuer's URLs are unsafe or its `jwks_file` is unusable.
   */
  constructor(issuers: readonly IssuerConfig[], options: TokenVerifierOptions = {}) {
    this.now = options.now ?? Date.now;
    const keyOptions: KeySourceOptions = { ...options, now: this.now };
    this.trusted = issuers.map((config) => ({ config, keys: createKeySource(config, keyOptions) }));
  }

  /**
   * Verify `token` (a compact JWS; surrounding whitespace is ignored) against the configured
   * issuers and normalise its claims.
   * @throws TokenRejectedError with the code of the first failed check.
   */
  async verify(token: string): Promise<VerifiedToken> {
    // Size first, before any decoding: parsing cost must not be attacker-controlled.
    if (typeof token !== 'string') throw reject('CIPORT_E_TOKEN_MALFORMED', 'token is not a string');
    if (token.length > MAX_TOKEN_BYTES || Buffer.byteLength(token, 'utf8') > MAX_TOKEN_BYTES) {
      throw reject('CIPORT_E_TOKEN_TOO_LARGE', `token is larger than ${MAX_TOKEN_BYTES} bytes`);
    }
    const compact = token.trim();
    if (!COMPACT_JWS.test(compact)) {
      throw reject(
        'CIPORT_E_TOKEN_MALFORMED',
        'token is not a JWT (expected three base64url parts separated by dots)',
      );
    }
    const { header, claims } = peek(compact);
    const { config, keys } = this.pickIssuer(claims);

    const alg = header.alg;
    if (typeof alg !== 'string' || alg === '') {
      throw reject('CIPORT_E_TOKEN_MALFORMED', 'token header has no "alg"');
    }
    if (!(config.algorithms as readonly string[]).includes(alg)) {
      throw reject(
        'CIPORT_E_TOKEN_ALG_NOT_ALLOWED',
        `token algorithm ${JSON.stringify(alg.slice(0, 16))} is not allowed for issuer "${config.name}" (allowed: ${config.algorithms.join(', ')})`,
      );
    }
    if (header.kid !== undefined && typeof header.kid !== 'string') {
      throw reject('CIPORT_E_TOKEN_MALFORMED', 'token header "kid" is not a string');
    }

    // Keys come only from the issuer's own key set; `jku`, `x5u`, `x5c` and `jwk` headers are
    // never consulted, so a token cannot bring the key that verifies it.
    const candidates = await keys.keysFor({ alg, kid: header.kid });
    const verified = await this.verifyWithAny(compact, candidates, config, claims.iss as string);

    // jose checks `iat` only for type; a token minted in the future is as suspect as an `nbf` one.
    const iat = verified.iat as number;
    if (iat * 1000 > this.now() + config.leeway) {
      throw reject(
        'CIPORT_E_TOKEN_NOT_YET_VALID',
        'token was issued in the future ("iat" beyond the clock leeway)',
      );
    }
    assertLifetime(config, verified);
    const { principal, facts } = normalize(config.kind, config.name, verified);
    return { issuer: config, claims: verified, principal, facts };
  }

  /** Fetch every remote issuer's keys now (startup warm-up, operator action). */
  async refreshKeys(): Promise<Record<string, boolean>> {
    const results = await Promise.all(
      this.trusted.map(async (t) => [t.config.name, await t.keys.refresh()] as const),
    );
    return Object.fromEntries(results);
  }

  /** Key state per issuer, for readiness checks and diagnostics. */
  keyStatus(): Record<string, KeySourceStatus> {
    return Object.fromEntries(this.trusted.map((t) => [t.config.name, t.keys.status()]));
  }

  /** Resolves when no key fetch is in flight (background refreshes included). */
  async idle(): Promise<void> {
    await Promise.all(this.trusted.map((t) => t.keys.idle()));
  }

  private pickIssuer(claims: Record<string, unknown>): Trusted {
    const iss = claims.iss;
    if (iss === undefined) throw reject('CIPORT_E_TOKEN_MISSING_CLAIM', 'token has no "iss" claim');
    if (typeof iss !== 'string')
      throw reject('CIPORT_E_TOKEN_MALFORMED', 'token "iss" claim is not a string');
    // A trailing slash is the one difference tolerated: `https://gitlab.com/` in the config
    // still means GitLab's `https://gitlab.com`. jose then checks `iss` exactly against this value.
    const matches = this.trusted.filter((t) => withoutSlash(t.config.issuer) === withoutSlash(iss));
    const [only] = matches;
    if (only === undefined) {
      const shown = iss.length > 200 ? `${iss.slice(0, 200)}…` : iss;
      throw reject(
        'CIPORT_E_TOKEN_UNKNOWN_ISSUER',
        `token issuer ${JSON.stringify(shown)} is not a configured issuer`,
      );
    }
    if (matches.length === 1) return only;
    // One platform configured twice (say, two audiences with different settings): the token's
    // audience picks. jwtVerify re-checks the audience after the signature.
    const aud = claims.aud;
    const tokenAudiences = typeof aud === 'string' ? [aud] : Array.isArray(aud) ? aud : [];
    const byAudience = matches.find((t) => audiencesOf(t.config).some((a) => tokenAudiences.includes(a)));
    return byAudience ?? only;
  }

  private async verifyWithAny(
    compact: string,
    keys: readonly CryptoKey[],
    config: IssuerConfig,
    iss: string,
  ): Promise<Record<string, unknown>> {
    let failure: unknown;
    for (const key of keys) {
      try {
        const { payload } = await jwtVerify(compact, key, {
          algorithms: [...config.algorithms],
          issuer: iss,
          audience: audiencesOf(config),
          clockTolerance: config.leeway / 1000,
          requiredClaims: [...REQUIRED_CLAIMS],
          currentDate: new Date(this.now()),
        });
        return payload as Record<string, unknown>;
      } catch (err) {
        const mapped = fromJoseError(err, config.name);
        // Only a signature mismatch depends on the key; anything else is final.
        if (!(mapped instanceof TokenRejectedError) || mapped.code !== 'CIPORT_E_TOKEN_BAD_SIGNATURE')
          throw mapped;
        failure = mapped;
      }
    }
    throw failure ?? reject('CIPORT_E_TOKEN_UNKNOWN_KEY', `no key of issuer "${config.name}" fits the token`);
  }
}

function withoutSlash(url: string): string {
  return url.endsWith('/') ? url.slice(0, -1) : url;
}

function audiencesOf(config: IssuerConfig): string[] {
  return typeof config.audience === 'string' ? [config.audience] : [...config.audience];
}

/** Decode header and claims without verifying anything: only to choose issuer and key. */
function peek(compact: string): { header: ProtectedHeaderParameters; claims: Record<string, unknown> } {
  try {
    return { header: decodeProtectedHeader(compact), claims: decodeJwt(compact) as Record<string, unknown> };
  } catch (cause) {
    throw reject('CIPORT_E_TOKEN_MALFORMED', 'token header or payload is not valid base64url JSON', cause);
  }
}
