// Tunnels (docs/protocol.md, "Tunnels"): one HTTP/2 CONNECT stream per application connection.
// The gateway authenticates the stream with the session secret, checks the target against the
// session's grant and the session's connection limit, dials the target (it is the exit for the
// targets in its own config), answers 200 and pipes bytes both ways with HTTP/2 flow control as
// the only buffer bound. The stream is reset with CANCEL when the session ends or the
// connection idles, and with CONNECT_ERROR when the upstream fails.
import { randomBytes } from 'node:crypto';
import {
  type Http2ServerRequest,
  type Http2ServerResponse,
  constants as h2,
  type ServerHttp2Stream,
} from 'node:http2';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { AuditBacklog } from '../audit/backlog.js';
import { AuditEventTemplate } from '../audit/chain.js';
import { auditEvent, type ConnectionClosedBy } from '../audit/events.js';
import { QueryBatch } from '../audit/query-batch.js';
import type { TargetConfig } from '../config/schema.js';
import { asCiportError, CiportError } from '../errors/index.js';
import type { AwsCredentialsEvent } from '../exits/aws/events.js';
import { type DialExit, type Exit, encodeFacts, type StreamExit } from '../exits/contract.js';
import type { HttpRequestEvent } from '../exits/http/index.js';
import type { QueryEvent } from '../exits/query-event.js';
import { exitDefinition } from '../exits/registry.js';
import type { Logger } from '../log/logger.js';
import { publish } from '../session/events.js';
import type { LiveSession, SessionConnection, SessionManager } from '../session/manager.js';
import { principalSummary } from '../session/principal.js';
import type { EndReason } from '../session/reasons.js';
import { bearer } from '../session/secret.js';
import type { AuditStore } from '../store/types.js';
import { resetStream, targetOfAuthority } from '../transport/h2.js';
import { TUNNEL_HEADERS } from '../transport/wire.js';
import type { AgentIdentity } from './agents/hub.js';
import { type AgentRoutes, relayViaAgent } from './agents/relay.js';
import { clientResetCause } from './close-cause.js';
import type { GatewayExits } from './exits.js';
import { sendError } from './http.js';
import { IdleSweep, type IdleWatched } from './idle-sweep.js';
import { meterStream, type StreamMeter } from './stream-meter.js';

export const SESSION_HEADER = 'ciport-session';

export interface TunnelDeps {
  manager: SessionManager;
  store: AuditStore;
  log: Logger;
  /** This gateway instance: the name its session and tunnel events carry (session/events.ts). */
  gatewayId: string;
  /** Targets this gateway exits to itself, by name. */
  targets: ReadonlyMap<string, TargetConfig>;
  idleTimeoutMs: number;
  connectTimeoutMs: number;
  /** The exits of the targets this gateway serves itself (without them: none). */
  exits?: GatewayExits | undefined;
  /** Agents: targets this gateway does not exit to itself go through them. */
  agents?: AgentRoutes | undefined;
  /** Bounds query / http.request events not yet committed (relays pause while it is full). */
  auditBacklog?: AuditBacklog | undefined;
}

