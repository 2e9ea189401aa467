// Issue 10, item 2: a rogue agent cannot take over a target. The gateway (in process, SQLite)
// binds each agent to the targets named at enrollment. Agent A (`ciport agent`, bound to
// `ledger`) serves ledger; agent B (bound to `reports` only) also advertises `ledger`, with its
// own upstream listener that counts connections. 20 jobs (`ciport exec ledger -- socat …`) all
// reach A's upstream, none B's; the refusal is audited (bounded across B's reconnects) and
// logged on both sides; B still serves `reports`. An admin's `ciport agents targets` takes
// effect on live connections, both ways. Papercuts: a revoked agent re-enrolls with a new
// token; `no agent serves` reaches the job as CIPORT_E_NO_AGENT with exit code 5.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningGateway } from '../../src/gateway/server.js';
import { agentYamlHead } from '../fixtures/agent-yaml.js';
import { baseEnv, ensureBuilt, LAUNCHER, runCli } from '../fixtures/cli.js';
import { freePort } from '../fixtures/free-port.js';
import { gatewayConfig, startTestGateway } from '../fixtures/gateway.js';
import { e2eGatewayDoc } from '../fixtures/gateway-doc.js';
import { FixtureIssuer } from '../fixtures/oidc-issuer.js';
import { waitFor } from '../fixtures/wait-for.js';

const dir = mkdtempSync(join(tmpdir(), 'ciport-e2e-binding-'));
const ADMIN = `admin-${Math.random().toString(36).slice(2)}`;

let gateway: RunningGateway;
let issuer: FixtureIssuer;
let token: string;
const logLines: string[] = [];

/** An upstream that greets each connection with its name and counts connections. */
interface Upstream {
  name: string;
  port: number;
  connections: number;
  server: Server;
}
const upstreams: Upstream[] = [];

async function upstream(name: string): Promise<Upstream> {
  const u: Upstream = { name, port: 0, connections: 0, server: createServer() };
  u.server.on('connection', (socket) => {
    u.connections++;
    socket.on('error', () => {});
    socket.end(`${name}\n`);
  });
  await new Promise<void>((resolve) => u.server.listen(0, '127.0.0.1', resolve));
  u.port = (u.server.address() as { port: number }).port;
  upstreams.push(u);
  return u;
}

interface AgentProcess {
  child: ChildProcess;
  stderr: () => string;
  exited: Promise<number | null>;
}
const agents: AgentProcess[] = [];

function startAgent(name: string, targets: Record<string, Upstream>, enrollment: string | undefined) {
  const config = join(dir, `${name}.yaml`);
  writeFileSync(
    config,
    [
      ...agentYamlHead(gateway, name, join(dir, name), Boolean(enrollment)),
      ...Object.entries(targets).map(
        ([t, u]) => `  - {name: ${t}, protocol: tcp, address: "127.0.0.1:${u.port}"}`,
      ),
      '',
    ].join('\n'),
  );
  const child = spawn(process.execPath, ['--', LAUNCHER, 'agent', '--config', config], {
    env: baseEnv(enrollment ? { CIPORT_ENROLLMENT_TOKEN: enrollment } : {}),
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (c: Buffer) => {
    stderr += c.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const a = { child, stderr: () => stderr, exited };
  agents.push(a);
  return a;
}

async function stop(a: AgentProcess): Promise<void> {
  if (a.child.exitCode === null && a.child.signalCode === null) a.child.kill('SIGTERM');
  await a.exited;
}

const adminEnv = () =>
  baseEnv({ CIPORT_GATEWAY: gateway.url, CIPORT_CA_FILE: gateway.caFile, CIPORT_ADMIN_TOKEN: ADMIN });
const jobEnv = () =>
  baseEnv({ CIPORT_GATEWAY: gateway.url, CIPORT_CA_FILE: gateway.caFile, CIPORT_ID_TOKEN: token });

async function enroll(
  name: string,
  targets: string,
): Promise<{ token: string; name: string; targets: string[] }> {
  const r = await runCli(['agents', 'enroll', '--name', name, '--targets', targets, '--json'], {
    env: adminEnv(),
  });
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout);
}

/** One job: a session for `target`, one connection through it; what the upstream said. */
async function job(target: string) {
  const env = `CIPORT_${target.toUpperCase()}_PORT`;
  // grep fails the command when the upstream said nothing (the tunnel was refused).
  return runCli(['exec', target, '--', 'sh', '-c', `socat -u TCP:127.0.0.1:$${env} - | grep .`], {
    env: jobEnv(),
    timeoutMs: 30_000,
  });
}

/** `n` jobs, 4 at a time; the greetings they printed. */
async function jobs(target: string, n: number): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < n; i += 4) {
    const batch = await Promise.all(Array.from({ length: Math.min(4, n - i) }, () => job(target)));
    for (const r of batch) {
      expect(r.code, r.stderr).toBe(0);
      out.push(r.stdout.trim());
    }
  }
  return out;
}

