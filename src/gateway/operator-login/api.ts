// `ciport login` on the gateway side (docs/login.md, docs/protocol.md "Operator sign-in"):
// - `POST /v1/operator/sessions` redeems the code the CLI's loopback listener received;
// - `POST /v1/operator/device` and `POST /v1/operator/device/token` run the device grant, one
//   provider request per poll;
// - `GET|DELETE /v1/operator/sessions/current` show and end the sign-in a `cpo_` token stands for.
// A completed sign-in maps the ID token's groups to roles (operatorFromClaims), stores an operator
// session (kind `cli`, `sso.session_ttl`), audits `operator.signed_in` and answers the `cpo_`
// token; a well-formed attempt that fails (a refused or replayed code, an unknown device handle,
// no role) is audited as `operator.sign_in_failed`; malformed requests only logged. Failed
// attempts are rate limited per client address and in all (SignInLimits), so guessing codes or
// handles can flood neither the provider nor the audit log.
import { createHash } from 'node:crypto';
import { auditEvent } from '../../audit/events.js';
import type { SsoConfig } from '../../config/sso.js';
import { asCiportError, CiportError } from '../../errors/index.js';
import { type OidcOperator, operatorRef } from '../../identity/operator.js';
import {
  isOperatorSecret,
  newOperatorSecret,
  operatorOfSession,
  operatorSessionRecord,
  operatorUnder,
} from '../../identity/operator-secret.js';
import { operatorFromClaims } from '../../identity/sso-operator.js';
import type { Logger } from '../../log/logger.js';
import { RateLimiter, type RateLimitOptions } from '../../session/rate-limit.js';
import { bearer, hashSecret } from '../../session/secret.js';
import type { OperatorSessionRecord } from '../../store/operator-sessions.js';
import type { Store } from '../../store/types.js';
import type { GatewayInfoSso } from '../../transport/gateway-info.js';
import {
  type OperatorView,
  parseCodeRedemption,
  parseDevicePoll,
  SIGN_IN_MAX_BODY,
} from '../../transport/operator-login.js';
import type { ApiDeps } from '../api.js';
import { parseJsonBody, type Req, type Res, readBody, sendJson } from '../http.js';
import { PendingDevices } from './pending-devices.js';
import { CliSignInProvider } from './provider.js';

/** How many failed sign-in attempts (and device starts) are allowed; tests may loosen them. */
export interface SignInLimits {
  /** Failures from one client address. */
  perAddress: RateLimitOptions;
  /** Failures from all addresses together. */
  total: RateLimitOptions;
  /** Device authorizations started from one address (each reaches the provider). */
  deviceStartsPerAddress: RateLimitOptions;
}

export const DEFAULT_SIGN_IN_LIMITS: SignInLimits = {
  perAddress: { perMinute: 10, burst: 10 },
  total: { perMinute: 60, burst: 60 },
  deviceStartsPerAddress: { perMinute: 5, burst: 5 },
};

/** Codes presented in the last CODE_MEMORY_MS are refused before the provider is asked. */
const CODE_MEMORY_MS = 10 * 60_000;
const MAX_CODES_REMEMBERED = 10_000;
/** A poll this early (ms before its interval is up) still reaches the provider. */
const POLL_SLACK_MS = 250;

export interface OperatorLoginOptions {
  sso: SsoConfig & { cli_client_id: string };
  store: Store;
  log: Logger;
  fetch?: typeof fetch;
  limits?: Partial<SignInLimits>;
}

/** The gateway's part of `ciport login`; exists when `sso.cli_client_id` is configured. */
export class OperatorLogin {
  readonly provider: CliSignInProvider;
  readonly #sso: OperatorLoginOptions['sso'];
  readonly #store: Store;
  readonly #log: Logger;
  readonly #failuresByAddress: RateLimiter;
  readonly #failures: RateLimiter;
  readonly #deviceStarts: RateLimiter;
  readonly #pending = new PendingDevices();
  /** SHA-256 of codes presented recently → when they may be forgotten. */
  readonly #codes = new Map<string, number>();

  constructor(options: OperatorLoginOptions) {
    this.#sso = options.sso;
    this.#store = options.store;
    this.#log = options.log;
    this.provider = new CliSignInProvider({
      sso: options.sso,
      log: options.log,
      ...(options.fetch ? { fetch: options.fetch } : {}),
    });
    const limits = { ...DEFAULT_SIGN_IN_LIMITS, ...options.limits };
    this.#failuresByAddress = new RateLimiter(limits.perAddress);
    this.#failures = new RateLimiter(limits.total);
    this.#deviceStarts = new RateLimiter(limits.deviceStartsPerAddress);
  }

  /** What `GET /v1/info` says (waits briefly for discovery the first time). */
  async info(): Promise<GatewayInfoSso> {
    await this.provider.settle(2_000);
    return {
      issuer: this.#sso.issuer,
      cli_client_id: this.#sso.cli_client_id,
      scopes: this.provider.scopes,
      device: this.provider.deviceSupported ?? false,
    };
  }