/** Handle one CONNECT stream, start to end. Never throws. */
export async function handleConnect(
  deps: TunnelDeps,
  req: Http2ServerRequest,
  res: Http2ServerResponse,
): Promise<void> {
  const stream = req.stream;
  // Metered from the moment it is accepted, before anything awaits: bytes the client sends right
  // after HEADERS are buffered in the stream while the session is looked up and the exit dialled,
  // and must count against the session's byte budget like every later byte.
  const meter = meterStream(stream);
  const refuse = (err: CiportError) => {
    publish('tunnelRefused', { gateway: deps.gatewayId, code: err.code });
    // headersSent: already refused (its early bytes crossed the byte budget during the dial).
    if (stream.destroyed || stream.closed || stream.headersSent) return;
    sendError(res, err);
  };
  const targetName = targetOfAuthority(req.headers[':authority'] as string | undefined);
  const sessionId = req.headers[SESSION_HEADER];
  const secret = bearer(req.headers.authorization);
  if (typeof sessionId !== 'string' || !secret) {
    refuse(new CiportError('CIPORT_E_SESSION_UNAUTHORIZED', 'a tunnel needs the session id and its secret'));
    return;
  }
  if (!targetName) {
    refuse(new CiportError('CIPORT_E_USAGE', 'CONNECT :authority must name a target'));
    return;
  }

  let live: LiveSession;
  try {
    live = await deps.manager.authenticate(sessionId, secret);
  } catch (thrown) {
    const err = asCiportError(thrown);
    // Tunnels do not tell unknown sessions from wrong secrets.
    refuse(
      err.code === 'CIPORT_E_SESSION_NOT_FOUND'
        ? new CiportError('CIPORT_E_SESSION_UNAUTHORIZED', 'unknown session or wrong secret')
        : err,
    );
    return;
  }

  const target = deps.targets.get(targetName);
  if (!live.record.targets.includes(targetName)) {
    refuse(
      target
        ? new CiportError(
            'CIPORT_E_TARGET_NOT_GRANTED',
            `target ${targetName} is not granted to session ${live.id}`,
          )
        : new CiportError('CIPORT_E_TARGET_UNKNOWN', `no target named ${targetName}`),
    );
    return;
  }
  const exit = target ? deps.exits?.byTarget.get(targetName) : undefined;
  if (!exit && deps.agents && (!target || deps.agents.hub.serves(targetName))) {
    // Not exited here: an agent serves it (or, when none is connected, the hub says so).
    const tunnel = new Tunnel(deps, live, target ?? agentTarget(targetName), stream, meter, refuse);
    try {
      deps.manager.attach(live, tunnel);
    } catch (err) {
      refuse(asCiportError(err));
      return;
    }
    await tunnel.runViaAgent(deps.agents, refuse);
    return;
  }
  if (!target) {
    refuse(new CiportError('CIPORT_E_UPSTREAM_UNREACHABLE', `no exit serves target ${targetName} right now`));
    return;
  }
  if (!exit) {
    refuse(
      new CiportError(
        'CIPORT_E_PROTOCOL_NOT_IMPLEMENTED',
        `target ${targetName}: this gateway does not exit to it (its ${target.protocol} exit is not configured here) and no agent serves it`,
      ),
    );
    return;
  }

  const tunnel = new Tunnel(deps, live, target, stream, meter, refuse);
  try {
    deps.manager.attach(live, tunnel);
  } catch (err) {
    refuse(asCiportError(err));
    return;
  }
  await tunnel.run(exit, refuse);
}

/**
 * Copy `a` into `b` and `b` into `a` with backpressure (a side pauses while its peer is full and
 * resumes on the peer's 'drain'); one side's end ends the other, so each direction half-closes on
 * its own. Errors and closes are the caller's: a write to a destroyed side is dropped.
 */
function relay(a: Duplex, b: Duplex): void {
  // The two sides point at each other and share three listener functions: no closures,
  // contexts or once-wrappers per tunnel.
  (a as Peered)[PEER] = b;
  (b as Peered)[PEER] = a;
  for (const side of [a, b]) {
    side.on('data', relayData);
    side.on('drain', relayDrain);
    side.on('end', relayEnd);
  }
}

const PEER = Symbol('ciport.relayPeer');
type Peered = Duplex & { [PEER]: Duplex };

/** A chunk from one side: written to the other, paused while that one is full. */
function relayData(this: Peered, chunk: Buffer): void {
  if (!this[PEER].write(chunk)) this.pause();
}

/** This side has room again: its peer may send more. */
function relayDrain(this: Peered): void {
  this[PEER].resume();
}

/** One side ended: half-close the other ('end' is emitted once). */
function relayEnd(this: Peered): void {
  this[PEER].end();
}

/** One idle sweep per gateway (per deps): one timer for all its tunnels. */
const sweeps = new WeakMap<TunnelDeps, IdleSweep>();

