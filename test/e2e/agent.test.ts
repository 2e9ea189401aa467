// End to end, issue 4: a real gateway (in process, SQLite store) with no route of its own to the
// databases, an agent started as `ciport agent` (enrolled with `ciport agents enroll`), and jobs
// running `ciport exec` with psql, redis-cli and curl. The agent injects the credentials: a
// throwaway SCRAM PostgreSQL (static user and per-session roles), a redis-server with
// --requirepass, an HTTPS API that wants a bearer token. Then `ciport agents list|revoke`.

import { type ChildProcess, execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyChain } from '../../src/audit/verify.js';
import type { RunningGateway } from '../../src/gateway/server.js';
import { makePki, startUpstream, type Upstream } from '../exits/http/helpers.js';
import { agentYamlHead } from '../fixtures/agent-yaml.js';
import { baseEnv, ensureBuilt, runCli, spawnCli } from '../fixtures/cli.js';
import { freePort } from '../fixtures/free-port.js';
import { gatewayConfig, startTestGateway } from '../fixtures/gateway.js';
import { e2eGatewayDoc } from '../fixtures/gateway-doc.js';
import { FixtureIssuer } from '../fixtures/oidc-issuer.js';
import { createDynamicAdmin } from '../fixtures/pg-dynamic-admin.js';
import { type PgServer, startPgServer } from '../fixtures/pg-server.js';
import { auditedStatements } from '../fixtures/queries.js';
import { type RedisServer, startRedis } from '../fixtures/redis-server.js';
import { waitFor } from '../fixtures/wait-for.js';

const dir = mkdtempSync(join(tmpdir(), 'ciport-e2e-agent-'));
const APP_PASSWORD = `upstream-Secret-${Math.random().toString(36).slice(2)}-pw`;
const REDIS_PASSWORD = `redis-Secret-${Math.random().toString(36).slice(2)}-pw`;
const API_TOKEN = `api-token-${Math.random().toString(36).slice(2)}-xyz`;
const ADMIN = `admin-${Math.random().toString(36).slice(2)}`;
const DYN_ADMIN_PASSWORD = `dyn-admin-${Math.random().toString(36).slice(2)}`;
const logLines: string[] = [];

let gateway: RunningGateway;
let issuer: FixtureIssuer;
let pg: PgServer;
let redis: RedisServer;
let api: Upstream;
let token: string;
let agent: { child: ChildProcess; stderr: () => string; result: Promise<unknown> } | undefined;

function execText(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(cmd, args, { env: { ...process.env, ...env } }, (err, stdout, stderr) =>
      err ? reject(new Error(`${cmd}: ${stderr || err.message}`)) : resolve(stdout),
    ),
  );
}

const adminEnv = () =>
  baseEnv({ CIPORT_GATEWAY: gateway.url, CIPORT_CA_FILE: gateway.caFile, CIPORT_ADMIN_TOKEN: ADMIN });

