// A port, end to end on the client: resolve the gateway and the token, create the session,
// listen locally for every granted target, keep the session alive, and tear it all down.
// `ciport exec` and `ciport open` are thin shells around this.
import type { Writable } from 'node:stream';
import { formatDuration, parseDuration } from '../config/duration.js';
import { oneTimePassword } from '../credentials/otp.js';
import { ExitCode } from '../errors/codes.js';
import { CiportError } from '../errors/errors.js';
import { printableLines } from '../text/printable.js';
import { advertisedAudience } from './audience.js';
import { type BoundTarget, exportedEnv, type TargetSpec } from './env.js';
import { GatewayClient, gatewayUrl, trustedCas } from './gateway.js';
import { sameUserCheck } from './peer-uid.js';
import { rateLimitWaitMs } from './rate-limit-retry.js';
import { Heartbeat, PortSession, type SessionEnd, type SessionInfo } from './session.js';
import { type SshFiles, writeSshFiles } from './ssh.js';
import { acquireToken } from './token.js';
import { TargetListener, type TunnelLog } from './tunnel.js';

export interface ClientLog extends TunnelLog {}

/** stderr logger: `ciport: …` lines; info only with --verbose. Never given secrets. */
export function stderrLog(stderr: Writable, verbose: boolean, paint?: (text: string) => string): ClientLog {
  const prefix = paint ? paint('ciport:') : 'ciport:';
  return {
    verbose,
    // Messages quote the gateway and the token's claims: shown without their control bytes.
    warn: (m) => stderr.write(`${prefix} ${printableLines(m)}\n`),
    info: (m) => {
      if (verbose) stderr.write(`${prefix} ${printableLines(m)}\n`);
    },
  };
}

/**
 * One line when policy granted less than `--ttl` asked for (otherwise the job learns it only when
 * its port closes early), else undefined. The grant is the longest of the targets' `ttl_ms`.
 */
export function cappedTtl(requested: string | undefined, info: SessionInfo): string | undefined {
  const wanted = requested === undefined ? undefined : parseDuration(requested);
  const grants = info.targets.map((t) => t.ttl_ms).filter((ms): ms is number => typeof ms === 'number');
  if (wanted === undefined || grants.length === 0) return undefined;
  const granted = Math.max(...grants);
  if (granted >= wanted) return undefined;
  const rule = info.rule ? ` (rule ${info.rule})` : '';
  return `policy capped --ttl ${requested} to ${formatDuration(granted)}${rule}: the port closes at ${info.expires_at}`;
}

export interface ConnectOptions {
  env: NodeJS.ProcessEnv;
  gateway?: string | undefined;
  tokenEnv?: string | undefined;
  audience?: string | undefined;
}

/** Gateway client and ID token from flags and environment (shared with `whoami`). */
export async function connectGateway(options: ConnectOptions): Promise<{
  client: GatewayClient;
  token: string;
  tokenEnvName: string | undefined;
  tokenSource: string;
}> {
  const url = gatewayUrl({ gateway: options.gateway, env: options.env });
  const ca = trustedCas(options.env);
  const client = new GatewayClient({ url, ca });
  let acquired: Awaited<ReturnType<typeof acquireToken>>;
  try {
    acquired = await acquireToken({
      env: options.env,
      tokenEnv: options.tokenEnv,
      audience: options.audience ?? (() => advertisedAudience(client)),
    });
  } catch (err) {
    client.close();
    throw err;
  }
  return {
    client,
    token: acquired.token,
    tokenEnvName: acquired.envName,
    tokenSource: acquired.source,
  };
}

export interface OpenPortOptions extends ConnectOptions {
  targets: TargetSpec[];
  ttl?: string | undefined;
  log: ClientLog;
  /** Stop waiting for an approval (SIGTERM): the session is ended and open() rejects. */
  signal?: AbortSignal | undefined;
}

/** The one line a job's log shows while its session waits for approval (docs/approvals.md). */
export function waitingLine(session: PortSession): string {
  const approval = session.info.approval;
  const needs = (approval?.requirements ?? [])
    .map((r) => `${r.count} approver${r.count === 1 ? '' : 's'} of ${r.groups.join(' or ')}`)
    .join(' and ');
  return `session ${session.id} waits for approval (${needs || 'approval'}, until ${approval?.expires_at ?? '?'}): ${approval?.url ?? ''}`;
}

