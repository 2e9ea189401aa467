// `ciport demo`: the whole product path in one process, with nothing outside this machine —
// a development issuer, a gateway on loopback with SQLite in a temp dir, a built-in target,
// and two simulated CI jobs (one allowed, one a fork that is denied), then the audit trail.
import { mkdtempSync, rmSync } from 'node:fs';
import { createConnection, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Writable } from 'node:stream';
import { verifyChain } from '../audit/index.js';
import { type ClientLog, Port } from '../client/index.js';
import { parseGatewayConfig } from '../config/load.js';
import { CiportError } from '../errors/index.js';
import { startGateway } from '../gateway/server.js';
import { DevIssuer, DevSigner } from '../identity/index.js';
import { createLogger } from '../log/logger.js';

export interface DemoIo {
  stdout: Writable;
  /** Prefix section headings (colour is the caller's business). */
  heading: (text: string) => string;
}

const AUDIENCE = 'ciport-demo';
const TARGET = 'ledger-db';

/** The built-in target: a line service on loopback that answers each line it is sent. */
async function startLedgerService(): Promise<{ server: Server; address: string }> {
  const server = createServer((socket) => {
    socket.setEncoding('utf8');
    let buffered = '';
    socket.on('data', (chunk: string) => {
      buffered += chunk;
      for (let nl = buffered.indexOf('\n'); nl >= 0; nl = buffered.indexOf('\n')) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        socket.write(`ledger: ${line.length} bytes received, balance 42.00 EUR\n`);
      }
    });
    socket.on('error', () => socket.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return { server, address: `127.0.0.1:${port}` };
}

function demoConfig(issuerUrl: string, targetAddress: string, dataDir: string) {
  return parseGatewayConfig(
    `listen: 127.0.0.1:0
data_dir: ${JSON.stringify(dataDir)}
issuers:
  - name: dev-gitlab
    kind: gitlab
    issuer: ${issuerUrl}
    audience: ${AUDIENCE}
    dev: true
targets:
  - name: ${TARGET}
    protocol: tcp
    address: ${targetAddress}
rules:
  - name: no-forks
    deny: true
    issuer: dev-gitlab
    when: {fork: true}
  - name: ledger-main
    issuer: dev-gitlab
    when:
      project_id: "61577203"
      ref_protected: true
      ref: main
    allow: [${TARGET}]
    max_ttl: 5m
`,
    'demo.yaml',
  );
}

/** Send one line through the job's local port and read the answer. */
function talk(host: string, port: number, line: string): Promise<{ sent: number; reply: string }> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ host, port });
    let reply = '';
    socket.setEncoding('utf8');
    socket.once('connect', () => socket.write(`${line}\n`));
    socket.on('data', (chunk: string) => {
      reply += chunk;
      if (reply.includes('\n')) socket.end();
    });
    socket.once('close', () => resolve({ sent: Buffer.byteLength(line) + 1, reply: reply.trim() }));
    socket.once('error', reject);
    socket.setTimeout(10_000, () => socket.destroy(new Error('no answer within 10 s')));
  });
}

const quietLog: ClientLog = { verbose: false, warn: () => {}, info: () => {} };

export async function runDemo(io: DemoIo): Promise<number> {
  const out = (text = '') => io.stdout.write(`${text}\n`);
  const dir = mkdtempSync(join(tmpdir(), 'ciport-demo-'));
  const issuer = await DevIssuer.start({ port: 0, signer: await DevSigner.ephemeral() });
  const ledger = await startLedgerService();
  const gateway = await startGateway(demoConfig(issuer.url, ledger.address, join(dir, 'data')), {
    logger: createLogger({ level: 'silent' }),
    stderr: { write: () => true } as unknown as Writable,
    configSource: 'demo.yaml',
  });
  try {
    out(io.heading('1. The gateway'));
    out(`   listening on ${gateway.url}, store SQLite in ${dir}`);
    out(`   trusts the development issuer ${issuer.url} (never do this in production)`);
    out(
      `   target ${TARGET} (tcp) -> ${ledger.address}; rule "ledger-main": project 61577203, protected main`,
    );
    out();

    const jobEnv = (token: string) => ({
      CIPORT_GATEWAY: gateway.url,
      CIPORT_CA_FILE: gateway.caFile ?? '',
      CIPORT_ID_TOKEN: token,
    });

    out(io.heading('2. A job on protected main asks for a port'));
    const mainToken = await issuer.mint({}, { preset: 'gitlab-main', audience: AUDIENCE });
    const port = await Port.open({
      env: jobEnv(mainToken),
      targets: [{ name: TARGET, port: 0 }],
      log: quietLog,
    });
    try {
      const info = port.session.info;
      out(`   decision: allow by rule "${info.rule}", session ${info.id}, expires ${info.expires_at}`);
      out('   the job saw:');
      for (const [key, value] of Object.entries(port.env)) out(`     ${key}=${value}`);
      const bound = port.bound[0];
      if (!bound) throw new Error('no local listener was opened');
      const line = 'SELECT balance FROM accounts WHERE id = 7';
      const { sent, reply } = await talk(bound.host, bound.port, line);
      out(`   through ${bound.host}:${bound.port}: sent ${sent} bytes, got back "${reply}"`);
    } finally {
      await port.close();
    }
    out('   the command finished, so the port closed and the session ended');
    out();

    out(io.heading('3. A merge request from a fork asks for the same port'));
    const forkToken = await issuer.mint({}, { preset: 'gitlab-fork-mr', audience: AUDIENCE });
    try {
      const denied = await Port.open({
        env: jobEnv(forkToken),
        targets: [{ name: TARGET, port: 0 }],
        log: quietLog,
      });
      await denied.close();
      out('   unexpectedly allowed');
      return 1;
    } catch (err) {
      if (!(err instanceof CiportError) || err.code !== 'CIPORT_E_POLICY_DENIED') throw err;
      out(`   decision: deny (${err.code}): ${err.message}`);
    }
    out();

    out(io.heading('4. The audit trail (SHA-256 hash chain)'));
    for (const event of await gateway.store.auditEvents()) {
      const data = event.data as {
        target?: string;
        rule?: string | null;
        reason?: string;
        bytes_to_target?: number;
        bytes_from_target?: number;
      };
      const bytes =
        data.bytes_to_target === undefined
          ? undefined
          : `${data.bytes_to_target} B up, ${data.bytes_from_target} B down`;
      const detail = [data.target, data.rule && `rule ${data.rule}`, bytes, data.reason]
        .filter(Boolean)
        .join(', ');
      out(`   #${event.seq} ${event.type.padEnd(18)} ${event.hash.slice(0, 12)}…  ${detail}`);
    }
    const verdict = await verifyChain(gateway.store);
    out(`   chain: ${verdict.ok ? `intact (${verdict.count} events)` : `BROKEN at seq ${verdict.seq}`}`);
    out();
    out('Next: docs/policy.md to write rules, README.md to run a real gateway.');
    return verdict.ok ? 0 : 1;
  } finally {
    await gateway.close();
    await issuer.close();
    await new Promise<void>((resolve) => ledger.server.close(() => resolve()));
    rmSync(dir, { recursive: true, force: true });
  }
}
