// ciport for the peer table, with its defaults (TLS on, audit on, query audit on): a gateway
// that exits itself to a `postgres` target with injected credentials and to raw `tcp` targets
// (PostgreSQL's port and the iperf3 server), an agent enrolled through the admin API that
// serves the same three targets under its own names, and one `ciport open` for all six.
// Gateway, agent and client are separate processes, started and stopped by PID.
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { GatewayClient } from '../src/client/index.js';
import { DevSigner, mintToken } from '../src/identity/index.js';
import type { Processes } from './proc.js';
import { nodeFlags } from './stats.js';

const ROOT = new URL('../../', import.meta.url).pathname;
const BIN = join(ROOT, 'bin/ciport.js');
const ISSUER = 'https://bench-issuer.invalid';
const AGENT = 'bench';

export interface CiportPorts {
  /** postgres:// URL of the `postgres` target (one-time password) and the host/port of tcp targets. */
  db: string;
  dbTcp: { host: string; port: number };
  bulk: { host: string; port: number };
  agentDb: string;
  agentDbTcp: { host: string; port: number };
  agentBulk: { host: string; port: number };
  /** Gateway, client and agent: the port's CPU. */
  pids: number[];
  versions: string;
}

async function lineMatching(input: Readable, re: RegExp, timeoutMs = 30_000): Promise<RegExpExecArray> {
  const rl = createInterface({ input });
  const timer = setTimeout(() => rl.close(), timeoutMs);
  try {
    for await (const line of rl) {
      const m = re.exec(line);
      if (m) return m;
    }
  } finally {
    clearTimeout(timer);
    rl.close();
  }
  throw new Error(`no line matching ${re} within ${timeoutMs / 1000} s`);
}