export class Port {
  readonly session: PortSession;
  readonly bound: BoundTarget[];
  readonly env: Record<string, string>;
  /** The variable that held the ID token (removed from the command's environment). */
  readonly tokenEnvName: string | undefined;
  /** Resolves when the session ends while the port is open (not by close()). */
  readonly ended: Promise<SessionEnd>;
  readonly #listeners: TargetListener[];
  readonly #heartbeat: Heartbeat;
  readonly #log: ClientLog;
  /** ssh targets' session directory (key, certificate, known_hosts, ssh_config). */
  readonly #ssh: SshFiles | undefined;
  #closed: Promise<void> | undefined;
  #reported = false;
  /** Targets a connection to was refused with CIPORT_E_NO_AGENT (no agent served it then). */
  readonly #noAgent: Set<string>;

  private constructor(args: {
    session: PortSession;
    listeners: TargetListener[];
    bound: BoundTarget[];
    tokenEnvName: string | undefined;
    log: ClientLog;
    noAgent: Set<string>;
    ssh: SshFiles | undefined;
  }) {
    this.#noAgent = args.noAgent;
    this.#ssh = args.ssh;
    this.session = args.session;
    this.#listeners = args.listeners;
    this.bound = args.bound;
    this.env = exportedEnv(args.bound);
    this.tokenEnvName = args.tokenEnvName;
    this.#log = args.log;
    let resolveEnded: (end: SessionEnd) => void = () => {};
    this.ended = new Promise((resolve) => {
      resolveEnded = resolve;
    });
    this.#heartbeat = new Heartbeat(this.session, {
      onEnded: (end) => {
        if (this.#closed) return;
        this.#report(end);
        for (const l of this.#listeners) void l.close();
        // The key and certificate are of no use past the session: gone with it.
        this.#ssh?.remove();
        resolveEnded(end);
      },
      onError: (err) => this.#log.info(`heartbeat failed: ${err.message}`),
    });
  }

