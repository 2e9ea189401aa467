// The agent as exit (docs/agent.md, "Exits on the agent"): what it advertises and how it serves
// each CONNECT stream the gateway opens, with the same exits as the gateway's own
// (src/exits/registry.ts). Credentials never leave this process. Query events are written by the
// gateway, which sees the app's messages; the events only the exit can see (roles created and
// dropped, http.request) go through the EventOutbox.
import { constants as h2, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import { pipeline } from 'node:stream';
import type { TargetConfig } from '../config/schema.js';
import { isDeploymentId } from '../credentials/deployment.js';
import { DynamicCredentials, dynamicSpecFromTarget } from '../credentials/dynamic.js';
import type { VaultClient } from '../credentials/vault-client.js';
import { VaultDatabaseCredentials, vaultDatabaseSpecFromTarget } from '../credentials/vault-database.js';
import { VAULT_LEASES_FILE } from '../credentials/vault-lease-file.js';
import { asCiportError, CiportError } from '../errors/index.js';
import {
  type DialExit,
  decodeFacts,
  type Exit,
  type ExitAdvertisement,
  type StreamExit,
} from '../exits/contract.js';
import { advertisement, buildExits } from '../exits/registry.js';
import type { Logger } from '../log/logger.js';
import { resetStream } from '../transport/h2.js';
import { refuseStream, TUNNEL_HEADERS } from '../transport/wire.js';
import type { EventOutbox } from './outbox.js';

/** A session seen on a CONNECT counts as active for the reaper this long (list races). */
const RECENT_SESSION_MS = 120_000;

export interface AgentExitsOptions {
  name: string;
  targets: readonly TargetConfig[];
  outbox: EventOutbox;
  connectTimeoutMs: number;
  log?: Logger | undefined;
  /** For `credentials.vault_database` (the agent config's `vault:` block). */
  vault?: VaultClient | undefined;
  /** Where the Vault leases are kept across restarts (`<data_dir>/vault-leases.json`). */
  dataDir?: string | undefined;
  /** Vault lease reaper period (default 60 s; 0: only at start). */
  reapIntervalMs?: number;
}

export class AgentExits {
  readonly roles: DynamicCredentials;
  readonly vaultDb: VaultDatabaseCredentials;
  readonly #opt: AgentExitsOptions;
  readonly #exits: Map<string, Exit>;
  readonly #upstreams = new Set<Socket>();
  readonly #recent = new Map<string, number>();
  /** CONNECT streams being served now. */
  streams = 0;

  constructor(options: AgentExitsOptions) {
    this.#opt = options;
    this.#exits = buildExits(options.targets, { connectTimeoutMs: options.connectTimeoutMs }, (t, why) =>
      options.log?.warn({ target: t.name, protocol: t.protocol }, `${why}: not advertised`),
    );
    const specs = [];
    const vaultSpecs = [];
    for (const exit of this.#exits.values()) {
      const spec = dynamicSpecFromTarget(exit.target);
      if (spec) specs.push(spec);
      const vaultSpec = vaultDatabaseSpecFromTarget(exit.target);
      if (vaultSpec) vaultSpecs.push(vaultSpec);
    }
    const log = options.log ?? { info() {}, warn() {}, error() {} };
    const audit = async (e: { type: string }) => {
      const { type, ...data } = e;
      options.outbox.push(type, { ...data });
    };
    this.roles = new DynamicCredentials(specs, { log, audit });
    // The agent cannot ask the store: a lease's session is over at its expiry, or when told.
    this.vaultDb = new VaultDatabaseCredentials(vaultSpecs, {
      vault: options.vault,
      log,
      audit,
      leaseFile: options.dataDir ? join(options.dataDir, VAULT_LEASES_FILE) : undefined,
    });
    void this.vaultDb.startReaper(options.reapIntervalMs ?? 60_000);
  }

  /** What the gateway learns about each served target (never a credential). */
  advertised(): ExitAdvertisement[] {
    return [...this.#exits.values()].map((exit) => advertisement(exit.target));
  }

  has(name: string): boolean {
    return this.#exits.has(name);
  }

  /** Serve one CONNECT stream for `name` (already checked with has()). Never throws. */
  serve(stream: ServerHttp2Stream, name: string, headers: IncomingHttpHeaders): void {
    const exit = this.#exits.get(name) as Exit;
    const session = header(headers, TUNNEL_HEADERS.session);
    if (session) this.#recent.set(session, Date.now());
    this.streams++;
    stream.once('close', () => this.streams--);
    if (exit.mode === 'stream') void this.#serveStream(stream, exit, headers);
    else void this.#serveDial(stream, exit);
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
    for (const t of targets) this.#exits.get(t)?.sessionEnded?.(id);
    const mine = targets.filter((t) => this.roles.has(t));
    if (mine.length > 0) await this.roles.revokeSession(id, mine, `session_ended:${reason}`, deployment);
    const minted = targets.filter((t) => this.vaultDb.has(t));
    if (minted.length > 0) await this.vaultDb.revokeSession(id, minted, `session_ended:${reason}`);
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
    for (const exit of this.#exits.values()) exit.close();
    this.vaultDb.close();
  }

  /** postgres, http: answered at once; the exit speaks the protocol (and its errors) in-band. */
  async #serveStream(
    stream: ServerHttp2Stream,
    exit: StreamExit,
    headers: IncomingHttpHeaders,
  ): Promise<void> {
    const abort = new AbortController();
    stream.once('close', () => abort.abort());
    stream.respond({ ':status': 200 });
    const name = exit.target.name;
    const sessionId = header(headers, TUNNEL_HEADERS.session) ?? '';
    const base = {
      session: sessionId,
      connection: header(headers, TUNNEL_HEADERS.connection) ?? '',
      target: name,
    };
    try {
      const outcome = await exit.serve(stream, {
        session: { id: sessionId },
        signal: abort.signal,
        credential: this.roles.has(name)
          ? () => this.#sessionRole(name, sessionId, headers)
          : this.vaultDb.has(name)
            ? () => this.#vaultCredential(name, sessionId, headers)
            : undefined,
        // Query events are the gateway's (it sees the same messages); none here.
        onRequest: (event) => this.#opt.outbox.push('http.request', { ...base, ...event }),
        facts: decodeFacts(headers[TUNNEL_HEADERS.facts] as string | undefined),
        onCredentials: ({ type, ...event }) => this.#opt.outbox.push(type, { ...base, ...event }),
      });
      void outcome.after?.then(({ note, ...more }) =>
        this.#opt.log?.info({ ...base, ...more }, `${exit.target.protocol} ${note}`),
      );
    } catch (thrown) {
      const err = asCiportError(thrown);
      this.#opt.log?.warn(
        { ...base, code: err.code, err: err.message },
        `${exit.target.protocol} exit failed`,
      );
    }
    if (!stream.closed && !stream.writableEnded) stream.end();
  }

  /** The session's own role on `target` (created on first use, VALID UNTIL the session's expiry). */
  async #sessionRole(target: string, sessionId: string, headers: IncomingHttpHeaders) {
    const expiresAt = Number(header(headers, TUNNEL_HEADERS.expires));
    const deployment = header(headers, TUNNEL_HEADERS.deployment);
    if (!sessionId || !Number.isFinite(expiresAt) || !isDeploymentId(deployment)) {
      throw new CiportError(
        'CIPORT_E_USAGE',
        'the gateway did not say which session (and deployment) this is',
      );
    }
    return this.roles.ensure(
      { id: sessionId, expiresAt, deployment },
      target,
      parseGrants(header(headers, TUNNEL_HEADERS.grants)),
    );
  }

  /** The session's Vault-minted credential on `target` (read on first use). */
  async #vaultCredential(target: string, sessionId: string, headers: IncomingHttpHeaders) {
    const expiresAt = Number(header(headers, TUNNEL_HEADERS.expires));
    if (!sessionId) throw new CiportError('CIPORT_E_USAGE', 'the gateway did not say which session this is');
    return this.vaultDb.ensure({ id: sessionId, expiresAt }, target);
  }

  /** tcp, redis: dial, answer 200, relay raw bytes. */
  async #serveDial(stream: ServerHttp2Stream, exit: DialExit): Promise<void> {
    const abort = new AbortController();
    const onEarlyClose = () => abort.abort();
    stream.once('close', onEarlyClose);
    let upstream: Socket;
    try {
      upstream = await exit.dial({ timeoutMs: this.#opt.connectTimeoutMs, signal: abort.signal });
    } catch (thrown) {
      stream.off('close', onEarlyClose);
      const err = asCiportError(thrown);
      this.#opt.log?.warn(
        { target: exit.target.name, code: err.code, err: err.message },
        'target failed from the agent',
      );
      refuseStream(
        stream,
        err.code === 'CIPORT_E_UPSTREAM_UNREACHABLE'
          ? new CiportError(
              'CIPORT_E_UPSTREAM_UNREACHABLE',
              `target ${exit.target.name} is unreachable from agent ${this.#opt.name}`,
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