beforeAll(async () => {
  const built = ensureBuilt();
  issuer = await FixtureIssuer.start({ kind: 'gitlab' });
  pg = await startPgServer({ roles: [{ name: 'app', password: APP_PASSWORD }], databases: { app: 'app' } });
  await pg.sql('CREATE ROLE readonly NOLOGIN; GRANT pg_read_all_data TO readonly;');
  await createDynamicAdmin(pg, { password: DYN_ADMIN_PASSWORD, owner: 'app', grant: ['readonly'] });
  redis = await startRedis(['--requirepass', REDIS_PASSWORD]);
  const pki = makePki();
  writeFileSync(join(dir, 'api-ca.pem'), pki.caPem);
  api = await startUpstream(pki, { name: 'authorization', value: `Bearer ${API_TOKEN}` });

  // The gateway's config names no target: the rules refer to the agent's by name.
  const cfg = gatewayConfig(
    {
      listen: `127.0.0.1:${await freePort()}`,
      ...e2eGatewayDoc(join(dir, 'gw'), issuer.url, { adminEnv: 'ADMIN' }),
      // One target the gateway exits to itself: redis with the password injected there.
      targets: [
        {
          name: 'cache-gw',
          protocol: 'redis',
          address: `127.0.0.1:${redis.port}`,
          database: '2',
          credentials: { password: { env: 'REDIS_PW' } },
        },
      ],
      rules: [
        {
          name: 'main',
          issuer: 'gitlab',
          when: { project_id: '61577203', ref_protected: true },
          allow: ['db', 'db-dyn', 'cache', 'cache-gw', 'api', 'nowhere'],
          max_ttl: '30m',
        },
      ],
    },
    { ADMIN, REDIS_PW: REDIS_PASSWORD },
  );
  gateway = await startTestGateway(cfg, { logLines, sweepIntervalMs: 250 });
  token = await issuer.mint({}, { preset: 'gitlab-main', audience: 'ciport' });
  await built;

  const enrolled = await runCli(['agents', 'enroll', '--name', 'dc1', '--targets', 'db,db-dyn,cache,api'], {
    env: adminEnv(),
  });
  expect(enrolled.stderr).toBe('');
  expect(enrolled.code).toBe(0);
  const enrollment = enrolled.stdout.trim();
  expect(enrollment).toMatch(/^cpe_[A-Za-z0-9_-]{43}$/);

  const address = `127.0.0.1:${pg.port}`;
  writeFileSync(
    join(dir, 'agent.yaml'),
    [
      ...agentYamlHead(gateway, 'dc1', join(dir, 'agent')),
      `  - {name: db, protocol: postgres, address: "${address}", database: app, query_max_length: 64,`,
      '     credentials: {user: app, password: {env: APP_PW}}}',
      `  - {name: db-dyn, protocol: postgres, address: "${address}", database: app,`,
      '     credentials: {dynamic: {admin: {user: dyn_admin, password: {env: DYN_ADMIN_PW}}, grant: [readonly], owner: app}}}',
      `  - {name: cache, protocol: redis, address: "127.0.0.1:${redis.port}", credentials: {password: {env: REDIS_PW}}}`,
      `  - {name: api, protocol: http, address: "127.0.0.1:${api.port}",`,
      `     tls: {ca: {file: ${join(dir, 'api-ca.pem')}}, servername: localhost}, credentials: {token: {env: API_TOKEN}}}`,
      '',
    ].join('\n'),
  );
  agent = spawnCli(['agent', '--config', join(dir, 'agent.yaml'), '--log-level', 'debug'], {
    env: baseEnv({
      CIPORT_ENROLLMENT_TOKEN: enrollment,
      APP_PW: APP_PASSWORD,
      DYN_ADMIN_PW: DYN_ADMIN_PASSWORD,
      REDIS_PW: REDIS_PASSWORD,
      API_TOKEN,
    }),
    timeoutMs: 600_000,
  });
  await waitFor(() => gateway.agents.hub.serves('db'), 20_000, 'the agent to connect');
}, 180_000);

