// The agent as exit (docs/agent.md, "Exits on the agent"): what it advertises and how it serves
// each CONNECT stream the gateway opens. Credentials never leave this module's process:
//   tcp, mysql (without credentials)  raw relay
//   redis                             AUTH/SELECT injected, then raw relay
//   postgres                          the same exit as the gateway's (servePgExitStream): static
//                                     credentials or a role per session (DynamicRoles)
//   http                              the same HttpExit as the gateway's (header injection)
// Query events are written by the gateway, which sees the app's messages; the events only the
// exit can see (roles created and dropped, http.request) go through the EventOutbox.
import { constants as h2, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import type { Socket } from 'node:net';
import { pipeline } from 'node:stream';
import type { TargetConfig } from '../config/schema.js';
import { DynamicRoles, dynamicSpecFromTarget, isDeploymentId } from '../credentials/pg-roles.js';
import { asCiportError, CiportError } from '../errors/index.js';
import { createHttpExit, type HttpExit, httpInjectionFrom } from '../exits/http/index.js';
import {
  CancelRegistry,
  type PgUpstreamTarget,
  pgUpstreamFromTarget,
  sendErrorAndClose,
  servePgExitStream,
} from '../exits/postgres/index.js';
import { connectRedisUpstream, redisInjects } from '../exits/redis/index.js';
import { dialTcp } from '../exits/tcp/exit.js';
import type { AdvertisedTarget } from '../gateway/agent-hub.js';
import type { Logger } from '../gateway/logger.js';
import { resetStream } from '../transport/h2.js';
import type { EventOutbox } from './outbox.js';

/** Headers the gateway puts on a CONNECT towards an agent. */
export const TUNNEL_HEADERS = {
  connection: 'ciport-connection',
  session: 'ciport-session',
  /** Epoch ms of the session's expiry (a per-session role is VALID UNTIL then). */
  expires: 'ciport-session-expires',
  /** JSON array: the roles the granting rule allows on this target (dynamic credentials). */
  grants: 'ciport-grants',
  /** The gateway's deployment id: the tag of the per-session roles the agent creates. */
  deployment: 'ciport-deployment',
} as const;

/** A session seen on a CONNECT counts as active for the reaper this long (list races). */
const RECENT_SESSION_MS = 120_000;

export interface AgentExitsOptions {
  name: string;
  targets: readonly TargetConfig[];
  outbox: EventOutbox;
  connectTimeoutMs: number;
  log?: Logger | undefined;
}

export class AgentExits {
  readonly cancelRegistry = new CancelRegistry();
  readonly roles: DynamicRoles;
  readonly #opt: AgentExitsOptions;
  readonly #served = new Map<string, TargetConfig>();
  readonly #pg = new Map<string, PgUpstreamTarget>();
  readonly #http = new Map<string, HttpExit>();
  readonly #upstreams = new Set<Socket>();
  readonly #recent = new Map<string, number>();
  /** CONNECT streams being served now. */
  streams = 0;

  constructor(options: AgentExitsOptions) {
    this.#opt = options;
    const specs = [];
    for (const t of options.targets) {
      const skip = (why: string) => options.log?.warn({ target: t.name, protocol: t.protocol }, why);
      if (t.protocol === 'postgres') {
        if (!t.credentials?.user && !t.credentials?.dynamic) {
          skip('postgres target without credentials.user or credentials.dynamic: not advertised');
          continue;
        }
        this.#pg.set(t.name, pgUpstreamFromTarget(t));
        const spec = dynamicSpecFromTarget(t);
        if (spec) specs.push(spec);
      } else if (t.protocol === 'http') {
        this.#http.set(
          t.name,
          createHttpExit(
            { name: t.name, address: t.address, tls: t.tls, injection: httpInjectionFrom(t) },
            { connectTimeoutMs: options.connectTimeoutMs },
          ),
        );
      } else if (t.protocol === 'mysql' && t.credentials) {
        skip('mysql credential injection is not implemented: not advertised (drop credentials to relay raw)');
        continue;
      }
      this.#served.set(t.name, t);
    }
    this.roles = new DynamicRoles(specs, {
      log: options.log ?? { info() {}, warn() {}, error() {} },
      audit: async (e) => {
        const { type, ...data } = e;
        options.outbox.push(type, { ...data });
      },
    });
  }

  /** What the gateway learns about each served target (never a credential). */
  advertised(): AdvertisedTarget[] {
    return [...this.#served.values()].map((t) => {
      if (t.protocol !== 'postgres') return { name: t.name, protocol: t.protocol };
      const dynamic = Boolean(t.credentials?.dynamic);
      return {
        name: t.name,
        protocol: t.protocol,
        ...(t.database ? { database: t.database } : {}),
        ...(!dynamic && t.credentials?.user ? { user: t.credentials.user } : {}),
        ...(dynamic ? { dynamic: true } : {}),
        query_audit: t.query_audit ?? true,
        ...(t.query_max_length ? { query_max_length: t.query_max_length } : {}),
      };
    });
  }

  has(name: string): boolean {
    return this.#served.has(name);
  }

  /** Serve one CONNECT stream for `name` (already checked with has()). Never throws. */
  serve(stream: ServerHttp2Stream, name: string, headers: IncomingHttpHeaders): void {
    const target = this.#served.get(name) as TargetConfig;
    const session = header(headers, TUNNEL_HEADERS.session);
    if (session) this.#recent.set(session, Date.now());
    this.streams++;
    stream.once('close', () => this.streams--);
    if (target.protocol === 'postgres') void this.#servePg(stream, target, headers);
    else if (target.protocol === 'http') this.#serveHttp(stream, target, headers);
    else void this.#serveRaw(stream, target);
  }

  /**
   * A session ended: drop its roles now (the gateway tells every agent serving its targets).
   * `deployment`: the gateway's deployment id (roles tagged for another are left alone).
   */
  async sessionEnded(
    id: string,
    targets: readonly string[],
    reason: string,
    deployment: string | undefined,
  ): Promise<void> {
    this.#recent.delete(id);
    this.cancelRegistry.dropSession(id);
    const mine = targets.filter((t) => this.roles.has(t));
    if (mine.length > 0) await this.roles.revokeSession(id, mine, `session_ended:${reason}`, deployment);
  }

  /**
   * The gateway's list of active sessions: drop every role of `deployment` (the gateway's) whose
   * session is not in it. Roles of other deployments, and legacy-tagged roles, are left alone.
   */
  async reap(active: readonly string[], deployment: string | undefined): Promise<number> {
    if (this.roles.targets.length === 0) return 0;
    if (!isDeploymentId(deployment)) {
      throw new CiportError('CIPORT_E_USAGE', 'the gateway did not send its deployment id');
    }
    const now = Date.now();
    const keep = new Set(active);
    for (const [id, seen] of this.#recent) {
      if (now - seen < RECENT_SESSION_MS) keep.add(id);
      else this.#recent.delete(id);
    }
    return this.roles.reap(keep, { deployment });
  }

  close(): void {
    for (const u of this.#upstreams) u.destroy();
    for (const e of this.#http.values()) e.close();
  }

  async #servePg(
    stream: ServerHttp2Stream,
    target: TargetConfig,
    headers: IncomingHttpHeaders,
  ): Promise<void> {
    const abort = new AbortController();
    stream.once('close', () => abort.abort());
    stream.respond({ ':status': 200 });
    const sessionId = header(headers, TUNNEL_HEADERS.session) ?? '';
    try {
      let upstream = this.#pg.get(target.name) as PgUpstreamTarget;
      if (this.roles.has(target.name)) {
        const expiresAt = Number(header(headers, TUNNEL_HEADERS.expires));
        const deployment = header(headers, TUNNEL_HEADERS.deployment);
        if (!sessionId || !Number.isFinite(expiresAt) || !isDeploymentId(deployment)) {
          throw new CiportError(
            'CIPORT_E_USAGE',
            'the gateway did not say which session (and deployment) this is',
          );
        }
        const cred = await this.roles.ensure(
          { id: sessionId, expiresAt, deployment },
          target.name,
          parseGrants(header(headers, TUNNEL_HEADERS.grants)),
        );
        upstream = { ...upstream, user: cred.user, password: cred.password };
      }
      // Query events are the gateway's (it sees the same messages); none here.
      await servePgExitStream(stream, {
        sessionId,
        upstream,
        cancelRegistry: this.cancelRegistry,
        queryEvents: false,
        signal: abort.signal,
      });
    } catch (thrown) {
      const err = asCiportError(thrown);
      if (!stream.destroyed && !stream.writableEnded) await sendErrorAndClose(stream, err);
      this.#opt.log?.warn(
        { target: target.name, session: sessionId, code: err.code },
        'postgres exit failed',
      );
    }
    if (!stream.closed && !stream.writableEnded) stream.end();
  }

  #serveHttp(stream: ServerHttp2Stream, target: TargetConfig, headers: IncomingHttpHeaders): void {
    const exit = this.#http.get(target.name) as HttpExit;
    const base = {
      session: header(headers, TUNNEL_HEADERS.session) ?? '',
      connection: header(headers, TUNNEL_HEADERS.connection) ?? '',
      target: target.name,
    };
    stream.respond({ ':status': 200 });
    exit.serve(stream, {
      onRequest: (event) => this.#opt.outbox.push('http.request', { ...base, ...event }),
    });
  }

  async #serveRaw(stream: ServerHttp2Stream, target: TargetConfig): Promise<void> {
    const abort = new AbortController();
    const onEarlyClose = () => abort.abort();
    stream.once('close', onEarlyClose);
    let upstream: Socket;
    try {
      const options = { timeoutMs: this.#opt.connectTimeoutMs, signal: abort.signal };
      upstream =
        target.protocol === 'redis' && redisInjects(target)
          ? ((await connectRedisUpstream(target, options)) as Socket)
          : await dialTcp(target.address, options);
    } catch (thrown) {
      stream.off('close', onEarlyClose);
      const err = asCiportError(thrown);
      this.#opt.log?.warn(
        { target: target.name, code: err.code, err: err.message },
        'target failed from the agent',
      );
      refuseStream(
        stream,
        err.code === 'CIPORT_E_UPSTREAM_UNREACHABLE'
          ? new CiportError(
              'CIPORT_E_UPSTREAM_UNREACHABLE',
              `target ${target.name} is unreachable from agent ${this.#opt.name}`,
            )
          : err,
      );
      return;
    }
    stream.off('close', onEarlyClose);
    if (stream.destroyed || stream.closed) {
      upstream.destroy();
      return;
    }
    this.#upstreams.add(upstream);
    stream.setMaxListeners(32);
    stream.respond({ ':status': 200 });
    upstream.on('error', () => resetStream(stream, h2.NGHTTP2_CONNECT_ERROR));
    pipeline(stream, upstream, () => {});
    pipeline(upstream, stream, () => {});
    stream.once('close', () => {
      upstream.destroy();
      this.#upstreams.delete(upstream);
    });
    upstream.resume();
  }
}

/** Answer a stream with the usual JSON error body and `ciport-error`. */
export function refuseStream(stream: ServerHttp2Stream, err: CiportError): void {
  if (stream.destroyed || stream.closed || stream.headersSent) return;
  const body = JSON.stringify({ error: err.toJSON() });
  stream.respond({ ':status': err.httpStatus, 'content-type': 'application/json', 'ciport-error': err.code });
  stream.end(body);
}

function header(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name];
  return typeof v === 'string' && v.length > 0 && v.length < 4096 ? v : undefined;
}

function parseGrants(text: string | undefined): string[] | undefined {
  if (!text) return undefined;
  try {
    const v = JSON.parse(text) as unknown;
    return Array.isArray(v) && v.every((x) => typeof x === 'string') ? (v as string[]) : undefined;
  } catch {
    return undefined;
  }
}
