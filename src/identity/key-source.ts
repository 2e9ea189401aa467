// Where one issuer's verification keys come from, and how they are kept fresh.
//
// - `jwks_file`: read once at construction (air-gapped installs); never refetched.
// - `jwks_uri`: pinned endpoint.
// - neither: OIDC discovery, `<issuer>/.well-known/openid-configuration` → `jwks_uri`.
//
// Remote sets follow three rules. The last good set is kept and used while the endpoint is down.
// Refetches are rate-limited: at most one fetch starts per `jwks_cooldown` (unknown `kid`s,
// stale-set refreshes and retries after failures all share that budget; the very first load and
// explicit `refresh()` calls are the only exceptions), and concurrent callers share one in-flight
// fetch. A set older than `jwks_max_age` is still used while a refresh runs in the background.
import { readFileSync } from 'node:fs';
import type { CryptoKey } from 'jose';
import type { IssuerConfig } from '../config/schema.js';
import { ConfigError, TokenRejectedError } from '../errors/index.js';
import { DEFAULT_FETCH_TIMEOUT_MS, DEFAULT_MAX_BODY_BYTES, fetchJson, KeyFetchError } from './fetch-json.js';
import { type KeyLookup, type KeySet, matchKeys, prepareKeySet } from './key-set.js';
import { keyUrlProblem, requireKeyUrl } from './url-policy.js';

export interface KeySourceOptions {
  fetch?: typeof fetch;
  /** Clock in epoch milliseconds; drives cooldown and max-age decisions. */
  now?: () => number;
  /** Per-request deadline in milliseconds (default 5 s). */
  fetchTimeoutMs?: number;
  /** Largest accepted discovery or JWKS body in bytes (default 1 MiB). */
  maxBodyBytes?: number;
}

export interface KeySourceStatus {
  readonly origin: 'jwks_file' | 'jwks_uri' | 'discovery';
  /** Key ids currently held. */
  readonly kids: readonly string[];
  /** When the held set was fetched (epoch ms), undefined before the first success. */
  readonly fetchedAt: number | undefined;
  /** Why the last fetch failed, undefined when it succeeded. */
  readonly lastError: string | undefined;
}

export interface KeySource {
  /**
   * Keys that may have signed a token with this header.
   * @throws TokenRejectedError CIPORT_E_TOKEN_UNKNOWN_KEY or CIPORT_E_JWKS_UNAVAILABLE
   */
  keysFor(want: KeyLookup): Promise<CryptoKey[]>;
  /** Fetch now, ignoring the cooldown (operator action, startup warm-up). Resolves true on success. */
  refresh(): Promise<boolean>;
  /** Resolves once no fetch is in flight. */
  idle(): Promise<void>;
  status(): KeySourceStatus;
}

/**
 * Build the key source an issuer's configuration asks for.
 * @throws ConfigError when URLs are unsafe (http off loopback), both `jwks_uri` and `jwks_file`
 * are set, or the `jwks_file` cannot be read or is not a key set.
 */
export function createKeySource(issuer: IssuerConfig, options: KeySourceOptions = {}): KeySource {
  const where = `issuers[${issuer.name}]`;
  const issuerUrl = requireKeyUrl(issuer.issuer, `${where}.issuer`);
  if (issuer.jwks_file !== undefined && issuer.jwks_uri !== undefined) {
    throw new ConfigError('CIPORT_E_CONFIG_INVALID', `${where}: set either jwks_uri or jwks_file, not both`);
  }
  if (issuer.jwks_file !== undefined) return new FileKeySource(issuer, `${where}.jwks_file`);
  const pinned =
    issuer.jwks_uri === undefined ? undefined : requireKeyUrl(issuer.jwks_uri, `${where}.jwks_uri`);
  return new RemoteKeySource(issuer, issuerUrl, pinned, options);
}

function quoteKid(kid: string | undefined): string {
  if (kid === undefined) return 'without a kid';
  // The kid is attacker-chosen text: bound it before it reaches logs.
  return `with kid ${JSON.stringify(kid.length > 64 ? `${kid.slice(0, 64)}…` : kid)}`;
}

class FileKeySource implements KeySource {
  private readonly set: KeySet;