function idleSweep(deps: TunnelDeps): IdleSweep {
  let sweep = sweeps.get(deps);
  if (!sweep || sweep.idleMs !== deps.idleTimeoutMs) {
    sweep = new IdleSweep(deps.idleTimeoutMs);
    sweeps.set(deps, sweep);
  }
  return sweep;
}

function ignore(): void {}

/** A granted target no local config names: what the tunnel knows of it (an agent's). */
function agentTarget(name: string): TargetConfig {
  return { name, protocol: 'tcp', address: `${name}:0`, tags: [] };
}

/** One open (or opening) tunnel connection. */
class Tunnel implements SessionConnection, IdleWatched {
  readonly id = `con_${randomBytes(12).toString('base64url')}`;
  readonly target: string;
  readonly done: Promise<void>;
  #resolveDone!: () => void;
  readonly #deps: TunnelDeps;
  readonly #live: LiveSession;
  readonly #config: TargetConfig;
  readonly #stream: ServerHttp2Stream;
  /** Made when a dial or agent handoff starts (most tunnels are never cut while opening). */
  #dialAbort: AbortController | undefined;
  /** cut() or the byte limit came before the dial started: it must not start. */
  #dialCut = false;
  #upstream: Socket | undefined;
  /** Byte counts of a tunnel relayed to an agent (its relay counts them). */
  #bytes: { up: number; down: number } | undefined;
  /** What the stream itself carried (tcp, redis: bytes that reached the app or came from it). */
  readonly #metered: StreamMeter;
  idleSeen = 0;
  idleSince = 0;
  #sweep: IdleSweep | undefined;
  /** Until the tunnel answers 200 (then it is reset instead; dropped to keep nothing per tunnel). */
  #refuse: ((err: CiportError) => void) | undefined;
  #opened = false;
  #startedAt = Date.now();
  /** Why it closed abnormally, for `connection.closed`. */
  #error: string | undefined;
  /** Who ended it on purpose, when that came before any failure (close-cause.ts). */
  #closedBy: ConnectionClosedBy | undefined;
  #endReason: EndReason | undefined;
  /** The agent that carried it (undefined: the gateway was the exit). */
  #agent: AgentIdentity | undefined;

  constructor(
    deps: TunnelDeps,
    live: LiveSession,
    config: TargetConfig,
    stream: ServerHttp2Stream,
    metered: StreamMeter,
    refuse: (err: CiportError) => void,
  ) {
    this.#metered = metered;
    this.#refuse = refuse;
    this.#deps = deps;
    this.#live = live;
    this.#config = config;
    this.target = config.name;
    this.#stream = stream;
    this.done = new Promise((resolve) => {
      this.#resolveDone = resolve;
    });
  }

  get metered(): StreamMeter {
    return this.#metered;
  }

  cut(reason: EndReason): void {
    this.#chose('session', reason);
    this.#abortDial();
    this.#reset(h2.NGHTTP2_CANCEL);
  }

