// The client commands as real processes (the built CLI), against the fake gateway: exit codes,
// what the command sees, signals, `open`/`close`, `whoami`, and secrets staying out of output.
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { type AddressInfo, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseDotenv } from '../../src/client/dotenv.js';
import { baseEnv, ensureBuilt, LAUNCHER, runCli, spawnCli } from '../fixtures/cli.js';
import { FakeGateway } from '../fixtures/fake-gateway.js';
import { GithubTokenEndpoint } from '../fixtures/github-actions-token.js';
import { waitFor } from '../fixtures/wait-for.js';

const execFileAsync = promisify(execFile);
let echo: Server;
let gw: FakeGateway;
let gh: GithubTokenEndpoint;
const dir = mkdtempSync(join(tmpdir(), 'ciport-cli-'));
const TOKEN = 'eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJqb2IifQ.c2lnbmF0dXJl';

beforeAll(async () => {
  await ensureBuilt();
  echo = createServer({ allowHalfOpen: true }, (s) => s.pipe(s));
  await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve));
  const echoAddr = `127.0.0.1:${(echo.address() as AddressInfo).port}`;
  gw = await FakeGateway.start({
    targets: [
      { name: 'echo', protocol: 'tcp', address: echoAddr },
      { name: 'staging-db', protocol: 'postgres', address: echoAddr, database: 'app' },
    ],
    tokens: {
      [TOKEN]: { allow: ['echo', 'staging-db'] },
      'gh.minted.jwt': { allow: ['echo'] },
      denied: 'deny',
    },
    heartbeatIntervalMs: 200,
  });
  gh = await GithubTokenEndpoint.start({ mint: () => 'gh.minted.jwt' });
});

afterAll(async () => {
  await gw.close();
  await gh.close();
  echo.close();
  rmSync(dir, { recursive: true, force: true });
});

const env = (extra: NodeJS.ProcessEnv = {}) =>
  baseEnv({ CIPORT_GATEWAY: gw.url, CIPORT_CA_FILE: gw.caFile, CIPORT_ID_TOKEN: TOKEN, ...extra });

/** A node one-liner the command runs: connect to the echo target through the port. */
const PING = `const s=require('net').connect(+process.env.CIPORT_ECHO_PORT,process.env.CIPORT_ECHO_HOST);let b='';s.on('data',d=>b+=d);s.on('end',()=>{console.log('echo:'+b)});s.end('ping')`;

function secrets(): string[] {
  return [TOKEN, ...[...gw.sessions.values()].map((s) => s.secret)];
}

