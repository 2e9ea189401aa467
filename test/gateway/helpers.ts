// Shared by the gateway, session and transport tests: a fixture OIDC issuer, a gateway started
// in-process on 127.0.0.1:0 with SQLite in a temp dir, an HTTP/2 client trusting its generated
// CA, and a TCP echo server.
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import {
  type ClientHttp2Session,
  type ClientHttp2Stream,
  constants as h2,
  connect as h2connect,
  type IncomingHttpHeaders,
} from 'node:http2';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { stringify } from 'yaml';
import { parseGatewayConfig } from '../../src/config/load.js';
import type { GatewayConfig } from '../../src/config/schema.js';
import { type RunningGateway, type StartGatewayOptions, startGateway } from '../../src/gateway/server.js';
import { silentLogger } from '../../src/log/logger.js';
import { FixtureIssuer } from '../fixtures/oidc-issuer.js';

export const ADMIN_TOKEN = 'adm-test-0123456789abcdef';

export function tempDir(prefix = 'ciport-gw-'): { dir: string; cleanup: () => void } {
  const root = join(process.cwd(), 'test', '.tmp');
  mkdirSync(root, { recursive: true });
  const dir = mkdtempSync(join(root, prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export interface ConfigInput {
  dataDir: string;
  issuerUrl: string;
  echoPort?: number;
  /** Extra targets (raw YAML objects). */
  targets?: Record<string, unknown>[];
  rules?: Record<string, unknown>[];
  sessions?: Record<string, unknown>;
  server?: Record<string, unknown>;
  extra?: Record<string, unknown>;
  /** Extra environment the config's `{env: …}` secrets resolve from. */
  env?: Record<string, string>;
}

/** The usual test configuration: one GitLab-kind issuer (the fixture), echo/redis/closed targets. */
export function testConfig(input: ConfigInput): Readonly<GatewayConfig> {
  const targets = [
    ...(input.echoPort ? [{ name: 'echo', protocol: 'tcp', address: `127.0.0.1:${input.echoPort}` }] : []),
    { name: 'redis', protocol: 'tcp', address: '127.0.0.1:6379' },
    // A port nothing listens on (bound and closed by freePort()).
    { name: 'nowhere', protocol: 'tcp', address: '127.0.0.1:1' },
    { name: 'pg', protocol: 'postgres', address: '127.0.0.1:5432', database: 'app' },
    ...(input.targets ?? []),
  ];
  const doc = {
    listen: '127.0.0.1:0',
    data_dir: input.dataDir,
    admin_tokens: [{ env: 'TEST_ADMIN_TOKEN' }],
    sessions: {
      default_ttl: '15m',
      lease_timeout: '30s',
      rate_limit: {
        per_minute: 6000,
        burst: 1000,
        per_issuer: { per_minute: 60_000, burst: 10_000 },
        denied: { per_minute: 6000, burst: 1000, per_issuer: { per_minute: 60_000, burst: 10_000 } },
      },
      ...input.sessions,
    },
    server: { ...input.server },
    issuers: [{ name: 'gitlab', kind: 'gitlab', issuer: input.issuerUrl, audience: 'ciport' }],
    targets,
    rules: input.rules ?? [
      { name: 'no-forks', deny: true, issuer: 'gitlab', when: { fork: true } },
      {
        name: 'ledger-main',
        issuer: 'gitlab',
        when: { project_id: '61577203', ref_protected: true },
        allow: targets.map((t) => t.name),
        max_ttl: '30m',
      },
    ],
    ...input.extra,
  };
  return parseGatewayConfig(stringify(doc), 'test.yaml', {
    env: { TEST_ADMIN_TOKEN: ADMIN_TOKEN, ...input.env },
  });
}

/** A stream that keeps what is written to it (gateway stderr notes). */
export class Capture extends Writable {
  text = '';
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.text += chunk.toString('utf8');
    cb();
  }
}

export interface Harness {
  issuer: FixtureIssuer;
  gateway: RunningGateway;
  config: Readonly<GatewayConfig>;
  dataDir: string;
  echo: EchoServer;
  stderr: Capture;
  /** A client trusting the gateway's CA; closed by stop(). */
  client(): Promise<ClientHttp2Session>;
  /** Mint a token (gitlab-main preset unless told). */
  token(claims?: Record<string, unknown>, preset?: 'gitlab-main' | 'gitlab-fork-mr'): Promise<string>;
  /** Restart the gateway on the same data dir (hard stop first unless already stopped). */
  restart(config?: Readonly<GatewayConfig>, options?: StartGatewayOptions): Promise<RunningGateway>;
  stop(): Promise<void>;
}

export async function startHarness(
  input: Omit<ConfigInput, 'dataDir' | 'issuerUrl' | 'echoPort'> = {},
  options: StartGatewayOptions = {},
): Promise<Harness> {
  const issuer = await FixtureIssuer.start();
  const echo = await startEcho();
  const { dir, cleanup } = tempDir();
  const config = testConfig({ ...input, dataDir: dir, issuerUrl: issuer.url, echoPort: echo.port });
  const stderr = new Capture();
  const clients: ClientHttp2Session[] = [];
  const start = (cfg: Readonly<GatewayConfig>, opts: StartGatewayOptions = {}) =>
    startGateway(cfg, { logger: silentLogger(), stderr, sweepIntervalMs: 200, ...options, ...opts });
  const h: Harness = {
    issuer,
    echo,
    config,
    dataDir: dir,
    stderr,
    gateway: await start(config),
    async client() {
      const c = await connectClient(h.gateway.url, h.gateway.caPem);
      clients.push(c);
      return c;
    },
    token(claims = {}, preset = 'gitlab-main') {
      return issuer.mint(claims, { preset });
    },
    async restart(cfg = config, opts = {}) {
      await h.gateway.close();
      h.gateway = await start(cfg, opts);
      return h.gateway;
    },
    async stop() {
      for (const c of clients) c.destroy();
      await h.gateway.close();
      await echo.close();
      await issuer.close();
      cleanup();
    },
  };
  return h;
}

export function connectClient(url: string, caPem: string | undefined): Promise<ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const session = h2connect(url, {
      ...(caPem ? { ca: caPem } : {}),
      settings: { initialWindowSize: 1 << 20, enablePush: false },
    });
    session.once('error', reject);
    session.once('connect', () => {
      session.off('error', reject);
      session.on('error', () => {});
      session.setLocalWindowSize(16 << 20);
      resolve(session);
    });
  });
}

