// Two ciport deployments (each its own gateway and SQLite store) share one PostgreSQL cluster.
// A job on A holds a connection and logs in again and again with its per-session role while B
// starts (start-up reaper) and B's reaper runs every 200 ms with a SUPERUSER admin, the worst
// case: A's role stays LOGIN, its connections are not terminated, B audits nothing about it.
// B does reap its own stale role meanwhile, so the test proves B's reaper really ran.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningGateway } from '../../src/gateway/server.js';
import { baseEnv, ensureBuilt, spawnCli } from '../fixtures/cli.js';
import { freePort } from '../fixtures/free-port.js';
import { gatewayConfig, startTestGateway } from '../fixtures/gateway.js';
import { FixtureIssuer } from '../fixtures/oidc-issuer.js';
import { createDynamicAdmin, dynamicPgTarget } from '../fixtures/pg-dynamic-admin.js';
import { type PgServer, startPgServer } from '../fixtures/pg-server.js';
import { waitFor } from '../fixtures/wait-for.js';

const dir = mkdtempSync(join(tmpdir(), 'ciport-e2e-deployments-'));
const ADMIN_PASSWORD = `dyn-admin-${Math.random().toString(36).slice(2)}`;
let issuer: FixtureIssuer;
let pg: PgServer;
let gatewayA: RunningGateway;
let gatewayB: RunningGateway | undefined;
const logsA: string[] = [];
const logsB: string[] = [];

async function config(name: string, admin: { user: string; env: string }) {
  return gatewayConfig(
    {
      listen: `127.0.0.1:${await freePort()}`,
      data_dir: join(dir, name),
      store: { sqlite: { path: join(dir, name, 'ciport.db') } },
      sessions: { rate_limit: { per_minute: 1000, burst: 100 } },
      issuers: [{ name: 'gitlab', kind: 'gitlab', issuer: issuer.url, audience: 'ciport' }],
      targets: [dynamicPgTarget('db-dyn', pg, ['readonly'], admin)],
      rules: [{ name: 'main', issuer: 'gitlab', when: { project_id: '61577203' }, allow: ['db-dyn'] }],
    },
    { ADMIN_PW: ADMIN_PASSWORD, SUPER_PW: pg.superPassword },
  );
}

beforeAll(async () => {
  const built = ensureBuilt();
  issuer = await FixtureIssuer.start({ kind: 'gitlab' });
  pg = await startPgServer({ roles: [{ name: 'app', password: 'app-pw' }], databases: { app: 'app' } });
  await pg.sql('CREATE ROLE readonly NOLOGIN');
  await createDynamicAdmin(pg, { password: ADMIN_PASSWORD, owner: 'app', grant: ['readonly'] });
  gatewayA = await startTestGateway(await config('a', { user: 'dyn_admin', env: 'ADMIN_PW' }), {
    logLines: logsA,
  });
  await built;
}, 120_000);

afterAll(async () => {
  await gatewayB?.close();
  await gatewayA?.close();
  await issuer?.close();
  await pg?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const ourRoles = async () =>
  (
    await pg.sql(
      `select rolname || ' ' || rolcanlogin || ' ' || coalesce(shobj_description(oid, 'pg_authid'), '') from pg_roles where rolname like 'ciport\\_%' order by 1`,
    )
  )
    .split('\n')
    .filter(Boolean);

describe('two deployments on one cluster', () => {
  it("B's start and reaper runs leave A's live role and connections alone", async () => {
    const depA = (await gatewayA.store.getMeta('deployment_id')) as string;
    const token = await issuer.mint({}, { preset: 'gitlab-main', audience: 'ciport' });
    const held = join(dir, 'held.out');
    const logins = join(dir, 'logins.txt');
    const stop = join(dir, 'stop');
    // A held connection (a long pg_sleep that must still be running at the end) and fresh
    // logins, one after the other, until the test says stop; each must succeed.
    const script = [
      `psql -v ON_ERROR_STOP=1 -tAc 'select pg_sleep(120)' > ${held} 2>&1 & h=$!`,
      'i=0',
      `while [ ! -e ${stop} ] && [ $i -lt 5000 ]; do`,
      `  psql -v ON_ERROR_STOP=1 -tAc 'select current_user' >> ${logins} || { echo "login $i failed"; exit 1; }`,
      '  i=$((i+1))',
      'done',
      `kill -0 $h || { echo "held connection died"; cat ${held}; exit 1; }`,
      'kill -INT $h; wait $h',
      'echo "logins=$i"',
    ].join('\n');
    const loginCount = () => {
      try {
        return readFileSync(logins, 'utf8').split('\n').filter(Boolean).length;
      } catch {
        return 0;
      }
    };
    const job = spawnCli(['exec', 'db-dyn', '--', 'sh', '-c', script], {
      env: baseEnv({
        CIPORT_GATEWAY: gatewayA.url,
        CIPORT_CA_FILE: gatewayA.caFile,
        CIPORT_ID_TOKEN: token,
        PSQLRC: '/dev/null',
        PGPASSFILE: '/dev/null',
      }),
      timeoutMs: 90_000,
    });
    await waitFor(
      async () => (await ourRoles()).some((r) => r.includes(`deployment ${depA} session`)),
      20_000,
      "A's per-session role",
    );
    const roleA = ((await ourRoles())[0] as string).split(' ')[0] as string;

    // B starts while A's job runs: its start-up reaper and then one run every 200 ms.
    gatewayB = await startTestGateway(await config('b', { user: 'postgres', env: 'SUPER_PW' }), {
      logLines: logsB,
      roleReapIntervalMs: 200,
    });
    const depB = (await gatewayB.store.getMeta('deployment_id')) as string;
    expect(depB).toMatch(/^[0-9a-f]{10}$/);
    expect(depB).not.toBe(depA);
    // A stale role of B's own: B's periodic reaper must drop it (proof that it runs).
    await pg.sql(
      `CREATE ROLE ciport_0000stale0000b LOGIN; COMMENT ON ROLE ciport_0000stale0000b IS 'ciport deployment ${depB} session ses_gone'`,
    );
    await waitFor(
      async () => !(await ourRoles()).some((r) => r.startsWith('ciport_0000stale0000b ')),
      10_000,
      "B's reaper to drop its own stale role",
    );
    // Several more runs of B's reaper while A's job keeps logging in.
    const before = loginCount();
    await new Promise((r) => setTimeout(r, 1_500));
    await waitFor(() => loginCount() >= before + 5, 20_000, 'more logins on A during B reaper runs');
    const during = await ourRoles();
    expect(during).toHaveLength(1);
    expect(during[0]).toMatch(
      new RegExp(`^${roleA} true ciport deployment ${depA} session \\S+ target \\S+$`),
    );

    writeFileSync(stop, '');
    const r = await job.result;
    expect(r.stdout).toMatch(/logins=\d+/);
    expect(r.code).toBe(0);
    // Every login was the per-session role.
    expect(new Set(readFileSync(logins, 'utf8').split('\n').filter(Boolean))).toEqual(new Set([roleA]));

    // B wrote nothing about A's role; A dropped it when the job ended.
    const eventsB = await gatewayB.store.auditEvents({ limit: 10_000 });
    expect(eventsB.filter((e) => e.type.startsWith('credential.') && e.data.role === roleA)).toEqual([]);
    expect(logsB.filter((l) => l.includes(roleA))).toEqual([]);
    await waitFor(async () => (await ourRoles()).length === 0, 10_000, 'A to drop its role');
  }, 120_000);
});
