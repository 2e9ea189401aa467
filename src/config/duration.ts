// Durations in configuration and on the command line: `500ms`, `30s`, `15m`, `2h`, `1d`.

const UNIT_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;
const DURATION_RE = /^(\d+)(ms|s|m|h|d)$/;

/** Milliseconds for a duration string, or undefined when it is not one. */
export function parseDuration(text: string): number | undefined {
  const m = DURATION_RE.exec(text.trim());
  if (!m) return undefined;
  const value = Number(m[1]);
  const unit = m[2] as keyof typeof UNIT_MS;
  const ms = value * UNIT_MS[unit];
  return Number.isSafeInteger(ms) ? ms : undefined;
}

/** The shortest exact spelling of a duration, for messages. */
export function formatDuration(ms: number): string {
  for (const [unit, size] of [
    ['d', UNIT_MS.d],
    ['h', UNIT_MS.h],
    ['m', UNIT_MS.m],
    ['s', UNIT_MS.s],
  ] as const) {
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}
