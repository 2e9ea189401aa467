// A session ("port") as the client holds it: created with the ID token, kept alive with
// heartbeats at the gateway's interval, ended with DELETE. The session secret lives in a
// private field: it is sent only in `authorization` headers and never printed or exported.
import { z } from 'zod';
import { CiportError } from '../errors/errors.js';
import { GatewayError, GatewayUnreachableError, SessionEndedError } from './errors.js';
import { type ApiResponse, errorFromResponse, type GatewayClient } from './gateway.js';
import { type RateLimitRetry, retryAfterMs } from './rate-limit-retry.js';

export const PROTOCOLS = ['postgres', 'mysql', 'redis', 'http', 'tcp', 'ssh'] as const;
export type Protocol = (typeof PROTOCOLS)[number];

const credentialSchema = z.looseObject({ user: z.string().min(1), password: z.string().min(1) });

const targetSchema = z.looseObject({
  name: z.string().min(1),
  protocol: z.enum(PROTOCOLS),
  database: z.string().min(1).optional(),
  ttl_ms: z.number().optional(),
  /**
   * A one-time credential the gateway minted for this session (postgres/mysql targets whose
   * exit demands one). Never the target's real credential.
   */
  credentials: credentialSchema.optional(),
});

/** What a pending session's answer says of its approval (docs/approvals.md). */
const approvalSchema = z.looseObject({
  status: z.string(),
  /** The console page where approvers decide. */
  url: z.string(),
  /** ISO time: not approved by then, the session ends (approval_timeout). */
  expires_at: z.string(),
  requirements: z
    .array(
      z.looseObject({
        rule: z.string().optional(),
        groups: z.array(z.string()),
        count: z.number(),
        approvals: z.number().optional(),
      }),
    )
    .default([]),
});

const sessionSchema = z.looseObject({
  id: z.string().min(1),
  /** `pending`: the session waits for approval (202); absent from older gateways: active. */
  status: z.string().optional(),
  approval: approvalSchema.nullable().optional(),
  secret: z.string().min(1),
  expires_at: z.string().min(1),
  lease_timeout_ms: z.number().positive(),
  heartbeat_interval_ms: z.number().positive(),
  rule: z.string().nullable().optional(),
  principal: z.record(z.string(), z.unknown()).optional(),
  targets: z.array(targetSchema),
});

export type SessionTarget = z.infer<typeof targetSchema>;
export type SessionApprovalInfo = z.infer<typeof approvalSchema>;
export type OneTimeCredential = z.infer<typeof credentialSchema>;
/** The session object without its secret. */
export interface SessionInfo {
  id: string;
  expires_at: string;
  lease_timeout_ms: number;
  heartbeat_interval_ms: number;
  rule?: string | null | undefined;
  principal?: Record<string, unknown> | undefined;
  targets: SessionTarget[];
  /** Set while the session waits for approval; cleared once approved. */
  approval?: SessionApprovalInfo | undefined;
}

/** Why a session ended, as the gateway recorded it (`client_end`, `revoked`, `lease_expired`…). */
export interface SessionEnd {
  reason: string;
  /** A sentence for stderr. */
  message: string;
}

export interface CreateSessionOptions {
  token: string;
  targets: string[];
  ttl?: string | undefined;
  /** Retry a 429 (gateway rate limit) after its Retry-After, within a total wait. */
  retry?: RateLimitRetry | undefined;
}

export class PortSession {
  readonly info: SessionInfo;
  readonly #gateway: GatewayClient;
  readonly #secret: string;
  #ended: SessionEnd | undefined;

  private constructor(gateway: GatewayClient, info: SessionInfo, secret: string) {
    this.#gateway = gateway;
    this.info = info;
    this.#secret = secret;
  }