  /** `POST /v1/operator/sessions`. */
  async redeemCode(deps: ApiDeps, req: Req, res: Res): Promise<void> {
    await this.#attempt(req, async (wellFormed) => {
      const body = parseCodeRedemption(parseJsonBody(await readSmallBody(deps, req)));
      wellFormed();
      this.#claimCode(body.code);
      return this.provider.redeemCode(body);
    }).then((signIn) => sendJson(res, 201, signIn));
  }

  /** `POST /v1/operator/device`: start a device authorization; the device code stays here. */
  async startDevice(deps: ApiDeps, req: Req, res: Res): Promise<void> {
    const address = clientAddress(req);
    this.#assertNotLimited(address, this.#deviceStarts);
    this.#deviceStarts.take(address);
    const body = parseJsonBody(await readSmallBody(deps, req));
    if (typeof body !== 'object' || body === null || Object.keys(body).length > 0) {
      throw new CiportError('CIPORT_E_USAGE', 'the request body must be empty or {}');
    }
    const device = await this.provider.startDevice();
    const handle = this.#pending.add(device);
    sendJson(res, 200, {
      handle,
      user_code: device.user_code,
      verification_uri: device.verification_uri,
      ...(device.verification_uri_complete
        ? { verification_uri_complete: device.verification_uri_complete }
        : {}),
      interval: this.#pending.get(handle)?.interval ?? 5,
      expires_in: device.expires_in,
    });
  }

  /** `POST /v1/operator/device/token`: one poll; at most one provider request per interval. */
  async pollDevice(deps: ApiDeps, req: Req, res: Res): Promise<void> {
    let waiting: { status: 'pending' | 'slow_down'; interval: number } | undefined;
    const signIn = await this.#attempt(req, async (wellFormed) => {
      const handle = parseDevicePoll(parseJsonBody(await readSmallBody(deps, req)));
      wellFormed();
      const entry = this.#pending.get(handle);
      if (!entry) {
        throw new CiportError(
          'CIPORT_E_SSO_FAILED',
          'no device sign-in with this handle is in progress (it expired or completed); run ciport login --device again',
        );
      }
      if (entry.busy || Date.now() < entry.nextPollAt - POLL_SLACK_MS) {
        waiting = { status: 'pending', interval: entry.interval };
        return undefined;
      }
      entry.busy = true;
      try {
        const result = await this.provider.pollDevice(entry.deviceCode);
        if ('claims' in result) {
          this.#pending.delete(handle);
          return result.claims;
        }
        if (result.wait === 'slow_down') entry.interval += 5;
        entry.nextPollAt = Date.now() + entry.interval * 1000;
        waiting = { status: result.wait, interval: entry.interval };
        return undefined;
      } catch (err) {
        this.#pending.delete(handle);
        throw err;
      } finally {
        entry.busy = false;
      }
    });
    if (signIn) sendJson(res, 201, signIn);
    else sendJson(res, 200, waiting);
  }

  /**
   * One sign-in attempt: refused at once while over the failure limits; `redeem` reads the
   * request (calling `wellFormed()` once it parsed) and asks the provider, resolving to the ID
   * token's claims (or undefined: not finished yet). Failures take from the limits and are
   * logged; those of well-formed requests are audited too.
   */
  async #attempt(
    req: Req,
    redeem: (wellFormed: () => void) => Promise<Record<string, unknown> | undefined>,
  ): Promise<Record<string, unknown> | undefined> {
    const address = clientAddress(req);
    this.#assertNotLimited(address, this.#failuresByAddress);
    let audited = false;
    let claims: Record<string, unknown> | undefined;
    try {
      claims = await redeem(() => {
        audited = true;
      });
      if (!claims) return undefined;
      return await this.#signIn(claims);
    } catch (thrown) {
      const err = asCiportError(thrown);
      this.#failuresByAddress.take(address);
      this.#failures.take('*');
      this.#log.warn({ code: err.code, reason: err.message, via: 'cli', address }, 'operator sign-in failed');
      if (audited && (err.code === 'CIPORT_E_SSO_FAILED' || err.code === 'CIPORT_E_SSO_NO_ROLE')) {
        await this.#auditFailure(err, claims);
      }
      throw err;
    }
  }

  #assertNotLimited(address: string, perAddress: RateLimiter): void {
    const waitMs = Math.max(perAddress.wait(address), this.#failures.wait('*'));
    if (waitMs === 0) return;
    const retryAfterS = Math.max(1, Math.ceil(waitMs / 1000));
    throw new CiportError('CIPORT_E_RATE_LIMITED', `too many failed sign-ins; retry in ${retryAfterS} s`, {
      details: { retry_after_s: retryAfterS },
    });
  }

  /** Refuse a code presented before (the provider refuses it too; this answers without asking). */
  #claimCode(code: string): void {
    const now = Date.now();
    for (const [key, until] of this.#codes) {
      if (until > now && this.#codes.size < MAX_CODES_REMEMBERED) break;
      this.#codes.delete(key);
    }
    const key = createHash('sha256').update(code).digest('hex');
    if (this.#codes.has(key)) {
      throw new CiportError('CIPORT_E_SSO_FAILED', 'this authorization code was presented before');
    }
    this.#codes.set(key, now + CODE_MEMORY_MS);
  }

  async #signIn(claims: Record<string, unknown>): Promise<Record<string, unknown>> {
    const operator = operatorFromClaims(this.#sso, claims);
    const token = newOperatorSecret();
    const now = Date.now();
    const expiresAt = now + this.#sso.session_ttl;
    await this.#store.createOperatorSession(operatorSessionRecord(operator, 'cli', token, now, expiresAt));
    const expires_at = new Date(expiresAt).toISOString();
    try {
      await this.#store.appendAudit(
        auditEvent('operator.signed_in', { ...signInData(operator), via: 'cli', expires_at }),
      );
    } catch (err) {
      // A sign-in the audit log does not hold must not be usable.
      await this.#store.endOperatorSession(hashSecret(token), Date.now()).catch(() => {});
      throw err;
    }
    this.#log.info({ by: operatorRef(operator), roles: operator.roles, via: 'cli' }, 'operator signed in');
    return { token, expires_at, operator: operatorView(operator) };
  }

  async #auditFailure(err: CiportError, claims?: Record<string, unknown>): Promise<void> {
    const text = (v: unknown) => (typeof v === 'string' && v !== '' ? v.slice(0, 256) : undefined);
    const issuer = text(claims?.iss);
    const subject = text(claims?.sub);
    const email = text(claims?.email);
    try {
      await this.#store.appendAudit(
        auditEvent('operator.sign_in_failed', {
          code: err.code,
          reason: err.message.slice(0, 300),
          via: 'cli',
          ...(issuer ? { issuer } : {}),
          ...(subject ? { subject } : {}),
          ...(email ? { email } : {}),
        }),
      );
    } catch (auditErr) {
      this.#log.error({ err: asCiportError(auditErr).message }, 'audit operator.sign_in_failed failed');
    }
  }
}