  #abortDial(): void {
    this.#dialCut = true;
    this.#dialAbort?.abort();
  }

  /** The signal a dial or handoff gives up on: this tunnel cut, or its session ending. */
  #dialSignal(): AbortSignal {
    const ac = new AbortController();
    this.#dialAbort = ac;
    if (this.#dialCut) ac.abort();
    // Attached tunnels are cut when their session ends; its own signal only when it exists.
    return this.#live.ending ? AbortSignal.any([ac.signal, this.#live.abort.signal]) : ac.signal;
  }

  /** No DATA either way for the idle timeout (idle-sweep.ts). */
  idled(): void {
    if (this.#stream.closed || this.#stream.destroyed) return;
    this.#chose('idle_timeout');
    this.#reset(h2.NGHTTP2_CANCEL);
  }

  /** Idle-timed from now on (the tunnel is open). */
  #watchIdle(): void {
    // 0: no idle timeout (as the stream's own setTimeout(0) was).
    if (this.#deps.idleTimeoutMs <= 0) return;
    this.#sweep = idleSweep(this.#deps);
    this.#sweep.add(this);
  }

  /** An end someone chose; it does not count as a failure unless one came first. */
  #chose(by: ConnectionClosedBy, reason?: EndReason): void {
    if (this.#error !== undefined || this.#closedBy !== undefined) return;
    this.#closedBy = by;
    this.#endReason = reason;
  }

  #clientReset(): void {
    const cause = clientResetCause(this.#stream.rstCode);
    if ('error' in cause) this.#error ??= cause.error;
    else this.#chose(cause.closedBy);
  }

  #reset(code: number): void {
    resetStream(this.#stream, code);
    this.#upstream?.destroy();
  }

  /**
   * Charge this stream's bytes to the session's byte budget (rule `limits.bytes`): those the
   * client sent since the stream was accepted at once, then every byte both ways (bytes to the
   * client once it is open: refusal bodies are not traffic). Called once the tunnel is attached,
   * before the exit is dialled or an agent gets the stream. A chunk that would cross the budget
   * is dropped and the stream reset (refused with 429 when it is not open yet). False: the early
   * bytes crossed it; the stream is refused and the tunnel is over.
   */
  #startMeter(): boolean {
    const budget = this.#live.bytes;
    // Without a limit there is nothing to enforce (the meter still counts).
    if (budget.limit === undefined) return true;
    if (
      this.#metered.charge(
        (n) => budget.charge(n),
        () => this.#overLimit(),
      )
    )
      return true;
    this.#overLimit();
    this.#abandon();
    return false;
  }

  /** The session's byte budget is spent: reset this stream and, the first time, the others. */
  #overLimit(): void {
    this.#cutForLimit();
    const budget = this.#live.bytes;
    if (budget.reported) return;
    budget.reported = true;
    const record = this.#live.record;
    this.#deps.log.warn(
      { session: record.id, connection: this.id, target: this.target, max: budget.limit, bytes: budget.used },
      'session byte limit reached: its connections are reset and new ones refused',
    );
    for (const c of this.#live.connections) if (c instanceof Tunnel && c !== this) c.#cutForLimit();
    this.#deps.store
      .appendAudit(
        auditEvent('session.limit_exceeded', {
          session: record.id,
          principal: principalSummary(record.principal),
          rule: record.rule,
          limit: 'bytes',
          max: budget.limit ?? 0,
          bytes: budget.used,
          connection: this.id,
          target: this.target,
        }),
      )
      .catch((err) =>
        this.#deps.log.error({ session: record.id, err: (err as Error).message }, 'audit limit failed'),
      );
  }

  #cutForLimit(): void {
    this.#error ??= `session byte limit reached (CIPORT_E_BYTE_LIMIT, ${this.#live.bytes.limit} bytes)`;
    if (!this.#stream.headersSent) {
      // Not open yet (its early bytes crossed the budget while the exit was being dialled):
      // refused like a new tunnel of a spent session, and the dial or handoff abandoned.
      this.#abortDial();
      this.#refuse?.(
        new CiportError(
          'CIPORT_E_BYTE_LIMIT',
          `session ${this.#live.id} has carried its byte limit (${this.#live.bytes.limit} bytes)`,
        ),
      );
      return;
    }
    this.#reset(h2.NGHTTP2_ENHANCE_YOUR_CALM);
  }

  async run(exit: Exit, refuse: (err: CiportError) => void): Promise<void> {
    if (!this.#startMeter()) return;
    if (exit.mode === 'stream') return this.#runStream(exit);
    return this.#runDial(exit, refuse);
  }

  /** A dial exit (tcp, redis): connect, answer 200, relay raw bytes. */
  async #runDial(exit: DialExit, refuse: (err: CiportError) => void): Promise<void> {
    const { log } = this.#deps;
    const onEarlyClose = () => this.#abortDial();
    this.#stream.once('close', onEarlyClose);
    try {
      this.#upstream = await exit.dial({
        timeoutMs: this.#deps.connectTimeoutMs,
        signal: this.#dialSignal(),
      });
    } catch (thrown) {
      this.#stream.off('close', onEarlyClose);
      this.#abandon();
      const err = asCiportError(thrown);
      // Refused already (byte limit crossed during the dial): nothing more to say.
      if (this.#stream.headersSent) return;
      if (this.#live.abort.signal.aborted) {
        refuse(new CiportError('CIPORT_E_SESSION_ENDED', `session ${this.#live.id} has ended`));
      } else {
        log.warn(
          { session: this.#live.id, target: this.target, code: err.code, err: err.message },
          'tunnel upstream failed',
        );
        refuse(
          err.code === 'CIPORT_E_UPSTREAM_UNREACHABLE'
            ? new CiportError(
                'CIPORT_E_UPSTREAM_UNREACHABLE',
                `target ${this.target} is unreachable from the gateway`,
              )
            : err,
        );
      }
      return;
    }
    this.#stream.off('close', onEarlyClose);
    const upstream = this.#upstream;
    const cut = this.#dialCut || this.#live.ending !== undefined;
    this.#dialAbort = undefined;
    if (this.#stream.destroyed || this.#stream.closed || this.#stream.headersSent || cut) {
      upstream.destroy();
      this.#abandon();
      return;
    }
    this.#markOpen();
    log.info({ session: this.#live.id, connection: this.id, target: this.target }, 'tunnel opened');
    void this.#audit('connection.opened');

    // Upstream failures reset the stream with CONNECT_ERROR.
    upstream.on('error', (err: NodeJS.ErrnoException) => {
      this.#error ??= `upstream error (${err.code ?? err.message})`;
      resetStream(this.#stream, h2.NGHTTP2_CONNECT_ERROR);
    });
    // Two lean relays, not two pipeline() calls: each pipeline() (and each pipe()) hangs
    // eos/destroyer/unpipe closures and once-wrappers on both sides, most of an idle
    // connection's heap; the two close handlers below do the part of their teardown the tunnel
    // needs.
    const stream = this.#stream;
    let pending = 2; // the stream's close and the upstream's
    const settle = () => {
      if (--pending === 0) void this.#closed();
    };
    relay(stream, upstream);
    // 'close' is emitted once: on(), not once() (no wrapper per listener).
    upstream.on('close', () => {
      // Gone without its end reaching the client (destroyed, reset without an 'error'): the client
      // must not read a clean end of stream. A no-op once the stream itself has closed.
      if (!upstream.readableEnded) resetStream(stream, h2.NGHTTP2_CONNECT_ERROR);
      settle();
    });
    stream.on('close', () => {
      upstream.destroy();
      settle();
    });
    upstream.resume();
  }

  /**
   * The tunnel is open: counted, answered 200 (an agent's relay answers itself: `answered`),
   * metered both ways and idle-timed from now, its refusal path dropped.
   */
  #markOpen(answered = false): void {
    this.#opened = true;
    this.#startedAt = Date.now();
    publish('tunnelOpened', {
      gateway: this.#deps.gatewayId,
      session: this.#live.id,
      connection: this.id,
      target: this.target,
    });
    this.#metered.open();
    this.#refuse = undefined;
    if (answered) return;
    // compat request/response, the relays and ours all listen for 'close'.
    this.#stream.setMaxListeners(32);
    this.#stream.respond({ ':status': 200 });
    // Client resets and session teardown surface as 'error'; the close handler records them.
    this.#stream.on('error', ignore);
    this.#stream.on('aborted', () => this.#clientReset());
    this.#watchIdle();
  }

  /** Never opened (refused, failed to dial, cut while opening): only leave the session. */
  #abandon(): void {
    this.#deps.manager.detach(this.#live, this);
    this.#resolveDone();
  }

  /**
   * A stream exit (postgres, http): answered 200 at once, then the exit speaks the protocol on the
   * stream, injecting the credential upstream and reporting statements and requests.
   */
  async #runStream(exit: StreamExit): Promise<void> {
    const exits = this.#deps.exits as GatewayExits;
    const { log } = this.#deps;
    const record = this.#live.record;
    const fields = { session: record.id, connection: this.id, target: this.target };
    this.#markOpen();
    // Query events name the database of the target (postgres, mysql) they ran on.
    const target = this.#config;
    const database =
      target.protocol === 'postgres' || target.protocol === 'mysql' ? target.database : undefined;
    try {
      const outcome = await exit.serve(this.#stream, {
        session: record,
        signal: this.#dialSignal(),
        credential: exits.roles.has(this.target)
          ? // async: a refusal of grantsFor (rule no longer in force) rejects, as a failed creation does
            async () => exits.roles.ensure(record, this.target, exits.grantsFor(record, this.target))
          : exits.vaultDb.has(this.target)
            ? () => exits.vaultDb.ensure(record, this.target)
            : undefined,
        ...(target.protocol === 'aws'
          ? {
              facts: {
                expiresAt: record.expiresAt,
                principal: principalSummary(record.principal),
                sessionPolicy: exits.sessionPolicyFor(record, this.target),
              },
              onCredentials: (event: AwsCredentialsEvent) => void this.#auditAws(event),
            }
          : {}),
        onQuery: (event) => this.#auditQuery(event, database),
        onRequest: (event) => void this.#auditHttp(event),
        room: () => this.#room(),
        onConnected: (info) => {
          if (Object.keys(info).length > 0) log.info({ ...fields, ...info }, 'upstream authenticated');
          void this.#audit('connection.opened');
        },
      });
      if (outcome.outOfBand) this.#cancelStream = true;
      if (outcome.error && !this.#error && !this.#closedBy) this.#error = outcome.error;
      void outcome.after?.then(({ note, ...more }) =>
        log.info({ ...fields, ...more }, `${this.#config.protocol} ${note}`),
      );
    } catch (thrown) {
      const err = asCiportError(thrown);
      this.#error ??= `${err.code}: ${err.message}`;
      log.warn({ ...fields, code: err.code, err: err.message }, `${this.#config.protocol} tunnel failed`);
    }
    if (!this.#stream.closed) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => {
          resetStream(this.#stream, h2.NGHTTP2_CANCEL);
          resolve();
        }, 2_000);
        this.#stream.once('close', () => {
          clearTimeout(t);
          resolve();
        });
        if (!this.#stream.writableEnded) this.#stream.end();
      });
    }
    await this.#closed();
  }

  /**
   * The target is an agent's: relay the stream to one (the session's connections to a target
   * stick to the agent that carried the first, so a cancel request finds its backend and a
   * per-session role is created once). Postgres: query events come from the app's messages.
   */
  async runViaAgent(routes: AgentRoutes, refuse: (err: CiportError) => void): Promise<void> {
    if (!this.#startMeter()) return;
    const { hub, sticky } = routes;
    const record = this.#live.record;
    const info = hub.targetInfo(this.target);
    const key = `${record.id}\0${this.target}`;
    let grants: string[] | undefined;
    try {
      // The agent creates the role with these (undefined: the target's default grant), so a
      // session whose granting rule a reload removed is refused here, not given the default.
      grants = info?.dynamic ? this.#deps.exits?.grantsFor(record, this.target) : undefined;
    } catch (err) {
      this.#abandon();
      refuse(asCiportError(err));
      return;
    }
    const observer = info
      ? exitDefinition(info.protocol)?.observe?.(info, (event) => {
          if (info.query_audit !== false) this.#auditQuery(event, info.database);
        })
      : undefined;
    const result = await relayViaAgent(hub, this.#stream, this.target, {
      connectionId: this.id,
      headers: {
        [TUNNEL_HEADERS.session]: record.id,
        [TUNNEL_HEADERS.expires]: String(record.expiresAt),
        ...(this.#deps.exits ? { [TUNNEL_HEADERS.deployment]: this.#deps.exits.deploymentId } : {}),
        ...(grants ? { [TUNNEL_HEADERS.grants]: JSON.stringify(grants) } : {}),
        ...(info?.protocol === 'aws'
          ? {
              [TUNNEL_HEADERS.facts]: encodeFacts({
                expiresAt: record.expiresAt,
                principal: principalSummary(record.principal),
                sessionPolicy: this.#deps.exits?.sessionPolicyFor(record, this.target),
              }),
            }
          : {}),
      },
      prefer: sticky.get(key),
      idleTimeoutMs: this.#deps.idleTimeoutMs,
      signal: this.#dialSignal(),
      ...(observer
        ? {
            onClientData: (chunk: Buffer) => observer.push(chunk),
            ...(observer.pushFromTarget
              ? { onTargetData: (chunk: Buffer) => observer.pushFromTarget?.(chunk) }
              : {}),
            room: () => this.#room() ?? observer.room?.(),
          }
        : {}),
      onOpen: (agent) => {
        sticky.set(key, agent.id);
        this.#agent = agent;
        // The agent relay answers the client and watches idleness itself.
        this.#markOpen(true);
        this.#deps.log.info(
          { session: record.id, connection: this.id, target: this.target, agent: agent.id },
          'tunnel opened via agent',
        );
        void this.#audit('connection.opened');
      },
    });
    if (!result.opened) {
      this.#abandon();
      if (result.refused) {
        publish('tunnelRefused', { gateway: this.#deps.gatewayId, code: result.refused.code });
        this.#deps.log.warn(
          { session: record.id, target: this.target, code: result.refused.code, err: result.refused.message },
          'tunnel via agent refused',
        );
      } else if (this.#live.abort.signal.aborted) {
        refuse(new CiportError('CIPORT_E_SESSION_ENDED', `session ${this.#live.id} has ended`));
      }
      return;
    }
    // The observer's last statements (mysql: those never answered) before connection.closed.
    observer?.end?.();
    this.#bytes = { up: result.bytesToTarget, down: result.bytesFromTarget };
    if (result.closedBy) this.#chose(result.closedBy);
    if (result.error) this.#error ??= result.error;
    if (observer?.outOfBand) this.#cancelStream = true;
    await this.#closed();
  }

  #cancelStream = false;

  #room() {
    return this.#deps.auditBacklog?.room();
  }

  /** An audit append counted in the backlog (query and http.request events), `weight` entries. */
  #append(event: Parameters<AuditStore['appendAudit']>[0], weight = 1): Promise<unknown> {
    const write = this.#deps.store.appendAudit(event);
    return this.#deps.auditBacklog ? this.#deps.auditBacklog.track(write, weight) : write;
  }

  #connectionBase() {
    const record = this.#live.record;
    return {
      session: record.id,
      connection: this.id,
      principal: principalSummary(record.principal),
      target: this.target,
      rule: record.rule,
      exit: this.#agent ? this.#agent.name : 'gateway',
      ...(this.#agent ? { agent_id: this.#agent.id } : {}),
    };
  }

  /**
   * This connection's statements waiting for their `query` event (QueryBatch), with the constant
   * part of the event prepared once (AuditEventTemplate). A new agent or database (not expected
   * within a connection) flushes the batch and starts another.
   */
  #queries:
    | {
        agent: AgentIdentity | undefined;
        database: string | undefined;
        batch: QueryBatch;
      }
    | undefined;

  readonly #queryFailed = (err: unknown) => {
    this.#deps.log.error({ connection: this.id, err: (err as Error).message }, 'audit query failed');
  };

  /** Gather a statement into this connection's next `query` event; never awaited by the relay. */
  #auditQuery(event: QueryEvent, database: string | undefined): void {
    let current = this.#queries;
    if (current === undefined || current.agent !== this.#agent || current.database !== database) {
      current?.batch.close();
      current = { agent: this.#agent, database, batch: this.#queryBatch(database) };
      this.#queries = current;
    }
    current.batch.add(event.text, event.truncated, event.protocol, event);
  }

  #queryBatch(database: string | undefined): QueryBatch {
    let template: AuditEventTemplate<'query', 'statements'> | undefined;
    return new QueryBatch({
      emit: (statements) => {
        try {
          template ??= new AuditEventTemplate(
            'query',
            { ...this.#connectionBase(), ...(database ? { database } : {}) },
            ['statements'],
          );
          this.#append(template.input({ statements }), statements.length).catch(this.#queryFailed);
        } catch (err) {
          this.#queryFailed(err);
        }
      },
    });
  }

  async #auditHttp(event: HttpRequestEvent): Promise<void> {
    try {
      await this.#append(
        auditEvent('http.request', {
          ...this.#connectionBase(),
          method: event.method,
          path: event.path,
          status: event.status,
          bytes_in: event.bytes_in,
          bytes_out: event.bytes_out,
          duration_ms: event.duration_ms,
          ...(event.upgrade ? { upgrade: true } : {}),
          ...(event.aborted ? { aborted: true } : {}),
          ...(event.error ? { error: event.error } : {}),
        }),
      );
    } catch (err) {
      this.#deps.log.error({ connection: this.id, err: (err as Error).message }, 'audit http.request failed');
    }
  }

  /** `aws.credentials_issued|failed`: what the exit's AssumeRole gave (never a secret). */
  async #auditAws(event: AwsCredentialsEvent): Promise<void> {
    const { type, ...data } = event;
    try {
      await this.#deps.store.appendAudit(
        type === 'aws.credentials_issued'
          ? auditEvent(type, { ...this.#connectionBase(), ...(data as Omit<typeof event, 'type'>) })
          : auditEvent('aws.credentials_failed', {
              ...this.#connectionBase(),
              role_arn: event.role_arn,
              code: event.code,
              ...(event.sts_code ? { sts_code: event.sts_code } : {}),
            }),
      );
    } catch (err) {
      this.#deps.log.error({ connection: this.id, err: (err as Error).message }, `audit ${type} failed`);
    }
  }

  #settled = false;

  /** Opened and now over: counted, logged and audited exactly once. */
  async #closed(): Promise<void> {
    if (this.#settled) return;
    this.#settled = true;
    // What the stream carried, counted from its acceptance (early data included): the same
    // measure whatever the exit, and the same as an agent's relay reports.
    const up = this.#bytes ? this.#bytes.up : this.#metered.in;
    const down = this.#bytes ? this.#bytes.down : this.#metered.out;
    const { manager, log } = this.#deps;
    this.#sweep?.delete(this);
    publish('tunnelClosed', {
      gateway: this.#deps.gatewayId,
      session: this.#live.id,
      connection: this.id,
      target: this.target,
      up,
      down,
    });
    manager.detach(this.#live, this);
    log.info(
      {
        session: this.#live.id,
        connection: this.id,
        target: this.target,
        bytes_to_target: up,
        bytes_from_target: down,
        ...this.#closeFields(),
      },
      'tunnel closed',
    );
    try {
      // The last statements go into the chain before the connection's end.
      this.#queries?.batch.close();
      // A cancel stream carries one CancelRequest, not a connection: logged, not audited.
      if (!this.#cancelStream) await this.#audit('connection.closed', up, down);
    } finally {
      this.#resolveDone();
    }
  }

  /** `closed_by` (+ `end_reason`) when an intended end came first, else `error` when one failed. */
  #closeFields(): { closed_by?: ConnectionClosedBy; end_reason?: EndReason; error?: string } {
    if (this.#closedBy) {
      return {
        closed_by: this.#closedBy,
        ...(this.#endReason ? { end_reason: this.#endReason } : {}),
      };
    }
    return this.#error ? { error: this.#error } : {};
  }

  async #audit(type: 'connection.opened' | 'connection.closed', up = 0, down = 0): Promise<void> {
    const base = this.#connectionBase();
    try {
      if (type === 'connection.opened') {
        await this.#deps.store.appendAudit(auditEvent('connection.opened', base));
      } else {
        await this.#deps.store.appendAudit(
          auditEvent('connection.closed', {
            ...base,
            bytes_to_target: up,
            bytes_from_target: down,
            duration_ms: this.#opened ? Date.now() - this.#startedAt : 0,
            ...this.#closeFields(),
          }),
        );
      }
    } catch (err) {
      this.#deps.log.error({ connection: this.id, err: (err as Error).message }, `audit ${type} failed`);
    }
  }
}
