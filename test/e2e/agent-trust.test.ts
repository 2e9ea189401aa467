// Review findings on the agent trust boundary (docs/agent.md, "What an agent is trusted with").
// A real gateway (in process, SQLite), a real agent `dc-trust` (`ciport agent`, bound to `pg`, a
// throwaway SCRAM PostgreSQL) and a rogue agent `dc-rogue` (in process, bound to `other` only, so
// the test can push made-up events into its outbox like a compromised agent would).
// - Forged events (http.request, credential.*) about a session or target the gateway never routed
//   to the rogue are refused: not recorded, acknowledged, one bounded `agent.event_refused`.
//   Its events about what it did carry are recorded, with agent_id.
// - Made-up target names: at most MAX_REFUSED_NAMES audited one by one, then one aggregated count.
// - `query_audit: false` in an agent's config does not stop the gateway's query events.
// - An agent re-advertising its bound postgres target as tcp is refused for it (pinned protocol).
// - `ciport agent` survives SIGHUP (logged), keeps its connection.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { loadAgentConfig } from '../../src/agent/config.js';
import { MAX_REFUSED_NAMES } from '../../src/gateway/agents/hub.js';
import type { RunningGateway } from '../../src/gateway/server.js';
import { baseEnv, ensureBuilt, runCli, spawnCli } from '../fixtures/cli.js';
import { freePort } from '../fixtures/free-port.js';
import { gatewayConfig, startTestGateway } from '../fixtures/gateway.js';
import { FixtureIssuer } from '../fixtures/oidc-issuer.js';
import { type PgServer, startPgServer } from '../fixtures/pg-server.js';
import { auditedStatements } from '../fixtures/queries.js';
import { waitFor } from '../fixtures/wait-for.js';

const dir = mkdtempSync(join(tmpdir(), 'ciport-e2e-trust-'));
const ADMIN = `admin-${Math.random().toString(36).slice(2)}`;
const APP_PASSWORD = `app-${Math.random().toString(36).slice(2)}-pw`;
const logLines: string[] = [];

let gateway: RunningGateway;
let issuer: FixtureIssuer;
let pg: PgServer;
let token: string;
let upstream: Server;
let upstreamPort = 0;
let trusted: ReturnType<typeof spawnCli> | undefined;
let rogue: Agent | undefined;

const adminEnv = () =>
  baseEnv({ CIPORT_GATEWAY: gateway.url, CIPORT_CA_FILE: gateway.caFile, CIPORT_ADMIN_TOKEN: ADMIN });
const jobEnv = () =>
  baseEnv({
    CIPORT_GATEWAY: gateway.url,
    CIPORT_CA_FILE: gateway.caFile,
    CIPORT_ID_TOKEN: token,
    PSQLRC: '/dev/null',
    PGPASSFILE: '/dev/null',
    PGCONNECT_TIMEOUT: '10',
  });

async function enroll(name: string, targets: string): Promise<string> {
  const r = await runCli(['agents', 'enroll', '--name', name, '--targets', targets], { env: adminEnv() });
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  return r.stdout.trim();
}

/** The trusted agent's config: `pg` as postgres (query_audit off in its config) or as tcp. */
function writeTrustedConfig(protocol: 'postgres' | 'tcp'): string {
  const file = join(dir, 'dc-trust.yaml');
  const pgTarget =
    protocol === 'postgres'
      ? `  - {name: pg, protocol: postgres, address: "127.0.0.1:${pg.port}", database: app, query_audit: false, query_max_length: 16, credentials: {user: app, password: {env: APP_PW}}}`
      : `  - {name: pg, protocol: tcp, address: "127.0.0.1:${pg.port}"}`;
  writeFileSync(
    file,
    [
      `gateway: ${gateway.url}`,
      `ca_file: ${gateway.caFile}`,
      'name: dc-trust',
      `data_dir: ${join(dir, 'dc-trust')}`,
      'enrollment_token: {env: CIPORT_ENROLLMENT_TOKEN}',
      'targets:',
      pgTarget,
      '',
    ].join('\n'),
  );
  return file;
}