const connectionOf = (name: string) => gateway.agents.hub.list().find((c) => c.name === name);
const auditOf = async (type: string) =>
  (await gateway.store.auditEvents({ limit: 10_000 })).filter((e) => e.type === type);

let aLedger: Upstream;
let bLedger: Upstream;
let bReports: Upstream;
let agentB: AgentProcess;
let tokenB = '';

beforeAll(async () => {
  const built = ensureBuilt();
  issuer = await FixtureIssuer.start({ kind: 'gitlab' });
  aLedger = await upstream('A-ledger');
  bLedger = await upstream('B-ledger');
  bReports = await upstream('B-reports');
  gateway = await startTestGateway(
    gatewayConfig(
      {
        listen: `127.0.0.1:${await freePort()}`,
        ...e2eGatewayDoc(join(dir, 'gw'), issuer.url, { adminEnv: 'ADMIN' }),
        rules: [
          {
            name: 'main',
            issuer: 'gitlab',
            when: { ref_protected: true },
            allow: ['ledger', 'reports', 'orphan'],
          },
        ],
      },
      { ADMIN },
    ),
    { logLines },
  );
  token = await issuer.mint({}, { preset: 'gitlab-main', audience: 'ciport' });
  await built;

  const a = await enroll('dc-a', 'ledger');
  expect(a).toMatchObject({ name: 'dc-a', targets: ['ledger'] });
  expect(Object.keys(a).sort()).toEqual(['expires_at', 'name', 'targets', 'token']);
  const b = await enroll('dc-b', 'reports');
  tokenB = b.token;
  startAgent('dc-a', { ledger: aLedger }, a.token);
  await waitFor(() => gateway.agents.hub.serves('ledger'), 20_000, 'agent A');
  agentB = startAgent('dc-b', { ledger: bLedger, reports: bReports }, b.token);
  await waitFor(() => connectionOf('dc-b') !== undefined, 20_000, 'agent B');
}, 120_000);

