// The gateway process: one TLS port (HTTP/2 with ALPN h2, HTTP/1.1 for the JSON API), the store,
// the token verifier, the policy, the session manager and the tunnels. `startGateway` is what
// `ciport gateway` runs, and what tests and the demo start in-process.
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders } from 'node:http';
import {
  createSecureServer,
  type Http2SecureServer,
  type Http2ServerRequest,
  type Http2ServerResponse,
  constants as h2,
  type ServerHttp2Session,
  type ServerHttp2Stream,
} from 'node:http2';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex, Writable } from 'node:stream';
import { AuditBacklog } from '../audit/backlog.js';
import { canonicalJson } from '../audit/canonical.js';
import { DenialLog } from '../audit/denials.js';
import { auditEvent } from '../audit/events.js';
import { type DeliveryTiming, startAuditSinks } from '../audit/sinks/index.js';
import type { GatewayConfig, TargetConfig } from '../config/schema.js';
import { lazySshCa } from '../credentials/ssh-ca.js';
import { asCiportError, CiportError, ConfigError } from '../errors/index.js';
import { isDevelopmentIssuer } from '../identity/url-policy.js';
import { TokenVerifier } from '../identity/verify.js';
import { JobLiveness } from '../jobs/index.js';
import { createLogger, type Logger } from '../log/logger.js';
import { compilePolicy } from '../policy/engine.js';
import { SessionManager } from '../session/manager.js';
import { SessionRateLimit } from '../session/rate-limit.js';
import { openStore } from '../store/open.js';
import type { Store } from '../store/types.js';
import { loadTlsMaterial } from '../transport/tls.js';
import { refuseHttp1 } from '../transport/wire.js';
import { WebConsole } from '../web/console.js';
import { handleAgentApi, handleAgentUpgrade, listAgents, revokeAgents } from './agents/api.js';
import type { AgentRegistryOptions } from './agents/registry.js';
import { type GatewayAgents, startAgents } from './agents/wiring.js';
import { type ApiDeps, handleApi } from './api.js';
import { startApprovalNotifier } from './approval-notify.js';
import { approvalUrl } from './approval-view.js';
import { GatewayDownloads } from './downloads.js';
import { type GatewayExits, startExits } from './exits.js';
import { isHttp2, type Req, type Res, sendError, setRequestDeadline } from './http.js';
import { createLivenessMetrics, createMetrics, type GatewayMetrics, observeMetrics } from './metrics.js';
import { OperatorLogin, type SignInLimits } from './operator-login/api.js';
import { AdminTokens, authorizeOperator, operatorRoster } from './operators.js';
import { GatewayPeers } from './peers.js';
import { restartOnlyChanges } from './reload.js';
import { once, Teardown } from './teardown.js';
import { handleConnect, type TunnelDeps } from './tunnel.js';

export interface StartGatewayOptions {
  /** Logger (default: pino JSON to stderr). */
  logger?: Logger;
  /** Where the one human line about generated TLS material goes (default process.stderr). */
  stderr?: Writable;
  /** `fetch` for discovery and JWKS (tests may pass their own). */
  fetch?: typeof fetch;
  /** Clock in epoch ms for token checks, session deadlines and agent credentials. */
  now?: () => number;
  /** Name of the configuration's source, for `config.loaded` (a file path). */
  configSource?: string;
  /** Use this store instead of opening the configured one (it is closed with the gateway). */
  store?: Store;
  /** Session sweep interval, ms (default 1000). */
  sweepIntervalMs?: number;
  /** Per-session role reaper period, ms (default 60 000). */
  roleReapIntervalMs?: number;
  /** Query / http.request events pending a commit before relays pause (default 10 000). */
  auditBacklogMax?: number;
  /** Audit sink delivery timing (poll, lease, backoff; docs/audit-sinks.md); tests shorten it. */
  auditSinkTiming?: Partial<DeliveryTiming>;
  /** How long agent credentials live and a rotated-away one is still accepted (30 days, 1 h). */
  agentCredentials?: Pick<AgentRegistryOptions, 'credentialLifetimeMs' | 'rotationGraceMs'>;
  /** Failed `ciport login` attempts allowed (docs/login.md); tests loosen them. */
  signInLimits?: Partial<SignInLimits>;
}