function startTrusted(file: string, enrollment = ''): ReturnType<typeof spawnCli> {
  return spawnCli(['agent', '--config', file], {
    env: baseEnv({ CIPORT_ENROLLMENT_TOKEN: enrollment, APP_PW: APP_PASSWORD }),
    timeoutMs: 600_000,
  });
}

const connectionOf = (name: string) => gateway.agents.hub.list().find((c) => c.name === name);
const audit = () => gateway.store.auditEvents({ limit: 10_000 });
const ofType = async (type: string) => (await audit()).filter((e) => e.type === type);

beforeAll(async () => {
  const built = ensureBuilt();
  issuer = await FixtureIssuer.start({ kind: 'gitlab' });
  pg = await startPgServer({ roles: [{ name: 'app', password: APP_PASSWORD }], databases: { app: 'app' } });
  upstream = createServer((socket) => {
    socket.on('error', () => {});
    socket.end('other-upstream\n');
  });
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
  upstreamPort = (upstream.address() as { port: number }).port;
  gateway = await startTestGateway(
    gatewayConfig(
      {
        listen: `127.0.0.1:${await freePort()}`,
        data_dir: join(dir, 'gw'),
        store: { sqlite: { path: join(dir, 'gw', 'ciport.db') } },
        admin_tokens: [{ env: 'ADMIN' }],
        sessions: { default_ttl: '15m', lease_timeout: '5s', rate_limit: { per_minute: 10000, burst: 1000 } },
        issuers: [{ name: 'gitlab', kind: 'gitlab', issuer: issuer.url, audience: 'ciport' }],
        rules: [{ name: 'main', issuer: 'gitlab', when: { ref_protected: true }, allow: ['pg', 'other'] }],
      },
      { ADMIN },
    ),
    { logLines },
  );
  token = await issuer.mint({}, { preset: 'gitlab-main', audience: 'ciport' });
  await built;

  trusted = startTrusted(writeTrustedConfig('postgres'), await enroll('dc-trust', 'pg'));
  await waitFor(() => gateway.agents.hub.serves('pg'), 20_000, 'dc-trust');

  // The rogue: bound to `other`, advertises `pg` too, a name with terminal escapes and more
  // made-up names than the gateway audits one by one.
  const rogueFile = join(dir, 'dc-rogue.yaml');
  writeFileSync(
    rogueFile,
    [
      `gateway: ${gateway.url}`,
      `ca_file: ${gateway.caFile}`,
      'name: dc-rogue',
      `data_dir: ${join(dir, 'dc-rogue')}`,
      'enrollment_token: {env: CIPORT_ENROLLMENT_TOKEN}',
      'targets:',
      `  - {name: other, protocol: tcp, address: "127.0.0.1:${upstreamPort}"}`,
      '',
    ].join('\n'),
  );
  const rogueToken = await enroll('dc-rogue', 'other');
  const base = loadAgentConfig(rogueFile, { env: { CIPORT_ENROLLMENT_TOKEN: rogueToken } });
  const tcp = base.targets[0] as (typeof base.targets)[number];
  const madeUp = [
    {
      ...tcp,
      name: `evil${String.fromCharCode(27)}[2J${String.fromCharCode(27)}]0;pwn${String.fromCharCode(7)}`,
    },
    { ...tcp, name: 'pg' },
    ...Array.from({ length: 50 }, (_, i) => ({ ...tcp, name: `fake-${i}` })),
  ];
  rogue = new Agent(
    { ...base, targets: [...base.targets, ...madeUp] },
    { env: { CIPORT_ENROLLMENT_TOKEN: rogueToken } },
  );
  await rogue.start();
  await waitFor(() => connectionOf('dc-rogue') !== undefined, 20_000, 'dc-rogue');
}, 180_000);

