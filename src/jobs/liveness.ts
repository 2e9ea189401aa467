// Job liveness: a session lives no longer than the CI job whose token opened it.
//
// - `checkOnce` at session creation: `finished` means refuse (CIPORT_E_JOB_NOT_RUNNING) even
//   though the token is still valid; `unknown` (API unreachable, rate-limited, wrong token)
//   means go on. Liveness fails OPEN — the session still had to pass identity and policy, and
//   still ends at its TTL and lease. Identity and policy never fail open.
// - `watch`/`unwatch` while sessions are open: one poll per JOB, whatever the number of its
//   sessions, every `poll_interval`; exponential backoff with jitter on errors; rate-limit
//   headers (Retry-After, RateLimit-*, X-RateLimit-*) hold every job of that issuer's API until
//   the reset. When the job is finished, each of its sessions' `onFinished` runs once.
// - `handleGitlabHook`: a verified GitLab Job Hook ends the job's sessions at once.
//
// Time comes from an injectable clock (timers included) so tests step through backoffs and
// rate-limit waits without sleeping. Nothing here touches prom-client: counters are kept as
// numbers (`stats()`) and pushed to an optional `metrics` sink the gateway wires to Prometheus.
import type { IssuerConfig } from '../config/schema.js';
import type { Secret } from '../config/secret.js';
import { ConfigError } from '../errors/index.js';
import type { Claims } from '../identity/claim-values.js';
import { requireKeyUrl } from '../identity/url-policy.js';
import { GithubJobClient, GitlabJobClient, type JobApiClient, type JobStatusReport } from './clients.js';
import { JobNotRunningError } from './errors.js';
import { JobApiError, type JobApiFailure } from './http.js';
import { describeJob, type JobRef, jobKey, jobRefFromClaims } from './ref.js';
import type { JobState } from './status.js';
import { checkGitlabHook, type GitlabJobEvent, type HeaderBag } from './webhook.js';

/** Time and timers, injectable for tests. Handles are opaque to the service. */
export interface LivenessClock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** Real time; timers are unref'd so that watching a job never keeps a process alive. */
export const systemClock: LivenessClock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => {
    const timer = setTimeout(fn, ms);
    timer.unref();
    return timer;
  },
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
};

