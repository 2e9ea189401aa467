// What the exit contract suite needs from one protocol (a "driver"): how to configure its target,
// how a job's real client does each case's action through the port, and how to observe the
// upstream server. Adding a protocol to the suite is one more driver in drivers.ts.
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { expect } from 'vitest';
import type { AuditEvent } from '../../src/audit/events.js';
import { waitFor } from '../fixtures/wait-for.js';
import type { Upstreams } from './upstreams.js';

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** One `ciport open` of one target: the job's side of a session. */
export interface JobPort {
  target: string;
  session: string;
  /** What `ciport open` exported (its env file). */
  exported: Record<string, string>;
  /** The environment the job's tools run with: the exported variables and nothing secret. */
  env: Record<string, string>;
  /** CIPORT_<TARGET>_PORT and _URL. */
  port: number;
  url: string;
  /** A scratch directory of this job. */
  dir: string;
  /** Run a tool as the job does (never throws; `stdin` piped in). */
  run(cmd: string[], options?: { stdin?: string | Buffer; timeoutMs?: number }): Promise<Run>;
  /**
   * Stop (SIGSTOP) and continue (SIGCONT) the job's `ciport open`: while it is stopped, whatever
   * happens to the session is the gateway's and the exits' doing, not a cooperating client's.
   */
  freeze(): void;
  thaw(): void;
  /** End the job's session the way a job does (`ciport open` gets SIGTERM and ends it). */
  end(): Promise<void>;
}

/** A connection the job holds open through the port. */
export interface Held {
  /** True once the job's side of the connection is closed. */
  closed(): boolean;
  /** Close it (cleanup after a failed case). */
  release(): void;
}

/** The outcome of a client attempt: ok when the client got the target's real answer. */
export interface Attempt {
  ok: boolean;
  detail: string;
}

export interface Driver {
  protocol: string;
  /** The target entry (gateway `targets:` or agent.yaml) named `name`; secrets by env name. */
  target(name: string, up: Upstreams): Record<string, unknown>;
  /** Case 1: a real client (psql, redis-cli, curl, a node socket) reaches the target. */
  attempt(job: JobPort, up: Upstreams): Promise<Attempt>;
  /** Case 2: 1 MiB each way, checked by SHA-256 at the client and at the upstream. */
  dataBothWays(job: JobPort, up: Upstreams): Promise<void>;
  /** Case 3: what the upstream saw is the target's credential (which the job never had). */
  injectedCredential(job: JobPort, up: Upstreams): Promise<void>;
  /** Case 4: the protocol's own events of what attempt() did (query, http.request), from `exit`. */
  auditTraffic(events: readonly AuditEvent[], exit: string): void;
  /** Cases 5 and 6: a connection held open end to end (the upstream has it). */
  hold(job: JobPort, up: Upstreams): Promise<Held>;
  /** Connections of this target's exits open at the upstream now. */
  upstreamOpen(up: Upstreams): Promise<number>;
  /** Connections the upstream has accepted so far (absent: the server cannot tell cheaply). */
  upstreamAccepted?(up: Upstreams): Promise<number>;
  /** Case 6: what the audit says of the statement `hold` ran when the session's end cut it. */
  auditHeld?(events: readonly AuditEvent[]): void;
}

/** Run a command with exactly `env` (plus nothing); never throws. */
export function run(
  cmd: string[],
  env: Record<string, string>,
  options: { stdin?: string | Buffer; timeoutMs?: number } = {},
): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(
      cmd[0] as string,
      cmd.slice(1),
      { env, timeout: options.timeoutMs ?? 20_000, maxBuffer: 16 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
    child.stdin?.end(options.stdin);
  });
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Case 5 and 6's held connection for a database: the job's CLI runs a long statement (`cmd`,
 * with the job's env) until `running()` sees it at the upstream.
 */
export async function holdStatement(
  cmd: string[],
  env: Record<string, string>,
  running: () => Promise<boolean>,
  what: string,
): Promise<Held> {
  const child = spawn(cmd[0] as string, cmd.slice(1), { env, stdio: 'ignore' });
  let exited = false;
  child.once('exit', () => {
    exited = true;
  });
  await waitFor(async () => exited || (await running()), 15_000, what);
  expect(exited).toBe(false);
  return { closed: () => exited, release: () => child.kill('SIGKILL') };
}

/** Case 2's download for databases: the md5 of 1..32768 concatenated (1 MiB), as a CLI prints it. */
export function expectMd5Series(output: string): void {
  const value = output.replace(/\n$/, '');
  expect(value.length).toBe(1024 * 1024);
  let expected = '';
  for (let i = 1; i <= 32768; i++) expected += createHash('md5').update(String(i)).digest('hex');
  expect(value === expected).toBe(true);
}