afterAll(async () => {
  await rogue?.close();
  trusted?.child.kill('SIGTERM');
  await trusted?.result;
  await gateway?.close();
  await issuer?.close();
  await pg?.stop();
  upstream?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function psqlJob(sql: string) {
  const r = await runCli(['exec', 'pg', '--', 'sh', '-c', `psql "$DATABASE_URL" -tAc "${sql}"`], {
    env: jobEnv(),
    timeoutMs: 30_000,
  });
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  const [session] = await gateway.manager.list();
  if (!session) throw new Error('no session');
  return { stdout: r.stdout.trim(), session: session.id };
}

describe('agent trust boundary (review findings)', () => {
  it('ciport agent logs SIGHUP and keeps running on the same connection', async () => {
    const before = connectionOf('dc-trust')?.connection;
    expect(before).toBeDefined();
    trusted?.child.kill('SIGHUP');
    await waitFor(() => (trusted?.stderr() ?? '').includes('SIGHUP ignored'), 5_000, 'the SIGHUP log line');
    await new Promise((r) => setTimeout(r, 500));
    expect(trusted?.child.exitCode).toBeNull();
    expect(trusted?.child.signalCode).toBeNull();
    expect(connectionOf('dc-trust')?.connection).toBe(before);
    // Once per signal.
    trusted?.child.kill('SIGHUP');
    await waitFor(
      () => (trusted?.stderr() ?? '').split('SIGHUP ignored').length === 3,
      5_000,
      'the second SIGHUP log line',
    );
    expect((await psqlJob('select 1')).stdout).toBe('1');
  });

  it('query events are written although the agent advertises query_audit: false and a short bound', async () => {
    const statement = "select 'a statement longer than sixteen bytes' as s";
    const { stdout, session } = await psqlJob(statement);
    expect(stdout).toBe('a statement longer than sixteen bytes');
    const queries = (await ofType('query')).filter(
      (e) => (e.data as { session: string }).session === session,
    );
    expect(queries).toHaveLength(1);
    // Not cut at the agent's 16 bytes: the gateway's default bound (4096) applies.
    expect(queries[0]?.data).toMatchObject({ exit: 'dc-trust', target: 'pg' });
    const statements = auditedStatements(queries);
    expect(statements.map((s) => s.statement)).toEqual([statement]);
    expect(statements[0]?.truncated).not.toBe(true);
  });

  it('a rogue agent cannot write events about sessions or targets it did not carry', async () => {
    const agent = rogue as Agent;
    const rogueId = agent.agentId as string;
    const { session } = await psqlJob('select 2');
    // A session of its own: one connection to `other` through the rogue (its events about that
    // connection are legitimate).
    const own = await runCli(
      ['exec', 'other', '--', 'sh', '-c', 'socat -u TCP:127.0.0.1:$CIPORT_OTHER_PORT - | grep .'],
      { env: jobEnv(), timeoutMs: 30_000 },
    );
    expect(own.stdout.trim()).toBe('other-upstream');
    expect(own.code).toBe(0);
    const [ownSession] = await gateway.manager.list();
    const ownId = ownSession?.id as string;
    expect(ownId).not.toBe(session);

    const forged = (path: string, s: string, target: string) => ({
      session: s,
      connection: 'con_forged',
      target,
      method: 'DELETE',
      path,
      status: 200,
      bytes_in: 1,
      bytes_out: 1,
      duration_ms: 1,
    });
    // The job's session, on the target dc-trust carried (not bound to the rogue) ...
    agent.outbox.push('http.request', forged('/admin/users/all', session, 'pg'));
    agent.outbox.push('credential.revoked', { session, target: 'pg', role: 'app', reason: 'session_ended' });
    agent.outbox.push('credential.created', {
      session,
      target: 'pg',
      role: 'postgres',
      granted: ['superuser'],
    });
    // ... on its own bound target, but that session never went through it ...
    agent.outbox.push('credential.created', { session, target: 'other', role: 'x', granted: ['superuser'] });
    // ... made-up sessions and targets, many of them.
    for (let i = 0; i < 300; i++)
      agent.outbox.push('http.request', forged(`/f${i}`, `ses_made_up_${i}`, `t${i}`));
    // Its own session on its own target: recorded.
    agent.outbox.push('http.request', forged('/legit', ownId, 'other'));
    await waitFor(() => agent.outbox.pending === 0, 20_000, 'the rogue outbox to be acknowledged');

    const events = await audit();
    const fromRogue = events.filter((e) =>
      String((e.data as { agent_event?: string }).agent_event ?? '').startsWith(`${rogueId}:`),
    );
    expect(fromRogue.map((e) => [e.type, (e.data as { path?: string }).path])).toEqual([
      ['http.request', '/legit'],
    ]);
    expect(fromRogue[0]?.data).toMatchObject({
      session: ownId,
      target: 'other',
      agent: 'dc-rogue',
      agent_id: rogueId,
    });
    expect(events.some((e) => (e.data as { path?: string }).path === '/admin/users/all')).toBe(false);
    expect(
      events.filter(
        (e) => e.type.startsWith('credential.') && (e.data as { session?: string }).session === session,
      ),
    ).toEqual([]);
    // 304 refused events, one audit event (the window's first; the rest are counted at its end).
    const refused = events.filter((e) => e.type === 'agent.event_refused');
    expect(refused).toHaveLength(1);
    expect(refused[0]?.data).toMatchObject({
      agent: 'dc-rogue',
      agent_id: rogueId,
      count: 1,
      sample_type: 'http.request',
      sample_session: session,
      sample_target: 'pg',
    });
    expect(
      logLines.filter((l) => l.includes('agent reported an event about a session or target')),
    ).toHaveLength(1);
    const metrics = await gateway.metrics.registry.metrics();
    expect(metrics).toContain('ciport_agent_events_total{type="http.request",outcome="refused"} 301');
    expect(metrics).toContain('ciport_agent_events_total{type="credential.created",outcome="refused"} 2');
  });

  it('made-up target names are audited one by one only up to a bound, then counted once', async () => {
    const rogueId = (rogue as Agent).agentId as string;
    const refused = (await ofType('agent.target_refused')).filter(
      (e) => (e.data as { agent_id: string }).agent_id === rogueId,
    );
    const single = refused.filter((e) => (e.data as { target: string }).target !== '*');
    expect(single).toHaveLength(MAX_REFUSED_NAMES);
    const aggregated = refused.filter((e) => (e.data as { target: string }).target === '*');
    expect(aggregated).toHaveLength(1);
    expect(aggregated[0]?.data).toMatchObject({ reason: 'too_many_names', distinct: 1 });
    // The escape sequence is stored escaped, not as control characters.
    const names = single.map((e) => (e.data as { target: string }).target);
    expect(names[0]).toBe('evil\\x1b[2j\\x1b]0;pwn\\x07');
    expect([...names.join('')].some((c) => c.charCodeAt(0) < 0x20)).toBe(false);
    expect(names).toContain('pg');
  });

  it('an agent re-advertising its bound postgres target as tcp is refused for it', async () => {
    const child = trusted as ReturnType<typeof spawnCli>;
    child.child.kill('SIGTERM');
    expect((await child.result).code).toBe(0);
    await waitFor(() => connectionOf('dc-trust') === undefined, 10_000, 'dc-trust gone');
    trusted = startTrusted(writeTrustedConfig('tcp'));
    await waitFor(() => connectionOf('dc-trust') !== undefined, 20_000, 'dc-trust back');
    expect(connectionOf('dc-trust')).toMatchObject({ targets: [], refused: ['pg'] });
    expect(gateway.agents.hub.serves('pg')).toBe(false);
    // The refusal is audited without the agent waiting for it: the commit may land just after.
    const refusalOf = async () =>
      (await ofType('agent.target_refused')).find((e) => (e.data as { agent: string }).agent === 'dc-trust');
    await waitFor(async () => (await refusalOf()) !== undefined, 5_000, 'the refusal event');
    const refusal = await refusalOf();
    expect(refusal?.data).toMatchObject({
      target: 'pg',
      reason: 'protocol_changed',
      pinned: 'postgres',
      advertised: 'tcp',
    });
    // Nothing of `pg` is routed to it: no tunnel without the query audit the gateway pinned.
    await expect(gateway.agents.hub.open('pg')).rejects.toMatchObject({ code: 'CIPORT_E_NO_AGENT' });
  });
});