describe('ciport exec', () => {
  it("exits with the command's code and ends the session", async () => {
    const before = gw.count('DELETE', '/v1/sessions/');
    const r = await runCli(['exec', 'echo', '--', 'sh', '-c', 'exit 7'], { env: env() });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(7);
    expect(gw.count('DELETE', '/v1/sessions/')).toBe(before + 1);
    expect(gw.active()).toEqual([]);
  });

  it('gives the command the target addresses, and tunnels its connection', async () => {
    const r = await runCli(['exec', 'echo', 'staging-db', '--', process.execPath, '-e', PING], {
      env: env(),
    });
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('echo:ping\n');
  });

  it('exports CIPORT_* and the libpq variables, strips the token, and never shows a secret', async () => {
    const r = await runCli(['exec', '--verbose', 'echo', 'staging-db:0', '--', 'env'], { env: env() });
    expect(r.code).toBe(0);
    const seen = Object.fromEntries(
      r.stdout
        .trim()
        .split('\n')
        .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
    );
    expect(seen.CIPORT_ECHO_URL).toMatch(/^tcp:\/\/127\.0\.0\.1:\d+$/);
    expect(seen.CIPORT_ECHO_HOST).toBe('127.0.0.1');
    expect(seen.CIPORT_STAGING_DB_URL).toBe(`postgres://127.0.0.1:${seen.CIPORT_STAGING_DB_PORT}/app`);
    expect(seen.DATABASE_URL).toBe(seen.CIPORT_STAGING_DB_URL);
    expect([seen.PGHOST, seen.PGPORT, seen.PGDATABASE]).toEqual([
      '127.0.0.1',
      seen.CIPORT_STAGING_DB_PORT,
      'app',
    ]);
    expect(seen).not.toHaveProperty('PGUSER');
    expect(seen).not.toHaveProperty('PGPASSWORD');
    expect(seen).not.toHaveProperty('CIPORT_ID_TOKEN');
    expect(r.stderr).toMatch(/ciport: session ses_\w+ opened/);
    for (const secret of secrets()) {
      expect(r.stdout).not.toContain(secret);
      expect(r.stderr).not.toContain(secret);
    }
  });

  it('a denial exits 3 with the explanation on one line', async () => {
    const r = await runCli(['exec', 'echo', '--', 'true'], { env: env({ CIPORT_ID_TOKEN: 'denied' }) });
    expect(r.code).toBe(3);
    expect(r.stderr).toBe(
      'ciport: CIPORT_E_POLICY_DENIED: no rule allows this token; nearest rule "main-only": ref_protected: expected true, got "false"\n',
    );
  });

  it('a rejected token exits 4', async () => {
    const r = await runCli(['exec', 'echo', '--', 'true'], { env: env({ CIPORT_ID_TOKEN: 'eyJ.forged.x' }) });
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(/^ciport: CIPORT_E_TOKEN_BAD_SIGNATURE: .+\n$/);
    expect(r.stderr).not.toContain('eyJ.forged.x');
  });

  it('an unreachable gateway exits 5; so does an untrusted certificate', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const r = await runCli(['exec', '--gateway', `https://127.0.0.1:${port}`, 'echo', '--', 'true'], {
      env: env(),
    });
    expect(r.code).toBe(5);
    expect(r.stderr).toMatch(
      /^ciport: CIPORT_E_GATEWAY_UNREACHABLE: cannot reach gateway 127\.0\.0\.1:\d+: .*ECONNREFUSED.*\n$/,
    );
    const tls = await runCli(['exec', 'echo', '--', 'true'], { env: env({ CIPORT_CA_FILE: '' }) });
    expect(tls.code).toBe(5);
    expect(tls.stderr).toMatch(/^ciport: CIPORT_E_TLS: .*CIPORT_CA_FILE.*\n$/);
  });

  it('usage errors exit 2: no token, no command, a bad target, a bad ttl', async () => {
    const noToken = await runCli(['exec', 'echo', '--', 'true'], { env: env({ CIPORT_ID_TOKEN: '' }) });
    expect(noToken.code).toBe(2);
    expect(noToken.stderr).toMatch(/CIPORT_E_NO_TOKEN/);
    expect((await runCli(['exec', 'echo'], { env: env() })).code).toBe(2);
    expect((await runCli(['exec', 'Bad!', '--', 'true'], { env: env() })).code).toBe(2);
    expect((await runCli(['exec', '--ttl', 'soon', 'echo', '--', 'true'], { env: env() })).code).toBe(2);
  });

  it('127 when the command does not exist, after ending the session', async () => {
    const r = await runCli(['exec', 'echo', '--', 'ciport-no-such-command'], { env: env() });
    expect(r.code).toBe(127);
    expect(r.stderr).toMatch(/ciport-no-such-command: command not found/);
    expect(gw.active()).toEqual([]);
  });

  it('128 + n when a signal kills the command', async () => {
    const r = await runCli(['exec', 'echo', '--', 'sh', '-c', 'kill -TERM $$'], { env: env() });
    expect(r.code).toBe(143);
  });

  it('forwards SIGTERM to the command and exits with its code', async () => {
    const ready = join(dir, 'exec-ready');
    const run = spawnCli(
      [
        'exec',
        'echo',
        '--',
        'sh',
        '-c',
        `trap 'echo got-term; exit 42' TERM; touch "${ready}"; while :; do sleep 0.05; done`,
      ],
      { env: env() },
    );
    await waitFor(() => existsSync(ready), 10_000, 'the command to start');
    run.child.kill('SIGTERM');
    const r = await run.result;
    expect(r.stdout).toBe('got-term\n');
    expect(r.code).toBe(42);
    expect(gw.active()).toEqual([]);
  });

  it('says why when the session ends under the command, which keeps running', async () => {
    const ready = join(dir, 'exec-revoke');
    const run = spawnCli(['exec', 'echo', '--', 'sh', '-c', `touch "${ready}"; sleep 1; exit 3`], {
      env: env(),
    });
    await waitFor(() => existsSync(ready), 10_000, 'the command to start');
    const [session] = gw.active();
    gw.end(session?.id as string, 'revoked');
    const r = await run.result;
    expect(r.code).toBe(3);
    expect(r.stderr).toBe('ciport: session ended: revoked by an operator (revoked)\n');
  });

  it('on GitHub Actions, fetches the token for the gateway audience', async () => {
    const before = gh.requests.length;
    const r = await runCli(['exec', 'echo', '--', process.execPath, '-e', PING], {
      env: env({ CIPORT_ID_TOKEN: undefined, ...gh.env }),
    });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('echo:ping\n');
    expect(gh.requests.slice(before)).toEqual([{ audience: gw.url, apiVersion: '2.0', authorized: true }]);
    const audience = await runCli(['exec', '--audience', 'ciport', 'echo', '--', 'true'], {
      env: env({ CIPORT_ID_TOKEN: undefined, ...gh.env }),
    });
    expect(audience.code).toBe(0);
    expect(gh.requests.at(-1)?.audience).toBe('ciport');
  });
});

