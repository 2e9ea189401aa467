// The client's answer to a gateway rate limit (429 on POST /v1/sessions): wait as long as the
// gateway's Retry-After says and try again, within a bounded total wait (CIPORT_RATE_LIMIT_WAIT,
// default 60s; 0 turns retrying off). Past the bound the refusal stands: exit 5.
import { parseDuration } from '../config/duration.js';
import { CiportError } from '../errors/errors.js';

export const DEFAULT_RATE_LIMIT_WAIT_MS = 60_000;

/** The total wait allowed for rate-limit retries, from `CIPORT_RATE_LIMIT_WAIT` (`60s`, `2m`, `0`). */
export function rateLimitWaitMs(env: NodeJS.ProcessEnv): number {
  const text = env.CIPORT_RATE_LIMIT_WAIT?.trim();
  if (!text) return DEFAULT_RATE_LIMIT_WAIT_MS;
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const ms = parseDuration(text);
  if (ms === undefined) {
    throw new CiportError(
      'CIPORT_E_USAGE',
      `CIPORT_RATE_LIMIT_WAIT must be a duration such as 60s or 2m, or 0 (got "${text}")`,
    );
  }
  return ms;
}

/** `Retry-After` in ms: delay-seconds or an HTTP-date; undefined when absent or unreadable. */
export function retryAfterMs(value: string | string[] | undefined, now = Date.now()): number | undefined {
  const text = (Array.isArray(value) ? value[0] : value)?.trim();
  if (!text) return undefined;
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const at = Date.parse(text);
  return Number.isFinite(at) ? Math.max(0, at - now) : undefined;
}

export interface RateLimitRetry {
  /** Total wait allowed (ms). */
  maxWaitMs: number;
  /** Told before each wait, with the wait in whole seconds. */
  onRetry?: ((seconds: number) => void) | undefined;
  /** For tests: how to wait. */
  sleep?: ((ms: number) => Promise<void>) | undefined;
}
