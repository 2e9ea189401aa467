// `ciport agent`: dials out to the gateway, upgrades the TLS connection to reverse HTTP/2 (the
// agent is the HTTP/2 *server*), advertises its targets and serves each CONNECT stream the
// gateway opens (src/agent/exits.ts). It keeps one link per gateway: the configured one, plus
// every gateway the store knows (they tell the agent, `POST /v1/gateways`), so any gateway of a
// group sharing a PostgreSQL store can route to it. docs/agent.md is the contract.
import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import { constants as h2, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import type { SecretProviders } from '../credentials/secret-providers.js';
import { asCiportError, CiportError } from '../errors/index.js';
import type { ExitAdvertisement as AdvertisedTarget } from '../exits/contract.js';
import type { Logger } from '../log/logger.js';
import { targetOfAuthority } from '../transport/h2.js';
import {
  AGENT_EVENTS_PATH,
  AGENT_GATEWAYS_PATH,
  AGENT_REFUSED_PATH,
  AGENT_SESSION_ENDED_PATH,
  AGENT_SESSIONS_ACTIVE_PATH,
  AGENT_TARGETS_PATH,
  refuseStream,
} from '../transport/wire.js';
import { type AgentConfig, resolveEnrollmentToken } from './config.js';
import {
  expiresAt,
  issuedAt,
  readCredential,
  registerAgent,
  rotateCredential,
  type StoredCredential,
  writeCredential,
} from './credential.js';
import { AgentExits } from './exits.js';
import { AGENT_VERSION, type BackoffOptions, backoffDelay, GatewayLink } from './link.js';
import { EventOutbox } from './outbox.js';

export { AGENT_VERSION, type BackoffOptions, backoffDelay } from './link.js';

/** Bound on a control request body from the gateway (a list of active session ids). */
const MAX_CONTROL_BODY = 4 << 20;
/** Look at the credential's remaining lifetime at least this often (docs/agent.md). */
const ROTATION_CHECK_MS = 3_600_000;
/** Retry a failed rotation after 5 s, 10 s, 20 s … up to 10 min (never past a quarter of what is left). */
const ROTATION_RETRY: BackoffOptions = { baseMs: 5_000, factor: 2, maxMs: 600_000 };

export interface RotationOptions {
  /** Check the remaining lifetime at least this often (default 1 h; also at start and on connect). */
  checkIntervalMs?: number;
  /** Backoff between failed rotation attempts (default 5 s doubling to 10 min). */
  retry?: BackoffOptions;
}

export interface AgentOptions {
  log?: Logger | undefined;
  /** CA PEM (default: read from `ca_file`). */
  ca?: string | undefined;
  env?: NodeJS.ProcessEnv;
  backoff?: BackoffOptions;
  /** Ping the gateway this often (default 5 000 ms); no answer in `pingTimeoutMs` (9 000) = dead. */
  pingIntervalMs?: number;
  pingTimeoutMs?: number;
  /** Follow the gateway list the gateways send (default true). */
  discover?: boolean;
  /** Credential rotation schedule (the credential is rotated once less than half its life is left). */
  rotation?: RotationOptions;
  /**
   * The provider secrets of `config` (AWS Secrets Manager, Vault), already read
   * (`SecretProviders.start`, as `ciport agent` does): closed with the agent; its Vault client
   * mints `credentials.vault_database` credentials.
   */
  secrets?: SecretProviders | undefined;
}

export interface AgentEvents {
  connected: [{ attempt: number; url: string }];
  disconnected: [{ reason: string; url: string }];
  /** A connection attempt failed (before the reverse HTTP/2 session existed). */
  failed: [CiportError];
  /** The credential was rotated (and saved); links use it from their next connect on. */
  rotated: [{ id: string; expires_at: string }];
  /** A rotation attempt failed; it is retried later. */
  rotationFailed: [CiportError];
  /** The gateway refused these advertised targets (not bound to this agent). */
  refused: [string[]];
  /** The credential was refused and the agent registered again with its enrollment token. */
  reenrolled: [{ id: string; name: string }];
  /**
   * The credential was refused and there is no usable enrollment token: the agent stopped (its
   * links are closed); `ciport agent` exits with the error's exit code (4).
   */
  fatal: [CiportError];
}

export class Agent extends EventEmitter<AgentEvents> {
  readonly config: AgentConfig;
  readonly #opt: AgentOptions;
  readonly exits: AgentExits;
  readonly outbox: EventOutbox;
  readonly #ca: string | undefined;
  /** The current credential; links read it on every connect (see #link). */
  #credential: StoredCredential | undefined;
  /** One link per gateway URL; the configured one first. */
  readonly #links = new Map<string, GatewayLink>();
  #closed = false;
  /** Rotation: the next scheduled check, the attempt in flight, failures in a row. */
  #rotationTimer: NodeJS.Timeout | undefined;
  #rotating: Promise<void> | undefined;
  #rotationFailures = 0;
  /** After a failure: opportunistic checks (link connects) wait until then. */
  #rotationRetryAt = 0;
  /** The rotated credential could not be saved: retry writing the file at the next check. */
  #unsaved = false;

  constructor(config: AgentConfig, options: AgentOptions = {}) {
    super();
    this.config = config;
    this.#opt = options;
    this.outbox = new EventOutbox({ log: options.log });
    this.exits = new AgentExits({
      name: config.name,
      targets: config.targets,
      outbox: this.outbox,
      connectTimeoutMs: config.connect_timeout,
      log: options.log,
      vault: options.secrets?.vault,
      dataDir: config.data_dir,
    });
    this.#ca = options.ca ?? (config.ca_file ? readFileSync(config.ca_file, 'utf8') : undefined);
  }

  /** Connected to at least one gateway. */
  get connected(): boolean {
    for (const link of this.#links.values()) if (link.connected) return true;
    return false;
  }

  /** URLs of the gateways this agent keeps a link to, and whether each is up. */
  links(): Array<{ url: string; gateway: string | undefined; connected: boolean }> {
    return [...this.#links.values()].map((l) => ({
      url: l.url,
      gateway: l.gatewayId,
      connected: l.connected,
    }));
  }

  get agentId(): string | undefined {
    return this.#credential?.id;
  }

  /** ISO 8601 expiry of the current credential, when known. */
  get credentialExpiresAt(): string | undefined {
    return this.#credential?.expires_at;
  }

  /** CONNECT streams being served now. */
  get streams(): number {
    return this.exits.streams;
  }

  /** The targets this agent advertises (those it can serve), without credentials. */
  advertised(): AdvertisedTarget[] {
    return this.exits.advertised();
  }

  /** Load the credential, registering with the enrollment token when there is none yet. */
  async ensureCredential(): Promise<StoredCredential> {
    this.#credential ??= readCredential(this.config.data_dir);
    if (this.#credential) return this.#credential;
    const token = resolveEnrollmentToken(this.config, this.#opt.env);
    let cred: StoredCredential;
    // The gateway may not be up yet: retry while it is unreachable; a refused token is final.
    for (let attempt = 0; ; attempt++) {
      try {
        cred = await registerAgent(this.config.gateway, token, { ca: this.#ca });
        break;
      } catch (thrown) {
        const err = asCiportError(thrown);
        if (err.code !== 'CIPORT_E_GATEWAY_UNREACHABLE' || this.#closed) throw err;
        this.#opt.log?.warn({ err: err.message }, 'registration: gateway unreachable, retrying');
        await new Promise((r) => setTimeout(r, backoffDelay(attempt, this.#opt.backoff)));
      }
    }
    writeCredential(this.config.data_dir, cred);
    this.#opt.log?.info({ agent: cred.id, name: cred.name }, 'agent registered with the gateway');
    this.#credential = cred;
    return cred;
  }

  /** Register if needed, then keep a connection to the gateway(s) until close(). */
  async start(): Promise<void> {
    // What each dynamic target's admin lacks, logged now rather than at the first failed job.
    void this.exits.roles.logAdminProblems();
    await this.ensureCredential();
    this.#link(this.config.gateway);
    this.#checkRotation('start');
  }

  // ---- credential rotation (docs/agent.md, "Enrollment and the agent credential") ----------

  /** Less than half of the credential's lifetime left, or its expiry unknown (older files). */
  #rotationDue(now: number): boolean {
    const cred = this.#credential;
    if (!cred) return false;
    const exp = expiresAt(cred);
    const issued = issuedAt(cred);
    if (exp === undefined || !Number.isFinite(issued) || exp <= issued) return true;
    return exp - now < (exp - issued) / 2;
  }

  /** Until the credential reaches half its lifetime, at most the check interval. */
  #untilDue(now: number): number {
    const every = this.#opt.rotation?.checkIntervalMs ?? ROTATION_CHECK_MS;
    const cred = this.#credential;
    const exp = cred ? expiresAt(cred) : undefined;
    if (!cred || exp === undefined) return every;
    const half = issuedAt(cred) + (exp - issuedAt(cred)) / 2;
    if (!Number.isFinite(half)) return every;
    return Math.max(0, Math.min(every, Math.ceil(half - now) + 1));
  }

  #scheduleRotation(delayMs: number): void {
    clearTimeout(this.#rotationTimer);
    if (this.#closed) return;
    this.#rotationTimer = setTimeout(() => this.#checkRotation('timer'), delayMs);
    this.#rotationTimer.unref();
  }

  /**
   * Rotate now if due (at start, on the timer, and whenever a link connects — the gateway is
   * reachable then). After a failure, link connects do not retry before the backoff is over.
   */
  #checkRotation(reason: 'start' | 'timer' | 'connected'): void {
    if (this.#closed || this.#rotating || !this.#credential) return;
    const now = Date.now();
    if (reason === 'connected' && now < this.#rotationRetryAt) return;
    if (this.#unsaved) this.#save(this.#credential);
    if (!this.#rotationDue(now)) {
      this.#scheduleRotation(this.#untilDue(now));
      return;
    }
    clearTimeout(this.#rotationTimer);
    this.#rotating = this.#rotate().finally(() => {
      this.#rotating = undefined;
    });
  }

  async #rotate(): Promise<void> {
    const current = this.#credential as StoredCredential;
    const log = this.#opt.log;
    let next: StoredCredential;
    try {
      next = await this.#rotateAtSomeGateway(current);
    } catch (thrown) {
      const err = asCiportError(thrown);
      const now = Date.now();
      let delay = backoffDelay(this.#rotationFailures++, { ...ROTATION_RETRY, ...this.#opt.rotation?.retry });
      // Nearer the expiry, retry more often (a quarter of what is left, at least 250 ms).
      const exp = expiresAt(current);
      if (exp !== undefined && exp > now) delay = Math.min(delay, Math.max(250, Math.floor((exp - now) / 4)));
      this.#rotationRetryAt = now + delay;
      const still = exp === undefined || exp > now;
      const fields = { agent: current.id, code: err.code, err: err.message, expires_at: current.expires_at };
      if (still) log?.warn({ ...fields, retry_in_ms: delay }, 'credential rotation failed; retrying later');
      else
        log?.error(
          { ...fields, retry_in_ms: delay },
          'credential rotation failed and the credential expired',
        );
      this.emit('rotationFailed', err);
      this.#scheduleRotation(delay);
      return;
    }
    // The gateway switched already: the file first, then every link's next connect.
    this.#save(next);
    this.#credential = next;
    log?.info({ agent: next.id, expires_at: next.expires_at }, 'agent credential rotated');
    for (const link of this.#links.values()) link.credentialChanged();
    this.emit('rotated', { id: next.id, expires_at: next.expires_at as string });
    const now = Date.now();
    if (this.#rotationDue(now)) {
      // Due again at once: this host's clock is far ahead of the gateway's (the expiry is the
      // gateway's time). Back off instead of rotating in a loop.
      const delay = backoffDelay(this.#rotationFailures++, {
        ...ROTATION_RETRY,
        ...this.#opt.rotation?.retry,
      });
      this.#rotationRetryAt = now + delay;
      log?.warn(
        { agent: next.id, expires_at: next.expires_at, retry_in_ms: delay },
        "the new credential is due for rotation already: is this host's clock off?",
      );
      this.#scheduleRotation(delay);
      return;
    }
    this.#rotationFailures = 0;
    this.#rotationRetryAt = 0;
    const due = this.#untilDue(now);
    this.#scheduleRotation(this.#unsaved ? Math.min(due, 60_000) : due);
  }

  /**
   * `POST /v1/agents/rotate` at the configured gateway, else at the other linked gateways (any
   * gateway sharing the store can rotate). A refusal (401) is final for this attempt.
   */
  async #rotateAtSomeGateway(current: StoredCredential): Promise<StoredCredential> {
    const urls = [this.config.gateway, ...[...this.#links.keys()].filter((u) => u !== this.config.gateway)];
    let last: CiportError | undefined;
    for (const url of urls) {
      try {
        return await rotateCredential(url, current, {
          ca: this.#ca,
          timeoutMs: Math.max(10_000, this.config.connect_timeout),
        });
      } catch (thrown) {
        last = asCiportError(thrown);
        if (last.code === 'CIPORT_E_AGENT_UNAUTHORIZED') throw last;
      }
    }
    throw last ?? new CiportError('CIPORT_E_GATEWAY_UNREACHABLE', 'no gateway to rotate the credential at');
  }

  #reenrolling = false;

  /**
   * The gateway refused the credential (revoked, expired, unknown): retrying it is pointless.
   * With an enrollment token configured, register again with it and replace the credential file
   * (the operator enrolled this agent anew); without one, or when the token is refused too (the
   * one spent at the first registration), stop with a message saying what to do.
   */
  async #credentialRefused(refusal: CiportError): Promise<void> {
    if (this.#reenrolling || this.#closed) return;
    // A link that dialled with a credential already replaced (re-enrolled meanwhile): stale.
    const refusedId = refusal.details?.agent;
    if (typeof refusedId === 'string' && refusedId !== this.#credential?.id) return;
    this.#reenrolling = true;
    const log = this.#opt.log;
    const name = this.config.name;
    try {
      let token: string | undefined;
      try {
        token = resolveEnrollmentToken(this.config, this.#opt.env);
      } catch {
        token = undefined;
      }
      if (!token) {
        this.#fatal(
          new CiportError(
            'CIPORT_E_AGENT_UNAUTHORIZED',
            `the gateway refused agent ${name}'s credential (${refusal.message}) and no enrollment token is ` +
              `configured: create one (ciport agents enroll --name ${name} --targets …) and start the agent ` +
              'with it in enrollment_token (e.g. CIPORT_ENROLLMENT_TOKEN)',
          ),
        );
        return;
      }
      let cred: StoredCredential;
      try {
        cred = await registerAgent(this.config.gateway, token, { ca: this.#ca });
      } catch (thrown) {
        const err = asCiportError(thrown);
        if (err.code === 'CIPORT_E_ENROLLMENT_INVALID') {
          this.#fatal(
            new CiportError(
              'CIPORT_E_AGENT_UNAUTHORIZED',
              `the gateway refused agent ${name}'s credential (${refusal.message}) and its enrollment token ` +
                `(${err.message}): create a new one (ciport agents enroll --name ${name} --targets …) and ` +
                'start the agent with it',
            ),
          );
        } else {
          // Unreachable now: the link retries, and its next refusal brings us back here.
          log?.warn({ code: err.code, err: err.message }, 're-enrollment failed; retrying later');
        }
        return;
      }
      if (this.#closed) return;
      writeCredential(this.config.data_dir, cred);
      this.#credential = cred;
      this.#unsaved = false;
      log?.warn(
        { agent: cred.id, name: cred.name, expires_at: cred.expires_at },
        'agent credential was refused: registered again with the enrollment token (credential file replaced)',
      );
      this.emit('reenrolled', { id: cred.id, name: cred.name });
      for (const link of this.#links.values()) link.credentialChanged();
    } finally {
      this.#reenrolling = false;
    }
  }

  #fatal(err: CiportError): void {
    this.#opt.log?.error({ code: err.code, err: err.message }, 'agent stopping');
    this.emit('fatal', err);
    void this.close();
  }

  /** Write the credential file; on failure keep going (in memory) and retry at the next check. */
  #save(cred: StoredCredential): void {
    try {
      writeCredential(this.config.data_dir, cred);
      this.#unsaved = false;
    } catch (err) {
      this.#unsaved = true;
      this.#opt.log?.error(
        { agent: cred.id, err: (err as Error).message },
        'rotated credential not saved; retrying (a restart before it is saved needs a new enrollment)',
      );
    }
  }

  #link(url: string): GatewayLink {
    const existing = this.#links.get(url);
    if (existing) return existing;
    const link = new GatewayLink({
      url,
      credential: () => this.#credential as StoredCredential,
      ca: this.#ca,
      connectTimeoutMs: this.config.connect_timeout,
      log: this.#opt.log,
      backoff: this.#opt.backoff,
      pingIntervalMs: this.#opt.pingIntervalMs,
      pingTimeoutMs: this.#opt.pingTimeoutMs,
      onStream: (stream, headers, l) => this.#serve(stream, headers, l),
    });
    link.on('connected', (e) => {
      this.emit('connected', e);
      this.#checkRotation('connected');
    });
    link.on('disconnected', (e) => this.emit('disconnected', e));
    link.on('failed', (e) => {
      this.emit('failed', e);
      if (e.code === 'CIPORT_E_AGENT_UNAUTHORIZED') void this.#credentialRefused(e);
    });
    this.#links.set(url, link);
    if (!this.#closed) link.start();
    return link;
  }

  /**
   * A gateway's list of the gateways sharing its store: link to each one not linked yet (a
   * gateway is skipped when some link already reaches its instance id); drop discovered links
   * to gateways no longer listed. The configured gateway is always kept.
   */
  #discovered(
    from: GatewayLink,
    self: string | undefined,
    gateways: Array<{ id: string; url: string }>,
  ): void {
    if (self) from.gatewayId = self;
    if (this.#opt.discover === false || this.#closed) return;
    const listed = new Set(gateways.map((g) => g.url));
    for (const g of gateways) {
      const reached = [...this.#links.values()].some((l) => l.gatewayId === g.id && l.connected);
      if (!reached && !this.#links.has(g.url)) {
        this.#opt.log?.info({ gateway: g.id, url: g.url }, 'gateway discovered: linking');
        this.#link(g.url);
      }
    }
    for (const [url, link] of this.#links) {
      if (url === this.config.gateway || listed.has(url) || link === from) continue;
      this.#opt.log?.info({ url }, 'gateway no longer listed: link closed');
      this.#links.delete(url);
      void link.close();
    }
  }

  /** Resolves once connected to some gateway (rejects after `timeoutMs`). */
  waitConnected(timeoutMs = 10_000): Promise<void> {
    if (this.connected) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.off('connected', on);
        reject(new Error('agent not connected in time'));
      }, timeoutMs);
      const on = () => {
        clearTimeout(t);
        resolve();
      };
      this.once('connected', on);
    });
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#rotationTimer);
    // A rotation in flight is let finish: the gateway may have switched, the file must follow.
    await Promise.all([this.#rotating, ...[...this.#links.values()].map((l) => l.close())]);
    this.exits.close();
    this.#opt.secrets?.close();
  }

  #serve(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, link: GatewayLink): void {
    stream.on('error', () => {});
    const method = headers[':method'];
    const path = headers[':path'];
    if (method === 'GET' && path === AGENT_TARGETS_PATH) {
      const body = JSON.stringify({
        name: this.config.name,
        version: AGENT_VERSION,
        targets: this.advertised(),
      });
      stream.respond({ ':status': 200, 'content-type': 'application/json' });
      stream.end(body);
      return;
    }
    if (method === 'POST' && path === AGENT_GATEWAYS_PATH) {
      void this.#gateways(stream, link);
      return;
    }
    if (method === 'POST' && path === AGENT_REFUSED_PATH) {
      void this.#refused(stream, link);
      return;
    }
    if (method === 'POST' && path === AGENT_EVENTS_PATH) {
      this.outbox.attach(stream);
      return;
    }
    if (method === 'POST' && (path === AGENT_SESSION_ENDED_PATH || path === AGENT_SESSIONS_ACTIVE_PATH)) {
      void this.#control(stream, path);
      return;
    }
    if (method !== 'CONNECT') {
      refuseStream(stream, new CiportError('CIPORT_E_NOT_FOUND', `agents do not serve ${method} ${path}`));
      return;
    }
    const name = targetOfAuthority(headers[':authority']);
    if (!name || !this.exits.has(name)) {
      refuseStream(
        stream,
        new CiportError('CIPORT_E_TARGET_UNKNOWN', `agent ${this.config.name} serves no target ${name}`),
      );
      return;
    }
    if (this.outbox.full) {
      // Audit events the gateway has not taken yet: no new connections until it catches up.
      refuseStream(
        stream,
        new CiportError(
          'CIPORT_E_UPSTREAM_UNREACHABLE',
          `agent ${this.config.name} holds ${this.outbox.pending} unacknowledged audit events; try again`,
        ),
      );
      return;
    }
    this.exits.serve(stream, name, headers);
  }

  async #gateways(stream: ServerHttp2Stream, link: GatewayLink): Promise<void> {
    try {
      const body = await readJson(stream, MAX_CONTROL_BODY);
      const self = typeof body.self === 'string' ? body.self : undefined;
      const list = Array.isArray(body.gateways) ? body.gateways : [];
      const gateways = list
        .filter(
          (g): g is { id: string; url: string } =>
            typeof g?.id === 'string' && typeof g?.url === 'string' && /^https:\/\//.test(g.url),
        )
        .map((g) => ({ id: g.id, url: g.url }));
      this.#discovered(link, self, gateways);
      if (stream.closed) return;
      stream.respond({ ':status': 200, 'content-type': 'application/json' });
      stream.end('{"ok":true}');
    } catch (err) {
      refuseStream(stream, new CiportError('CIPORT_E_USAGE', (err as Error).message));
    }
  }

  /**
   * The gateway refuses some advertised targets (not bound to this agent): say so, loudly — the
   * operator otherwise sees only jobs failing with CIPORT_E_NO_AGENT.
   */
  async #refused(stream: ServerHttp2Stream, link: GatewayLink): Promise<void> {
    try {
      const body = await readJson(stream, MAX_CONTROL_BODY);
      const refused = Array.isArray(body.refused)
        ? body.refused.filter((t): t is string => typeof t === 'string').slice(0, 1000)
        : [];
      this.#opt.log?.warn(
        {
          gateway: link.url,
          refused,
          message: typeof body.message === 'string' ? body.message.slice(0, 1024) : undefined,
        },
        'the gateway refused targets this agent is not bound to; it routes no connection to them here',
      );
      this.emit('refused', refused);
      if (stream.closed) return;
      stream.respond({ ':status': 200, 'content-type': 'application/json' });
      stream.end('{"ok":true}');
    } catch (err) {
      refuseStream(stream, new CiportError('CIPORT_E_USAGE', (err as Error).message));
    }
  }

  /** Session ended (drop its roles) or the active-session list (reap the others). */
  async #control(stream: ServerHttp2Stream, path: string): Promise<void> {
    let body: Record<string, unknown>;
    try {
      body = await readJson(stream, MAX_CONTROL_BODY);
    } catch (err) {
      refuseStream(stream, new CiportError('CIPORT_E_USAGE', (err as Error).message));
      return;
    }
    try {
      let answer: Record<string, unknown>;
      if (path === AGENT_SESSION_ENDED_PATH) {
        const { id, targets, reason, deployment } = body as {
          id?: unknown;
          targets?: unknown;
          reason?: unknown;
          deployment?: unknown;
        };
        if (typeof id !== 'string' || !Array.isArray(targets))
          throw new CiportError('CIPORT_E_USAGE', 'id, targets');
        await this.exits.sessionEnded(
          id,
          targets.map(String),
          String(reason ?? 'ended'),
          typeof deployment === 'string' ? deployment : undefined,
        );
        answer = { ok: true };
      } else {
        const ids = (body as { ids?: unknown }).ids;
        if (!Array.isArray(ids)) throw new CiportError('CIPORT_E_USAGE', 'ids');
        const deployment = (body as { deployment?: unknown }).deployment;
        answer = {
          dropped: await this.exits.reap(
            ids.map(String),
            typeof deployment === 'string' ? deployment : undefined,
          ),
        };
      }
      if (stream.closed) return;
      stream.respond({ ':status': 200, 'content-type': 'application/json' });
      stream.end(JSON.stringify(answer));
    } catch (thrown) {
      const err = asCiportError(thrown);
      this.#opt.log?.warn({ path, code: err.code, err: err.message }, 'control request failed');
      refuseStream(stream, err);
    }
  }
}

function readJson(stream: ServerHttp2Stream, max: number): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    let text = '';
    stream.setEncoding('utf8');
    stream.on('data', (d: string) => {
      text += d;
      if (text.length > max) {
        reject(new Error('body too large'));
        stream.close(h2.NGHTTP2_CANCEL);
      }
    });
    stream.once('end', () => {
      try {
        const v = JSON.parse(text) as unknown;
        if (typeof v !== 'object' || v === null) throw new Error('not an object');
        resolve(v as Record<string, unknown>);
      } catch (err) {
        reject(err);
      }
    });
    stream.once('error', reject);
  });
}

export async function startAgent(config: AgentConfig, options: AgentOptions = {}): Promise<Agent> {
  const agent = new Agent(config, options);
  await agent.start();
  return agent;
}
