// The role credentials of one `aws` target, per session: AssumeRole through the AWS SDK with the
// provider chain's credentials (env, web identity, ECS/EC2 metadata: whatever the gateway's or the
// agent's process has) and the SDK's own endpoint and region resolution (AWS_ENDPOINT_URL_STS…).
//
// - One set of credentials per session, kept until fewer than 5 minutes remain (then assumed
//   again); concurrent requests of one session share one AssumeRole.
// - DurationSeconds is the target's duration cut to the session's remaining lifetime, and never
//   below STS's 900 s minimum. What outlives the session is made useless by the session policy,
//   which denies everything after the session's expiry (config/session-policy.ts).
// - Failures carry ciport's code and STS's error code, never STS's message.
import type { STSClient } from '@aws-sdk/client-sts';
import { boundedSessionPolicy } from '../../config/session-policy.js';
import type { AwsTarget } from '../../config/targets/aws.js';
import { STS_MIN_DURATION_MS } from '../../config/targets/aws.js';
import { CiportError } from '../../errors/index.js';
import { base } from '../aws-credentials.js';
import type { ExitSessionFacts } from '../contract.js';
import type { AwsCredentialsEvent } from './events.js';
import { roleSessionName, sessionTags } from './names.js';

/** Assume again when fewer than this remain (SDKs refresh 5 to 15 minutes before expiry). */
export const REFRESH_BEFORE_MS = 5 * 60_000;

/** Ended sessions remembered by RoleSessions. */
const ENDED_KEPT = 10_000;

/** Temporary credentials as the job's SDK reads them (the container-credentials shape). */
export interface RoleCredentials {
  AccessKeyId: string;
  SecretAccessKey: string;
  Token: string;
  /** ISO 8601. */
  Expiration: string;
  RoleArn: string;
}

interface Held {
  credentials: RoleCredentials;
  expiresAt: number;
}

/** What the exit sends STS (the AssumeRole call), minus the caller's credentials. */
export interface AssumeInput {
  RoleArn: string;
  RoleSessionName: string;
  DurationSeconds: number;
  Tags: { Key: string; Value: string }[];
  Policy: string;
  ExternalId?: string | undefined;
}

/** The STS call; the default makes one STSClient per target (tests may replace it). */
export type AssumeRoleCall = (input: AssumeInput) => Promise<{
  AccessKeyId: string;
  SecretAccessKey: string;
  SessionToken: string;
  Expiration: Date;
}>;

export function stsAssumeRole(target: AwsTarget): { call: AssumeRoleCall; close(): void } {
  // The module is loaded now (a job's SDK waits 1 to 2 s for its first answer), the client made at
  // the first AssumeRole: a process that never serves an aws session never resolves its AWS
  // credentials (nor prints the SDK's Node version warning, emitted by a client's constructor).
  const preloaded = import('@aws-sdk/client-sts');
  preloaded.catch(() => {});
  let client: STSClient | undefined;
  let sdk:
    | Promise<{ client: STSClient; command: typeof import('@aws-sdk/client-sts').AssumeRoleCommand }>
    | undefined;
  const sts = () => {
    sdk ??= Promise.all([preloaded, base()]).then(([m, credentials]) => {
      client = new m.STSClient({
        // The target's region, else the process's (AWS_REGION), else STS's home region.
        region: target.region ?? process.env.AWS_REGION ?? 'us-east-1',
        credentials,
        maxAttempts: 2,
        requestHandler: { connectionTimeout: 5_000, requestTimeout: 10_000 },
      });
      return { client, command: m.AssumeRoleCommand };
    });
    return sdk;
  };
  return {
    async call(input) {
      const { client, command } = await sts();
      const out = await client.send(new command(input));
      const c = out.Credentials;
      if (!c?.AccessKeyId || !c.SecretAccessKey || !c.SessionToken || !c.Expiration) {
        throw Object.assign(new Error('AssumeRole answered without credentials'), {
          name: 'IncompleteAnswer',
        });
      }
      return {
        AccessKeyId: c.AccessKeyId,
        SecretAccessKey: c.SecretAccessKey,
        SessionToken: c.SessionToken,
        Expiration: c.Expiration,
      };
    },
    close: () => client?.destroy(),
  };
}

/** STS's error code (AccessDenied, ValidationError, ECONNREFUSED…), bounded; never its message. */
function stsCode(err: unknown): string {
  const e = err as { name?: unknown; code?: unknown; Code?: unknown };
  const raw = [e.Code, e.code, e.name].find((v) => typeof v === 'string' && v !== 'Error');
  return typeof raw === 'string' && /^[A-Za-z0-9_.-]{1,64}$/.test(raw) ? raw : 'Unknown';
}

/** The CiportError for a failed AssumeRole. */
export function assumeFailure(target: AwsTarget, err: unknown): CiportError {
  const code = stsCode(err);
  const details = { role_arn: target.role_arn, sts_code: code };
  if ((err as { name?: string }).name === 'CredentialsProviderError') {
    return new CiportError(
      'CIPORT_E_AWS_NO_CREDENTIALS',
      `target ${target.name}: the exit has no AWS credentials to call STS with (provider chain: env, web identity, ECS/EC2 metadata)`,
      { details },
    );
  }
  if (code === 'AccessDenied' || code === 'AccessDeniedException') {
    return new CiportError(
      'CIPORT_E_AWS_ASSUME_ROLE_DENIED',
      `target ${target.name}: STS refused AssumeRole on ${target.role_arn} (${code}); the role's trust policy must allow the exit's identity sts:AssumeRole and sts:TagSession`,
      { details },
    );
  }
  return new CiportError(
    'CIPORT_E_AWS_ASSUME_ROLE_FAILED',
    `target ${target.name}: AssumeRole on ${target.role_arn} failed (${code})`,
    { details },
  );
}