/** A parsed JSON answer, probed freely by assertions. */
// biome-ignore lint/suspicious/noExplicitAny: tests read JSON answers without declaring their shapes
export type Json = any;

export interface ApiResult {
  status: number;
  headers: IncomingHttpHeaders;
  body: Json;
}

export function api(
  client: ClientHttp2Session,
  method: string,
  path: string,
  options: { bearer?: string; body?: unknown; rawBody?: Buffer; headers?: Record<string, string> } = {},
): Promise<ApiResult> {
  return new Promise((resolve, reject) => {
    const payload =
      options.rawBody ?? (options.body === undefined ? undefined : Buffer.from(JSON.stringify(options.body)));
    const stream = client.request(
      {
        ':method': method,
        ':path': path,
        ...(options.bearer ? { authorization: `Bearer ${options.bearer}` } : {}),
        ...(payload ? { 'content-type': 'application/json' } : {}),
        ...options.headers,
      },
      { endStream: payload === undefined },
    );
    let headers: IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    stream.on('response', (h) => {
      headers = h;
    });
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('error', reject);
    stream.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      let body: unknown = text;
      try {
        body = text ? JSON.parse(text) : undefined;
      } catch {
        // not JSON
      }
      resolve({ status: Number(headers[':status']), headers, body });
    });
    if (payload) stream.end(payload);
  });
}

export interface OpenedSession {
  id: string;
  secret: string;
  body: Json;
}

export async function openSession(
  client: ClientHttp2Session,
  token: string,
  body: Record<string, unknown> = {},
): Promise<OpenedSession> {
  const res = await api(client, 'POST', '/v1/sessions', { bearer: token, body });
  if (res.status !== 201) throw new Error(`session not created: ${res.status} ${JSON.stringify(res.body)}`);
  return { id: res.body.id, secret: res.body.secret, body: res.body };
}

export interface TunnelAnswer {
  status: number;
  headers: IncomingHttpHeaders;
  stream: ClientHttp2Stream;
}

/** Send CONNECT and wait for the answer headers. */
export function connectTunnel(
  client: ClientHttp2Session,
  session: { id: string; secret: string },
  target: string,
): Promise<TunnelAnswer> {
  return new Promise((resolve, reject) => {
    const stream = client.request({
      ':method': 'CONNECT',
      ':authority': `${target}:443`,
      authorization: `Bearer ${session.secret}`,
      'ciport-session': session.id,
    });
    stream.on('error', () => {});
    const onClose = () => reject(new Error(`stream closed before an answer (rst ${stream.rstCode})`));
    stream.once('close', onClose);
    stream.once('response', (headers) => {
      stream.off('close', onClose);
      resolve({ status: Number(headers[':status']), headers, stream });
    });
  });
}

/** Open a tunnel that must succeed. */
export async function tunnel(
  client: ClientHttp2Session,
  session: { id: string; secret: string },
  target: string,
): Promise<ClientHttp2Stream> {
  const answer = await connectTunnel(client, session, target);
  if (answer.status !== 200)
    throw new Error(`tunnel refused: ${answer.status} ${answer.headers['ciport-error']}`);
  return answer.stream;
}

/** Resolves with the stream's RST code (0 for a normal end) once it closes (unread data is dropped). */
export function closed(stream: ClientHttp2Stream): Promise<number> {
  stream.resume();
  return new Promise((resolve) => {
    if (stream.closed) resolve(stream.rstCode ?? 0);
    else stream.once('close', () => resolve(stream.rstCode ?? 0));
  });
}

/** Write `data`, end, and collect everything that comes back until the stream ends. */
export function roundTrip(stream: ClientHttp2Stream, data: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.once('end', () => resolve(Buffer.concat(chunks)));
    stream.once('error', reject);
    stream.end(data);
  });
}

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

export interface EchoServer {
  port: number;
  server: Server;
  /** Sockets currently connected to the echo server. */
  sockets: Set<Socket>;
  close(): Promise<void>;
}

/** A TCP echo server on loopback: what comes in goes back out; FIN is echoed too. */
export async function startEcho(): Promise<EchoServer> {
  const sockets = new Set<Socket>();
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    socket.pipe(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    port,
    server,
    sockets,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export { h2 };
