// End to end: the real gateway (in process, real TLS with its generated CA, SQLite store) and
// the real client as separate processes (`ciport exec|open|close|whoami`), with tokens from the
// fixture OIDC issuers, reaching the machine's PostgreSQL and Redis as `tcp` targets.
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { type AddressInfo, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseDotenv } from '../../src/client/dotenv.js';
import { parseGatewayConfig } from '../../src/config/load.js';
import { type RunningGateway, startGateway } from '../../src/gateway/server.js';
import { silentLogger } from '../../src/log/logger.js';
import { baseEnv, ensureBuilt, LAUNCHER, runCli, spawnCli } from '../fixtures/cli.js';
import { freePort } from '../fixtures/free-port.js';
import { GithubTokenEndpoint } from '../fixtures/github-actions-token.js';
import { FixtureIssuer } from '../fixtures/oidc-issuer.js';
import { waitFor } from '../fixtures/wait-for.js';

const execFileAsync = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), 'ciport-e2e-client-'));
const ADMIN = 'e2e-admin-token-0123456789';
const LEASE_MS = 2000;

let gateway: RunningGateway;
let gitlab: FixtureIssuer;
let github: FixtureIssuer;
let ghEndpoint: GithubTokenEndpoint;
let echo: Server;
let token: string;

beforeAll(async () => {
  const built = ensureBuilt();
  gitlab = await FixtureIssuer.start({ kind: 'gitlab' });
  github = await FixtureIssuer.start({ kind: 'github' });
  echo = createServer({ allowHalfOpen: true }, (s) => s.pipe(s));
  await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve));
  const port = await freePort();
  const url = `https://127.0.0.1:${port}`;
  const config = {
    listen: `127.0.0.1:${port}`,
    data_dir: join(dir, 'data'),
    store: { sqlite: { path: join(dir, 'data', 'ciport.db') } },
    admin_tokens: [{ env: 'E2E_ADMIN' }],
    sessions: {
      default_ttl: '15m',
      lease_timeout: `${LEASE_MS}ms`,
      rate_limit: { per_minute: 10000, burst: 1000 },
    },
    issuers: [
      { name: 'gitlab', kind: 'gitlab', issuer: gitlab.url, audience: 'ciport' },
      // GitHub tokens are requested by the client with the gateway URL as audience.
      { name: 'github', kind: 'github', issuer: github.url, audience: url },
    ],
    targets: [
      { name: 'pg', protocol: 'tcp', address: '127.0.0.1:5432' },
      { name: 'redis', protocol: 'tcp', address: '127.0.0.1:6379' },
      { name: 'echo', protocol: 'tcp', address: `127.0.0.1:${(echo.address() as AddressInfo).port}` },
    ],
    rules: [
      {
        name: 'ledger-main',
        issuer: 'gitlab',
        when: { project_id: '61577203', ref_protected: true },
        allow: ['pg', 'redis', 'echo'],
        max_ttl: '30m',
      },
      {
        name: 'ledger-actions-main',
        issuer: 'github',
        when: { repository: 'acme/ledger', ref: 'refs/heads/main' },
        allow: ['echo'],
      },
    ],
  };
  const cfg = parseGatewayConfig(JSON.stringify(config), 'e2e.json', {
    resolveSecrets: true,
    env: { E2E_ADMIN: ADMIN },
  });
  gateway = await startGateway(cfg, {
    logger: silentLogger(),
    stderr: { write: () => true } as never,
    sweepIntervalMs: 250,
  });
  expect(gateway.url).toBe(url);
  ghEndpoint = await GithubTokenEndpoint.start({
    mint: (audience) => github.mint({}, { preset: 'github-push', audience: audience ?? 'none' }),
  });
  token = await gitlab.mint({}, { preset: 'gitlab-main', audience: 'ciport' });
  await built;
}, 120_000);

afterAll(async () => {
  await gateway?.close();
  await gitlab?.close();
  await github?.close();
  await ghEndpoint?.close();
  echo?.close();
  rmSync(dir, { recursive: true, force: true });
});

const env = (extra: NodeJS.ProcessEnv = {}) =>
  baseEnv({
    CIPORT_GATEWAY: gateway.url,
    CIPORT_CA_FILE: gateway.caFile,
    CIPORT_ID_TOKEN: token,
    ...extra,
  });

async function sessions(activeOnly = false) {
  return gateway.manager.list({ activeOnly });
}

const PSQL = `psql -h "$CIPORT_PG_HOST" -p "$CIPORT_PG_PORT" -U postgres -tAc 'select 1'`;