/** The gateway's OperatorLogin, or CIPORT_E_SSO_NOT_CONFIGURED (404). */
export function operatorLoginOf(deps: ApiDeps): OperatorLogin {
  if (deps.operatorLogin) return deps.operatorLogin;
  throw new CiportError(
    'CIPORT_E_SSO_NOT_CONFIGURED',
    deps.config.sso
      ? 'this gateway has no sso.cli_client_id: ciport login is off (ask its operator to register a public client)'
      : 'this gateway has no sso: section: operators use admin tokens (CIPORT_ADMIN_TOKEN)',
  );
}

/** `GET /v1/operator/sessions/current`: who the bearer `cpo_` token signs in, until when. */
export async function currentSignIn(deps: ApiDeps, req: Req, res: Res): Promise<void> {
  const record = await liveSignIn(deps, req);
  const operator = record ? operatorUnder(deps.config.sso, record) : undefined;
  if (!record || !operator) {
    throw new CiportError(
      'CIPORT_E_ADMIN_UNAUTHORIZED',
      record
        ? "this sign-in grants no role under the gateway's sso: as configured now; run `ciport login` again"
        : 'not signed in: the sign-in expired or was ended; run `ciport login` again',
    );
  }
  sendJson(res, 200, {
    operator: operatorView(operator),
    via: record.kind,
    signed_in_at: new Date(record.createdAt).toISOString(),
    expires_at: new Date(record.expiresAt).toISOString(),
  });
}

/** `DELETE /v1/operator/sessions/current`: sign out (audited); `{signed_out: false}` if it was not live. */
export async function signOut(deps: ApiDeps, req: Req, res: Res): Promise<void> {
  const record = await liveSignIn(deps, req);
  const ended = record ? await deps.store.endOperatorSession(record.secretHash, Date.now()) : false;
  if (record && ended) {
    const operator = operatorOfSession(record);
    await deps.store.appendAudit(
      auditEvent('operator.signed_out', { ...signInData(operator), via: record.kind }),
    );
    deps.log.info({ by: operatorRef(operator), via: record.kind }, 'operator signed out');
  }
  sendJson(res, 200, { signed_out: ended });
}

async function liveSignIn(deps: ApiDeps, req: Req): Promise<OperatorSessionRecord | undefined> {
  const presented = bearer(req.headers.authorization);
  if (!presented || !isOperatorSecret(presented)) return undefined;
  return deps.store.operatorSession(hashSecret(presented), Date.now());
}

function signInData(o: OidcOperator) {
  return {
    by: operatorRef(o),
    issuer: o.issuer,
    subject: o.subject,
    ...(o.email ? { email: o.email } : {}),
    ...(o.name ? { name: o.name } : {}),
    roles: [...o.roles],
  };
}

export function operatorView(o: OidcOperator): OperatorView {
  return {
    ...signInData(o),
    ...(o.username ? { username: o.username } : {}),
  };
}

function clientAddress(req: Req): string {
  return req.socket?.remoteAddress ?? 'unknown';
}

function readSmallBody(deps: ApiDeps, req: Req): Promise<Buffer> {
  return readBody(req, Math.min(SIGN_IN_MAX_BODY, deps.config.server.max_body_bytes));
}