export interface RunningGateway {
  /** `https://host:port` of the bound port. */
  readonly url: string;
  readonly port: number;
  /** PEM of the generated CA (undefined when `tls:` is configured). */
  readonly caPem: string | undefined;
  /** `<data_dir>/ca.crt` when generated. */
  readonly caFile: string | undefined;
  readonly gatewayId: string;
  readonly store: Store;
  readonly metrics: GatewayMetrics;
  readonly manager: SessionManager;
  /** Job liveness (docs/job-liveness.md); undefined when no issuer has `job_api`. */
  readonly liveness: JobLiveness | undefined;
  /** Agents connected to this gateway (docs/agent.md). */
  readonly agents: GatewayAgents;
  /** Query / http.request events not yet committed (relays pause past its bound). */
  readonly auditBacklog: AuditBacklog;
  readonly draining: boolean;
  /**
   * Graceful shutdown (SIGTERM): refuse new sessions (503), give open tunnels `graceMs`
   * (default `server.drain_grace`) to finish, end the remaining sessions with
   * `gateway_shutdown`, close the port and the store.
   */
  drain(options?: { graceMs?: number }): Promise<void>;
  /** Stop at once without changing any session (as a crash would; a restart adopts them). */
  close(): Promise<void>;
  /**
   * Apply a new configuration (SIGHUP; docs/gateway.md "Reloading the configuration"): new
   * rules, issuers and admin tokens for new sessions and requests; live sessions keep what they
   * were granted. Refused as a whole (CIPORT_E_CONFIG_RELOAD_REFUSED, nothing changes) when a
   * key that needs a restart differs. Writes `config.loaded` with the new hash.
   */
  reload(next: Readonly<GatewayConfig>, options?: { source?: string }): Promise<ReloadResult>;
  /** The configuration in force (the last one loaded or reloaded). */
  readonly config: Readonly<GatewayConfig>;
}

export interface ReloadResult {
  hash: string;
  previousHash: string;
}

/** HTTP/2 flow-control windows: per stream (SETTINGS) and per connection. */
const STREAM_WINDOW = 1 << 20;
const CONNECTION_WINDOW = 16 << 20;

