// The gateway's side of reverse HTTP/2 (docs/agent.md). An agent reaches the gateway's one TLS
// port with `GET /v1/agents/connect` + `Upgrade: ciport-agent` + its credential; once it is
// authenticated the gateway answers 101 and becomes the HTTP/2 *client* on that socket, the agent
// the HTTP/2 *server*. The hub then asks the agent for its targets (`GET /v1/targets`) and opens
// one CONNECT stream towards an agent per tunnel connection. Keepalive pings notice a dead agent
// within `pingIntervalMs + pingTimeoutMs` (default 5 s + 9 s, so within 14 s).
import { EventEmitter } from 'node:events';
import {
  type ClientHttp2Session,
  type ClientHttp2Stream,
  constants as h2,
  connect as h2connect,
  type OutgoingHttpHeaders,
} from 'node:http2';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { ErrorCode } from '../../errors/codes.js';
import { ERROR_CODES } from '../../errors/codes.js';
import { CiportError } from '../../errors/index.js';
import type { ExitAdvertisement } from '../../exits/contract.js';
import { advertisedSsh, changedSshFacts, sshFactsDigest } from '../../exits/ssh/advertised.js';
import type { Logger } from '../../log/logger.js';
import { printable } from '../../text/printable.js';
import {
  AGENT_EVENTS_PATH,
  AGENT_REFUSED_PATH,
  AGENT_TARGETS_PATH,
  AGENT_UPGRADE_PROTOCOL,
  type AgentEventLine,
  TUNNEL_HEADERS,
} from '../../transport/wire.js';

/** At most one `agent.target_refused` (and warn log) per agent and target this often. */
export const REFUSAL_AUDIT_INTERVAL_MS = 3_600_000;
/** Bound on the remembered refusals (agent × target) of one gateway process. */
const MAX_REFUSAL_KEYS = 10_000;
/**
 * Distinct refused target names audited one by one per agent and refusal interval; past it the
 * agent's further made-up names are counted in one aggregated `agent.target_refused` (`target`
 * `*`, `distinct`), so an agent inventing names cannot grow the audit log without bound.
 */
export const MAX_REFUSED_NAMES = 20;
/**
 * How long after its session ended a (session, target) routed to an agent still accepts that
 * agent's events about it: late `credential.revoked` (the agent was down when the session ended
 * and its reaper drops the role once it is back) and `http.request` of a connection still closing.
 */
export const ROUTE_GRACE_MS = 24 * 3_600_000;
/** Bound on the remembered (agent, session) routes of one gateway process (oldest go first). */
const MAX_ROUTES = 100_000;
/** Longest target name taken from an advertisement (configured names are far shorter). */
const MAX_TARGET_NAME = 128;

export interface AgentIdentity {
  id: string;
  name: string;
}

/**
 * A target as an agent advertises it: its name and protocol plus the non-secret facts the gateway
 * needs for the session response and the query audit (credentials stay on the agent).
 */
export type AdvertisedTarget = ExitAdvertisement;

/** Bound on one event line from an agent. */
const MAX_EVENT_LINE = 1 << 20;

export interface ConnectedAgentInfo {
  /** Agent id (`agt_…`) and name from its credential. */
  agent: string;
  name: string;
  /** This connection (an agent reconnecting gets a new one). */
  connection: string;
  /** What it serves: the targets it advertised that it is bound to. */
  targets: string[];
  /** What it advertised beyond its binding: never routed to it. */
  refused: string[];
  remote: string | undefined;
  version: string | undefined;
  connected_at: string;
  streams: number;
}

export interface AgentHubEvents {
  'agent.connected': [ConnectedAgentInfo];
  'agent.disconnected': [ConnectedAgentInfo & { reason: string }];
  /**
   * An agent advertised a target it is not bound to (at most once per agent and target per
   * `refusalAuditIntervalMs`; `repeats` counts the refusals since the last one reported).
   */
  'agent.target_refused': [
    {
      agent: string;
      name: string;
      connection: string;
      target: string;
      remote?: string;
      repeats: number;
      /**
       * `protocol_changed`: bound, but advertised with another protocol than the pinned one.
       * `ssh_changed`: bound ssh target advertised with other ssh facts than the pinned ones.
       */
      reason?: 'not_bound' | PinConflict | 'too_many_names';
      /**
       * The protocol the gateway pinned and the one advertised (reason protocol_changed), or the
       * digests of the pinned and advertised ssh facts (ssh_changed; `changed` names them).
       */
      pinned?: string;
      advertised?: string;
      changed?: string[];
      /** reason too_many_names: how many further distinct names were refused unaudited. */
      distinct?: number;
    },
  ];
  /** Targets of a connected agent became routable (a binding was widened). */
  'agent.targets': [ConnectedAgentInfo];
}