export async function startCiport(
  procs: Processes,
  dir: string,
  t: { pg: number; iperf: number; database: string; user: string; password: string },
): Promise<CiportPorts> {
  const signer = await DevSigner.ephemeral();
  writeFileSync(join(dir, 'jwks.json'), JSON.stringify(signer.jwks()));
  const admin = randomBytes(24).toString('base64url');
  const creds = `database: ${t.database}, credentials: {user: ${t.user}, password: {env: BENCH_PG_PW}}`;
  const agentTargets = ['agent-db', 'agent-db-tcp', 'agent-bulk'];
  // Defaults everywhere (TLS, audit, query audit); only what a gateway must be told is set.
  writeFileSync(
    join(dir, 'gateway.yaml'),
    `listen: 127.0.0.1:0
data_dir: ${join(dir, 'gateway')}
admin_tokens: [{env: CIPORT_BENCH_ADMIN_TOKEN}]
issuers:
  - {name: bench, kind: gitlab, issuer: ${ISSUER}, audience: ciport-bench, jwks_file: ${join(dir, 'jwks.json')}}
targets:
  - {name: db, protocol: postgres, address: 127.0.0.1:${t.pg}, ${creds}}
  - {name: db-tcp, protocol: tcp, address: 127.0.0.1:${t.pg}}
  - {name: bulk, protocol: tcp, address: 127.0.0.1:${t.iperf}}
rules:
  - {name: bench, issuer: bench, when: {project_id: "1"}, allow: [db, db-tcp, bulk, ${agentTargets.join(', ')}]}
`,
  );
  const node = (name: string, args: string[], env: NodeJS.ProcessEnv) =>
    procs.spawn(name, process.execPath, [...nodeFlags(), '--', BIN, ...args], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
  const gateway = node('ciport gateway', ['gateway', '--config', join(dir, 'gateway.yaml')], {
    CIPORT_LOG_LEVEL: 'warn',
    CIPORT_BENCH_ADMIN_TOKEN: admin,
    BENCH_PG_PW: t.password,
  });
  const url = (await lineMatching(gateway.stderr!, /gateway listening on (https:\/\/\S+)/))[1]!;
  gateway.stderr!.pipe(process.stderr);
  const caFile = join(dir, 'gateway/ca.crt');
  for (let i = 0; i < 100 && !existsSync(caFile); i++) await sleep(50);

  // The agent: enrolled through the admin API, its own config names the targets it serves.
  const client = new GatewayClient({ url: new URL(url), ca: [readFileSync(caFile, 'utf8')] });
  let agentPid: number;
  try {
    const enrolled = await client.api('POST', '/v1/agents/enroll', {
      bearer: admin,
      body: { name: AGENT, targets: agentTargets },
    });
    writeFileSync(
      join(dir, 'agent.yaml'),
      `gateway: ${url}
ca_file: ${caFile}
name: ${AGENT}
data_dir: ${join(dir, 'agent')}
enrollment_token: {env: CIPORT_ENROLLMENT_TOKEN}
targets:
  - {name: agent-db, protocol: postgres, address: 127.0.0.1:${t.pg}, ${creds}}
  - {name: agent-db-tcp, protocol: tcp, address: 127.0.0.1:${t.pg}}
  - {name: agent-bulk, protocol: tcp, address: 127.0.0.1:${t.iperf}}
`,
    );
    const agent = node('ciport agent', ['agent', '--config', join(dir, 'agent.yaml')], {
      CIPORT_LOG_LEVEL: 'warn',
      CIPORT_ENROLLMENT_TOKEN: (enrolled.body as { token: string }).token,
      BENCH_PG_PW: t.password,
    });
    agentPid = agent.pid!;
    await lineMatching(agent.stderr!, new RegExp(`^ciport: agent ${AGENT} \\(.*\\) serving `));
    agent.stderr!.pipe(process.stderr);
    let up = false;
    for (let i = 0; i < 300 && !up; i++) {
      const list = (await client.api('GET', '/v1/agents', { bearer: admin })).body as Array<{
        name: string;
        connections: Array<{ targets: string[] }>;
      }>;
      up = list.some(
        (a) =>
          a.name === AGENT && a.connections.some((c) => agentTargets.every((n) => c.targets.includes(n))),
      );
      if (!up) await sleep(50);
    }
    if (!up) throw new Error('the agent did not connect to the gateway within 15 s');
  } finally {
    client.close();
  }

  const token = await mintToken(
    signer,
    ISSUER,
    { project_id: '1', job_project_id: '1' },
    { audience: 'ciport-bench', ttlMs: 6 * 3_600_000 },
  );
  const envFile = join(dir, 'port.env');
  const open = node(
    'ciport open',
    [
      'open',
      'db',
      'db-tcp',
      'bulk',
      ...agentTargets,
      '--env-file',
      envFile,
      '--state',
      join(dir, 'state.json'),
    ],
    { CIPORT_GATEWAY: url, CIPORT_CA_FILE: caFile, CIPORT_ID_TOKEN: token },
  );
  open.stderr!.pipe(process.stderr);
  for (let i = 0; i < 300 && !existsSync(envFile); i++) await sleep(50);
  if (!existsSync(envFile)) throw new Error('ciport open did not become ready within 15 s');
  await sleep(100);
  const env = Object.fromEntries(
    readFileSync(envFile, 'utf8')
      .split('\n')
      .filter((l) => l.includes('='))
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1).replace(/^'|'$/g, '')]),
  ) as Record<string, string>;
  const hostPort = (name: string) => {
    const host = env[`CIPORT_${name}_HOST`];
    const port = Number(env[`CIPORT_${name}_PORT`]);
    if (!host || !port) throw new Error(`ciport open wrote no CIPORT_${name}_HOST/PORT`);
    return { host, port };
  };
  const urlOf = (name: string) => {
    const u = env[`CIPORT_${name}_URL`];
    if (!u) throw new Error(`ciport open wrote no CIPORT_${name}_URL`);
    return u;
  };
  let version = '?';
  try {
    version = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    // unknown
  }
  return {
    db: urlOf('DB'),
    dbTcp: hostPort('DB_TCP'),
    bulk: hostPort('BULK'),
    agentDb: urlOf('AGENT_DB'),
    agentDbTcp: hostPort('AGENT_DB_TCP'),
    agentBulk: hostPort('AGENT_BULK'),
    pids: [gateway.pid!, open.pid!, agentPid],
    versions: `ciport ${version}`,
  };
}
