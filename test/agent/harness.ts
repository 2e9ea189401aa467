// A minimal gateway for agent tests: one TLS port (HTTP/2 + HTTP/1.1), the agent API and the
// upgrade handler, built from the same pieces server.ts will mount.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createSecureServer, type Http2SecureServer, type ServerHttp2Stream } from 'node:http2';
import { request } from 'node:https';
import { type AddressInfo, connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type AgentConfig, agentConfigSchema } from '../../src/agent/config.js';
import { CiportError } from '../../src/errors/index.js';
import { handleAgentApi, handleAgentUpgrade, linkRevocations } from '../../src/gateway/agents/api.js';
import { AgentHub, type AgentHubOptions } from '../../src/gateway/agents/hub.js';
import {
  AgentRegistry,
  type AgentRegistryOptions,
  type AgentStore,
} from '../../src/gateway/agents/registry.js';
import { type AgentRelayResult, relayViaAgent } from '../../src/gateway/agents/relay.js';
import { sendError } from '../../src/gateway/http.js';
import type { Logger } from '../../src/log/logger.js';
import { bearer } from '../../src/session/secret.js';
import { openStore, type Store } from '../../src/store/index.js';
import { ensureGeneratedTls } from '../../src/transport/tls.js';

export const ADMIN = 'admin-token-for-tests';

const storeDirs: string[] = [];
process.once('exit', () => {
  for (const dir of storeDirs) rmSync(dir, { recursive: true, force: true });
});

/**
 * The registry's store for the mini gateway: a real SQLite store in a temp file, opened on first
 * use and shared by every gateway given this object (gateway restarts keep the agents).
 */
export class MemoryMeta implements AgentStore {
  readonly file: string;
  #store: Promise<Store> | undefined;

  constructor() {
    const dir = mkdtempSync(join(tmpdir(), 'ciport-agent-store-'));
    storeDirs.push(dir);
    this.file = join(dir, 'ciport.db');
  }

  store(): Promise<Store> {
    this.#store ??= openStore({ sqlite: { path: this.file } }, { dataDir: tmpdir() });
    return this.#store;
  }

  /** Everything the database files hold, as text (to check that no token or secret is stored). */
  dump(): string {
    return [this.file, `${this.file}-wal`]
      .filter((f) => existsSync(f))
      .map((f) => readFileSync(f).toString('latin1'))
      .join('\n');
  }

  createEnrollment: AgentStore['createEnrollment'] = async (...a) =>
    (await this.store()).createEnrollment(...a);
  redeemEnrollment: AgentStore['redeemEnrollment'] = async (...a) =>
    (await this.store()).redeemEnrollment(...a);
  rotateAgentCredential: AgentStore['rotateAgentCredential'] = async (...a) =>
    (await this.store()).rotateAgentCredential(...a);
  getAgent: AgentStore['getAgent'] = async (...a) => (await this.store()).getAgent(...a);
  listAgents: AgentStore['listAgents'] = async () => (await this.store()).listAgents();
  touchAgent: AgentStore['touchAgent'] = async (...a) => (await this.store()).touchAgent(...a);
  revokeAgents: AgentStore['revokeAgents'] = async (...a) => (await this.store()).revokeAgents(...a);
  setAgentTargets: AgentStore['setAgentTargets'] = async (...a) => (await this.store()).setAgentTargets(...a);
  subscribeAgentRevoked: AgentStore['subscribeAgentRevoked'] = async (...a) =>
    (await this.store()).subscribeAgentRevoked(...a);
}

export interface MiniGateway {
  url: string;
  port: number;
  caPem: string;
  hub: AgentHub;
  registry: AgentRegistry;
  /** Results of finished relays (client CONNECT → agent). */
  relays: AgentRelayResult[];
  /** Crash-like stop: sockets destroyed. */
  close(): Promise<void>;
}

