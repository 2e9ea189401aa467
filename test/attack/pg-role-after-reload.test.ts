// Attack: a live session's first connection to a target with per-session roles comes after a
// reload removed (here: renamed) the rule that granted it. The rule's `grants` narrowed the role
// to `readonly`; with the rule gone, src/gateway/exits.ts found no `grants` and the role was
// created with the target's default `dynamic.grant` (`writer`) — a reload meant to take access
// away widened it. A session whose granting rule is no longer in force gets no role.
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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

const dir = mkdtempSync(join(tmpdir(), 'ciport-pg-reload-'));
const ADMIN_PASSWORD = `dyn-admin-${Math.random().toString(36).slice(2)}`;
let issuer: FixtureIssuer;
let pg: PgServer;
let gateway: RunningGateway;
let listen: string;

const config = (ruleName: string) =>
  gatewayConfig(
    {
      listen,
      data_dir: join(dir, 'gw'),
      store: { sqlite: { path: join(dir, 'gw', 'ciport.db') } },
      issuers: [{ name: 'gitlab', kind: 'gitlab', issuer: issuer.url, audience: 'ciport' }],
      targets: [dynamicPgTarget('db-dyn', pg, ['writer'])],
      rules: [
        {
          name: ruleName,
          issuer: 'gitlab',
          when: { project_id: '61577203' },
          allow: ['db-dyn'],
          grants: { 'db-dyn': ['readonly'] },
        },
      ],
    },
    { ADMIN_PW: ADMIN_PASSWORD },
  );

beforeAll(async () => {
  const built = ensureBuilt();
  issuer = await FixtureIssuer.start({ kind: 'gitlab' });
  pg = await startPgServer({ roles: [{ name: 'app', password: 'app-pw' }], databases: { app: 'app' } });
  await pg.sql('CREATE ROLE readonly NOLOGIN; CREATE ROLE writer NOLOGIN');
  await createDynamicAdmin(pg, { password: ADMIN_PASSWORD, owner: 'app', grant: ['readonly', 'writer'] });
  listen = `127.0.0.1:${await freePort()}`;
  gateway = await startTestGateway(config('ledger'));
  await built;
}, 120_000);

afterAll(async () => {
  await gateway?.close();
  await issuer?.close();
  await pg?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('per-session role for a session whose rule a reload removed', () => {
  it('is refused, not created with the target default grant', async () => {
    const token = await issuer.mint({}, { preset: 'gitlab-main', audience: 'ciport' });
    const go = join(dir, 'go');
    const out = join(dir, 'out');
    // The session opens under rule `ledger`; the job connects only after the reload.
    const script = [
      `while [ ! -e ${go} ]; do sleep 0.1; done`,
      `psql -v ON_ERROR_STOP=1 -tAc "select string_agg(r.rolname, ',') from pg_auth_members m join pg_roles r on r.oid = m.roleid where m.member = (select oid from pg_roles where rolname = current_user)" > ${out} 2>&1`,
      `echo "psql: $?" >> ${out}`,
    ].join('\n');
    const job = spawnCli(['exec', 'db-dyn', '--', 'sh', '-c', script], {
      env: baseEnv({
        CIPORT_GATEWAY: gateway.url,
        CIPORT_CA_FILE: gateway.caFile,
        CIPORT_ID_TOKEN: token,
        PSQLRC: '/dev/null',
        PGPASSFILE: '/dev/null',
      }),
      timeoutMs: 60_000,
    });
    await waitFor(
      async () => (await gateway.manager.list({ activeOnly: true })).length > 0,
      20_000,
      'session',
    );
    // The same grant under a new name: the session's rule `ledger` is gone.
    await gateway.reload(config('ledger-v2'));
    writeFileSync(go, '');
    await job.result;
    expect(existsSync(out)).toBe(true);
    const text = readFileSync(out, 'utf8');
    expect(text).not.toContain('writer');
    expect(text).toMatch(/psql: [1-9]/);
    const roles = await pg.sql("select count(*) from pg_roles where rolname like 'ciport\\_%'");
    expect(roles.trim()).toBe('0');
  });
});