afterAll(async () => {
  await Promise.all(agents.map(stop));
  await gateway?.close();
  await issuer?.close();
  for (const u of upstreams) u.server.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('agent target binding (issue 10, item 2)', () => {
  it('a rogue agent advertising a bound target of another gets none of its sessions', async () => {
    expect(connectionOf('dc-b')).toMatchObject({ targets: ['reports'], refused: ['ledger'] });
    const said = await jobs('ledger', 20);
    expect(said).toEqual(Array(20).fill('A-ledger'));
    expect(aLedger.connections).toBe(20);
    expect(bLedger.connections).toBe(0);
    // B still serves what it is bound to.
    expect(await jobs('reports', 2)).toEqual(['B-reports', 'B-reports']);
    expect(bReports.connections).toBe(2);
  }, 180_000);

  it('the refusal is audited once, logged by the gateway, and the agent says it was refused', async () => {
    const refused = await auditOf('agent.target_refused');
    expect(refused.map((e) => e.data)).toEqual([
      expect.objectContaining({ agent: 'dc-b', agent_id: connectionOf('dc-b')?.agent, target: 'ledger' }),
    ]);
    expect(
      logLines.some(
        (l) => /"level":40/.test(l) && /not bound to: refused/.test(l) && /"target":"ledger"/.test(l),
      ),
    ).toBe(true);
    await waitFor(
      () => /the gateway refused targets this agent is not bound to/.test(agentB.stderr()),
      5_000,
      'B log',
    );
    const line = agentB
      .stderr()
      .split('\n')
      .find((l) => l.includes('the gateway refused targets'));
    expect(JSON.parse(line ?? '{}')).toMatchObject({ service: 'ciport-agent', refused: ['ledger'] });
    // The advertisement of a refused target is not taken as the target's: ledger is still A's only.
    expect(
      gateway.agents.hub
        .list()
        .filter((c) => c.targets.includes('ledger'))
        .map((c) => c.name),
    ).toEqual(['dc-a']);
  }, 180_000);

  it('a reconnecting rogue agent does not add audit events for the same refusal', async () => {
    const before = connectionOf('dc-b')?.connection;
    await stop(agentB);
    agentB = startAgent('dc-b', { ledger: bLedger, reports: bReports }, undefined);
    await waitFor(() => (connectionOf('dc-b')?.connection ?? before) !== before, 20_000, 'B back');
    // agent.connected is audited without the link waiting for its commit: wait for it, then
    // check that the refusal was not audited again.
    await waitFor(async () => (await auditOf('agent.connected')).length >= 3, 5_000, 'agent.connected');
    expect(await auditOf('agent.target_refused')).toHaveLength(1);
    expect(await auditOf('agent.connected')).toHaveLength(3);
  }, 180_000);

  it('agents list shows bindings, served and refused targets (JSON and table)', async () => {
    const r = await runCli(['agents', 'list', '--json'], { env: adminEnv() });
    expect(r.code).toBe(0);
    const list = JSON.parse(r.stdout) as Array<Record<string, unknown>>;
    expect(list.map((a) => [a.name, a.targets, a.revoked_at])).toEqual([
      ['dc-a', ['ledger'], null],
      ['dc-b', ['reports'], null],
    ]);
    for (const a of list) expect(a).toEqual(expect.objectContaining({ id: expect.stringMatching(/^agt_/) }));
    expect((list[1]?.connections as Array<Record<string, unknown>> | undefined)?.[0]).toMatchObject({
      targets: ['reports'],
      refused: ['ledger'],
    });
    const table = await runCli(['agents', 'list'], { env: adminEnv() });
    expect(table.stdout).toMatch(/dc-a\s+connected\(1\)\s+ledger\s+ledger\s+-/);
    expect(table.stdout).toMatch(/dc-b\s+connected\(1\)\s+reports\s+reports\s+ledger/);
  }, 180_000);

  it('an admin binding change takes effect on the live connections, audited', async () => {
    const add = await runCli(['agents', 'targets', 'dc-b', '--add', 'ledger', '--json'], { env: adminEnv() });
    expect(add.code, add.stderr).toBe(0);
    expect(JSON.parse(add.stdout).agents).toEqual([
      expect.objectContaining({ name: 'dc-b', targets: ['ledger', 'reports'] }),
    ]);
    expect(connectionOf('dc-b')).toMatchObject({ targets: ['ledger', 'reports'], refused: [] });
    const said = await jobs('ledger', 8);
    expect(said).toContain('B-ledger');
    expect(bLedger.connections).toBeGreaterThan(0);
    const changed = await auditOf('agent.targets_changed');
    expect(changed.at(-1)?.data).toMatchObject({
      agent: 'dc-b',
      before: ['reports'],
      targets: ['ledger', 'reports'],
    });

    const remove = await runCli(['agents', 'targets', 'dc-b', '--remove', 'ledger'], { env: adminEnv() });
    expect(remove.code, remove.stderr).toBe(0);
    expect(remove.stdout).toMatch(/\(dc-b\): reports/);
    const sofar = bLedger.connections;
    expect(await jobs('ledger', 8)).toEqual(Array(8).fill('A-ledger'));
    expect(bLedger.connections).toBe(sofar);
    expect(await auditOf('agent.targets_changed')).toHaveLength(2);
    // Refused again on the live connection, but the event is bounded per agent and target.
    expect(connectionOf('dc-b')).toMatchObject({ targets: ['reports'], refused: ['ledger'] });
    // No wildcard, no empty binding at enrollment.
    const star = await runCli(['agents', 'enroll', '--name', 'dc-c', '--targets', '*'], { env: adminEnv() });
    expect(star.code).toBe(2);
    expect(star.stderr).toMatch(/no wildcard/);
  }, 180_000);
});

describe('papercuts', () => {
  it('"no agent serves" reaches the job as CIPORT_E_NO_AGENT (503, retryable) and exec exits 5', async () => {
    const r = await job('orphan');
    expect(r.code).toBe(5);
    expect(r.stderr).toMatch(/503 CIPORT_E_NO_AGENT\): no agent serves target orphan right now/);
    expect(r.stderr).toMatch(/exit 5 \(unreachable, retryable\): no agent served orphan/);
    expect(r.stderr).not.toMatch(/CIPORT_E_INTERNAL/);
  }, 180_000);

  it('a revoked agent given a new enrollment token registers again and replaces its credential file', async () => {
    const file = join(dir, 'dc-b', 'agent-credential.json');
    const old = JSON.parse(readFileSync(file, 'utf8')) as { id: string };
    const revoked = await runCli(['agents', 'revoke', 'dc-b'], { env: adminEnv() });
    expect(revoked.code).toBe(0);
    // Started without a token and refused: it stops at once, with a message and exit code 4.
    const code = await agentB.exited;
    expect(code).toBe(4);
    expect(agentB.stderr()).toMatch(/CIPORT_E_AGENT_UNAUTHORIZED: .*no enrollment token is configured/);
    // With the spent token of its first registration: stops too.
    const spent = startAgent('dc-b', { reports: bReports }, tokenB);
    expect(await spent.exited).toBe(4);
    expect(spent.stderr()).toMatch(/and its enrollment token .* create a new one/);
    // With a new one: registers again, replaces the file, serves.
    const fresh = await enroll('dc-b', 'reports');
    agentB = startAgent('dc-b', { reports: bReports }, fresh.token);
    await waitFor(() => connectionOf('dc-b') !== undefined, 20_000, 'B re-enrolled');
    const now = JSON.parse(readFileSync(file, 'utf8')) as { id: string };
    expect(now.id).not.toBe(old.id);
    expect(connectionOf('dc-b')?.agent).toBe(now.id);
    expect(agentB.stderr()).toMatch(/registered again with the enrollment token/);
    expect(await jobs('reports', 1)).toEqual(['B-reports']);
  }, 180_000);
});