  static async create(gateway: GatewayClient, options: CreateSessionOptions): Promise<PortSession> {
    const body: Record<string, unknown> = {};
    if (options.targets.length > 0) body.targets = options.targets;
    if (options.ttl !== undefined) body.ttl = options.ttl;
    const res = await createWithRetry(gateway, options.token, body, options.retry);
    const parsed = sessionSchema.safeParse(res.body);
    if (!parsed.success) {
      throw new CiportError(
        'CIPORT_E_GATEWAY_RESPONSE',
        `gateway ${gateway.where} answered POST /v1/sessions with an unexpected body (${parsed.error.issues[0]?.message ?? 'invalid'})`,
      );
    }
    const { secret, id, expires_at, lease_timeout_ms, heartbeat_interval_ms, rule, principal, targets } =
      parsed.data;
    const info: SessionInfo = {
      id,
      expires_at,
      lease_timeout_ms,
      heartbeat_interval_ms,
      rule,
      principal,
      targets,
      ...(parsed.data.status === 'pending' && parsed.data.approval ? { approval: parsed.data.approval } : {}),
    };
    const session = new PortSession(gateway, info, secret);
    const missing = options.targets.filter((t) => !info.targets.some((g) => g.name === t));
    if (missing.length > 0) {
      await session.end().catch(() => {});
      throw new CiportError(
        'CIPORT_E_GATEWAY_RESPONSE',
        `gateway granted a session without ${missing.join(', ')}; ended it`,
      );
    }
    return session;
  }

  get id(): string {
    return this.info.id;
  }

  /** The session waits for approval: it opens no tunnel until `awaitApproval` resolves. */
  get pending(): boolean {
    return this.info.approval !== undefined;
  }

