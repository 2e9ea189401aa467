// Shared pieces of the job liveness tests: a clock whose timers tests fire by hand, a log that
// keeps what it is told, and issuer configs built through the real schema.
import { type IssuerConfig, issuerSchema } from '../../src/config/schema.js';
import type { JobLivenessOptions, JobLog, LivenessClock } from '../../src/jobs/index.js';
import { JobLiveness } from '../../src/jobs/index.js';

/** 2025-01-01T00:00:00Z: a realistic epoch, so rate-limit resets are real Unix times. */
export const EPOCH = Date.UTC(2025, 0, 1);

/** Time stands still until `advance`, which fires due timers in order. */
export class FakeClock implements LivenessClock {
  ms: number;
  private seq = 0;
  private readonly timers = new Map<number, { at: number; fn: () => void }>();

  constructor(ms = EPOCH) {
    this.ms = ms;
  }

  readonly now = (): number => this.ms;

  setTimeout(fn: () => void, ms: number): unknown {
    const id = ++this.seq;
    this.timers.set(id, { at: this.ms + Math.max(0, ms), fn });
    return id;
  }

  clearTimeout(handle: unknown): void {
    this.timers.delete(handle as number);
  }

  /** Timers not yet fired. */
  get pending(): number {
    return this.timers.size;
  }

  advance(ms: number): void {
    const target = this.ms + ms;
    for (;;) {
      let next: [number, { at: number; fn: () => void }] | undefined;
      for (const entry of this.timers) {
        if (entry[1].at <= target && (next === undefined || entry[1].at < next[1].at)) next = entry;
      }
      if (next === undefined) break;
      this.timers.delete(next[0]);
      this.ms = next[1].at;
      next[1].fn();
    }
    this.ms = target;
  }
}

export interface LogEntry {
  level: 'debug' | 'info' | 'warn';
  obj: object;
  msg: string | undefined;
}

export class LogCapture implements JobLog {
  readonly entries: LogEntry[] = [];
  debug(obj: object, msg?: string): void {
    this.entries.push({ level: 'debug', obj, msg });
  }
  info(obj: object, msg?: string): void {
    this.entries.push({ level: 'info', obj, msg });
  }
  warn(obj: object, msg?: string): void {
    this.entries.push({ level: 'warn', obj, msg });
  }
  at(level: LogEntry['level']): LogEntry[] {
    return this.entries.filter((e) => e.level === level);
  }
  /** Everything logged, as one string (to look for leaks). */
  text(): string {
    return JSON.stringify(this.entries);
  }
}

/** An issuer with a `job_api`, parsed by the real schema, its secrets resolved. */
export function issuerWithApi(
  kind: 'gitlab' | 'github' | 'oidc',
  url: string,
  token: string,
  options: { name?: string; pollInterval?: string; webhookSecret?: string } = {},
): IssuerConfig {
  const config = issuerSchema.parse({
    name: options.name ?? kind,
    kind,
    issuer: kind === 'github' ? 'https://token.actions.githubusercontent.com' : 'https://gitlab.example.com',
    audience: 'https://ciport.example.com',
    job_api: {
      url,
      token: { env: 'JOB_API_TOKEN' },
      ...(options.pollInterval ? { poll_interval: options.pollInterval } : {}),
      ...(options.webhookSecret ? { webhook_secret: { env: 'JOB_HOOK_SECRET' } } : {}),
    },
  });
  const env = { JOB_API_TOKEN: token, JOB_HOOK_SECRET: options.webhookSecret ?? '' };
  config.job_api?.token.resolve(env);
  if (options.webhookSecret) config.job_api?.webhook_secret?.resolve(env);
  return config;
}

/** A liveness service on a fake clock with deterministic jitter (factor 1: the full backoff). */
export function livenessFor(
  issuers: IssuerConfig[],
  extra: Partial<JobLivenessOptions> = {},
): { liveness: JobLiveness; clock: FakeClock; log: LogCapture; step: (ms: number) => Promise<void> } {
  const clock = new FakeClock();
  const log = new LogCapture();
  const liveness = new JobLiveness({
    issuers,
    clock,
    log,
    random: () => 1,
    requestTimeoutMs: 2_000,
    ...extra,
  });
  const step = async (ms: number): Promise<void> => {
    clock.advance(ms);
    await liveness.settled();
  };
  return { liveness, clock, log, step };
}