export interface AgentHubOptions {
  log?: Logger | undefined;
  /** Ping every agent this often (default 5 000 ms). */
  pingIntervalMs?: number;
  /** An unanswered ping this old disconnects the agent (default 9 000 ms). */
  pingTimeoutMs?: number;
  /** The agent must answer `GET /v1/targets` within this (default 10 000 ms). */
  advertiseTimeoutMs?: number;
  /** A CONNECT towards an agent must be answered within this (default 15 000 ms). */
  openTimeoutMs?: number;
  /** At most one target refusal reported per agent and target this often (default 1 h). */
  refusalAuditIntervalMs?: number;
  /** Per-stream HTTP/2 window towards agents (default 1 MiB) and connection window (16 MiB). */
  streamWindow?: number;
  connectionWindow?: number;
  /**
   * Record one event an agent reported (audit it). The agent keeps it until this resolves and
   * the gateway acknowledged it; a rejection leaves it unacknowledged (the agent sends it again
   * on its next connection).
   */
  onEvent?: ((agent: AgentIdentity, event: AgentEventLine) => Promise<void>) | undefined;
}

let connectionSeq = 0;

/** Why a bound target's advertisement is refused against what the gateway pinned for it. */
export type PinConflict = 'protocol_changed' | 'ssh_changed';

/**
 * What the advertisement `t` changes of the pinned facts `pin` (the target's first advertisement
 * by a bound agent): its protocol, or for ssh the facts certificates are signed with and hosts
 * verified by (principals, host keys or CA, alias, source address). A compromised agent could
 * otherwise widen its principals or swap the host key on any reconnect.
 */
export function pinConflict(pin: AdvertisedTarget | undefined, t: AdvertisedTarget): PinConflict | undefined {
  if (pin === undefined) return undefined;
  if (pin.protocol !== t.protocol) return 'protocol_changed';
  if (t.protocol === 'ssh' && changedSshFacts(pin.ssh, t.ssh).length > 0) return 'ssh_changed';
  return undefined;
}

class AgentConnection {
  readonly id = `agc_${process.pid.toString(36)}${(++connectionSeq).toString(36)}`;
  readonly connectedAt = new Date();
  /** Everything the agent advertised. */
  advertised: AdvertisedTarget[] = [];
  /** The advertised targets it is bound to: the only ones routed to it. */
  targets: AdvertisedTarget[] = [];
  /** Advertised, not bound (refused). */
  refused: string[] = [];
  version: string | undefined;
  streams = 0;
  closed = false;
  reason = 'closed';
  constructor(
    readonly identity: AgentIdentity,
    readonly session: ClientHttp2Session,
    readonly remote: string | undefined,
    /** The targets the gateway lets this agent serve (from its store record). */
    public binding: ReadonlySet<string>,
  ) {}

  /**
   * Split the advertisement by the binding and the pinned facts (`pinned(name)`: what the
   * gateway first learned for that target). Returns the names newly refused and newly served.
   */
  applyBinding(pinned: (name: string) => AdvertisedTarget | undefined): {
    refused: string[];
    served: string[];
  } {
    const before = new Set(this.targets.map((t) => t.name));
    const refusedBefore = new Set(this.refused);
    const ok = (t: AdvertisedTarget) =>
      this.binding.has(t.name) && pinConflict(pinned(t.name), t) === undefined;
    this.targets = this.advertised.filter(ok);
    this.refused = this.advertised.filter((t) => !ok(t)).map((t) => t.name);
    return {
      refused: this.refused.filter((t) => !refusedBefore.has(t)),
      served: this.targets.map((t) => t.name).filter((t) => !before.has(t)),
    };
  }

  info(): ConnectedAgentInfo {
    return {
      agent: this.identity.id,
      name: this.identity.name,
      connection: this.id,
      targets: this.targets.map((t) => t.name),
      refused: [...this.refused],
      remote: this.remote,
      version: this.version,
      connected_at: this.connectedAt.toISOString(),
      streams: this.streams,
    };
  }
}

export class AgentHub extends EventEmitter<AgentHubEvents> {
  readonly #connections = new Set<AgentConnection>();
  readonly #log: Logger | undefined;
  readonly #opt: Required<Omit<AgentHubOptions, 'log' | 'onEvent'>>;
  readonly #onEvent: AgentHubOptions['onEvent'];
  /** Last advertisement seen per target name (kept after the agent left, for session answers). */
  readonly #known = new Map<string, AdvertisedTarget>();
  /** `${agent id}\0${target}` → when a refusal was last reported and how many since. */
  readonly #refusals = new Map<string, { at: number; repeats: number }>();
  /** Per agent id: the distinct names refused in the current interval, and those not audited. */
  readonly #refusedNames = new Map<string, { since: number; names: Set<string>; over: number }>();
  /**
   * `${agent id}\0${session}` → the targets of that session the gateway routed to that agent, and
   * when the session ended: the only (session, target) pairs the agent may report events about.
   */
  readonly #routes = new Map<string, { targets: Set<string>; endedAt?: number }>();
  #rr = 0;
  #closed = false;