export class RoleSessions {
  readonly #target: AwsTarget;
  readonly #call: AssumeRoleCall;
  readonly #held = new Map<string, Held>();
  readonly #pending = new Map<string, Promise<Held>>();
  readonly #now: () => number;
  /** Sessions forget() was told of (bounded, oldest out): never assumed for again. */
  readonly #ended = new Set<string>();

  constructor(target: AwsTarget, call: AssumeRoleCall, now: () => number = Date.now) {
    this.#target = target;
    this.#call = call;
    this.#now = now;
  }

  /**
   * The session's credentials: held ones while 5 minutes remain, else from one AssumeRole
   * (shared by concurrent callers). `report` hears of the AssumeRole this call made, if it made one.
   */
  async get(
    sessionId: string,
    facts: ExitSessionFacts,
    report?: (event: AwsCredentialsEvent) => void,
  ): Promise<RoleCredentials> {
    const now = this.#now();
    // A stream that got past the gateway just before the session ended (or an agent told of an
    // expiry already past): no AssumeRole, nothing held, for a session that is over.
    if (this.#ended.has(sessionId) || facts.expiresAt <= now) {
      throw new CiportError(
        'CIPORT_E_SESSION_ENDED',
        `session ${sessionId} has ended: no credentials for it`,
      );
    }
    const held = this.#held.get(sessionId);
    if (held && held.expiresAt - now >= REFRESH_BEFORE_MS) return held.credentials;
    let pending = this.#pending.get(sessionId);
    if (!pending) {
      const started: Promise<Held> = this.#assume(sessionId, facts, report).then(
        (fresh) => {
          // Kept unless the session ended meanwhile (forget() dropped this AssumeRole).
          if (this.#pending.get(sessionId) === started) {
            this.#pending.delete(sessionId);
            this.#sweep();
            this.#held.set(sessionId, fresh);
          }
          return fresh;
        },
        (err: unknown) => {
          if (this.#pending.get(sessionId) === started) this.#pending.delete(sessionId);
          throw err;
        },
      );
      pending = started;
      this.#pending.set(sessionId, pending);
    }
    return (await pending).credentials;
  }

  async #assume(
    sessionId: string,
    facts: ExitSessionFacts,
    report?: (event: AwsCredentialsEvent) => void,
  ): Promise<Held> {
    const target = this.#target;
    const remaining = facts.expiresAt - this.#now();
    const durationMs = Math.max(STS_MIN_DURATION_MS, Math.min(target.duration, remaining));
    const denyAfter = isoSeconds(facts.expiresAt);
    const tags = sessionTags(facts.principal, sessionId);
    const input: AssumeInput = {
      RoleArn: target.role_arn,
      RoleSessionName: roleSessionName(facts.principal, sessionId),
      DurationSeconds: Math.floor(durationMs / 1000),
      Tags: Object.entries(tags).map(([Key, Value]) => ({ Key, Value })),
      Policy: boundedSessionPolicy(facts.sessionPolicy, denyAfter),
      ...(target.external_id ? { ExternalId: target.external_id } : {}),
    };
    let out: Awaited<ReturnType<AssumeRoleCall>>;
    try {
      out = await this.#call(input);
    } catch (err) {
      const failure = assumeFailure(target, err);
      report?.({
        type: 'aws.credentials_failed',
        role_arn: target.role_arn,
        code: failure.code,
        sts_code: failure.details?.sts_code as string | undefined,
      });
      throw failure;
    }
    const held: Held = {
      credentials: {
        AccessKeyId: out.AccessKeyId,
        SecretAccessKey: out.SecretAccessKey,
        Token: out.SessionToken,
        Expiration: isoSeconds(out.Expiration.getTime()),
        RoleArn: target.role_arn,
      },
      expiresAt: out.Expiration.getTime(),
    };
    report?.({
      type: 'aws.credentials_issued',
      role_arn: target.role_arn,
      role_session_name: input.RoleSessionName,
      access_key_id: out.AccessKeyId,
      expiration: held.credentials.Expiration,
      duration_s: input.DurationSeconds,
      deny_after: denyAfter,
      tags,
    });
    return held;
  }

  /** Drop credentials that have expired (sessions whose end this process did not hear of). */
  #sweep(): void {
    const now = this.#now();
    for (const [id, held] of this.#held) if (held.expiresAt <= now) this.#held.delete(id);
  }

  /** The session ended: its credentials are never served again. */
  forget(sessionId: string): void {
    this.#held.delete(sessionId);
    this.#pending.delete(sessionId);
    this.#ended.add(sessionId);
    if (this.#ended.size > ENDED_KEPT) this.#ended.delete(this.#ended.values().next().value as string);
  }

  get size(): number {
    return this.#held.size;
  }
}

/** ISO 8601 to the second, as STS and IAM conditions write it. */
export function isoSeconds(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}