/** What the service needs of a logger (pino's Logger satisfies it). Never given a secret. */
export interface JobLog {
  debug?(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
}

export type FinishSource = 'poll' | 'check' | 'webhook';

/** Passed to `onFinished`: the session should end with reason `job_finished`. */
export interface JobFinishedEvent {
  readonly reason: 'job_finished';
  readonly issuer: string;
  /** `jobKey(ref)`. */
  readonly job: string;
  /** The platform's status words: `success`, `canceled`, `completed/cancelled`, … */
  readonly status: string;
  readonly source: FinishSource;
}

export type OnJobFinished = (event: JobFinishedEvent) => void;

/**
 * Optional push-style metrics sink; every method optional. Suggested Prometheus mapping in
 * docs/job-liveness.md. Called synchronously; must not throw.
 */
export interface JobLivenessMetrics {
  /** One API request ended: `ok` or why it failed. */
  request?(issuer: string, purpose: 'check' | 'poll', outcome: 'ok' | JobApiFailure): void;
  /** Per issuer: the last request failed (not counting rate limits and 404s), or recovered. */
  apiUnreachable?(issuer: string, unreachable: boolean): void;
  /** Jobs and sessions currently watched. */
  watched?(jobs: number, sessions: number): void;
  /** A job was found finished (its sessions, if any, were told). */
  jobFinished?(issuer: string, source: FinishSource): void;
}

export interface JobLivenessOptions {
  /** The configured issuers; those without `job_api` are not covered. */
  issuers: readonly IssuerConfig[];
  fetch?: typeof fetch;
  clock?: LivenessClock;
  /** [0, 1), for backoff jitter. */
  random?: () => number;
  log?: JobLog;
  metrics?: JobLivenessMetrics;
  /** Deadline of one API request (default 5000 ms). */
  requestTimeoutMs?: number;
  /** Largest accepted API response body (default 256 KiB). */
  maxBodyBytes?: number;
  /** Ceiling of the error backoff (default 120 s). */
  maxBackoffMs?: number;
  /** Ceiling of a wait the API's rate-limit headers ask for (default 1 h). */
  maxRateLimitWaitMs?: number;
  /** How long a job seen finished is remembered, so its tokens are refused without asking (default 10 min). */
  finishedMemoryMs?: number;
}

export interface JobLivenessStats {
  jobsWatched: number;
  sessionsWatched: number;
  pollsOk: number;
  pollsError: number;
  checksOk: number;
  checksError: number;
  jobsFinished: number;
  hooksApplied: number;
  /** Per covered issuer: 1 while its job API is unreachable (liveness failing open). */
  apiUnreachable: Record<string, 0 | 1>;
}

export interface WatchedJobInfo {
  key: string;
  issuer: string;
  sessions: number;
  /** Consecutive failed polls. */
  failures: number;
  /** When the next poll is due (epoch ms on the service clock). */
  nextPollAt: number | undefined;
  /** The delay chosen for the next poll (interval, backoff or rate-limit wait). */
  lastDelayMs: number;
}

export type GitlabHookOutcome =
  | { outcome: 'applied'; issuer: string; event: GitlabJobEvent; state: JobState; sessionsEnded: number }
  | { outcome: 'ignored'; issuer: string; reason: 'wrong_event' | 'malformed' | 'too_large' }
  | { outcome: 'unauthorized' };

export const DEFAULT_REQUEST_TIMEOUT_MS = 5_000;
export const DEFAULT_MAX_BODY_BYTES = 256 * 1024;
export const DEFAULT_MAX_BACKOFF_MS = 120_000;
export const DEFAULT_MAX_RATE_LIMIT_WAIT_MS = 3_600_000;
export const DEFAULT_FINISHED_MEMORY_MS = 600_000;
/** Shortest accepted `poll_interval`. */
export const MIN_POLL_INTERVAL_MS = 100;
const MAX_REMEMBERED = 10_000;

interface IssuerState {
  readonly name: string;
  readonly platform: 'gitlab' | 'github';
  readonly client: JobApiClient;
  readonly pollIntervalMs: number;
  readonly webhookSecret: Secret | undefined;
  /** Rate limit: no request before this time. */
  blockedUntil: number;
  unreachable: boolean;
  lastFailure: JobApiFailure | undefined;
}

interface WatchedJob {
  readonly key: string;
  readonly ref: JobRef;
  readonly issuer: IssuerState;
  readonly sessions: Map<string, OnJobFinished>;
  timer: unknown;
  nextPollAt: number | undefined;
  lastDelayMs: number;
  failures: number;
}

export class JobLiveness {
  readonly #issuers = new Map<string, IssuerState>();
  readonly #jobs = new Map<string, WatchedJob>();
  /** Session key → job key. */
  readonly #sessions = new Map<string, string>();
  /** Job key → finish event, oldest first. */
  readonly #finished = new Map<string, { event: JobFinishedEvent; at: number }>();
  readonly #checks = new Map<string, Promise<JobState>>();
  readonly #inflight = new Set<Promise<unknown>>();
  readonly #warnedStatuses = new Set<string>();
  readonly #abort = new AbortController();
  readonly #clock: LivenessClock;
  readonly #random: () => number;
  readonly #log: JobLog | undefined;
  readonly #metrics: JobLivenessMetrics;
  readonly #maxBackoffMs: number;
  readonly #maxRateLimitWaitMs: number;
  readonly #finishedMemoryMs: number;
  readonly #counters = {
    pollsOk: 0,
    pollsError: 0,
    checksOk: 0,
    checksError: 0,
    jobsFinished: 0,
    hooksApplied: 0,
  };
  #closed = false;