  constructor(options: AgentHubOptions = {}) {
    super();
    this.#log = options.log;
    this.#onEvent = options.onEvent;
    this.#opt = {
      pingIntervalMs: options.pingIntervalMs ?? 5_000,
      pingTimeoutMs: options.pingTimeoutMs ?? 9_000,
      advertiseTimeoutMs: options.advertiseTimeoutMs ?? 10_000,
      openTimeoutMs: options.openTimeoutMs ?? 15_000,
      refusalAuditIntervalMs: options.refusalAuditIntervalMs ?? REFUSAL_AUDIT_INTERVAL_MS,
      streamWindow: options.streamWindow ?? 1 << 20,
      connectionWindow: options.connectionWindow ?? 16 << 20,
    };
  }

  /** Connected agents (one entry per live connection, advertised ones only). */
  list(): ConnectedAgentInfo[] {
    return [...this.#connections].filter((c) => !c.closed).map((c) => c.info());
  }

  /** Names of the targets some connected agent serves right now. */
  targets(): Set<string> {
    const out = new Set<string>();
    for (const c of this.#connections) if (!c.closed) for (const t of c.targets) out.add(t.name);
    return out;
  }

  /** The protocol the agents serving `target` advertise (for the session object), if any. */
  protocolOf(target: string): string | undefined {
    const name = target.toLowerCase();
    for (const c of this.#candidates(name)) {
      const t = c.targets.find((x) => x.name === name);
      if (t) return t.protocol;
    }
    return undefined;
  }

  /** What the agents serving `target` advertise now, else what one advertised last. */
  targetInfo(target: string): AdvertisedTarget | undefined {
    const name = target.toLowerCase();
    for (const c of this.#candidates(name)) {
      const t = c.targets.find((x) => x.name === name);
      if (t) return t;
    }
    return this.#known.get(name);
  }

  /** Seed what is known about targets (from the store, before agents reconnect after a restart). */
  remember(targets: readonly AdvertisedTarget[]): void {
    for (const t of targets) if (!this.#known.has(t.name)) this.#known.set(t.name, t);
  }

  /** Every target advertisement known (for persisting). */
  knownTargets(): AdvertisedTarget[] {
    return [...this.#known.values()];
  }

  /**
   * What is pinned for `target`: the first advertisement a bound agent made of it (kept across
   * restarts via the store, see startAgents): its protocol and, for ssh, its ssh facts. A later
   * advertisement changing either is refused for that target (pinConflict); an admin removing
   * the target from an agent's binding unpins it.
   */
  #pinned = (target: string): AdvertisedTarget | undefined => this.#known.get(target);

  /**
   * May agent `agentId` report an event about `session` on `target`? Only when the target is
   * bound to it (on a live connection of it) and this gateway routed a connection of that session
   * to that target through it (until ROUTE_GRACE_MS after the session ended).
   */
  mayReport(agentId: string, session: string, target: string): boolean {
    const route = this.#routes.get(`${agentId}\0${session}`);
    if (!route?.targets.has(target)) return false;
    if (route.endedAt !== undefined && Date.now() - route.endedAt > ROUTE_GRACE_MS) return false;
    for (const c of this.#connections) if (c.identity.id === agentId && c.binding.has(target)) return true;
    return false;
  }

  /** A session ended: its routes are kept for ROUTE_GRACE_MS more (late events), then dropped. */
  sessionEnded(session: string): void {
    const now = Date.now();
    for (const [key, route] of this.#routes) {
      if (route.endedAt !== undefined && now - route.endedAt > ROUTE_GRACE_MS) this.#routes.delete(key);
      else if (key.endsWith(`\0${session}`)) route.endedAt ??= now;
    }
  }

  #servedElsewhere(conn: AgentConnection, target: string): boolean {
    for (const c of this.#connections) {
      if (c !== conn && !c.closed && c.targets.some((t) => t.name === target)) return true;
    }
    return false;
  }

  #routed(agentId: string, session: string, target: string): void {
    const key = `${agentId}\0${session}`;
    const route = this.#routes.get(key);
    if (route) {
      route.targets.add(target);
      return;
    }
    this.#routes.set(key, { targets: new Set([target]) });
    if (this.#routes.size > MAX_ROUTES) this.#routes.delete(this.#routes.keys().next().value as string);
  }

  serves(target: string): boolean {
    return this.#candidates(target).length > 0;
  }

  /**
   * Take over an authenticated agent's socket (from the server's 'upgrade' event): answer 101,
   * start HTTP/2 as the client, fetch the agent's targets. Resolves once the agent is usable
   * (and 'agent.connected' was emitted); rejects (socket destroyed) when it does not advertise.
   * Only the advertised targets in `binding` (the agent's store record) are routed to it; the
   * others are refused: logged, reported ('agent.target_refused') and told to the agent.
   */
  async accept(
    socket: Duplex,
    head: Buffer,
    identity: AgentIdentity,
    binding: readonly string[],
  ): Promise<ConnectedAgentInfo> {
    if (this.#closed) {
      socket.destroy();
      throw new CiportError('CIPORT_E_GATEWAY_DRAINING', 'the gateway is shutting down');
    }
    if (head.length > 0) {
      // The agent must wait for 101 before speaking: nothing may follow its request.
      socket.destroy();
      throw new CiportError('CIPORT_E_USAGE', 'agent sent data before the upgrade was answered');
    }
    const remote = (socket as Socket).remoteAddress;
    (socket as Socket).setNoDelay?.(true);
    (socket as Socket).setKeepAlive?.(true, 15_000);
    // The 101 must be fully handed to TLS before HTTP/2 takes the socket over (Node 20 asserts
    // on a write in progress when a native session adopts the stream).
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.write(
        `HTTP/1.1 101 Switching Protocols\r\nUpgrade: ${AGENT_UPGRADE_PROTOCOL}\r\nConnection: Upgrade\r\n\r\n`,
        (err) => {
          socket.off('error', reject);
          if (err) reject(err);
          else setImmediate(resolve);
        },
      );
    });
    const session = h2connect(`http://${identity.name}.agent.invalid`, {
      createConnection: () => socket,
      settings: { enablePush: false, initialWindowSize: this.#opt.streamWindow },
      maxSessionMemory: 64,
    });
    const conn = new AgentConnection(identity, session, remote, new Set(binding));
    session.on('error', (err) => {
      if (conn.reason === 'closed') conn.reason = `session error (${err.message})`;
    });
    session.once('connect', () => {
      try {
        session.setLocalWindowSize(this.#opt.connectionWindow);
      } catch {
        // gone already
      }
    });
    session.once('close', () => this.#gone(conn));
    session.once('goaway', (code) => {
      if (conn.reason !== 'closed') return;
      conn.reason = code === h2.NGHTTP2_NO_ERROR ? 'agent closed the connection' : `GOAWAY ${code}`;
    });
    socket.once('close', () => {
      if (conn.reason === 'closed') conn.reason = 'connection lost';
    });
    try {
      const answer = await this.#requestJson(session, 'GET', AGENT_TARGETS_PATH);
      if (answer.status !== 200) throw new Error(`status ${answer.status}`);
      const body = answer.body;
      const adv = body as { targets?: unknown; version?: unknown };
      if (!Array.isArray(adv.targets)) throw new Error('no targets array');
      conn.advertised = adv.targets
        .filter((t): t is AdvertisedTarget => typeof t?.name === 'string')
        .map(advertisedTarget);
      // A bound target's first advertisement pins its protocol and ssh facts (nothing pinned yet: this one).
      for (const t of conn.advertised) {
        if (conn.binding.has(t.name) && !this.#known.has(t.name)) this.#known.set(t.name, t);
      }
      conn.applyBinding(this.#pinned);
      conn.version = typeof adv.version === 'string' ? adv.version : undefined;
    } catch (err) {
      conn.closed = true;
      session.destroy();
      throw new CiportError(
        'CIPORT_E_USAGE',
        `agent ${identity.name} did not advertise its targets: ${(err as Error).message}`,
      );
    }
    if (session.destroyed || session.closed) {
      conn.closed = true;
      throw new CiportError('CIPORT_E_NO_AGENT', `agent ${identity.name} went away while connecting`);
    }
    this.#connections.add(conn);
    for (const t of conn.targets) this.#known.set(t.name, t);
    this.#keepalive(conn);
    this.#events(conn);
    const info = conn.info();
    this.#log?.info(
      { agent: info.agent, name: info.name, targets: info.targets, refused: info.refused, remote },
      'agent connected',
    );
    this.emit('agent.connected', info);
    this.#refuse(conn, conn.refused);
    return info;
  }

  /**
   * The binding of agent `id` changed (an admin, here or on another gateway): its live
   * connections serve from now on only what the new binding allows. Targets no longer bound take
   * no new streams (streams already open run on); newly refused ones are reported like at connect.
   */
  rebind(id: string, binding: readonly string[]): void {
    for (const c of this.#connections) {
      if (c.identity.id !== id || c.closed) continue;
      const next = new Set(binding);
      if (next.size === c.binding.size && [...next].every((t) => c.binding.has(t))) continue;
      // A target taken out of the binding is unpinned: binding it again later lets the agent
      // advertise it with another protocol (the admin's decision, audited as targets_changed).
      for (const t of c.binding) if (!next.has(t) && !this.#servedElsewhere(c, t)) this.#known.delete(t);
      for (const t of c.advertised)
        if (next.has(t.name) && !this.#known.has(t.name)) this.#known.set(t.name, t);
      c.binding = next;
      const { refused, served } = c.applyBinding(this.#pinned);
      for (const t of c.targets) if (served.includes(t.name)) this.#known.set(t.name, t);
      this.#log?.info(
        { agent: id, name: c.identity.name, connection: c.id, targets: c.info().targets, refused: c.refused },
        'agent binding changed',
      );
      if (served.length > 0) this.emit('agent.targets', c.info());
      this.#refuse(c, refused);
    }
  }

  /**
   * Report targets refused on `conn`: log, event (bounded per agent and target, and per agent
   * across distinct names: MAX_REFUSED_NAMES per interval, then one aggregated count), tell the agent.
   */
  #refuse(conn: AgentConnection, targets: readonly string[]): void {
    if (targets.length === 0) return;
    const now = Date.now();
    const interval = this.#opt.refusalAuditIntervalMs;
    let names = this.#refusedNames.get(conn.identity.id);
    if (!names || now - names.since >= interval) {
      if (names && names.over > 0) this.#refusedTooMany(conn, names.over);
      names = { since: now, names: new Set(), over: 0 };
      this.#refusedNames.delete(conn.identity.id);
      this.#refusedNames.set(conn.identity.id, names);
      if (this.#refusedNames.size > MAX_REFUSAL_KEYS) {
        this.#refusedNames.delete(this.#refusedNames.keys().next().value as string);
      }
    }
    for (const target of targets) {
      const key = `${conn.identity.id}\0${target}`;
      const seen = this.#refusals.get(key);
      if (seen && now - seen.at < interval) {
        seen.repeats++;
        this.#log?.debug({ agent: conn.identity.id, target }, 'agent target refused again');
        continue;
      }
      if (!names.names.has(target) && names.names.size >= MAX_REFUSED_NAMES) {
        if (names.over++ === 0) this.#refusedTooMany(conn, 1);
        continue;
      }
      names.names.add(target);
      const repeats = seen?.repeats ?? 0;
      this.#refusals.delete(key);
      this.#refusals.set(key, { at: now, repeats: 0 });
      if (this.#refusals.size > MAX_REFUSAL_KEYS) {
        this.#refusals.delete(this.#refusals.keys().next().value as string);
      }
      const bound = conn.binding.has(target);
      const conflict = bound ? this.#conflictOf(conn, target) : undefined;
      this.#log?.warn(
        {
          agent: conn.identity.id,
          name: conn.identity.name,
          target,
          connection: conn.id,
          remote: conn.remote,
          ...(conflict ?? {}),
          ...(repeats > 0 ? { repeats } : {}),
        },
        !bound
          ? 'agent advertised a target it is not bound to: refused (ciport agents targets changes the binding)'
          : conflict?.reason === 'ssh_changed'
            ? 'agent advertised a bound ssh target with other ssh facts than the gateway pinned: refused (rebind it to accept them)'
            : 'agent advertised a bound target with another protocol than the gateway pinned: refused',
      );
      this.emit('agent.target_refused', {
        agent: conn.identity.id,
        name: conn.identity.name,
        connection: conn.id,
        target,
        ...(conn.remote ? { remote: conn.remote } : {}),
        repeats,
        ...(conflict ?? {}),
      });
    }
    const shown = targets.slice(0, MAX_REFUSED_NAMES);
    const unbound = shown.filter((t) => !conn.binding.has(t));
    const changed = shown.filter((t) => conn.binding.has(t));
    const agent = conn.identity.name;
    const message = [
      unbound.length > 0
        ? `the gateway refuses target(s) ${unbound.join(', ')} for agent ${agent}: not bound to it ` +
          `(an admin binds targets with: ciport agents targets ${agent} --add …)`
        : '',
      changed.length > 0
        ? `the gateway refuses target(s) ${changed.join(', ')} for agent ${agent}: advertised with another ` +
          `protocol or other ssh settings than it pinned (an admin accepts the change with: ` +
          `ciport agents targets ${agent} --remove T, then --add T)`
        : '',
    ]
      .filter(Boolean)
      .join('; ');
    this.#requestJson(conn.session, 'POST', AGENT_REFUSED_PATH, {
      refused: shown,
      message,
    }).catch(() => {});
  }

  /** Why bound `target` is refused on `conn`: what it changes of the pinned facts. */
  #conflictOf(
    conn: AgentConnection,
    target: string,
  ): { reason: PinConflict; pinned: string; advertised: string; changed?: string[] } {
    const pin = this.#known.get(target);
    const adv = conn.advertised.find((t) => t.name === target);
    if (pin && adv && pinConflict(pin, adv) === 'ssh_changed') {
      return {
        reason: 'ssh_changed',
        pinned: sshFactsDigest(pin.ssh),
        advertised: sshFactsDigest(adv.ssh),
        changed: changedSshFacts(pin.ssh, adv.ssh),
      };
    }
    return { reason: 'protocol_changed', pinned: pin?.protocol ?? '', advertised: adv?.protocol ?? '' };
  }

  /** One aggregated refusal: `count` more distinct names than MAX_REFUSED_NAMES this interval. */
  #refusedTooMany(conn: AgentConnection, count: number): void {
    this.#log?.warn(
      { agent: conn.identity.id, name: conn.identity.name, connection: conn.id, distinct: count },
      `agent advertised more than ${MAX_REFUSED_NAMES} distinct unbound target names: further ones counted, not audited one by one`,
    );
    this.emit('agent.target_refused', {
      agent: conn.identity.id,
      name: conn.identity.name,
      connection: conn.id,
      target: '*',
      ...(conn.remote ? { remote: conn.remote } : {}),
      repeats: 0,
      reason: 'too_many_names',
      distinct: count,
    });
  }

  /** Disconnect every connection of agent `id` (revocation). Returns how many were cut. */
  disconnect(id: string, reason = 'revoked'): number {
    let n = 0;
    for (const c of this.#connections) {
      if (c.identity.id !== id || c.closed) continue;
      c.reason = reason;
      c.session.destroy();
      n++;
    }
    return n;
  }

  /**
   * Open a CONNECT stream for `target` towards an agent that serves it. Spreads connections
   * (fewest open streams first, round robin among equals) and fails over to the next agent when
   * one is gone before it answered. Resolves with the stream once the agent answered 200; the
   * agent's refusal (non-200 with `ciport-error`) rejects with that code.
   */
  async open(target: string, headers: OutgoingHttpHeaders = {}): Promise<ClientHttp2Stream> {
    return (await this.connect(target, headers)).stream;
  }

  /** `open`, also saying which agent carries the stream (for `connection.*` events). */
  async connect(
    target: string,
    headers: OutgoingHttpHeaders = {},
    prefer?: string,
  ): Promise<{ stream: ClientHttp2Stream; agent: AgentIdentity }> {
    const name = target.toLowerCase();
    const tried = new Set<AgentConnection>();
    let lastErr: CiportError | undefined;
    for (;;) {
      const candidates = this.#candidates(name).filter((c) => !tried.has(c));
      const preferred = prefer ? candidates.filter((c) => c.identity.id === prefer) : [];
      const conn = this.#pick(preferred.length > 0 ? preferred : candidates);
      if (!conn) {
        throw (
          lastErr ??
          new CiportError('CIPORT_E_NO_AGENT', `no agent serves target ${name} right now`, {
            details: { target: name },
          })
        );
      }
      tried.add(conn);
      try {
        return { stream: await this.#openOn(conn, name, headers), agent: conn.identity };
      } catch (err) {
        if (err instanceof CiportError && err.code !== 'CIPORT_E_NO_AGENT') throw err;
        lastErr = err as CiportError;
        this.#log?.warn(
          { agent: conn.identity.id, target: name, err: (err as Error).message },
          'agent failed, trying another',
        );
      }
    }
  }

  /** Close every agent connection (gateway shutdown). */
  async close(): Promise<void> {
    this.#closed = true;
    const all = [...this.#connections];
    await Promise.all(
      all.map(
        (c) =>
          new Promise<void>((resolve) => {
            c.reason = 'gateway shutdown';
            if (c.session.closed || c.session.destroyed) return resolve();
            c.session.once('close', () => resolve());
            c.session.close();
            setTimeout(() => c.session.destroy(), 1_000).unref();
          }),
      ),
    );
  }

  /**
   * POST `body` (JSON) to `path` on the newest connection of every connected agent that `want`s
   * it. Resolves with each answer (status and parsed JSON); failures are answers with status 0.
   */
  async broadcast(
    path: string,
    body: unknown,
    want: (targets: readonly AdvertisedTarget[]) => boolean = () => true,
  ): Promise<Array<{ agent: AgentIdentity; status: number; body: unknown }>> {
    const newest = new Map<string, AgentConnection>();
    for (const c of this.#connections) {
      if (c.closed || !want(c.targets)) continue;
      const seen = newest.get(c.identity.id);
      if (!seen || seen.connectedAt <= c.connectedAt) newest.set(c.identity.id, c);
    }
    return Promise.all(
      [...newest.values()].map(async (c) => {
        try {
          const answer = await this.#requestJson(c.session, 'POST', path, body);
          return { agent: c.identity, ...answer };
        } catch (err) {
          return { agent: c.identity, status: 0, body: { error: (err as Error).message } };
        }
      }),
    );
  }

  /**
   * The agent's event feed: one long POST per connection. The agent writes event lines on the
   * response, the gateway records each (onEvent) and writes `{"ack": seq}` lines on the request.
   */
  #events(conn: AgentConnection): void {
    const onEvent = this.#onEvent;
    if (!onEvent) return;
    let req: ClientHttp2Stream;
    try {
      req = conn.session.request(
        { ':method': 'POST', ':path': AGENT_EVENTS_PATH, 'content-type': 'application/x-ndjson' },
        { endStream: false },
      );
    } catch {
      return;
    }
    req.on('error', () => {});
    req.setEncoding('utf8');
    let partial = '';
    let chain = Promise.resolve();
    req.on('data', (text: string) => {
      partial += text;
      if (partial.length > MAX_EVENT_LINE && !partial.includes('\n')) {
        this.#log?.warn({ agent: conn.identity.id }, 'agent event line too long: feed closed');
        req.close(h2.NGHTTP2_PROTOCOL_ERROR);
        return;
      }
      let nl = partial.indexOf('\n');
      while (nl >= 0) {
        const line = partial.slice(0, nl);
        partial = partial.slice(nl + 1);
        nl = partial.indexOf('\n');
        if (!line.trim()) continue;
        let event: AgentEventLine;
        try {
          event = JSON.parse(line) as AgentEventLine;
          if (
            typeof event.seq !== 'number' ||
            typeof event.type !== 'string' ||
            typeof event.data !== 'object'
          )
            throw new Error('not an event');
        } catch (err) {
          this.#log?.warn({ agent: conn.identity.id, err: (err as Error).message }, 'bad agent event line');
          continue;
        }
        // In order, one at a time: an ack covers every event up to its seq.
        chain = chain.then(async () => {
          try {
            await onEvent(conn.identity, event);
          } catch (err) {
            this.#log?.error(
              { agent: conn.identity.id, event: event.id, err: (err as Error).message },
              'agent event not recorded; the agent keeps it',
            );
            return;
          }
          if (!req.closed && !req.destroyed) req.write(`${JSON.stringify({ ack: event.seq })}\n`);
        });
      }
    });
  }

  #candidates(name: string): AgentConnection[] {
    return [...this.#connections].filter(
      (c) => !c.closed && !c.session.destroyed && !c.session.closed && c.targets.some((t) => t.name === name),
    );
  }

  #pick(all: AgentConnection[]): AgentConnection | undefined {
    // Per agent, only its newest connection takes new streams: an older one is stale (its link
    // died unnoticed so far, keepalive will close it) or a duplicate process with the same
    // credential. Older connections keep serving the streams they carry.
    const newest = new Map<string, AgentConnection>();
    for (const c of all) {
      const seen = newest.get(c.identity.id);
      if (!seen || seen.connectedAt <= c.connectedAt) newest.set(c.identity.id, c);
    }
    const candidates = [...newest.values()];
    if (candidates.length === 0) return undefined;
    const least = Math.min(...candidates.map((c) => c.streams));
    const best = candidates.filter((c) => c.streams === least);
    return best[this.#rr++ % best.length];
  }

  #openOn(conn: AgentConnection, target: string, headers: OutgoingHttpHeaders): Promise<ClientHttp2Stream> {
    return new Promise((resolve, reject) => {
      let stream: ClientHttp2Stream;
      const gone = (why: string) =>
        new CiportError('CIPORT_E_NO_AGENT', `agent ${conn.identity.name} ${why}`, { details: { target } });
      try {
        stream = conn.session.request(
          { ...headers, ':method': 'CONNECT', ':authority': `${target}:443` },
          { endStream: false },
        );
      } catch (err) {
        reject(gone(`unavailable (${(err as Error).message})`));
        return;
      }
      conn.streams++;
      stream.once('close', () => conn.streams--);
      // From now on the agent may report events about this session on this target (the role it
      // creates for it, its http.request events): see mayReport.
      const session = headers[TUNNEL_HEADERS.session];
      if (typeof session === 'string' && session) this.#routed(conn.identity.id, session, target);
      const timer = setTimeout(() => {
        stream.close(h2.NGHTTP2_CANCEL);
        fail(gone('did not answer in time'));
      }, this.#opt.openTimeoutMs);
      let settled = false;
      const fail = (err: CiportError) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        stream.off('error', onError);
        stream.off('close', onClose);
        stream.on('error', () => {});
        reject(err);
      };
      const onError = (err: Error) => fail(gone(`failed (${err.message})`));
      const onClose = () => fail(gone('closed the stream'));
      stream.once('error', onError);
      stream.once('close', onClose);
      stream.once('response', (h) => {
        const status = Number(h[':status']);
        if (status === 200) {
          settled = true;
          clearTimeout(timer);
          stream.off('error', onError);
          stream.off('close', onClose);
          resolve(stream);
          return;
        }
        const code = String(h['ciport-error'] ?? '');
        const known = code in ERROR_CODES ? (code as ErrorCode) : 'CIPORT_E_UPSTREAM_UNREACHABLE';
        let text = '';
        stream.setEncoding('utf8');
        stream.on('data', (d: string) => {
          if (text.length < 4096) text += d;
        });
        stream.once('end', () => {
          let message = `agent ${conn.identity.name} refused target ${target} (${status})`;
          try {
            message = (JSON.parse(text) as { error: { message: string } }).error.message || message;
          } catch {
            // not JSON
          }
          fail(new CiportError(known, message, { details: { target, agent: conn.identity.name } }));
          stream.close();
        });
      });
    });
  }

  #requestJson(
    session: ClientHttp2Session,
    method: 'GET' | 'POST',
    path: string,
    body?: unknown,
  ): Promise<{ status: number; body: unknown }> {
    return new Promise((resolve, reject) => {
      const req = session.request({
        ':method': method,
        ':path': path,
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      });
      const timer = setTimeout(() => {
        req.close(h2.NGHTTP2_CANCEL);
        reject(new Error('timed out'));
      }, this.#opt.advertiseTimeoutMs);
      let status = 0;
      let text = '';
      req.setEncoding('utf8');
      req.once('response', (h) => {
        status = Number(h[':status']);
      });
      req.on('data', (d: string) => {
        text += d;
        if (text.length > 1 << 20) req.close(h2.NGHTTP2_CANCEL);
      });
      req.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      req.once('end', () => {
        clearTimeout(timer);
        try {
          resolve({ status, body: text ? JSON.parse(text) : undefined });
        } catch {
          reject(new Error(`not JSON (status ${status})`));
        }
      });
      req.end(body === undefined ? undefined : JSON.stringify(body));
    });
  }

  #keepalive(conn: AgentConnection): void {
    let outstanding: NodeJS.Timeout | undefined;
    const interval = setInterval(() => {
      if (outstanding || conn.closed) return;
      outstanding = setTimeout(() => {
        conn.reason = 'keepalive timeout';
        conn.session.destroy();
      }, this.#opt.pingTimeoutMs);
      try {
        conn.session.ping((err) => {
          if (err) return; // the session is going away; 'close' reports it
          clearTimeout(outstanding);
          outstanding = undefined;
        });
      } catch {
        conn.session.destroy();
      }
    }, this.#opt.pingIntervalMs);
    conn.session.once('close', () => {
      clearInterval(interval);
      clearTimeout(outstanding);
    });
  }

  #gone(conn: AgentConnection): void {
    if (!this.#connections.delete(conn)) {
      conn.closed = true;
      return;
    }
    conn.closed = true;
    const info = { ...conn.info(), reason: conn.reason };
    this.#log?.info({ agent: info.agent, name: info.name, reason: info.reason }, 'agent disconnected');
    this.emit('agent.disconnected', info);
  }
}

