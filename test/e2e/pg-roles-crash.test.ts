// Per-session roles survive no crash: the gateway runs as its own process (`ciport gateway`),
// a job holds a session with a per-session role, then the gateway AND the job are SIGKILLed.
// The role is still there (nothing could drop it); after a restart the start-up reaper ends the
// lapsed session and the role is dropped.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { baseEnv, ensureBuilt, spawnCli } from '../fixtures/cli.js';
import { freePort } from '../fixtures/free-port.js';
import { FixtureIssuer } from '../fixtures/oidc-issuer.js';
import { createDynamicAdmin, dynamicPgTarget } from '../fixtures/pg-dynamic-admin.js';
import { type PgServer, startPgServer } from '../fixtures/pg-server.js';
import { waitFor } from '../fixtures/wait-for.js';

const dir = mkdtempSync(join(tmpdir(), 'ciport-e2e-crash-'));
let issuer: FixtureIssuer;
let pg: PgServer;
let configFile: string;
const ADMIN_PASSWORD = `dyn-admin-${Math.random().toString(36).slice(2)}`;
let gatewayUrl: string;
const children: ReturnType<typeof spawnCli>[] = [];

beforeAll(async () => {
  const built = ensureBuilt();
  issuer = await FixtureIssuer.start({ kind: 'gitlab' });
  pg = await startPgServer({ roles: [{ name: 'app', password: 'app-pw-crash' }], databases: { app: 'app' } });
  await pg.sql('CREATE ROLE readonly NOLOGIN');
  await createDynamicAdmin(pg, { password: ADMIN_PASSWORD, owner: 'app', grant: ['readonly'] });
  const port = await freePort();
  gatewayUrl = `https://127.0.0.1:${port}`;
  configFile = join(dir, 'gateway.json');
  writeFileSync(
    configFile,
    JSON.stringify({
      listen: `127.0.0.1:${port}`,
      data_dir: join(dir, 'data'),
      store: { sqlite: { path: join(dir, 'data', 'ciport.db') } },
      sessions: { lease_timeout: '2s' },
      issuers: [{ name: 'gitlab', kind: 'gitlab', issuer: issuer.url, audience: 'ciport' }],
      targets: [dynamicPgTarget('db', pg, ['readonly'])],
      rules: [{ name: 'main', issuer: 'gitlab', when: { project_id: '61577203' }, allow: ['db'] }],
    }),
  );
  await built;
}, 120_000);

afterAll(async () => {
  for (const c of children) c.child.kill('SIGKILL');
  await issuer?.close();
  await pg?.stop();
  rmSync(dir, { recursive: true, force: true });
});

function startGatewayProcess() {
  const gw = spawnCli(['gateway', '--config', configFile], {
    env: baseEnv({ ADMIN_PW: ADMIN_PASSWORD, CIPORT_LOG_LEVEL: 'warn' }),
    timeoutMs: 120_000,
  });
  children.push(gw);
  return gw;
}

const roleCount = async () =>
  Number((await pg.sql("select count(*) from pg_roles where rolname like 'ciport\\_%'")).trim());

describe('per-session roles after a crash', () => {
  it('is gone after SIGKILL of the gateway process and a restart', async () => {
    let gw = startGatewayProcess();
    await waitFor(() => gw.stderr().includes('gateway listening'), 20_000, 'the gateway');
    const token = await issuer.mint({}, { preset: 'gitlab-main', audience: 'ciport' });
    const job = spawnCli(['exec', 'db', '--', 'sh', '-c', `psql -tAc 'select current_user'; sleep 60`], {
      env: baseEnv({
        CIPORT_GATEWAY: gatewayUrl,
        CIPORT_CA_FILE: join(dir, 'data', 'ca.crt'),
        CIPORT_ID_TOKEN: token,
        PSQLRC: '/dev/null',
      }),
      detached: true,
      timeoutMs: 120_000,
    });
    children.push(job);
    await waitFor(() => /ciport_[0-9a-f]{16}/.test(job.stdout()), 20_000, 'the per-session role');
    const role = job.stdout().trim();
    expect(await roleCount()).toBe(1);

    gw.child.kill('SIGKILL');
    process.kill(-(job.child.pid as number), 'SIGKILL');
    await gw.result;
    await job.result;
    await sleep(3_000); // past the 2 s lease
    // Nobody dropped it: the test would fail if the restart did nothing.
    expect((await pg.sql(`select rolname from pg_roles where rolname = '${role}'`)).trim()).toBe(role);

    gw = startGatewayProcess();
    await waitFor(() => gw.stderr().includes('gateway listening'), 20_000, 'the restarted gateway');
    await waitFor(async () => (await roleCount()) === 0, 15_000, 'the role to be dropped');
    gw.child.kill('SIGTERM');
    expect((await gw.result).code).toBe(0);
  }, 90_000);
});