export function tempDir(prefix = 'ciport-agent-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export async function startMiniGateway(options: {
  dir: string;
  meta: AgentStore;
  port?: number;
  hub?: AgentHubOptions;
  /** Registry options (e.g. a credential lifetime of seconds, to watch agents rotate). */
  registry?: AgentRegistryOptions;
  /** Where the gateway's handlers log (default: nowhere). */
  log?: Logger;
}): Promise<MiniGateway> {
  const tls = ensureGeneratedTls(options.dir, ['localhost', '127.0.0.1']);
  const registry = new AgentRegistry(options.meta, options.registry);
  const hub = new AgentHub(options.hub);
  linkRevocations(registry, hub);
  const deps = {
    registry,
    hub,
    log: options.log,
    maxBodyBytes: 65_536,
    requireAdmin: (req: { headers: { authorization?: string | undefined } }) => {
      if (bearer(req.headers.authorization) !== ADMIN) {
        throw new CiportError('CIPORT_E_ADMIN_UNAUTHORIZED', 'admin token required');
      }
    },
  };
  const server: Http2SecureServer = createSecureServer({
    cert: tls.cert,
    key: tls.key,
    allowHTTP1: true,
    ALPNProtocols: ['h2', 'http/1.1'],
  });
  // As server.ts does: HTTP/1.1 timeouts must not reach an upgraded agent socket.
  const h1 = server as unknown as Record<string, number>;
  h1.headersTimeout = 1_000;
  h1.requestTimeout = 1_000;
  h1.keepAliveTimeout = 1_000;
  h1.connectionsCheckingInterval = 250;
  const sockets = new Set<Socket>();
  const relays: AgentRelayResult[] = [];
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  server.on('upgrade', (req, socket, head) => void handleAgentUpgrade(deps, req, socket, head));
  // Tunnels: the relay tunnel.ts runs for agent-served targets (Tunnel.runViaAgent), without its
  // session checks and audit.
  server.on('connect', (req) => {
    const stream = (req as unknown as { stream: ServerHttp2Stream }).stream;
    const target = String(req.headers[':authority'] ?? '').split(':')[0] ?? '';
    void relayViaAgent(hub, stream, target, { idleTimeoutMs: 60_000 }).then((r) => relays.push(r));
  });
  server.on('request', (req, res) => {
    void handleAgentApi(deps, req, res).then((handled) => {
      if (!handled) sendError(res, new CiportError('CIPORT_E_NOT_FOUND', 'not found'));
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    url: `https://127.0.0.1:${port}`,
    port,
    caPem: tls.caPem as string,
    hub,
    registry,
    relays,
    async close() {
      const closed = new Promise<void>((r) => server.close(() => r()));
      void hub.close();
      for (const s of sockets) s.destroy();
      await closed;
    },
  };
}

export function api(
  gw: { url: string; caPem: string },
  method: string,
  path: string,
  token: string | undefined,
  body?: unknown,
  // biome-ignore lint/suspicious/noExplicitAny: test helper; assertions narrow the JSON
): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const text = body === undefined ? '' : JSON.stringify(body);
    const req = request(
      new URL(path, gw.url),
      {
        method,
        ca: gw.caPem,
        headers: {
          ...(token ? { authorization: `Bearer ${token}` } : {}),
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(text),
        },
        agent: false,
      },
      (res) => {
        let out = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          out += d;
        });
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, body: out ? JSON.parse(out) : undefined }),
        );
      },
    );
    req.on('error', reject);
    req.end(text);
  });
}

export function agentConfig(input: {
  gateway: string;
  dataDir: string;
  name: string;
  targets: Array<{ name: string; protocol: string; address: string }>;
}): AgentConfig {
  return agentConfigSchema.parse({
    gateway: input.gateway,
    name: input.name,
    data_dir: input.dataDir,
    enrollment_token: { env: 'CIPORT_TEST_ENROLLMENT_TOKEN' },
    targets: input.targets,
  });
}

export async function echoServer(): Promise<{ address: string; server: Server; close: () => Promise<void> }> {
  const conns = new Set<Socket>();
  const server = createServer({ allowHalfOpen: true }, (s) => {
    conns.add(s);
    s.once('close', () => conns.delete(s));
    s.on('error', () => {});
    s.pipe(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    address: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    server,
    close: () =>
      new Promise<void>((r) => {
        for (const c of conns) c.destroy();
        server.close(() => r());
      }),
  };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * A TCP relay between an agent and the gateway that a test can cut (both sockets destroyed, as
 * when the agent's host dies) or freeze (bytes stop flowing, nothing is closed: a partition).
 */
export async function relay(targetPort: number): Promise<{
  port: number;
  cut: () => void;
  freeze: () => void;
  close: () => Promise<void>;
}> {
  const pairs = new Set<[Socket, Socket]>();
  let frozen = false;
  const server = createServer((inbound) => {
    const outbound = connect(targetPort, '127.0.0.1');
    const pair: [Socket, Socket] = [inbound, outbound];
    pairs.add(pair);
    for (const s of pair) {
      s.on('error', () => {});
      s.once('close', () => {
        pairs.delete(pair);
        inbound.destroy();
        outbound.destroy();
      });
    }
    inbound.on('data', (d) => {
      if (!frozen) outbound.write(d);
    });
    outbound.on('data', (d) => {
      if (!frozen) inbound.write(d);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const cut = () => {
    for (const [a, b] of pairs) {
      a.resetAndDestroy();
      b.resetAndDestroy();
    }
  };
  return {
    port: (server.address() as AddressInfo).port,
    cut,
    freeze: () => {
      frozen = true;
    },
    close: () =>
      new Promise<void>((r) => {
        cut();
        server.close(() => r());
      }),
  };
}
