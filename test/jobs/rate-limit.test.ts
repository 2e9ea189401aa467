// Reading the wait out of Retry-After, GitLab RateLimit-* and GitHub X-RateLimit-* headers.
import { describe, expect, it } from 'vitest';
import { parseReset, parseRetryAfter, rateLimitResumeAt } from '../../src/jobs/index.js';

const NOW = Date.UTC(2025, 0, 1, 12, 0, 0);
const headers = (h: Record<string, string>) => new Headers(h);

describe('Retry-After', () => {
  it('reads delay-seconds', () => {
    expect(parseRetryAfter('30', NOW)).toBe(NOW + 30_000);
    expect(parseRetryAfter(' 0 ', NOW)).toBe(NOW);
  });

  it('reads an HTTP-date, and a past date means now', () => {
    expect(parseRetryAfter('Wed, 01 Jan 2025 12:02:00 GMT', NOW)).toBe(NOW + 120_000);
    expect(parseRetryAfter('Wed, 01 Jan 2025 11:00:00 GMT', NOW)).toBe(NOW);
  });

  it('ignores what it cannot read', () => {
    expect(parseRetryAfter(null, NOW)).toBeUndefined();
    expect(parseRetryAfter('soon', NOW)).toBeUndefined();
    expect(parseRetryAfter('-5', NOW)).toBeUndefined();
    expect(parseRetryAfter('1.5', NOW)).toBeUndefined();
  });
});

describe('reset values', () => {
  it('reads Unix seconds (GitLab RateLimit-Reset, GitHub X-RateLimit-Reset)', () => {
    expect(parseReset(String(NOW / 1000 + 90), NOW)).toBe(NOW + 90_000);
  });

  it('reads small values as delta-seconds (the IETF draft RateLimit-Reset)', () => {
    expect(parseReset('45', NOW)).toBe(NOW + 45_000);
  });
});

describe('rateLimitResumeAt', () => {
  it('asks for no wait while quota remains', () => {
    expect(
      rateLimitResumeAt(
        headers({ 'x-ratelimit-remaining': '4999', 'x-ratelimit-reset': String(NOW / 1000 + 60) }),
        NOW,
      ),
    ).toBeUndefined();
    expect(
      rateLimitResumeAt(headers({ 'ratelimit-remaining': '12', 'ratelimit-reset': '1' }), NOW),
    ).toBeUndefined();
  });

  it('GitHub: X-RateLimit-Remaining 0 waits until X-RateLimit-Reset', () => {
    expect(
      rateLimitResumeAt(
        headers({ 'x-ratelimit-remaining': '0', 'x-ratelimit-reset': String(NOW / 1000 + 600) }),
        NOW,
      ),
    ).toBe(NOW + 600_000);
  });

  it('GitLab: RateLimit-Remaining 0 waits until RateLimit-Reset, or RateLimit-ResetTime', () => {
    expect(
      rateLimitResumeAt(
        headers({ 'ratelimit-remaining': '0', 'ratelimit-reset': String(NOW / 1000 + 42) }),
        NOW,
      ),
    ).toBe(NOW + 42_000);
    expect(
      rateLimitResumeAt(
        headers({ 'ratelimit-remaining': '0', 'ratelimit-resettime': 'Wed, 01 Jan 2025 12:00:50 GMT' }),
        NOW,
      ),
    ).toBe(NOW + 50_000);
  });

  it('remaining 0 without a readable reset waits a minute', () => {
    expect(rateLimitResumeAt(headers({ 'x-ratelimit-remaining': '0' }), NOW)).toBe(NOW + 60_000);
  });

  it('the latest of several signals wins', () => {
    expect(
      rateLimitResumeAt(
        headers({
          'retry-after': '10',
          'x-ratelimit-remaining': '0',
          'x-ratelimit-reset': String(NOW / 1000 + 300),
        }),
        NOW,
      ),
    ).toBe(NOW + 300_000);
  });
});