  /**
   * Wait until the session is approved (docs/approvals.md): long-polls
   * `GET /v1/sessions/{id}/approval?wait=20` while heartbeats keep the lease. Resolves once it is
   * approved (with its new expiry in `info`); rejects with the gateway's error once it ends
   * (CIPORT_E_APPROVAL_DENIED with who and why, CIPORT_E_APPROVAL_TIMEOUT, CIPORT_E_SESSION_ENDED:
   * exit 3), or with a SessionEndedError (`client_end`) when `signal` aborts, after ending it.
   * A gateway that cannot be reached is retried until the lease would have lapsed.
   */
  async awaitApproval(
    options: { signal?: AbortSignal; onError?: (err: CiportError) => void } = {},
  ): Promise<void> {
    if (!this.pending) return;
    const stop = new AbortController();
    const onAbort = () => stop.abort();
    options.signal?.addEventListener('abort', onAbort, { once: true });
    let endedBy: SessionEnd | undefined;
    const heartbeat = new Heartbeat(this, {
      onEnded: (end) => {
        endedBy = end;
        stop.abort();
      },
      ...(options.onError ? { onError: options.onError } : {}),
    });
    heartbeat.start();
    try {
      while (this.pending) {
        if (stop.signal.aborted) break;
        let res: ApiResponse;
        try {
          res = await this.#gateway.request(
            'GET',
            `/v1/sessions/${encodeURIComponent(this.id)}/approval?wait=20`,
            {
              bearer: this.#secret,
              timeoutMs: 40_000,
              signal: stop.signal,
            },
          );
        } catch (err) {
          if (stop.signal.aborted) break;
          options.onError?.(err instanceof CiportError ? err : new GatewayUnreachableError(String(err)));
          await pause(1000, stop.signal);
          continue;
        }
        if (res.status === 200) {
          const body = (res.body ?? {}) as { state?: unknown; expires_at?: unknown };
          if (body.state === 'active') {
            if (typeof body.expires_at === 'string') this.info.expires_at = body.expires_at;
            this.info.approval = undefined;
          }
          continue;
        }
        if (res.status >= 500 || res.status === 408 || res.status === 429) {
          options.onError?.(errorFromResponse(res, 'waiting for approval'));
          await pause(1000, stop.signal);
          continue;
        }
        this.markEnded(endReasonOf(res));
        throw errorFromResponse(res, 'waiting for approval');
      }
    } finally {
      heartbeat.stop();
      options.signal?.removeEventListener('abort', onAbort);
    }
    if (!this.pending) return;
    if (options.signal?.aborted && !endedBy) {
      await this.end().catch(() => {});
      throw new SessionEndedError('client_end', `stopped while session ${this.id} waited for approval`);
    }
    // The heartbeat saw it end: the gateway says how (denied by whom, timed out).
    const res = await this.#gateway
      .request('GET', `/v1/sessions/${encodeURIComponent(this.id)}/approval`, {
        bearer: this.#secret,
        timeoutMs: 10_000,
      })
      .catch(() => undefined);
    if (res && res.status >= 400) throw errorFromResponse(res, 'waiting for approval');
    const end = endedBy ?? this.markEnded('ended');
    throw new SessionEndedError(end.reason, end.message);
  }

  get ended(): SessionEnd | undefined {
    return this.#ended;
  }

  get gateway(): GatewayClient {
    return this.#gateway;
  }

  /** Open one tunnel stream (see GatewayClient.openTunnel). */
  openTunnel(target: string) {
    return this.#gateway.openTunnel(target, this.info.id, this.#secret);
  }

  /**
   * One heartbeat. Resolves undefined while active, or the SessionEnd once the gateway says
   * the session is over (410 with its end_reason, 404 unknown). Unreachable gateways throw.
   */
  async heartbeat(): Promise<SessionEnd | undefined> {
    if (this.#ended) return this.#ended;
    const res = await this.#gateway.request('POST', `/v1/sessions/${encodeURIComponent(this.id)}/heartbeat`, {
      bearer: this.#secret,
      timeoutMs: 10_000,
    });
    if (res.status === 200) return undefined;
    if (res.status === 410 || res.status === 404 || res.status === 401)
      return this.markEnded(endReasonOf(res));
    throw new GatewayError(res.status, undefined, `heartbeat answered HTTP ${res.status}`);
  }

  /** Record that the session is over (idempotent); returns the first recorded end. */
  markEnded(reason: string): SessionEnd {
    this.#ended ??= { reason, message: describeEnd(reason) };
    return this.#ended;
  }

  /**
   * An SSH certificate for `publicKey` on an ssh target (docs/ssh.md): the gateway signs it for
   * this session and says how to verify the host. Errors throw with the gateway's code.
   */
  async sshCertificate(target: string, publicKey: string): Promise<unknown> {
    const res = await this.#gateway.api(
      'POST',
      `/v1/sessions/${encodeURIComponent(this.id)}/ssh-certificate`,
      {
        bearer: this.#secret,
        body: { target, public_key: publicKey },
        timeoutMs: 15_000,
      },
    );
    return res.body;
  }

  /**
   * DELETE the session. Resolves with how it ended: `client_end`, or the earlier end the gateway
   * recorded (revoked, expired…) when it was over already. Unreachable throws.
   */
  async end(): Promise<SessionEnd> {
    const res = await this.#gateway.request('DELETE', `/v1/sessions/${encodeURIComponent(this.id)}`, {
      bearer: this.#secret,
      timeoutMs: 10_000,
    });
    if (res.status === 200 || res.status === 404 || res.status === 410) {
      const body = (res.body ?? {}) as { end_reason?: unknown; error?: { end_reason?: unknown } };
      const reason = body.end_reason ?? body.error?.end_reason;
      return this.markEnded(typeof reason === 'string' ? reason : 'client_end');
    }
    throw new GatewayError(res.status, undefined, `ending session ${this.id} answered HTTP ${res.status}`);
  }
}

/** The end reason an error answer about the session gives (410 with `error.end_reason`, 404, 401). */
function endReasonOf(res: ApiResponse): string {
  const body = (res.body ?? {}) as { error?: { end_reason?: unknown } };
  if (typeof body.error?.end_reason === 'string') return body.error.end_reason;
  return res.status === 404 ? 'unknown_session' : res.status === 401 ? 'secret_rejected' : 'ended';
}

function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

/** POST /v1/sessions; a 429 is retried after its Retry-After while the total wait allows. */
async function createWithRetry(
  gateway: GatewayClient,
  token: string,
  body: Record<string, unknown>,
  retry: RateLimitRetry | undefined,
): Promise<ApiResponse> {
  const sleep = retry?.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  let waited = 0;
  for (let attempt = 0; ; attempt++) {
    const res = await gateway.request('POST', '/v1/sessions', { bearer: token, body });
    if (res.status >= 200 && res.status < 300) return res;
    if (res.status === 429 && retry) {
      // Without Retry-After (a proxy's 429): 1 s, 2 s, 4 s…
      const base = retryAfterMs(res.headers['retry-after']) ?? 1000 * 2 ** Math.min(attempt, 5);
      // Up to 10 % more, so that jobs refused together do not return together.
      const waitMs = Math.max(base, 1000) + Math.floor(Math.random() * Math.max(base, 1000) * 0.1);
      if (waited + waitMs <= retry.maxWaitMs) {
        retry.onRetry?.(Math.max(1, Math.round(waitMs / 1000)));
        await sleep(waitMs);
        waited += waitMs;
        continue;
      }
    }
    throw errorFromResponse(res, 'POST /v1/sessions');
  }
}