export async function startGateway(
  config: Readonly<GatewayConfig>,
  options: StartGatewayOptions = {},
): Promise<RunningGateway> {
  const log = options.logger ?? createLogger();
  const stderr = options.stderr ?? process.stderr;
  const tls = loadTlsMaterial(config);
  // The SSH user CA: a configured key is checked now, a generated one made on first use.
  const sshCa = lazySshCa(config);
  if (tls.origin !== 'configured') {
    stderr.write(
      `ciport: ${tls.origin === 'generated' ? 'generated' : 'using'} a private CA for TLS: ${tls.caFile} ` +
        `(clients: CIPORT_CA_FILE=${tls.caFile})\n`,
    );
  }

  for (const issuer of config.issuers.filter(isDevelopmentIssuer)) {
    const warning = `trusting DEVELOPMENT issuer "${issuer.name}" (${issuer.issuer}): tokens it mints open ports; never in production`;
    stderr.write(`ciport: WARNING: ${warning}\n`);
    log.warn({ issuer: issuer.name }, warning);
  }

  const store = options.store ?? (await openStore(config.store, { dataDir: config.data_dir }));
  // Each part registers its clean-up as soon as it exists (teardown.ts): a failed start releases
  // what was made, and drain and close release it all in reverse order.
  const teardown = new Teardown();
  // The store commits what it was handed within STORE_CLOSE_TIMEOUT_MS; past it (a database
  // locked by another process) it abandons the rest and says so: logged here, then the stop fails.
  const closeStore = async (): Promise<void> => {
    try {
      await store.close();
    } catch (err) {
      const e = asCiportError(err);
      log.error({ code: e.code, err: e.message }, 'store closed with audit events not committed');
      throw err;
    }
  };

  teardown.defer('store', closeStore);
  const gatewayId = `gw_${randomBytes(6).toString('hex')}`;
  // Registered once listening (its URL for agents); leaves the table when the gateway stops.
  const peers = new GatewayPeers(store, gatewayId, log);
  teardown.defer('gateway registry', () => peers.close());
  const unwindFailed = (part: string, err: unknown) =>
    log.error({ part, err: asCiportError(err).message }, 'stopping the gateway: a part failed to stop');
  let closeAgents = async (): Promise<void> => {};
  const metrics = createMetrics();
  // Sessions and tunnels publish what happens (session/events.ts); the metrics listen.
  teardown.defer('metrics', observeMetrics(metrics, gatewayId));
  const targets = new Map<string, TargetConfig>(config.targets.map((t) => [t.name, t]));
  let verifier: TokenVerifier;
  let manager: SessionManager;
  let policy: ReturnType<typeof compilePolicy>;
  let liveness: JobLiveness | undefined;
  let exits: GatewayExits;
  let agents: GatewayAgents;
  try {
    verifier = new TokenVerifier(config.issuers, {
      ...(options.fetch ? { fetch: options.fetch } : {}),
      ...(options.now ? { now: options.now } : {}),
    });
    policy = compilePolicy(config);
    // Job liveness: sessions end when their CI job does (throws ConfigError on a bad job_api).
    liveness = config.issuers.some((i) => i.job_api)
      ? new JobLiveness({ issuers: config.issuers, log, metrics: createLivenessMetrics(metrics.registry) })
      : undefined;
    const jobs = liveness;
    teardown.defer('job liveness', () => jobs?.close().catch(() => {}));
    manager = new SessionManager({
      store,
      config,
      policy,
      log,
      gatewayId,
      peers,
      ...(options.now ? { now: options.now } : {}),
      ...(options.sweepIntervalMs ? { sweepIntervalMs: options.sweepIntervalMs } : {}),
      ...(liveness ? { liveness } : {}),
    });
    const sessions = manager;
    // Drain ends the sessions first (drain() below); close leaves them for the next start.
    teardown.defer('sessions', (graceful) => (graceful ? sessions.stop() : sessions.abandon()));
    const { reaped, adopted } = await manager.start();
    if (reaped || adopted) log.info({ reaped, adopted }, 'sessions recovered from the store');
    exits = await startExits({
      config,
      targets,
      store,
      manager,
      log,
      registry: metrics.registry,
      configSource: options.configSource,
      ...(options.roleReapIntervalMs !== undefined ? { reapIntervalMs: options.roleReapIntervalMs } : {}),
    });
    const gatewayExitsMade = exits;
    teardown.defer('exits', () => gatewayExitsMade.close());
    agents = await startAgents({
      store,
      registry: metrics.registry,
      manager,
      log,
      gatewayId,
      peers,
      deploymentId: exits.deploymentId,
      credentials: { ...options.agentCredentials, ...(options.now ? { now: options.now } : {}) },
      ...(options.roleReapIntervalMs !== undefined ? { reapIntervalMs: options.roleReapIntervalMs } : {}),
    });
    const made = agents;
    closeAgents = once(() => made.close().catch(() => {}));
    teardown.defer('agents', closeAgents);
    // Audit sinks read the log from the store; stopped before it closes (teardown runs backwards).
    const sinks = startAuditSinks({
      sinks: config.audit.sinks,
      store,
      owner: gatewayId,
      log,
      registry: metrics.registry,
      ...(options.auditSinkTiming ? { timing: options.auditSinkTiming } : {}),
    });
    teardown.defer('audit sinks', (graceful) => sinks.stop(graceful));
    await store.appendAudit(
      auditEvent('config.loaded', {
        source: options.configSource ?? '(in-process)',
        config_hash: configHash(config),
        issuers: config.issuers.map((i) => i.name),
        targets: config.targets.map((t) => t.name),
        rules: config.rules.map((r) => r.name),
        operators: operatorRoster(config.admin_tokens),
        gateway: gatewayId,
      } as Parameters<typeof auditEvent<'config.loaded'>>[1]),
    );
  } catch (err) {
    await teardown.unwind(false).catch(() => {});
    throw err;
  }
  const gatewayAgents = agents;
  const gatewayExits = exits;

  let draining = false;
  const rate = config.sessions.rate_limit;
  const clock = options.now ? { now: options.now } : {};
  const limiter = new SessionRateLimit({
    perJob: { perMinute: rate.per_minute, burst: rate.burst, ...clock },
    perIssuer: { perMinute: rate.per_issuer.per_minute, burst: rate.per_issuer.burst, ...clock },
    deniedPerProject: { perMinute: rate.denied.per_minute, burst: rate.denied.burst, ...clock },
    deniedPerIssuer: {
      perMinute: rate.denied.per_issuer.per_minute,
      burst: rate.denied.per_issuer.burst,
      ...clock,
    },
  });
  const denials = new DenialLog({
    append: (event) => store.appendAudit(event),
    windowMs: config.audit.denials.window,
    maxPerIssuer: config.audit.denials.max_per_issuer,
    onError: (err) => log.error({ err: asCiportError(err).message }, 'audit session.denied_summary failed'),
    ...clock,
  });
  teardown.defer('denial log', () => denials.close());
  const downloads = new GatewayDownloads({
    clientFile: config.client.linux_x64,
    maxDownloads: config.client.max_downloads,
    stallMs: config.client.stall_timeout,
    publishedCa: tls.publishedCa,
    log,
  });
  log.info(
    {
      client: downloads.clientPath ?? null,
      client_present: downloads.clientPath ? existsSync(downloads.clientPath) : false,
      ca_sha256: downloads.caSha256 ?? null,
    },
    'downloads: /v1/client/linux-x64, /v1/ca.crt',
  );
  // Where approval links point: public_url, else the bound URL (known once listening).
  let boundUrl = '';
  const publicUrl = () => config.public_url ?? boundUrl;
  let approvalNotifier: ReturnType<typeof startApprovalNotifier>;
  try {
    approvalNotifier = startApprovalNotifier({
      webhooks: config.approvals.webhooks,
      log,
      registry: metrics.registry,
      linkOf: (id) => approvalUrl({ publicUrl }, id),
    });
  } catch (err) {
    await teardown.unwind(false).catch(() => {});
    throw err;
  }
  const notifier = approvalNotifier;
  teardown.defer('approval notifications', () => notifier?.stop());
  const apiDeps: ApiDeps = {
    publicUrl,
    approvalNotifier,
    config,
    verifier,
    policy,
    manager,
    store,
    limiter,
    denials,
    log,
    metrics,
    targets,
    adminTokens: AdminTokens.fromConfig(config.admin_tokens),
    ssoEnabled: config.sso !== undefined,
    sso: config.sso,
    ...operatorLogin(config, store, log, options),
    draining: () => draining,
    agents: gatewayAgents.hub,
    downloads,
    deploymentId: gatewayExits.deploymentId,
    sshCa,
    ...(liveness ? { liveness } : {}),
  };
  const agentApi = gatewayAgents.apiDeps(
    (req, action) => authorizeOperator(apiDeps, req, action),
    config.server.max_body_bytes,
  );

  // The console at /ui (docs/console.md), made once the port is bound (its redirect URI needs it).
  let webConsole: WebConsole | undefined;

  // Streams open per HTTP/2 connection, so an idle connection can be told from a quiet tunnel.
  const openStreams = new WeakMap<object, StreamCount>();
  const sessions = new Set<ServerHttp2Session>();
  const sockets = new Set<Socket>();
  const auditBacklog = new AuditBacklog(options.auditBacklogMax);
  const tunnelDeps: TunnelDeps = {
    manager,
    store,
    log,
    gatewayId,
    targets,
    idleTimeoutMs: config.sessions.connection_idle_timeout,
    connectTimeoutMs: config.sessions.connect_timeout,
    exits,
    agents: gatewayAgents.routes,
    auditBacklog,
  };
  const srv = config.server;

  const server: Http2SecureServer = createSecureServer({
    cert: tls.cert,
    key: tls.key,
    allowHTTP1: true,
    ALPNProtocols: ['h2', 'http/1.1'],
    minVersion: 'TLSv1.2',
    handshakeTimeout: srv.handshake_timeout,
    // Bound what one client connection can make the gateway hold.
    maxSessionMemory: 64,
    maxHeaderListPairs: 64,
    maxSessionInvalidFrames: 100,
    maxSessionRejectedStreams: 100,
    unknownProtocolTimeout: srv.handshake_timeout,
    settings: {
      enablePush: false,
      maxConcurrentStreams: srv.max_concurrent_streams,
      maxHeaderListSize: srv.max_header_bytes,
      initialWindowSize: STREAM_WINDOW,
    },
  });
  // HTTP/1.1 fallback: slow or oversized requests are cut by Node's own HTTP server machinery.
  const h1 = server as unknown as {
    headersTimeout: number;
    requestTimeout: number;
    keepAliveTimeout: number;
    connectionsCheckingInterval: number;
    maxHeaderSize: number;
  };
  h1.headersTimeout = srv.request_timeout;
  h1.requestTimeout = srv.request_timeout;
  h1.keepAliveTimeout = 5_000;
  h1.connectionsCheckingInterval = Math.min(1_000, srv.request_timeout);
  h1.maxHeaderSize = srv.max_header_bytes;

  server.on('connection', (socket: Socket) => {
    // Nagle off on every client and agent connection: tunnels carry small round trips
    // (docs/performance.md, "Carrier").
    socket.setNoDelay(true);
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  server.on('tlsClientError', (err: Error) => log.debug({ err: err.message }, 'TLS handshake failed'));
  server.on('sessionError', (err: Error) => log.debug({ err: err.message }, 'HTTP/2 session error'));
  server.on('session', (session: ServerHttp2Session) => {
    sessions.add(session);
    openStreams.set(session, new StreamCount());
    session.once('close', () => sessions.delete(session));
    session.on('error', () => {});
    try {
      session.setLocalWindowSize(CONNECTION_WINDOW);
    } catch {
      // the connection went away already
    }
    const onIdle = () => {
      if ((openStreams.get(session)?.open ?? 0) === 0) session.close();
      else session.setTimeout(srv.idle_timeout, onIdle);
    };
    session.setTimeout(srv.idle_timeout, onIdle);
  });
  server.on('stream', (stream: ServerHttp2Stream) => {
    const session: object | undefined = stream.session;
    if (!session) return;
    const count = openStreams.get(session);
    if (!count) return;
    count.open++;
    // One listener shared by the session's streams: nothing allocated per stream.
    stream.on('close', count.closed);
  });

  // HTTP/2 applies SETTINGS_MAX_HEADER_LIST_SIZE only once the client acknowledged it, so a
  // request in the first flight is measured here as well (HTTP/1.1: Node's parser answers 431).
  const headersTooLarge = (req: Req, res: Res): boolean => {
    if (!isHttp2(req) || headerBytes(req.rawHeaders) <= srv.max_header_bytes) return false;
    sendError(
      res,
      new CiportError('CIPORT_E_HEADERS_TOO_LARGE', `request headers exceed ${srv.max_header_bytes} bytes`),
    );
    return true;
  };

  server.on('request', (req: Req, res: Res) => {
    if (headersTooLarge(req, res)) return;
    if (!isCanonicalPath(req.url)) {
      // Routes are fixed names: a path that only normalises to one (`..`, `%2e`, `\`, `//`) is
      // not it, so a proxy or firewall rule matching the raw path sees what the gateway serves.
      sendError(res, new CiportError('CIPORT_E_NOT_FOUND', 'no such endpoint: not a canonical path'));
      return;
    }
    const deadline = setTimeout(() => requestTimedOut(req, res), srv.request_timeout);
    setRequestDeadline(res, () => clearTimeout(deadline));
    res.once('close', () => clearTimeout(deadline));
    res.once('finish', () => clearTimeout(deadline));
    void (async () => {
      if (webConsole && (await webConsole.handle(req, res))) return;
      if (await handleAgentApi(agentApi, req, res)) return;
      await handleApi(apiDeps, req, res);
    })();
  });
  // Agents: `GET /v1/agents/connect` + `Upgrade: ciport-agent` becomes reverse HTTP/2.
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    if (draining) {
      socket.destroy();
      return;
    }
    void handleAgentUpgrade(agentApi, req, socket, head);
  });
  const connect = (req: Http2ServerRequest, res: Http2ServerResponse) => {
    if (headersTooLarge(req, res)) return;
    void handleConnect(tunnelDeps, req, res).catch((err) =>
      log.error({ err: asCiportError(err).message }, 'tunnel failed'),
    );
  };
  server.on('connect', (req: Req, resOrSocket: Res | Duplex) => {
    if (isHttp2(req)) {
      connect(req as Http2ServerRequest, resOrSocket as Http2ServerResponse);
      return;
    }
    refuseHttp1Connect(resOrSocket as Duplex);
  });
  bypassCompatForConnect(server, connect);
  const [host, port] = splitListen(config.listen);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (err) {
    await teardown.unwind(false).catch(() => {});
    const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    throw new ConfigError('CIPORT_E_CONFIG_INVALID', `listen: cannot listen on ${config.listen} (${code})`, {
      cause: err,
    });
  }
  server.on('error', (err) => log.error({ err: err.message }, 'server error'));
  const closePort = async (graceful: boolean) => {
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const s of sessions) {
      if (graceful) s.close();
      else s.destroy();
    }
    if (!graceful) for (const socket of sockets) socket.destroy();
    const force = setTimeout(
      () => {
        for (const s of sessions) s.destroy();
        for (const socket of sockets) socket.destroy();
      },
      graceful ? 1_000 : 0,
    );
    await closed;
    clearTimeout(force);
  };

  // Agent links ride on upgraded connections of this server: closed first, or a graceful close
  // of the port would wait for them.
  teardown.defer('port', async (graceful) => {
    await closeAgents();
    await closePort(graceful);
  });
  const bound = (server.address() as AddressInfo).port;
  const urlHost = host.includes(':') ? `[${host}]` : host;
  const url = `https://${urlHost === '0.0.0.0' ? '127.0.0.1' : urlHost === '[::]' ? '[::1]' : urlHost}:${bound}`;
  boundUrl = url;
  log.info(
    { url, gateway: gatewayId, store: store.engine, targets: [...targets.keys()] },
    'gateway listening',
  );
  try {
    webConsole = await WebConsole.start({
      sso: config.sso,
      config: () => apiDeps.config,
      policy: () => apiDeps.policy,
      store,
      sessions: manager,
      agents: {
        list: () => listAgents(agentApi),
        revoke: (idOrName, actor) => revokeAgents(agentApi, idOrName, actor),
      },
      log,
      publicUrl: config.public_url ?? url,
      maxBodyBytes: srv.max_body_bytes,
      fetch: options.fetch,
      ...(options.now ? { now: options.now } : {}),
    });
  } catch (err) {
    await teardown.unwind(false).catch(() => {});
    throw err;
  }
  if (webConsole.redirectUri) {
    log.info({ redirect_uri: webConsole.redirectUri }, 'console at /ui: sign-in through sso.issuer');
  }
  // Where agents reach this gateway (discovery through the store): public_url, else the bound URL.
  await peers
    .register(config.public_url ?? url)
    .catch((err) =>
      log.warn({ err: asCiportError(err).message }, 'gateway not registered for agent discovery'),
    );

  let stopped: Promise<void> | undefined;
  let hardStop: Promise<void> | undefined;
  let current = config;
  let reloading: Promise<unknown> = Promise.resolve();
  const reload = async (next: Readonly<GatewayConfig>, source: string): Promise<ReloadResult> => {
    if (draining) throw new ConfigError('CIPORT_E_CONFIG_RELOAD_REFUSED', 'the gateway is draining');
    const blocked = restartOnlyChanges(current, next);
    if (blocked.length > 0) {
      throw new ConfigError(
        'CIPORT_E_CONFIG_RELOAD_REFUSED',
        `${blocked.join(', ')} changed: ${blocked.length === 1 ? 'this needs' : 'these need'} a restart ` +
          '(a reload applies rules, issuers and admin_tokens)',
      );
    }
    // Everything is built before anything is swapped: a failure leaves the old one in force.
    const nextVerifier = new TokenVerifier(next.issuers, {
      ...(options.fetch ? { fetch: options.fetch } : {}),
      ...(options.now ? { now: options.now } : {}),
    });
    const nextPolicy = compilePolicy(next);
    const adminTokens = AdminTokens.fromConfig(next.admin_tokens);
    const previousHash = configHash(current);
    const hash = configHash(next);
    await store.appendAudit(
      auditEvent('config.loaded', {
        source,
        config_hash: hash,
        previous_hash: previousHash,
        issuers: next.issuers.map((i) => i.name),
        targets: next.targets.map((t) => t.name),
        rules: next.rules.map((r) => r.name),
        operators: operatorRoster(next.admin_tokens),
        gateway: gatewayId,
      } as Parameters<typeof auditEvent<'config.loaded'>>[1]),
    );
    apiDeps.config = next;
    apiDeps.verifier = nextVerifier;
    apiDeps.policy = nextPolicy;
    apiDeps.adminTokens = adminTokens;
    manager.usePolicy(nextPolicy);
    gatewayExits?.useRules(next.rules);
    current = next;
    for (const issuer of next.issuers.filter(isDevelopmentIssuer)) {
      log.warn({ issuer: issuer.name }, `trusting DEVELOPMENT issuer "${issuer.name}"; never in production`);
    }
    log.info(
      { config_hash: hash, previous_hash: previousHash, source, rules: next.rules.length },
      'configuration reloaded',
    );
    return { hash, previousHash };
  };
  return {
    url,
    port: bound,
    caPem: tls.caPem,
    caFile: tls.caFile,
    gatewayId,
    store,
    metrics,
    manager,
    liveness,
    agents: gatewayAgents,
    auditBacklog,
    get draining() {
      return draining;
    },
    get config() {
      return current;
    },
    reload(next, reloadOptions = {}) {
      // One reload at a time: two quick SIGHUPs apply in order.
      const run = reloading.then(() =>
        reload(next, reloadOptions.source ?? options.configSource ?? '(in-process)'),
      );
      reloading = run.catch(() => {});
      return run;
    },
    drain(drainOptions = {}) {
      stopped ??= (async () => {
        draining = true;
        const graceMs = drainOptions.graceMs ?? srv.drain_grace;
        log.info({ grace_ms: graceMs, connections: manager.connectionCount }, 'draining');
        const until = Date.now() + graceMs;
        while (manager.connectionCount > 0 && Date.now() < until) await sleep(50);
        try {
          const result = await manager.endAllForShutdown();
          log.info(result, 'sessions ended for shutdown');
        } catch (err) {
          log.error({ err: asCiportError(err).message }, 'ending sessions at shutdown failed');
        }
        await teardown.unwind(true, unwindFailed);
        log.info({}, 'gateway stopped');
      })();
      return stopped;
    },
    close() {
      // Also cuts short a drain in progress.
      hardStop ??= (async () => {
        draining = true;
        // Cut the tunnels with their reason before the port goes (an unwind runs once).
        manager.abandon();
        await teardown.unwind(false, unwindFailed);
      })();
      return hardStop;
    },
  };
}