  /**
   * @throws ConfigError when a `job_api` is set on an `oidc` issuer, names an unsafe URL, has
   *   an unresolved token, a `webhook_secret` on a non-GitLab issuer, or a too short interval.
   */
  constructor(options: JobLivenessOptions) {
    this.#clock = options.clock ?? systemClock;
    this.#random = options.random ?? Math.random;
    this.#log = options.log;
    this.#metrics = options.metrics ?? {};
    this.#maxBackoffMs = options.maxBackoffMs ?? DEFAULT_MAX_BACKOFF_MS;
    this.#maxRateLimitWaitMs = options.maxRateLimitWaitMs ?? DEFAULT_MAX_RATE_LIMIT_WAIT_MS;
    this.#finishedMemoryMs = options.finishedMemoryMs ?? DEFAULT_FINISHED_MEMORY_MS;
    for (const issuer of options.issuers) {
      const api = issuer.job_api;
      if (api === undefined) continue;
      const where = `issuers[${issuer.name}].job_api`;
      if (issuer.kind === 'oidc') {
        throw new ConfigError(
          'CIPORT_E_CONFIG_INVALID',
          `${where}: only gitlab and github issuers have a job API; remove job_api from this oidc issuer`,
        );
      }
      if (api.webhook_secret !== undefined && issuer.kind !== 'gitlab') {
        throw new ConfigError(
          'CIPORT_E_CONFIG_INVALID',
          `${where}.webhook_secret: only GitLab job webhooks are supported`,
        );
      }
      const url = apiBaseUrl(api.url, `${where}.url`);
      if (api.poll_interval < MIN_POLL_INTERVAL_MS) {
        throw new ConfigError(
          'CIPORT_E_CONFIG_INVALID',
          `${where}.poll_interval: at least ${MIN_POLL_INTERVAL_MS}ms`,
        );
      }
      for (const [name, secret] of [
        ['token', api.token],
        ['webhook_secret', api.webhook_secret],
      ] as const) {
        if (secret !== undefined && !secret.resolved) {
          throw new ConfigError(
            'CIPORT_E_SECRET_UNAVAILABLE',
            `${where}.${name}: secret ${secret.origin} was not resolved`,
          );
        }
      }
      const clientOptions = {
        url,
        token: api.token,
        fetch: options.fetch ?? globalThis.fetch,
        timeoutMs: options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS,
        maxBytes: options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES,
        now: () => this.#clock.now(),
      };
      this.#issuers.set(issuer.name, {
        name: issuer.name,
        platform: issuer.kind,
        client:
          issuer.kind === 'gitlab' ? new GitlabJobClient(clientOptions) : new GithubJobClient(clientOptions),
        pollIntervalMs: api.poll_interval,
        webhookSecret: api.webhook_secret,
        blockedUntil: 0,
        unreachable: false,
        lastFailure: undefined,
      });
      this.#metrics.apiUnreachable?.(issuer.name, false);
    }
    this.#reportWatched();
  }

  /** Whether liveness applies to `ref` (its issuer has a `job_api`). */
  covers(ref: JobRef): boolean {
    return this.#issuers.get(ref.issuer)?.platform === ref.platform;
  }

  /** The job behind a verified token, or null when liveness does not apply to it. */
  refFor(issuer: Pick<IssuerConfig, 'name' | 'kind'>, claims: Claims): JobRef | null {
    const ref = jobRefFromClaims(issuer, claims);
    return ref !== null && this.covers(ref) ? ref : null;
  }

  /**
   * Ask the job API once whether the job still runs. Never throws: `unknown` when the issuer
   * is not covered, the API cannot be asked now (rate limit) or did not answer usefully.
   * Concurrent checks of one job share one request.
   */
  checkOnce(ref: JobRef): Promise<JobState> {
    const issuer = this.#issuerOf(ref);
    if (issuer === undefined || this.#closed) return Promise.resolve('unknown');
    const key = jobKey(ref);
    if (this.#recall(key) !== undefined) return Promise.resolve('finished');
    const now = this.#clock.now();
    if (issuer.blockedUntil > now) {
      this.#log?.info(
        {
          issuer: issuer.name,
          job: describeJob(ref),
          resume_at: new Date(issuer.blockedUntil).toISOString(),
        },
        'job API rate limit in force: job not checked, liveness fails open',
      );
      return Promise.resolve('unknown');
    }
    const pending = this.#checks.get(key);
    if (pending) return pending;
    const check = this.#check(issuer, ref, key).finally(() => this.#checks.delete(key));
    this.#checks.set(key, check);
    this.#track(check);
    return check;
  }

  /**
   * `checkOnce`, refusing a finished job.
   * @throws JobNotRunningError (CIPORT_E_JOB_NOT_RUNNING) when the job is finished
   */
  async assertRunning(
    ref: JobRef,
    context: { job_url?: string | null } = {},
  ): Promise<'running' | 'unknown'> {
    const state = await this.checkOnce(ref);
    if (state !== 'finished') return state;
    const status = this.#recall(jobKey(ref))?.status;
    throw new JobNotRunningError(
      `${describeJob(ref)} is no longer running${status ? ` (status: ${status})` : ''}; its token is refused`,
      {
        issuer: ref.issuer,
        job: ref.platform === 'gitlab' ? ref.job : (ref.job ?? null),
        ...(ref.platform === 'gitlab'
          ? { project: ref.project }
          : { repository: ref.repository, run_id: ref.run_id }),
        job_url: context.job_url ?? null,
        status: status ?? null,
      },
    );
  }

  /**
   * Watch `ref` on behalf of the session `sessionKey`; `onFinished` runs once, asynchronously,
   * when the job is seen finished (poll, check or webhook). Sessions of one job share one poll.
   * Returns false (and watches nothing) when liveness does not cover `ref`.
   */
  watch(ref: JobRef, sessionKey: string, onFinished: OnJobFinished): boolean {
    const issuer = this.#issuerOf(ref);
    if (issuer === undefined || this.#closed) return false;
    const key = jobKey(ref);
    if (this.#sessions.has(sessionKey)) this.unwatch(sessionKey);
    const remembered = this.#recall(key);
    if (remembered !== undefined) {
      this.#notify(onFinished, remembered, sessionKey);
      return true;
    }
    let job = this.#jobs.get(key);
    if (job === undefined) {
      job = {
        key,
        ref,
        issuer,
        sessions: new Map(),
        timer: undefined,
        nextPollAt: undefined,
        lastDelayMs: 0,
        failures: 0,
      };
      this.#jobs.set(key, job);
      // The session was just checked: the first poll is one interval away.
      this.#schedule(job, issuer.pollIntervalMs);
    }
    job.sessions.set(sessionKey, onFinished);
    this.#sessions.set(sessionKey, key);
    this.#reportWatched();
    return true;
  }

  /** Stop watching for `sessionKey` (its session ended). The job's poll stops with its last session. */
  unwatch(sessionKey: string): void {
    const key = this.#sessions.get(sessionKey);
    if (key === undefined) return;
    this.#sessions.delete(sessionKey);
    const job = this.#jobs.get(key);
    if (job !== undefined) {
      job.sessions.delete(sessionKey);
      if (job.sessions.size === 0) this.#drop(job);
    }
    this.#reportWatched();
  }

  /**
   * Serve `POST /v1/hooks/gitlab`: verify against every GitLab issuer's `webhook_secret` and,
   * for a finished job, end its sessions now. `unauthorized` → 401;
   * `ignored` and `applied` → 2xx, so that GitLab keeps the webhook enabled.
   */
  handleGitlabHook(headers: HeaderBag, body: string | Uint8Array): GitlabHookOutcome {
    for (const issuer of this.#issuers.values()) {
      if (issuer.platform !== 'gitlab' || issuer.webhookSecret === undefined) continue;
      const check = checkGitlabHook(headers, body, issuer.webhookSecret);
      if (!check.ok) {
        if (check.reason === 'unauthorized') continue;
        this.#log?.info({ issuer: issuer.name, reason: check.reason }, 'GitLab hook ignored');
        return { outcome: 'ignored', issuer: issuer.name, reason: check.reason };
      }
      this.#counters.hooksApplied++;
      let sessionsEnded = 0;
      if (check.state === 'finished') {
        const ref: JobRef = {
          platform: 'gitlab',
          issuer: issuer.name,
          project: check.event.project,
          job: check.event.job,
        };
        sessionsEnded = this.#finish(jobKey(ref), ref, check.event.status, 'webhook');
      }
      this.#log?.debug?.(
        { issuer: issuer.name, job: check.event.job, status: check.event.status, sessions: sessionsEnded },
        'GitLab job hook',
      );
      return {
        outcome: 'applied',
        issuer: issuer.name,
        event: check.event,
        state: check.state,
        sessionsEnded,
      };
    }
    return { outcome: 'unauthorized' };
  }

  stats(): JobLivenessStats {
    const apiUnreachable: Record<string, 0 | 1> = {};
    for (const issuer of this.#issuers.values()) apiUnreachable[issuer.name] = issuer.unreachable ? 1 : 0;
    return {
      jobsWatched: this.#jobs.size,
      sessionsWatched: this.#sessions.size,
      ...this.#counters,
      apiUnreachable,
    };
  }

  /** The watched jobs, for the admin API, debugging and tests. */
  jobs(): WatchedJobInfo[] {
    return [...this.#jobs.values()].map((job) => ({
      key: job.key,
      issuer: job.issuer.name,
      sessions: job.sessions.size,
      failures: job.failures,
      nextPollAt: job.nextPollAt,
      lastDelayMs: job.lastDelayMs,
    }));
  }

  /** Resolves once no request or callback is in flight (tests step the clock, then await this). */
  async settled(): Promise<void> {
    while (this.#inflight.size > 0) await Promise.allSettled([...this.#inflight]);
  }

  /** Stop polling, abort requests in flight, forget every watch. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const job of this.#jobs.values()) if (job.timer !== undefined) this.#clock.clearTimeout(job.timer);
    this.#jobs.clear();
    this.#sessions.clear();
    this.#abort.abort();
    this.#reportWatched();
    await this.settled();
  }

  // ---- internals ------------------------------------------------------------------------

  #issuerOf(ref: JobRef): IssuerState | undefined {
    const issuer = this.#issuers.get(ref.issuer);
    return issuer?.platform === ref.platform ? issuer : undefined;
  }

  #track(promise: Promise<unknown>): void {
    const tracked = promise.catch(() => undefined);
    this.#inflight.add(tracked);
    void tracked.finally(() => this.#inflight.delete(tracked));
  }

  async #check(issuer: IssuerState, ref: JobRef, key: string): Promise<JobState> {
    let report: JobStatusReport;
    try {
      report = await this.#request(issuer, ref, 'check');
    } catch (err) {
      const e = err as JobApiError;
      if (e.kind === 'not_found') {
        this.#log?.warn(
          { issuer: issuer.name, job: describeJob(ref), http_status: e.status, error: e.message },
          'job API does not know this job (or the token cannot see it): liveness fails open',
        );
      }
      return 'unknown';
    }
    if (report.state === 'finished') {
      this.#finish(key, ref, report.status, 'check');
      return 'finished';
    }
    return report.state;
  }

  async #poll(job: WatchedJob): Promise<void> {
    if (this.#jobs.get(job.key) !== job) return;
    const issuer = job.issuer;
    if (issuer.blockedUntil > this.#clock.now()) {
      // Another job's answer exhausted the rate limit after this one was scheduled.
      this.#schedule(job, 0);
      return;
    }
    let report: JobStatusReport;
    try {
      report = await this.#request(issuer, job.ref, 'poll');
    } catch (err) {
      if (this.#jobs.get(job.key) !== job) return;
      const e = err as JobApiError;
      if (e.kind === 'rate_limited' && e.resumeAt !== undefined) {
        // #request has set blockedUntil; #schedule waits for it.
        this.#schedule(job, issuer.pollIntervalMs);
        return;
      }
      job.failures++;
      if (e.kind === 'not_found' && job.failures === 1) {
        this.#log?.warn(
          { issuer: issuer.name, job: describeJob(job.ref), http_status: e.status, error: e.message },
          'job API does not know this job (or the token cannot see it): its sessions continue under TTL and lease',
        );
      }
      this.#schedule(job, this.#backoff(issuer, job.failures));
      return;
    }
    if (this.#jobs.get(job.key) !== job) return;
    job.failures = 0;
    if (report.state === 'finished') {
      this.#finish(job.key, job.ref, report.status, 'poll');
      return;
    }
    this.#schedule(job, issuer.pollIntervalMs);
  }

  /** One request with its bookkeeping: counters, rate-limit gate, reachability, logs. */
  async #request(issuer: IssuerState, ref: JobRef, purpose: 'check' | 'poll'): Promise<JobStatusReport> {
    let report: JobStatusReport;
    try {
      report = await issuer.client.status(ref, this.#abort.signal);
    } catch (err) {
      const e =
        err instanceof JobApiError
          ? err
          : new JobApiError('malformed', err instanceof Error ? err.message : String(err), { cause: err });
      if (purpose === 'poll') this.#counters.pollsError++;
      else this.#counters.checksError++;
      this.#metrics.request?.(issuer.name, purpose, e.kind);
      if (this.#closed) throw e;
      if (e.kind === 'rate_limited') {
        this.#block(issuer, e.resumeAt);
      } else if (e.kind !== 'not_found') {
        this.#markUnreachable(issuer, e, ref);
      }
      this.#log?.debug?.(
        {
          issuer: issuer.name,
          job: describeJob(ref),
          purpose,
          failure: e.kind,
          http_status: e.status,
          error: e.message,
        },
        'job API request failed',
      );
      throw e;
    }
    if (purpose === 'poll') this.#counters.pollsOk++;
    else this.#counters.checksOk++;
    this.#metrics.request?.(issuer.name, purpose, 'ok');
    this.#markReachable(issuer);
    if (report.resumeAt !== undefined) this.#block(issuer, report.resumeAt);
    if (report.state === 'unknown') {
      const word = `${issuer.name}:${report.status}`;
      if (!this.#warnedStatuses.has(word) && this.#warnedStatuses.size < 1000) {
        this.#warnedStatuses.add(word);
        this.#log?.warn(
          { issuer: issuer.name, job: describeJob(ref), status: report.status },
          'job API reported a status this version does not know: treated as unknown (fail open)',
        );
      }
    }
    return report;
  }

  #block(issuer: IssuerState, resumeAt: number | undefined): void {
    const now = this.#clock.now();
    if (resumeAt === undefined || resumeAt <= now) return;
    const until = Math.min(resumeAt, now + this.#maxRateLimitWaitMs);
    if (until <= issuer.blockedUntil) return;
    issuer.blockedUntil = until;
    this.#log?.info(
      { issuer: issuer.name, resume_at: new Date(until).toISOString(), wait_ms: until - now },
      'job API rate limit: holding requests until the reset',
    );
  }

  #markUnreachable(issuer: IssuerState, error: JobApiError, ref: JobRef): void {
    const changed = !issuer.unreachable || issuer.lastFailure !== error.kind;
    issuer.unreachable = true;
    issuer.lastFailure = error.kind;
    if (!changed) return;
    this.#metrics.apiUnreachable?.(issuer.name, true);
    this.#log?.warn(
      {
        issuer: issuer.name,
        job: describeJob(ref),
        failure: error.kind,
        http_status: error.status,
        error: error.message,
      },
      error.kind === 'auth'
        ? 'job API refused the configured token: liveness fails open, sessions continue under their TTL and lease'
        : 'job API unreachable: liveness fails open, sessions continue under their TTL and lease',
    );
  }

  #markReachable(issuer: IssuerState): void {
    if (!issuer.unreachable) return;
    issuer.unreachable = false;
    issuer.lastFailure = undefined;
    this.#metrics.apiUnreachable?.(issuer.name, false);
    this.#log?.info({ issuer: issuer.name }, 'job API reachable again: liveness enforced');
  }

  /** Exponential in the failure count, capped, jittered to [½, 1] of it, never under the interval. */
  #backoff(issuer: IssuerState, failures: number): number {
    const base = issuer.pollIntervalMs;
    const exp = Math.min(this.#maxBackoffMs, base * 2 ** Math.min(failures, 30));
    const jittered = exp * (0.5 + 0.5 * Math.min(1, Math.max(0, this.#random())));
    return Math.max(base, Math.round(jittered));
  }

  #schedule(job: WatchedJob, delayMs: number): void {
    if (job.timer !== undefined) this.#clock.clearTimeout(job.timer);
    const now = this.#clock.now();
    const at = Math.max(now + delayMs, job.issuer.blockedUntil);
    job.nextPollAt = at;
    job.lastDelayMs = at - now;
    job.timer = this.#clock.setTimeout(() => {
      job.timer = undefined;
      this.#track(this.#poll(job));
    }, at - now);
  }

  #drop(job: WatchedJob): void {
    if (job.timer !== undefined) this.#clock.clearTimeout(job.timer);
    job.timer = undefined;
    job.nextPollAt = undefined;
    if (this.#jobs.get(job.key) === job) this.#jobs.delete(job.key);
  }

  /** Record `key` as finished and tell its sessions. Returns how many sessions were told. */
  #finish(key: string, ref: JobRef, status: string, source: FinishSource): number {
    const event: JobFinishedEvent = { reason: 'job_finished', issuer: ref.issuer, job: key, status, source };
    this.#remember(key, event);
    this.#counters.jobsFinished++;
    this.#metrics.jobFinished?.(ref.issuer, source);
    const job = this.#jobs.get(key);
    if (job === undefined) return 0;
    this.#drop(job);
    const sessions = [...job.sessions];
    for (const [sessionKey] of sessions) this.#sessions.delete(sessionKey);
    this.#reportWatched();
    this.#log?.info(
      { issuer: ref.issuer, job: describeJob(ref), status, source, sessions: sessions.length },
      'CI job finished: ending its sessions',
    );
    for (const [sessionKey, onFinished] of sessions) this.#notify(onFinished, event, sessionKey);
    return sessions.length;
  }

  #notify(onFinished: OnJobFinished, event: JobFinishedEvent, sessionKey: string): void {
    // Asynchronously, so a callback that ends its session (and unwatches) never re-enters us.
    this.#track(
      Promise.resolve().then(() => {
        try {
          onFinished(event);
        } catch (err) {
          this.#log?.warn(
            { session: sessionKey, job: event.job, error: err instanceof Error ? err.message : String(err) },
            'onFinished callback threw',
          );
        }
      }),
    );
  }

  #remember(key: string, event: JobFinishedEvent): void {
    const now = this.#clock.now();
    this.#finished.delete(key);
    this.#finished.set(key, { event, at: now });
    for (const [k, v] of this.#finished) {
      if (this.#finished.size <= MAX_REMEMBERED && now - v.at < this.#finishedMemoryMs) break;
      this.#finished.delete(k);
    }
  }

  #recall(key: string): JobFinishedEvent | undefined {
    const entry = this.#finished.get(key);
    if (entry === undefined) return undefined;
    if (this.#clock.now() - entry.at >= this.#finishedMemoryMs) {
      this.#finished.delete(key);
      return undefined;
    }
    return entry.event;
  }

  #reportWatched(): void {
    this.#metrics.watched?.(this.#jobs.size, this.#sessions.size);
  }
}

/** The API base: https, or http on loopback only (the token travels with every request). */
function apiBaseUrl(text: string, what: string): URL {
  const url = requireKeyUrl(text, what);
  if (url.search || url.hash) {
    throw new ConfigError('CIPORT_E_CONFIG_INVALID', `${what}: a query or fragment is not supported`);
  }
  return url;
}