describe('ciport exec through the real gateway', () => {
  it('runs psql against PostgreSQL through the port', async () => {
    const r = await runCli(['exec', 'pg', '--', 'sh', '-c', PSQL], { env: env() });
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('1\n');
    expect(r.code).toBe(0);
  });

  it('runs redis-cli against Redis through the port', async () => {
    const r = await runCli(
      ['exec', 'redis', '--', 'sh', '-c', 'redis-cli -h "$CIPORT_REDIS_HOST" -p "$CIPORT_REDIS_PORT" ping'],
      {
        env: env(),
      },
    );
    expect(r.stdout).toBe('PONG\n');
    expect(r.code).toBe(0);
  });

  it("exits with the command's code, and the session ends with client_end", async () => {
    const r = await runCli(['exec', 'pg', 'redis', '--', 'sh', '-c', `${PSQL} >/dev/null && exit 7`], {
      env: env(),
    });
    expect(r.code).toBe(7);
    const [latest] = await sessions();
    expect(latest?.state).toBe('ended');
    expect(latest?.endReason).toBe('client_end');
    expect(latest?.targets).toEqual(['pg', 'redis']);
  });

  it("a denial exits 3 with the failing condition and the job's own value on one line", async () => {
    const denied = await gitlab.mint(
      { ref_protected: 'false' },
      { preset: 'gitlab-main', audience: 'ciport' },
    );
    const r = await runCli(['exec', 'pg', '--', 'true'], { env: env({ CIPORT_ID_TOKEN: denied }) });
    expect(r.code).toBe(3);
    expect(r.stderr.split('\n')).toHaveLength(2);
    // policy.disclose defaults to `condition`: no rule name, no expected value.
    expect(r.stderr).toMatch(/^ciport: CIPORT_E_POLICY_DENIED: .*ref_protected.*"false"/);
    expect(r.stderr).not.toContain('ledger-main');
    expect(r.stderr).not.toContain(denied);
  });

  it('a rejected token exits 4', async () => {
    const forged = `${token.slice(0, token.lastIndexOf('.') + 1)}${'A'.repeat(43)}`;
    const r = await runCli(['exec', 'pg', '--', 'true'], { env: env({ CIPORT_ID_TOKEN: forged }) });
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(/^ciport: CIPORT_E_TOKEN_[A-Z_]+: .+\n$/);
    const wrongAudience = await gitlab.mint({}, { preset: 'gitlab-main', audience: 'someone-else' });
    expect(
      (await runCli(['exec', 'pg', '--', 'true'], { env: env({ CIPORT_ID_TOKEN: wrongAudience }) })).code,
    ).toBe(4);
  });

  it('an unreachable gateway exits 5', async () => {
    const port = await freePort();
    const r = await runCli(['exec', '--gateway', `https://127.0.0.1:${port}`, 'pg', '--', 'true'], {
      env: env(),
    });
    expect(r.code).toBe(5);
    expect(r.stderr).toMatch(/^ciport: CIPORT_E_GATEWAY_UNREACHABLE: .+\n$/);
  });

  it('without CIPORT_CA_FILE the generated certificate is not trusted: exit 5', async () => {
    const r = await runCli(['exec', 'pg', '--', 'true'], { env: env({ CIPORT_CA_FILE: undefined }) });
    expect(r.code).toBe(5);
    expect(r.stderr).toMatch(/^ciport: CIPORT_E_TLS: /);
  });

  it('neither the token nor the session secret reaches the command or the output', async () => {
    const r = await runCli(['exec', '--verbose', 'pg', '--', 'sh', '-c', `env; ${PSQL}`], { env: env() });
    expect(r.code).toBe(0);
    const all = r.stdout + r.stderr;
    expect(all).not.toContain(token);
    expect(all).not.toContain(token.split('.')[2] as string);
    expect(all).not.toMatch(/cps_[A-Za-z0-9_-]{20,}/);
    expect(r.stdout).not.toMatch(/^CIPORT_ID_TOKEN=/m);
    expect(r.stdout).toMatch(/^CIPORT_PG_URL=tcp:\/\/127\.0\.0\.1:\d+$/m);
    expect(r.stderr).toMatch(/pg: connection 1 opened/);
    expect(r.stderr).toMatch(/pg: connection 1 closed \(sent \d+/);
  });

  it('on GitHub Actions the client fetches a token for the gateway URL and gets in', async () => {
    const ping = `const s=require('net').connect(+process.env.CIPORT_ECHO_PORT,'127.0.0.1');let b='';s.on('data',d=>b+=d);s.on('end',()=>console.log(b));s.end('via-actions')`;
    const r = await runCli(['exec', 'echo', '--', process.execPath, '-e', ping], {
      env: env({ CIPORT_ID_TOKEN: undefined, ...ghEndpoint.env }),
    });
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('via-actions\n');
    expect(ghEndpoint.requests.at(-1)).toEqual({
      audience: gateway.url,
      apiVersion: '2.0',
      authorized: true,
    });
  });

  it('a revoked session cuts the in-flight connection within a second and says why', async () => {
    const hold = `const s=require('net').connect(+process.env.CIPORT_ECHO_PORT,'127.0.0.1');s.write('x');s.once('data',()=>console.log('connected'));s.on('close',()=>{console.log('cut');process.exit(0)});s.on('end',()=>{console.log('cut');process.exit(0)});s.on('error',()=>{});setTimeout(()=>process.exit(9),20000)`;
    const run = spawnCli(['exec', 'echo', '--', process.execPath, '-e', hold], { env: env() });
    await waitFor(() => run.stdout().includes('connected'), 10_000, 'the connection');
    const [active] = await sessions(true);
    const started = Date.now();
    await gateway.manager.revoke(active?.id as string, 'e2e');
    await waitFor(() => run.stdout().includes('cut'), 5_000, 'the cut');
    expect(Date.now() - started).toBeLessThan(1000);
    const r = await run.result;
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/ciport: session ended: revoked by an operator \(revoked\)/);
  });

  it('a TTL end is reported', async () => {
    const r = await runCli(['exec', '--ttl', '1s', 'echo', '--', 'sleep', '2.5'], { env: env() });
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/ciport: session ended: its time to live ran out \(expired\)/);
  });

  it('SIGKILL of the client: the session ends by its lease', async () => {
    const run = spawnCli(['exec', 'echo', '--', 'sleep', '30'], { env: env(), detached: true });
    await waitFor(async () => (await sessions(true)).length === 1, 10_000, 'the session');
    const [active] = await sessions(true);
    const pid = run.child.pid as number;
    process.kill(pid, 'SIGKILL');
    const killedAt = Date.now();
    // Then the orphaned `sleep`, which still holds the output pipes, through the process group.
    await waitFor(
      () => run.child.exitCode !== null || run.child.signalCode !== null,
      5000,
      'the client to die',
    );
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // The command had not started yet: nothing left in the group.
    }
    expect((await run.result).signal).toBe('SIGKILL');
    await waitFor(
      async () => (await sessions()).find((s) => s.id === active?.id)?.state === 'ended',
      LEASE_MS + 5000,
      'the lease to lapse',
    );
    const ended = (await sessions()).find((s) => s.id === active?.id);
    expect(ended?.endReason).toBe('lease_expired');
    expect(Date.now() - killedAt).toBeGreaterThan(LEASE_MS / 4);
  });
});