describe('ciport open / close', () => {
  it('writes the env file once the port accepts connections, prints exports, and close ends it', async () => {
    const envFile = join(dir, 'open.env');
    const state = join(dir, 'open.json');
    const open = spawnCli(['open', 'echo', '--env-file', envFile, '--state', state], { env: env() });
    await waitFor(() => existsSync(envFile), 10_000, 'the env file');
    const vars = parseDotenv(readFileSync(envFile, 'utf8'));
    expect(Object.keys(vars)).toEqual(['CIPORT_ECHO_URL', 'CIPORT_ECHO_HOST', 'CIPORT_ECHO_PORT']);
    // The port works right away (async: the fake gateway runs in this process).
    const out = await execFileAsync(process.execPath, ['-e', PING], {
      env: { ...vars, PATH: process.env.PATH },
    });
    expect(out.stdout).toBe('echo:ping\n');
    expect(JSON.parse(readFileSync(state, 'utf8'))).toMatchObject({ pid: open.child.pid, env_file: envFile });
    const close = await runCli(['close', '--state', state], { env: env() });
    expect(close.code).toBe(0);
    const r = await open.result;
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(
      `export CIPORT_ECHO_URL=${vars.CIPORT_ECHO_URL}\nexport CIPORT_ECHO_HOST=127.0.0.1\nexport CIPORT_ECHO_PORT=${vars.CIPORT_ECHO_PORT}\n`,
    );
    expect(existsSync(envFile)).toBe(false);
    expect(existsSync(state)).toBe(false);
    expect(gw.active()).toEqual([]);
  });

  it('works as the documented background recipe in a shell', async () => {
    const script = `
      set -e
      ciport() { "${process.execPath}" -- "${LAUNCHER}" "$@"; }
      cd "${dir}"
      ciport open echo --env-file .ciport.env --state ./recipe.json > open.out &
      while [ ! -s .ciport.env ]; do sleep 0.2; done
      set -a; . ./.ciport.env; set +a
      "${process.execPath}" -e "${PING.replace(/"/g, '\\"')}"
      ciport close --state ./recipe.json
      wait $!
      echo "open exited $?"
    `;
    const out = await execFileAsync('sh', ['-c', script], { env: env(), timeout: 20_000 });
    expect(out.stdout).toBe('echo:ping\nopen exited 0\n');
  });

  it('--json prints the session, targets and variables', async () => {
    const state = join(dir, 'json.json');
    const open = spawnCli(['open', 'staging-db', '--json', '--state', state], { env: env() });
    await waitFor(() => open.stdout().trim().endsWith('}'), 10_000, 'JSON output');
    const body = JSON.parse(open.stdout());
    expect(body.session.id).toMatch(/^ses_/);
    expect(body.targets).toEqual([
      {
        name: 'staging-db',
        protocol: 'postgres',
        host: '127.0.0.1',
        port: expect.any(Number),
        database: 'app',
      },
    ]);
    expect(body.env.DATABASE_URL).toBe(`postgres://127.0.0.1:${body.targets[0].port}/app`);
    expect(JSON.stringify(body)).not.toContain(gw.sessions.get(body.session.id)?.secret);
    open.child.kill('SIGINT');
    expect((await open.result).code).toBe(0);
    expect(gw.sessions.get(body.session.id)?.endReason).toBe('client_end');
  });

  it('exits 3 and says why when the session is revoked', async () => {
    const envFile = join(dir, 'revoked.env');
    const open = spawnCli(['open', 'echo', '--env-file', envFile, '--state', join(dir, 'revoked.json')], {
      env: env(),
    });
    await waitFor(() => existsSync(envFile), 10_000, 'the env file');
    const [session] = gw.active();
    gw.end(session?.id as string, 'revoked');
    const r = await open.result;
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/ciport: session ended: revoked by an operator \(revoked\)\n/);
    expect(r.stderr).toMatch(/ciport: CIPORT_E_SESSION_ENDED: session ended: revoked/);
    expect(existsSync(envFile)).toBe(false);
  });

  it('refuses a second open on the same state file, and close with nothing open is a no-op', async () => {
    const state = join(dir, 'twice.json');
    const first = spawnCli(['open', 'echo', '--state', state], { env: env() });
    await waitFor(() => existsSync(state), 10_000, 'the state file');
    const second = await runCli(['open', 'echo', '--state', state], { env: env() });
    expect(second.code).toBe(2);
    expect(second.stderr).toMatch(/already open \(pid \d+/);
    expect((await runCli(['close', '--state', state], { env: env() })).code).toBe(0);
    expect((await first.result).code).toBe(0);
    const again = await runCli(['close', '--state', state], { env: env() });
    expect(again.code).toBe(0);
    expect(again.stderr).toMatch(/nothing to close/);
  });
});

describe('ciport whoami', () => {
  it('prints the principal and the targets policy would grant', async () => {
    const r = await runCli(['whoami'], { env: env() });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^subject: +repo:acme\/app:ref:refs\/heads\/main$/m);
    expect(r.stdout).toMatch(/^project\.path: +acme\/app$/m);
    expect(r.stdout).toMatch(/^decision: +allow \(rule fake-rule\)$/m);
    expect(r.stdout).toMatch(/^targets: +echo, staging-db$/m);
    const json = await runCli(['whoami', '--json'], { env: env() });
    expect(JSON.parse(json.stdout).decision.targets).toEqual(['echo', 'staging-db']);
    expect(gw.count('POST', '/v1/sessions')).toBeGreaterThan(0);
  });

  it('a rejected token exits 4, as JSON with --json', async () => {
    const r = await runCli(['whoami', '--json'], { env: env({ CIPORT_ID_TOKEN: 'nope' }) });
    expect(r.code).toBe(4);
    expect(JSON.parse(r.stdout)).toEqual({
      error: { code: 'CIPORT_E_TOKEN_EXPIRED', message: 'token expired' },
    });
  });
});
