// The period of an access review: `--since` / `--until` (or the API's `since=` / `until=`) as an
// ISO 8601 date or date-time, a duration back from now (`30d`, `12h`), or `now`. Relative times
// are resolved by whoever reads the store (the gateway, online), so a skewed clock on the
// reviewer's machine cannot shift the period against the log's own timestamps.
import { parseDuration } from '../config/duration.js';
import { UsageError } from '../errors/index.js';
import { printable } from '../text/printable.js';

export interface ReviewPeriod {
  /** Epoch ms, inclusive. */
  since: number;
  /** Epoch ms, exclusive. */
  until: number;
}

/** Longest time text accepted (an ISO date-time with offset is ~30 characters). */
const MAX_TIME_TEXT = 64;
// A date, or a date-time with seconds, fraction and zone optional: what Date.parse reads the same
// way everywhere. Anything else (`yesterday`, `1 Jan 2026`) is refused rather than guessed.
const ISO_TIME = /^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?)?$/;

/** One review time as epoch ms; `name` is the flag or parameter, for the message. */
export function parseReviewTime(name: string, text: string, now: number): number {
  const trimmed = text.trim();
  if (trimmed === 'now') return now;
  const back = trimmed.length <= MAX_TIME_TEXT ? parseDuration(trimmed) : undefined;
  if (back !== undefined) return now - back;
  const ms = trimmed.length <= MAX_TIME_TEXT && ISO_TIME.test(trimmed) ? Date.parse(trimmed) : Number.NaN;
  if (Number.isNaN(ms)) {
    const shown = printable(trimmed.slice(0, MAX_TIME_TEXT));
    throw new UsageError(
      `${name}: expected an ISO 8601 date or time (2026-11-01, 2026-11-01T00:00:00Z), a duration back from now (30d, 12h) or "now"; got "${shown}"`,
    );
  }
  return ms;
}

/** Both ends, checked: since before until. */
export function parseReviewPeriod(
  input: { since: string | undefined; until: string | undefined },
  now: number,
  names = { since: '--since', until: '--until' },
): ReviewPeriod {
  if (input.since === undefined) throw new UsageError(`${names.since} is required`);
  if (input.until === undefined) throw new UsageError(`${names.until} is required`);
  const since = parseReviewTime(names.since, input.since, now);
  const until = parseReviewTime(names.until, input.until, now);
  if (!(since < until)) {
    throw new UsageError(
      `${names.since} must be before ${names.until} (got ${new Date(since).toISOString()} and ${new Date(until).toISOString()})`,
    );
  }
  return { since, until };
}
