// Token buckets keyed by a string. Each key holds `burst` tokens and regains `perMinute` tokens a
// minute; a request takes one. Full buckets are forgotten, so the map only holds keys that were
// used recently.
//
// Session creation (SessionRateLimit) is limited after the policy decision, by its outcome:
// - an allowed session takes from two buckets: the job's (one CI job hammering) and its issuer's
//   (a ceiling over all jobs). Keyed on the job, not on `sub`: GitLab's `sub` is project + ref, so
//   every parallel job of a branch would share one bucket.
// - a denied request takes from its own buckets: its project's (issuer, project) and a ceiling
//   over all denials of the issuer. On a shared issuer (gitlab.com) anyone can mint tokens for our
//   audience; were denials counted against the issuer's session ceiling, any project could starve
//   the jobs the policy allows.
import type { Claims } from '../identity/claim-values.js';
import type { Principal } from '../identity/principal.js';

export interface RateLimitOptions {
  perMinute: number;
  burst: number;
  now?: () => number;
}

interface Bucket {
  tokens: number;
  at: number;
}

export class RateLimiter {
  readonly #perMs: number;
  readonly #burst: number;
  readonly #now: () => number;
  readonly #buckets = new Map<string, Bucket>();

  constructor(options: RateLimitOptions) {
    this.#perMs = options.perMinute / 60_000;
    this.#burst = options.burst;
    this.#now = options.now ?? Date.now;
  }

  /** Take one token for `key`: 0 when allowed, otherwise ms until a token is available. */
  take(key: string): number {
    const waitMs = this.wait(key);
    if (waitMs === 0) (this.#buckets.get(key) as Bucket).tokens -= 1;
    return waitMs;
  }

  /** Like take() without taking: 0 when a token is available, otherwise ms until one is. */
  wait(key: string): number {
    const now = this.#now();
    this.#sweep(now);
    const b = this.#buckets.get(key) ?? { tokens: this.#burst, at: now };
    b.tokens = Math.min(this.#burst, b.tokens + (now - b.at) * this.#perMs);
    b.at = now;
    this.#buckets.set(key, b);
    return b.tokens >= 1 ? 0 : Math.ceil((1 - b.tokens) / this.#perMs);
  }

  #lastSweep = 0;
  #sweep(now: number): void {
    if (now - this.#lastSweep < 60_000 && this.#buckets.size < 10_000) return;
    this.#lastSweep = now;
    for (const [key, b] of this.#buckets) {
      if (b.tokens + (now - b.at) * this.#perMs >= this.#burst) this.#buckets.delete(key);
    }
  }
}

export type RateDecision =
  | { ok: true }
  | { ok: false; scope: 'job' | 'issuer' | 'project' | 'denials'; key: string; waitMs: number };

export interface SessionRateLimitOptions {
  perJob: RateLimitOptions;
  perIssuer: RateLimitOptions;
  /** Denied requests per (issuer, project); default: 30 a minute, burst 20. */
  deniedPerProject?: RateLimitOptions;
  /** Denied requests over all projects of one issuer; default: 300 a minute, burst 100. */
  deniedPerIssuer?: RateLimitOptions;
}

export class SessionRateLimit {
  readonly #job: RateLimiter;
  readonly #issuer: RateLimiter;
  readonly #deniedProject: RateLimiter;
  readonly #deniedIssuer: RateLimiter;

  constructor(options: SessionRateLimitOptions) {
    this.#job = new RateLimiter(options.perJob);
    this.#issuer = new RateLimiter(options.perIssuer);
    this.#deniedProject = new RateLimiter(options.deniedPerProject ?? { perMinute: 30, burst: 20 });
    this.#deniedIssuer = new RateLimiter(options.deniedPerIssuer ?? { perMinute: 300, burst: 100 });
  }

  /**
   * One session the policy allowed, for `job` (see jobKey) of `issuer`: takes from both buckets
   * or neither.
   */
  take(issuer: string, job: string): RateDecision {
    const key = `${issuer}\u0000${job}`;
    const jobWait = this.#job.wait(key);
    if (jobWait > 0) return { ok: false, scope: 'job', key: job, waitMs: jobWait };
    const issuerWait = this.#issuer.wait(issuer);
    if (issuerWait > 0) return { ok: false, scope: 'issuer', key: issuer, waitMs: issuerWait };
    this.#job.take(key);
    this.#issuer.take(issuer);
    return { ok: true };
  }

  /**
   * One request the policy denied, from `project` (see projectKey) of `issuer`: takes from the
   * project's denial bucket and the issuer's denial ceiling, both or neither. Never touches the
   * buckets of allowed sessions.
   */
  takeDenied(issuer: string, project: string): RateDecision {
    const key = `${issuer}\u0000${project}`;
    const projectWait = this.#deniedProject.wait(key);
    if (projectWait > 0) return { ok: false, scope: 'project', key: project, waitMs: projectWait };
    const issuerWait = this.#deniedIssuer.wait(issuer);
    if (issuerWait > 0) return { ok: false, scope: 'denials', key: issuer, waitMs: issuerWait };
    this.#deniedProject.take(key);
    this.#deniedIssuer.take(issuer);
    return { ok: true };
  }
}

/**
 * Who a denied request is charged to: the project (GitLab `project_id`, GitHub `repository_id`),
 * else its path, else the subject (a generic OIDC client).
 */
export function projectKey(principal: Principal): string {
  const project = principal.project;
  if (project?.id) return `project:${project.id}`;
  if (project?.path) return `project:${project.path}`;
  return `sub:${principal.subject ?? ''}`;
}

/**
 * The CI job behind a token, as far as the token tells: GitLab `job_id` (GitHub `check_run_id`
 * when sent); GitHub without it: the run attempt (`run_id` + `run_attempt`, with `sub`: jobs of
 * one run attempt cannot be told apart); otherwise the subject (a generic OIDC client).
 */
export function jobKey(principal: Principal, claims: Claims): string {
  if (principal.job_id) return `job:${principal.job_id}`;
  const attempt = claims.run_attempt;
  if (principal.kind === 'github' && principal.pipeline_id) {
    return `run:${principal.pipeline_id}:${typeof attempt === 'string' || typeof attempt === 'number' ? attempt : ''}:${principal.subject ?? ''}`;
  }
  return `sub:${principal.subject ?? ''}`;
}