/** Validate one advertised target (the agent is authenticated, but its JSON is still input). */
function advertisedTarget(t: AdvertisedTarget): AdvertisedTarget {
  const str = (v: unknown) => (typeof v === 'string' && v.length > 0 && v.length < 256 ? v : undefined);
  return {
    // A made-up name is still reported (refused), but bounded and with control characters
    // escaped (it reaches logs, `agents list` and the audit log).
    name: printable(t.name.toLowerCase().slice(0, MAX_TARGET_NAME)),
    protocol: String(t.protocol ?? 'tcp').slice(0, 32),
    ...(str(t.database) ? { database: str(t.database) } : {}),
    ...(str(t.user) ? { user: str(t.user) } : {}),
    ...(t.dynamic === true ? { dynamic: true } : {}),
    ...(typeof t.region === 'string' && /^[a-z]{2}(-[a-z]+)+-\d{1,2}$/.test(t.region)
      ? { region: t.region }
      : {}),
    // Query audit is the gateway's: an agent cannot switch it off (docs/agent.md, "Query audit").
    // Only a longer statement bound than the gateway's default (4096) is taken: never a shorter one.
    ...(Number.isInteger(t.query_max_length) &&
    (t.query_max_length as number) > 4096 &&
    (t.query_max_length as number) <= 1_048_576
      ? { query_max_length: t.query_max_length }
      : {}),
    ...advertisedSsh(t),
  };
}