/**
 * `ciport login`'s gateway part when `sso.cli_client_id` is set, its provider discovery started
 * in the background (a provider that is down delays sign-ins, not the gateway's start).
 */
function operatorLogin(
  config: Readonly<GatewayConfig>,
  store: Store,
  log: Logger,
  options: StartGatewayOptions,
): { operatorLogin?: OperatorLogin } {
  const sso = config.sso;
  if (!sso?.cli_client_id) return {};
  const login = new OperatorLogin({
    sso: { ...sso, cli_client_id: sso.cli_client_id },
    store,
    log,
    ...(options.fetch ? { fetch: options.fetch } : {}),
    ...(options.signInLimits ? { limits: options.signInLimits } : {}),
  });
  void login.provider.configuration().catch(() => {});
  return { operatorLogin: login };
}

/** Open HTTP/2 streams of one client connection; `closed` is every stream's 'close' listener. */
class StreamCount {
  open = 0;
  readonly closed = (): void => {
    this.open--;
  };
}

/**
 * Tunnels (HTTP/2 CONNECT streams) skip Node's compatibility layer: it gives every stream an
 * Http2ServerRequest and an Http2ServerResponse (two more event emitters, their states and about
 * ten listeners on the stream) that live as long as the tunnel, a third of an idle tunnel's heap.
 * A tunnel gets `{stream, headers}` and a small response that can send its refusal instead. The
 * JSON API keeps the compatibility layer. Should Node's internals differ (no compat listener
 * found), CONNECT keeps going through it and the 'connect' event.
 */