afterAll(async () => {
  agent?.child.kill('SIGTERM');
  await agent?.result;
  await gateway?.close();
  await issuer?.close();
  await api?.close();
  await redis?.stop();
  await pg?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const env = (extra: NodeJS.ProcessEnv = {}) =>
  baseEnv({
    CIPORT_GATEWAY: gateway.url,
    CIPORT_CA_FILE: gateway.caFile,
    CIPORT_ID_TOKEN: token,
    PSQLRC: '/dev/null',
    PGPASSFILE: '/dev/null',
    PGCONNECT_TIMEOUT: '10',
    ...extra,
  });

const exec = (targets: string[], script: string, timeoutMs = 30_000) =>
  runCli(['exec', ...targets, '--', 'sh', '-c', script], { env: env(), timeoutMs });

async function latestSession() {
  const [s] = await gateway.manager.list();
  if (!s) throw new Error('no session');
  return s;
}

async function eventsOf(session: string) {
  return (await gateway.store.auditEvents({ limit: 10_000 })).filter(
    (e) => (e.data as { session?: string }).session === session,
  );
}

describe('ciport exec through an agent', () => {
  it('psql reaches PostgreSQL with the credential the agent injects; queries are audited', async () => {
    const r = await exec(
      ['db'],
      `psql "$DATABASE_URL" -tAc 'select current_user' && env | grep -c APP_PW || true`,
    );
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout.trim().split('\n')).toEqual(['app', '0']);
    const session = await latestSession();
    const events = await eventsOf(session.id);
    const opened = events.find(
      (e) => e.type === 'connection.opened' && (e.data as { target: string }).target === 'db',
    );
    expect(opened?.data).toMatchObject({ exit: 'dc1', target: 'db' });
    const [query] = auditedStatements(events);
    expect(query?.statement).toBe('select current_user');
    expect(query?.event.data).toMatchObject({ exit: 'dc1', database: 'app' });
    expect(events.some((e) => e.type === 'connection.closed')).toBe(true);
  });

  it('a per-session role is created by the agent and dropped when the job ends', async () => {
    const r = await exec(
      ['db-dyn'],
      `psql "$DATABASE_URL" -tAc "select current_user || ' ' || shobj_description(oid, 'pg_authid') from pg_roles where rolname = current_user"`,
    );
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const [role, ...comment] = r.stdout.trim().split(' ');
    expect(role).toMatch(/^ciport_[0-9a-f]{16}$/);
    const session = await latestSession();
    // Tagged with the gateway's deployment id, which the gateway sent to the agent.
    const deployment = await gateway.store.getMeta('deployment_id');
    expect(comment.join(' ')).toBe(`ciport deployment ${deployment} session ${session.id} target db-dyn`);
    await waitFor(
      async () => (await eventsOf(session.id)).some((e) => e.type === 'credential.revoked'),
      15_000,
      'credential.revoked from the agent',
    );
    const left = await pg.sql(`select count(*) from pg_roles where rolname = '${role}'`);
    expect(String(left).trim()).toContain('0');
    const events = await eventsOf(session.id);
    const created = events.find((e) => e.type === 'credential.created');
    expect(created?.data).toMatchObject({ role, target: 'db-dyn', agent: 'dc1', granted: ['readonly'] });
    expect((created?.data as { principal?: unknown } | undefined)?.principal).toBeTruthy();
  });

  it('a revoke during pg_sleep stops the statement upstream within 2 s (static credentials, via the agent)', async () => {
    const marker = `agent_revoke_${Math.random().toString(36).slice(2, 10)}`;
    const job = spawnCli(['exec', 'db', '--', 'psql', '-c', `select pg_sleep(60) as ${marker}`], {
      env: env(),
      timeoutMs: 90_000,
    });
    const backend = async () =>
      (
        await pg.sql(
          `select pid || ':' || state from pg_stat_activity where query like '%as ${marker}' and pid <> pg_backend_pid()`,
        )
      ).trim();
    await waitFor(async () => (await backend()).endsWith(':active'), 20_000, 'pg_sleep to run');
    const session = await latestSession();
    expect(session.targets).toEqual(['db']);
    const revokedAt = Date.now();
    await gateway.manager.revoke(session.id, 'test');
    await waitFor(async () => !(await backend()).endsWith(':active'), 2_000, 'the backend to stop');
    expect(Date.now() - revokedAt).toBeLessThan(2_000);
    await job.result;
  }, 60_000);

  /** The job sets and reads a key through `target` with the port's one-time password only (in the URL). */
  async function redisThroughPort(target: string, key: string, value: string, db = '0') {
    const url = `$CIPORT_${target.toUpperCase().replace(/-/g, '_')}_URL`;
    const r = await exec(
      [target],
      `redis-cli --no-auth-warning -u "${url}" SET ${key} ${value} && redis-cli --no-auth-warning -u "${url}" GET ${key}`,
    );
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout.trim().split('\n')).toEqual(['OK', value]);
    const direct = await execText('redis-cli', [
      ...['-p', String(redis.port), '-a', REDIS_PASSWORD, '--no-auth-warning', '-n', db],
      ...['GET', key],
    ]);
    expect(direct.trim()).toBe(value);
  }

  it('redis-cli reaches a password-protected Redis without knowing the password', async () => {
    await redisThroughPort('cache', 'agent-key', 'via-agent');
  });

  it('the gateway injects Redis credentials for its own redis target too (AUTH, SELECT)', async () => {
    await redisThroughPort('cache-gw', 'gw-key', 'via-gateway', '2');
    const session = await latestSession();
    const opened = (await eventsOf(session.id)).find((e) => e.type === 'connection.opened');
    expect(opened?.data).toMatchObject({ exit: 'gateway', target: 'cache-gw' });
  });

  it('curl reaches an HTTPS API with the bearer token the agent injects; http.request is audited', async () => {
    const r = await exec(['api'], `curl -sS -o /dev/null -w '%{http_code}' "$CIPORT_API_URL/hello?x=1"`);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('200');
    expect(api.seen.at(-1)?.url).toBe('/hello?x=1');
    const session = await latestSession();
    await waitFor(
      async () => (await eventsOf(session.id)).some((e) => e.type === 'http.request'),
      10_000,
      'http.request from the agent',
    );
    const req = (await eventsOf(session.id)).find((e) => e.type === 'http.request');
    expect(req?.data).toMatchObject({
      method: 'GET',
      path: '/hello',
      status: 200,
      exit: 'dc1',
      target: 'api',
    });
  });

  it('a granted target no agent serves fails with a clear error', async () => {
    const r = await runCli(
      ['exec', 'nowhere', '--', 'bash', '-c', 'exec 3<>/dev/tcp/127.0.0.1/$CIPORT_NOWHERE_PORT; cat <&3'],
      { env: env(), timeoutMs: 20_000 },
    );
    expect(r.stderr).toMatch(/no agent serves target nowhere/);
  });

  it('agents list shows the agent connected with its targets; the audit chain verifies', async () => {
    const r = await runCli(['agents', 'list', '--json'], { env: adminEnv() });
    expect(r.code).toBe(0);
    const list = JSON.parse(r.stdout) as Array<{
      name: string;
      targets: string[];
      connections: Array<{ targets: string[] }>;
    }>;
    expect(list).toHaveLength(1);
    expect(list[0]?.name).toBe('dc1');
    expect(list[0]?.targets).toEqual(['api', 'cache', 'db', 'db-dyn']);
    expect([...(list[0]?.connections[0]?.targets ?? [])].sort()).toEqual(['api', 'cache', 'db', 'db-dyn']);
    const types = (await gateway.store.auditEvents({ limit: 10_000 })).map((e) => e.type);
    expect(types).toContain('agent.enrolled');
    expect(types).toContain('agent.connected');
    const verdict = await verifyChain(gateway.store);
    expect(verdict.ok).toBe(true);
    const metrics = await gateway.metrics.registry.metrics();
    expect(metrics).toContain('ciport_agents_connected{agent="dc1"} 1');
    expect(metrics).toMatch(/ciport_agent_events_total\{type="http.request",outcome="recorded"\} [1-9]/);
    expect(metrics).toMatch(
      /ciport_agent_events_total\{type="credential.created",outcome="recorded"\} [1-9]/,
    );
  });

  it('no secret reaches the gateway logs, its audit log, or the job', async () => {
    const all = JSON.stringify(await gateway.store.auditEvents({ limit: 10_000 })) + logLines.join('\n');
    for (const s of [APP_PASSWORD, REDIS_PASSWORD, API_TOKEN, pg.superPassword, DYN_ADMIN_PASSWORD])
      expect(all).not.toContain(s);
  });

  it('revoking the agent cuts it at once; it cannot reconnect', async () => {
    const r = await runCli(['agents', 'revoke', 'dc1'], { env: adminEnv() });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/agt_[0-9a-f]+ \(dc1\): revoked/);
    expect(gateway.agents.hub.serves('db')).toBe(false);
    await waitFor(
      () => /refused agent dc1's credential|AGENT_UNAUTHORIZED/.test(agent?.stderr() ?? ''),
      10_000,
      'the refusal in the agent log',
    );
    expect(gateway.agents.hub.serves('db')).toBe(false);
    const denied = await exec(['db'], `psql "$DATABASE_URL" -tAc 'select 1'`, 20_000);
    // Retryable, with its own code (not CIPORT_E_INTERNAL), and exit 5 ("unreachable").
    expect(denied.code).toBe(5);
    expect(denied.stderr).toMatch(/CIPORT_E_NO_AGENT: no agent serves target db/);
    expect(denied.stderr).not.toMatch(/CIPORT_E_INTERNAL/);
    expect(denied.stderr).toMatch(/exit 5 \(unreachable, retryable\): no agent served db/);
    // Its credential refused and its enrollment token spent: the agent stops with a message
    // instead of retrying every 30 s; its log lines say which process wrote them.
    const stopped = await agent?.result;
    expect(stopped).toMatchObject({ code: 4 });
    expect(agent?.stderr()).toMatch(
      /CIPORT_E_AGENT_UNAUTHORIZED: the gateway refused agent dc1's credential .* and its enrollment token/,
    );
    expect(agent?.stderr()).toMatch(/"service":"ciport-agent"/);
    expect(agent?.stderr()).not.toMatch(/"service":"ciport-gateway"/);
    const types = (await gateway.store.auditEvents({ limit: 10_000 })).map((e) => e.type);
    expect(types).toContain('agent.revoked');
    expect(types).toContain('agent.disconnected');
  });
});