describe('ciport open / close / whoami through the real gateway', () => {
  it('open writes the env file when ready; psql uses it; close ends the session', async () => {
    const envFile = join(dir, '.ciport.env');
    const state = join(dir, 'open.json');
    const open = spawnCli(['open', 'pg', '--env-file', envFile, '--state', state], { env: env() });
    await waitFor(() => existsSync(envFile), 15_000, 'the env file');
    const vars = parseDotenv(readFileSync(envFile, 'utf8'));
    const { stdout } = await execFileAsync('sh', ['-c', PSQL], { env: { PATH: process.env.PATH, ...vars } });
    expect(stdout).toBe('1\n');
    const [active] = await sessions(true);
    expect(active?.targets).toEqual(['pg']);
    const close = await runCli(['close', '--state', state], { env: env() });
    expect(close.code).toBe(0);
    expect((await open.result).code).toBe(0);
    const ended = (await sessions()).find((s) => s.id === active?.id);
    expect(ended?.endReason).toBe('client_end');
    expect(existsSync(envFile)).toBe(false);
  });

  it('the background recipe from the docs works in a shell', async () => {
    const script = `
      set -e
      ciport() { "${process.execPath}" -- "${LAUNCHER}" "$@"; }
      cd "${dir}"
      ciport open pg redis --env-file .recipe.env --state ./recipe.json >/dev/null &
      while [ ! -s .recipe.env ]; do sleep 0.2; done
      set -a; . ./.recipe.env; set +a
      ${PSQL}
      redis-cli -h "$CIPORT_REDIS_HOST" -p "$CIPORT_REDIS_PORT" ping
      ciport close --state ./recipe.json
      wait $!
      echo "open exited $?"
    `;
    const { stdout } = await execFileAsync('sh', ['-c', script], { env: env(), timeout: 30_000 });
    expect(stdout).toBe('1\nPONG\nopen exited 0\n');
  });

  it('whoami shows the principal and what policy would grant', async () => {
    const r = await runCli(['whoami'], { env: env() });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^project\.path: +acme\/ledger$/m);
    expect(r.stdout).toMatch(/^decision: +allow \(rule ledger-main\)$/m);
    expect(r.stdout).toMatch(/^targets: +pg, redis, echo$/m);
    const json = JSON.parse((await runCli(['whoami', '--json'], { env: env() })).stdout);
    expect(json.principal.issuer).toBe('gitlab');
    expect(json.decision.decision).toBe('allow');
  });

  it('leaves no session active behind', async () => {
    await sleep(100);
    expect((await sessions(true)).map((s) => s.id)).toEqual([]);
  });
});