function bypassCompatForConnect(
  server: Http2SecureServer,
  connect: (req: Http2ServerRequest, res: Http2ServerResponse) => void,
): void {
  const compat = server.listeners('stream').find((l) => l.name === 'bound onServerStream') as
    | ((stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number, raw: string[]) => void)
    | undefined;
  if (!compat) return;
  server.removeListener('stream', compat);
  server.on(
    'stream',
    (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number, rawHeaders: string[]) => {
      if (headers[h2.HTTP2_HEADER_METHOD] !== h2.HTTP2_METHOD_CONNECT) {
        compat(stream, headers, flags, rawHeaders);
        return;
      }
      // A client reset before the tunnel listens must not become an uncaught 'error'.
      stream.on('error', ignore);
      const req = { stream, headers, rawHeaders, httpVersionMajor: 2, url: '' };
      connect(
        req as unknown as Http2ServerRequest,
        new StreamResponse(stream) as unknown as Http2ServerResponse,
      );
    },
  );
}

function ignore(): void {}

/** What sendJson/sendError need of a response, on a bare stream (a refused tunnel). */
class StreamResponse {
  statusCode = 200;
  readonly #stream: ServerHttp2Stream;
  #headers: OutgoingHttpHeaders = {};

  constructor(stream: ServerHttp2Stream) {
    this.#stream = stream;
  }