  static async open(options: OpenPortOptions): Promise<Port> {
    const { client, token, tokenEnvName } = await connectGateway(options);
    const { log } = options;
    let session: PortSession;
    try {
      session = await PortSession.create(client, {
        token,
        targets: options.targets.map((t) => t.name),
        ttl: options.ttl,
        retry: {
          maxWaitMs: rateLimitWaitMs(options.env),
          onRetry: (seconds) => log.warn(`gateway rate limit, retrying in ${seconds}s`),
        },
      });
    } catch (err) {
      client.close();
      throw err;
    }
    if (session.pending) {
      log.warn(waitingLine(session));
      try {
        await session.awaitApproval({
          signal: options.signal,
          onError: (err) => log.info(`waiting for approval: ${err.message}`),
        });
      } catch (err) {
        client.close();
        throw err;
      }
      log.info(`session ${session.id} approved`);
    }
    const rule = session.info.rule ? `rule ${session.info.rule}, ` : '';
    log.info(`session ${session.id} opened (${rule}expires ${session.info.expires_at})`);
    const capped = cappedTtl(options.ttl, session.info);
    if (capped) log.warn(capped);
    const listeners: TargetListener[] = [];
    const bound: BoundTarget[] = [];
    // Only the job's own user (and root) may use the ports (Linux); elsewhere there is no way to tell.
    const checkPeer = sameUserCheck();
    if (!checkPeer) log.info(`no peer check on ${process.platform}: any local user can reach the ports`);
    // redis: one password per port, minted here and checked only by the local listener; the
    // gateway never sees it (the exit authenticates upstream with the target's own credential).
    const redisPassword = session.info.targets.some((t) => t.protocol === 'redis') ? oneTimePassword() : '';
    const noAgent = new Set<string>();
    // Set once every listener is up; a stream reset before that only skips the early heartbeat.
    let port: Port | undefined;
    let ssh: SshFiles | undefined;
    try {
      for (const target of session.info.targets) {
        const wanted = options.targets.find((t) => t.name === target.name)?.port ?? 0;
        let listener: TargetListener;
        try {
          listener = await TargetListener.listen({
            target: target.name,
            port: wanted,
            open: (name) => session.openTunnel(name),
            log,
            onTrouble: (_status, code) => {
              if (code === 'CIPORT_E_NO_AGENT') noAgent.add(target.name);
              void port?.checkNow();
            },
            postgres: target.protocol === 'postgres' ? target.credentials : undefined,
            mysql: target.protocol === 'mysql' ? target.credentials : undefined,
            redis: target.protocol === 'redis' ? { password: redisPassword } : undefined,
            checkPeer,
          });
        } catch (err) {
          const e = err as NodeJS.ErrnoException;
          throw new CiportError(
            'CIPORT_E_USAGE',
            `${target.name}: cannot listen on 127.0.0.1:${wanted} (${e.code ?? e.message})`,
          );
        }
        listeners.push(listener);
        bound.push({
          name: target.name,
          protocol: target.protocol,
          database: target.database,
          host: '127.0.0.1',
          port: listener.port,
          credentials:
            target.protocol === 'redis' ? { user: '', password: redisPassword } : target.credentials,
        });
        log.info(`${target.name} (${target.protocol}) on 127.0.0.1:${listener.port}`);
      }
      // ssh: a certificate per target for a key made here, and the files ssh reads (docs/ssh.md).
      const sshTargets = bound.filter((t) => t.protocol === 'ssh');
      if (sshTargets.length > 0) {
        ssh = await writeSshFiles(session, sshTargets);
        for (const t of sshTargets) t.sshConfig = ssh.configs.get(t.name);
        log.info(`ssh: certificates and ssh_config in ${ssh.dir} (removed when the session ends)`);
      }
    } catch (err) {
      ssh?.remove();
      await Promise.all(listeners.map((l) => l.close()));
      await session.end().catch(() => {});
      client.close();
      throw err;
    }
    port = new Port({ session, listeners, bound, tokenEnvName, log, noAgent, ssh });
    port.#heartbeat.start();
    return port;
  }

  /** Say once, on stderr, why the session ended (when it was not us). */
  #report(end: SessionEnd): void {
    if (this.#reported || end.reason === 'client_end') return;
    this.#reported = true;
    this.#log.warn(end.message);
  }

  /**
   * The exit code for a command that exited with `code`: a failed command that had connections
   * refused because no agent served their target (CIPORT_E_NO_AGENT, a passing condition) exits
   * 5 ("unreachable": worth a retry, e.g. GitLab `retry: exit_codes: [5]`), and says so.
   */
  exitCodeFor(code: number, command: string): number {
    if (code === 0 || this.#noAgent.size === 0) return code;
    this.#log.warn(
      `exit ${ExitCode.unreachable} (unreachable, retryable): no agent served ${[...this.#noAgent].join(', ')} ` +
        `(CIPORT_E_NO_AGENT) while ${command} ran; it exited with ${code}`,
    );
    return ExitCode.unreachable;
  }

  /** Ask the gateway now whether the session still lives (after a reset stream). */
  checkNow(): Promise<void> {
    return this.#heartbeat.check();
  }

  get listeners(): readonly TargetListener[] {
    return this.#listeners;
  }

  /**
   * Stop listening, cut the connections, end the session (DELETE) unless it already ended, and
   * close the gateway connection. Never throws: a session we cannot end ends by its lease.
   */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      this.#heartbeat.stop();
      await Promise.all(this.#listeners.map((l) => l.close()));
      this.#ssh?.remove();
      const already = this.session.ended;
      if (already) {
        this.#report(already);
      } else {
        try {
          const end = await this.session.end();
          // It had ended before the command did (revoked, expired) and nobody had said so yet.
          if (end.reason !== 'client_end') this.#report(end);
          else this.#log.info(`session ${this.session.id} ended`);
        } catch (err) {
          const message = err instanceof Error ? err.message : String(err);
          this.#log.warn(`could not end session ${this.session.id} (its lease will end it): ${message}`);
        }
      }
      this.session.gateway.close();
    })();
    return this.#closed;
  }
}
