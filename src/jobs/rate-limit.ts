// When may the next request to a job API go out? Read from the response headers both
// platforms send. All results are epoch milliseconds ("not before"), or undefined when the
// headers ask for no wait.
//
// - `Retry-After` (RFC 9110): delay-seconds or an HTTP-date. GitLab sends it with 429s;
//   GitHub with secondary rate limits (403 or 429).
// - GitLab: `RateLimit-Remaining` with `RateLimit-Reset` (Unix time in seconds) and
//   `RateLimit-ResetTime` (HTTP-date).
// - GitHub: `X-RateLimit-Remaining` with `X-RateLimit-Reset` (Unix time in seconds).
// A reset value too small to be a Unix time is read as delta-seconds, which is what the IETF
// RateLimit header draft means by `RateLimit-Reset`, so a proxy that follows the draft is
// understood too. Remaining 0 with no usable reset waits `FALLBACK_RESET_MS`.

/** Header access that works for fetch's Headers and for plain objects alike. */
export interface HeaderReader {
  get(name: string): string | null;
}

/** Remaining 0 and no reset we can read: wait this long (GitLab and GitHub windows are 60 s). */
export const FALLBACK_RESET_MS = 60_000;

// Anything below this many seconds is a delay, anything above an absolute Unix time
// (1e9 s is September 2001; no rate-limit window lasts 30 years).
const UNIX_TIME_THRESHOLD_S = 1_000_000_000;

/** `Retry-After` as an absolute time, or undefined when absent or unreadable. */
export function parseRetryAfter(value: string | null, now: number): number | undefined {
  if (value === null) return undefined;
  const text = value.trim();
  if (/^\d+$/.test(text)) return now + Number(text) * 1000;
  // HTTP-date (IMF-fixdate and the obsolete forms Date.parse understands).
  if (!/[A-Za-z]/.test(text)) return undefined;
  const at = Date.parse(text);
  return Number.isFinite(at) ? Math.max(now, at) : undefined;
}

/** `RateLimit-Reset`/`X-RateLimit-Reset`: Unix seconds, or delta-seconds when small. */
export function parseReset(value: string | null, now: number): number | undefined {
  if (value === null) return undefined;
  const text = value.trim();
  if (!/^\d+(\.\d+)?$/.test(text)) return undefined;
  const n = Number(text);
  return n >= UNIX_TIME_THRESHOLD_S ? Math.max(now, Math.ceil(n * 1000)) : now + Math.ceil(n * 1000);
}

function exhausted(value: string | null): boolean {
  if (value === null) return false;
  const n = Number(value.trim());
  return value.trim() !== '' && Number.isFinite(n) && n <= 0;
}

/**
 * The earliest time the next request may be sent according to `headers`, or undefined for
 * "no constraint". Several signals combine to the latest of them.
 */
export function rateLimitResumeAt(headers: HeaderReader, now: number): number | undefined {
  const candidates: number[] = [];
  const retryAfter = parseRetryAfter(headers.get('retry-after'), now);
  if (retryAfter !== undefined) candidates.push(retryAfter);
  if (exhausted(headers.get('ratelimit-remaining'))) {
    const reset =
      parseReset(headers.get('ratelimit-reset'), now) ??
      parseRetryAfter(headers.get('ratelimit-resettime'), now) ??
      now + FALLBACK_RESET_MS;
    candidates.push(reset);
  }
  if (exhausted(headers.get('x-ratelimit-remaining'))) {
    candidates.push(parseReset(headers.get('x-ratelimit-reset'), now) ?? now + FALLBACK_RESET_MS);
  }
  return candidates.length === 0 ? undefined : Math.max(...candidates);
}

/** True when the response says a rate limit, rather than the credentials, caused a 403. */
export function isRateLimitResponse(status: number, headers: HeaderReader): boolean {
  if (status === 429) return true;
  if (status !== 403) return false;
  return (
    headers.get('retry-after') !== null ||
    exhausted(headers.get('x-ratelimit-remaining')) ||
    exhausted(headers.get('ratelimit-remaining'))
  );
}