  get headersSent(): boolean {
    return this.#stream.headersSent;
  }

  setHeader(name: string, value: string): void {
    this.#headers[name.toLowerCase()] = value;
  }

  end(body?: string): void {
    const stream = this.#stream;
    if (stream.destroyed || stream.closed) return;
    if (!stream.headersSent) stream.respond({ ...this.#headers, ':status': this.statusCode });
    stream.end(body);
  }
}

function requestTimedOut(req: Req, res: Res): void {
  if (res.writableEnded) return;
  const err = new CiportError('CIPORT_E_REQUEST_TIMEOUT', 'request not completed in time');
  if (!res.headersSent) sendError(res, err, isHttp2(req) ? {} : { headers: { connection: 'close' } });
  if (isHttp2(req)) {
    const stream = (req as Http2ServerRequest).stream;
    setImmediate(() => {
      if (!stream.closed) stream.close(h2.NGHTTP2_CANCEL);
    });
  } else {
    setImmediate(() => (req as IncomingMessage).socket.destroy());
  }
}

/** HTTP/1.1 CONNECT: tunnels are HTTP/2 only (docs/protocol.md). */
function refuseHttp1Connect(socket: Duplex): void {
  refuseHttp1(socket, new CiportError('CIPORT_E_METHOD_NOT_ALLOWED', 'tunnels need HTTP/2 (ALPN h2)'));
}

/** Size of a header list as HTTP/2 counts it: name + value + 32 per field. */
function headerBytes(raw: string[]): number {
  let n = 0;
  for (const field of raw) n += Buffer.byteLength(field);
  return n + (raw.length / 2) * 32;
}

function splitListen(listen: string): [string, number] {
  const i = listen.lastIndexOf(':');
  return [listen.slice(0, i).replace(/^\[|\]$/g, ''), Number(listen.slice(i + 1))];
}

/** SHA-256 of the canonical, secret-free configuration (secrets serialise as their source). */
export function configHash(config: Readonly<GatewayConfig>): string {
  return createHash('sha256')
    .update(canonicalJson(JSON.parse(JSON.stringify(config))))
    .digest('hex');
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * A request target in origin form whose path `new URL()` would not change: it starts with one
 * `/`, and holds no dot segment (plain or percent-encoded), backslash or empty segment.
 */
export function isCanonicalPath(url: string | undefined): boolean {
  if (!url?.startsWith('/') || url.startsWith('//')) return false;
  const query = url.indexOf('?');
  const path = query < 0 ? url : url.slice(0, query);
  if (path.includes('\\') || path.includes('//')) return false;
  for (const segment of path.split('/')) {
    const s = segment.toLowerCase().replaceAll('%2e', '.');
    if (s === '.' || s === '..') return false;
  }
  return true;
}