const END_REASONS: Record<string, string> = {
  client_end: 'ended by the client',
  revoked: 'revoked by an operator',
  lease_expired: 'its lease lapsed (no heartbeat reached the gateway in time)',
  expired: 'its time to live ran out',
  expired_while_down: 'its time to live or lease ran out while the gateway was down',
  ttl: 'its time to live ran out',
  job_finished: 'the CI job is no longer running',
  gateway_shutdown: 'the gateway shut down',
  unknown_session: 'the gateway does not know it',
  secret_rejected: 'the gateway rejected its secret',
  gateway_unreachable: 'the gateway stayed unreachable for longer than the lease',
  approval_denied: 'an approver denied it',
  approval_timeout: 'it was not approved in time',
};

export function describeEnd(reason: string): string {
  return `session ended: ${END_REASONS[reason] ?? reason} (${reason})`;
}

export interface HeartbeatOptions {
  /** Called once when the session is found ended (or the lease certainly lapsed). */
  onEnded: (end: SessionEnd) => void;
  /** Transient failures, for --verbose. */
  onError?: (err: CiportError) => void;
}

/**
 * Heartbeats at `heartbeat_interval_ms`; a check right after `expires_at`; and `check()` for
 * callers that saw a stream reset and want to know why now. Stop with `stop()`.
 */
export class Heartbeat {
  readonly #session: PortSession;
  readonly #options: HeartbeatOptions;
  #timer: NodeJS.Timeout | undefined;
  #expiry: NodeJS.Timeout | undefined;
  #lastOk = Date.now();
  #inFlight: Promise<void> | undefined;
  #stopped = false;

  constructor(session: PortSession, options: HeartbeatOptions) {
    this.#session = session;
    this.#options = options;
  }

  start(): void {
    this.#schedule();
    const untilExpiry = Date.parse(this.#session.info.expires_at) - Date.now();
    if (Number.isFinite(untilExpiry)) {
      // setTimeout caps at ~24.8 days; sessions are far shorter.
      this.#expiry = setTimeout(
        () => void this.check(),
        Math.min(Math.max(untilExpiry, 0) + 250, 2 ** 31 - 1),
      );
    }
  }

  stop(): void {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    if (this.#expiry) clearTimeout(this.#expiry);
  }

  #schedule(): void {
    if (this.#stopped) return;
    this.#timer = setTimeout(() => {
      void this.check().finally(() => this.#schedule());
    }, this.#session.info.heartbeat_interval_ms);
  }

  /** Heartbeat now (coalesced with one already in flight). */
  check(): Promise<void> {
    this.#inFlight ??= this.#beat().finally(() => {
      this.#inFlight = undefined;
    });
    return this.#inFlight;
  }

  async #beat(): Promise<void> {
    if (this.#stopped) return;
    try {
      const end = await this.#session.heartbeat();
      if (this.#stopped) return;
      if (end) {
        this.stop();
        this.#options.onEnded(end);
        return;
      }
      this.#lastOk = Date.now();
    } catch (thrown) {
      if (this.#stopped) return;
      const err =
        thrown instanceof CiportError
          ? thrown
          : new GatewayUnreachableError(`heartbeat failed: ${(thrown as Error).message}`);
      this.#options.onError?.(err);
      const expired = Date.parse(this.#session.info.expires_at) <= Date.now();
      const lapsed = Date.now() - this.#lastOk > this.#session.info.lease_timeout_ms;
      if (expired || lapsed) {
        this.stop();
        this.#options.onEnded(this.#session.markEnded(expired ? 'ttl' : 'gateway_unreachable'));
      }
    }
  }
}