  constructor(
    private readonly issuer: IssuerConfig,
    what: string,
  ) {
    const file = issuer.jwks_file as string;
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (cause) {
      const reason = (cause as NodeJS.ErrnoException).code ?? 'unreadable';
      throw new ConfigError('CIPORT_E_CONFIG_UNREADABLE', `${what}: cannot read ${file} (${reason})`, {
        cause,
      });
    }
    try {
      this.set = prepareKeySet(JSON.parse(text));
    } catch (cause) {
      throw new ConfigError('CIPORT_E_CONFIG_INVALID', `${what}: ${file}: ${(cause as Error).message}`, {
        cause,
      });
    }
  }

  async keysFor(want: KeyLookup): Promise<CryptoKey[]> {
    const match = await matchKeys(this.set, want);
    if (match.kind === 'found') return match.keys;
    const why = match.kind === 'unusable' ? `: ${match.reason}` : '';
    throw new TokenRejectedError(
      'CIPORT_E_TOKEN_UNKNOWN_KEY',
      `issuer "${this.issuer.name}": no ${want.alg} key ${quoteKid(want.kid)} in jwks_file ${this.issuer.jwks_file}${why}`,
    );
  }

  async refresh(): Promise<boolean> {
    return true;
  }

  async idle(): Promise<void> {}

  status(): KeySourceStatus {
    return { origin: 'jwks_file', kids: this.set.kids, fetchedAt: undefined, lastError: undefined };
  }
}

type FetchOutcome = 'fetched' | 'failed';

class RemoteKeySource implements KeySource {
  private readonly fetchImpl: typeof fetch;
  private readonly now: () => number;
  private readonly timeoutMs: number;
  private readonly maxBytes: number;
  private set: KeySet | undefined;
  private fetchedAt: number | undefined;
  private lastAttemptAt: number | undefined;
  private lastError: string | undefined;
  private inflight: Promise<FetchOutcome> | undefined;
  /** Learned from discovery; forgotten when a fetch fails so the next attempt rediscovers. */
  private discovered: URL | undefined;

  constructor(
    private readonly issuer: IssuerConfig,
    private readonly issuerUrl: URL,
    private readonly pinned: URL | undefined,
    options: KeySourceOptions,
  ) {
    this.fetchImpl = options.fetch ?? globalThis.fetch;
    this.now = options.now ?? Date.now;
    this.timeoutMs = options.fetchTimeoutMs ?? DEFAULT_FETCH_TIMEOUT_MS;
    this.maxBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  }

  async keysFor(want: KeyLookup): Promise<CryptoKey[]> {
    let held = this.held();
    if (held === undefined) {
      await this.fetchIfAllowed();
      held = this.held();
      if (held === undefined) throw this.unavailable('no cached keys');
    } else if (this.now() - (this.fetchedAt ?? 0) >= this.issuer.jwks_max_age) {
      // Stale: keep serving from the cached set while a refresh runs (errors are recorded).
      void this.fetchIfAllowed();
    }

    const first = await matchKeys(held, want);
    if (first.kind === 'found') return first.keys;

    // A kid we do not hold: the issuer may have rotated. Refetch, within the cooldown budget.
    const outcome = await this.fetchIfAllowed();
    const current = this.held() ?? held;
    if (outcome === 'fetched') {
      const second = await matchKeys(current, want);
      if (second.kind === 'found') return second.keys;
      throw this.unknownKey(want, second, 'refetched just now');
    }
    if (outcome === 'failed' || this.lastError !== undefined) {
      throw this.unavailable(
        `the ${current.kids.length} cached key(s) were used and none matches the token's key ${quoteKid(want.kid)}`,
      );
    }
    const age = Math.max(0, Math.round((this.now() - (this.lastAttemptAt ?? 0)) / 1000));
    throw this.unknownKey(want, first, `fetched ${age}s ago; the next refetch waits for the jwks_cooldown`);
  }

  /** The set in use; a method so that reads after an await are not narrowed away. */
  private held(): KeySet | undefined {
    return this.set;
  }

  refresh(): Promise<boolean> {
    return this.startFetch().then((outcome) => outcome === 'fetched');
  }

  async idle(): Promise<void> {
    while (this.inflight) await this.inflight;
  }

