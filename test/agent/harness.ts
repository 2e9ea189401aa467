// Agent tests run the real gateway (startGateway, as `ciport gateway` does) on loopback with
// its SQLite store in a temp dir, plus what they need around it: the admin API over HTTP/1.1,
// agent configs, an echo server and a TCP relay a test can cut or freeze.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:https';
import { type AddressInfo, connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type AgentConfig, agentConfigSchema } from '../../src/agent/config.js';
import type { RunningGateway, StartGatewayOptions } from '../../src/gateway/server.js';
import { DEFAULT_SQLITE_FILE } from '../../src/store/open.js';
import { gatewayConfig, startTestGateway } from '../fixtures/gateway.js';

export const ADMIN = 'admin-token-for-tests';
/** The targets agents serve in these tests; a session may be granted them (`issuer`). */
export const AGENT_TARGETS = ['echo', 'cache', 'dead'];

export function tempDir(prefix = 'ciport-agent-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * The real gateway with no targets of its own (every target is an agent's), its data (CA, SQLite
 * store) in `dataDir`: a gateway started again on the same `dataDir` and `port` has the same CA
 * and knows the same agents. `issuer` (a fixture issuer's URL) lets its GitLab-kind tokens open
 * sessions to AGENT_TARGETS; `server` adds to the config's `server:` section. `close()` stops it
 * at once, as a crash would.
 */
export function startAgentGateway(
  input: { dataDir: string; port?: number; issuer?: string; server?: Record<string, unknown> },
  options: StartGatewayOptions = {},
): Promise<RunningGateway> {
  const doc = {
    listen: `127.0.0.1:${input.port ?? 0}`,
    data_dir: input.dataDir,
    admin_tokens: [{ env: 'AGENT_TEST_ADMIN' }],
    server: { ...input.server },
    issuers: input.issuer
      ? [{ name: 'gitlab', kind: 'gitlab', issuer: input.issuer, audience: 'ciport' }]
      : [],
    rules: input.issuer ? [{ name: 'agents', issuer: 'gitlab', allow: AGENT_TARGETS }] : [],
  };
  return startTestGateway(gatewayConfig(doc, { AGENT_TEST_ADMIN: ADMIN }), options);
}

/** Everything the gateway's store files in `dataDir` hold, as text (no token or secret may be in it). */
export function storeText(dataDir: string): string {
  const file = join(dataDir, DEFAULT_SQLITE_FILE);
  return [file, `${file}-wal`]
    .filter((f) => existsSync(f))
    .map((f) => readFileSync(f).toString('latin1'))
    .join('\n');
}

export function api(
  gw: { url: string; caPem: string | undefined },
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