  status(): KeySourceStatus {
    return {
      origin: this.pinned ? 'jwks_uri' : 'discovery',
      kids: this.set?.kids ?? [],
      fetchedAt: this.fetchedAt,
      lastError: this.lastError,
    };
  }

  /** Join the in-flight fetch, start one if the cooldown allows, or report that we may not. */
  private fetchIfAllowed(): Promise<FetchOutcome | 'skipped'> {
    if (this.inflight) return this.inflight;
    const last = this.lastAttemptAt;
    if (last !== undefined && this.now() - last < this.issuer.jwks_cooldown)
      return Promise.resolve('skipped');
    return this.startFetch();
  }

  private startFetch(): Promise<FetchOutcome> {
    if (this.inflight) return this.inflight;
    this.lastAttemptAt = this.now();
    const run = this.fetchKeySet().then(
      (set): FetchOutcome => {
        this.set = set;
        this.fetchedAt = this.now();
        this.lastError = undefined;
        return 'fetched';
      },
      (err: unknown): FetchOutcome => {
        this.lastError = err instanceof Error ? err.message : String(err);
        this.discovered = undefined;
        return 'failed';
      },
    );
    this.inflight = run.finally(() => {
      this.inflight = undefined;
    });
    return this.inflight;
  }

  private async fetchKeySet(): Promise<KeySet> {
    const url = this.pinned ?? this.discovered ?? (await this.discover());
    const body = await fetchJson(url, this.fetchOptions());
    try {
      const set = prepareKeySet(body);
      if (!this.pinned) this.discovered = url;
      return set;
    } catch (cause) {
      throw new KeyFetchError(`GET ${url.href}: ${(cause as Error).message}`, { cause });
    }
  }

  private async discover(): Promise<URL> {
    const base = this.issuerUrl.href.replace(/\/$/, '');
    const url = new URL(`${base}/.well-known/openid-configuration`);
    const doc = (await fetchJson(url, this.fetchOptions())) as {
      issuer?: unknown;
      jwks_uri?: unknown;
    } | null;
    if (typeof doc !== 'object' || doc === null)
      throw new KeyFetchError(`GET ${url.href}: not a JSON object`);
    // OIDC Discovery 1.0 §4.3: the document's issuer must be the issuer we asked about.
    if (typeof doc.issuer !== 'string' || stripSlash(doc.issuer) !== stripSlash(this.issuer.issuer)) {
      throw new KeyFetchError(
        `GET ${url.href}: discovery names issuer ${JSON.stringify(doc.issuer)}, expected ${this.issuer.issuer}`,
      );
    }
    if (typeof doc.jwks_uri !== 'string')
      throw new KeyFetchError(`GET ${url.href}: no jwks_uri in discovery`);
    let jwksUri: URL;
    try {
      jwksUri = new URL(doc.jwks_uri);
    } catch {
      throw new KeyFetchError(`GET ${url.href}: jwks_uri is not a URL`);
    }
    const problem = keyUrlProblem(jwksUri);
    if (problem) throw new KeyFetchError(`discovered jwks_uri ${jwksUri.href}: ${problem}`);
    return jwksUri;
  }

  private fetchOptions() {
    return { fetch: this.fetchImpl, timeoutMs: this.timeoutMs, maxBytes: this.maxBytes };
  }

  private unavailable(detail: string): TokenRejectedError {
    return new TokenRejectedError(
      'CIPORT_E_JWKS_UNAVAILABLE',
      `issuer "${this.issuer.name}": JWKS endpoint unreachable (${this.lastError ?? 'not fetched yet'}); ${detail}`,
      { details: { issuer: this.issuer.name } },
    );
  }

  private unknownKey(
    want: KeyLookup,
    match: { kind: 'none' } | { kind: 'unusable'; reason: string },
    when: string,
  ): TokenRejectedError {
    const why = match.kind === 'unusable' ? ` (${match.reason})` : '';
    return new TokenRejectedError(
      'CIPORT_E_TOKEN_UNKNOWN_KEY',
      `issuer "${this.issuer.name}": no ${want.alg} key ${quoteKid(want.kid)} in its JWKS${why}; ${when}`,
      { details: { issuer: this.issuer.name } },
    );
  }
}

function stripSlash(url: string): string {
  return url.endsWith('/') ? url.slice(0, -1) : url;
}
