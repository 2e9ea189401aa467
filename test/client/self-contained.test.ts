// The self-contained runner client (dist/client/ciport, `npm run build:client`) on a "runner"
// whose PATH holds no node: a temp dir with links to psql, sh and env only. Through a real
// gateway (in process, its generated CA) to the machine's PostgreSQL as a `postgres` target, it
// runs psql under `exec`, and keeps a port open with `open --dotenv F` in the background until
// `close`. The executable is built by the node running this test (test/fixtures/client-build.ts).
import { execFile, execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningGateway } from '../../src/gateway/server.js';
import { openedEnv, ROOT } from '../fixtures/cli.js';
import { CLIENT_BUNDLE, CLIENT_EXE, ensureClientBuilt } from '../fixtures/client-build.js';
import { gatewayConfig, startTestGateway } from '../fixtures/gateway.js';
import { e2eGatewayDoc } from '../fixtures/gateway-doc.js';
import { FixtureIssuer } from '../fixtures/oidc-issuer.js';
import { waitFor } from '../fixtures/wait-for.js';
import { tempDir } from '../gateway/helpers.js';

const { dir, cleanup } = tempDir('ciport-sea-');
const runnerBin = join(dir, 'bin');
const installBin = join(dir, 'install-bin');
let gateway: RunningGateway;
let issuer: FixtureIssuer;
let token: string;

/** Absolute path of `cmd` on this machine's PATH (the test's own, which has node). */
function which(cmd: string): string {
  return execFileSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).trim();
}

beforeAll(async () => {
  const built = ensureClientBuilt();
  mkdirSync(runnerBin, { recursive: true });
  for (const tool of ['psql', 'sh', 'env']) symlinkSync(which(tool), join(runnerBin, tool));
  // What the documented install steps use besides (docs/client.md); still no node.
  mkdirSync(installBin, { recursive: true });
  for (const tool of ['psql', 'sh', 'env', 'curl', 'sha256sum', 'chmod']) {
    symlinkSync(which(tool), join(installBin, tool));
  }
  issuer = await FixtureIssuer.start({ kind: 'gitlab' });
  gateway = await startTestGateway(
    gatewayConfig({
      listen: '127.0.0.1:0',
      ...e2eGatewayDoc(join(dir, 'data'), issuer.url),
      targets: [
        {
          name: 'db',
          protocol: 'postgres',
          address: '127.0.0.1:5432',
          database: 'postgres',
          credentials: { user: 'postgres' },
        },
      ],
      rules: [
        {
          name: 'ledger-main',
          issuer: 'gitlab',
          when: { project_id: '61577203', ref_protected: true },
          allow: ['db'],
        },
      ],
    }),
  );
  token = await issuer.mint({}, { preset: 'gitlab-main', audience: 'ciport' });
  await built;
}, 300_000);

afterAll(async () => {
  await gateway?.close();
  await issuer?.close();
  cleanup();
});

/** The runner's environment: no node anywhere on PATH, nothing inherited but HOME. */
function runnerEnv(): NodeJS.ProcessEnv {
  return {
    PATH: runnerBin,
    HOME: dir,
    CIPORT_GATEWAY: gateway.url,
    CIPORT_CA_FILE: gateway.caFile as string,
    CIPORT_ID_TOKEN: token,
  };
}

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function runClient(args: string[], env = runnerEnv()): Promise<Run> {
  return new Promise((resolve) => {
    execFile(CLIENT_EXE, args, { env, cwd: dir, timeout: 30_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stdout, stderr }),
    );
  });
}

const QUERY = `select 'via-ciport:' || current_user`;

describe('dist/client/ciport on a runner without node', () => {
  it('the runner PATH really has no node', async () => {
    const r = await new Promise<number>((resolve) =>
      execFile(join(runnerBin, 'sh'), ['-c', 'command -v node'], { env: { PATH: runnerBin } }, (err) =>
        resolve(err ? 1 : 0),
      ),
    );
    expect(r).toBe(1);
  });

  it('--version is the package version', async () => {
    const r = await runClient(['--version']);
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    expect(r.stdout.trim()).toBe(pkg.version);
    expect(r.code).toBe(0);
  });

  it('exec: psql reaches PostgreSQL through the port, and the session ends', async () => {
    const r = await runClient(['exec', 'db', '--', 'psql', '-tAc', QUERY]);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('via-ciport:postgres\n');
    expect(r.code).toBe(0);
    const [latest] = await gateway.manager.list({ activeOnly: false });
    expect(latest?.state).toBe('ended');
    expect(latest?.endReason).toBe('client_end');
  });

  it("exec: exits with the command's code", async () => {
    const r = await runClient(['exec', 'db', '--', 'sh', '-c', 'exit 7']);
    expect(r.code).toBe(7);
  });

  it('open --dotenv F in the background, psql with its variables, then close', async () => {
    const envFile = join(dir, 'ciport.env');
    const stateFile = join(dir, 'ciport-state.json');
    const open = spawn(CLIENT_EXE, ['open', 'db', '--dotenv', envFile, '--state', stateFile], {
      env: runnerEnv(),
      cwd: dir,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let openStderr = '';
    open.stderr.on('data', (c: Buffer) => {
      openStderr += c.toString();
    });
    const exited = new Promise<number | null>((resolve) => open.on('close', (code) => resolve(code)));
    try {
      const vars = await openedEnv(envFile);
      expect(vars.PGHOST).toBe('127.0.0.1');
      expect(vars.DATABASE_URL).toMatch(/^postgres(ql)?:\/\//);
      // As a job does: source the file, then run psql with no connection flags.
      const script = join(dir, 'job.sh');
      writeFileSync(script, `set -a; . '${envFile}'; set +a; exec psql -tAc "${QUERY}"\n`);
      const psql = await new Promise<Run>((resolve) =>
        execFile(join(runnerBin, 'sh'), [script], { env: { PATH: runnerBin } }, (err, stdout, stderr) =>
          resolve({ code: err ? 1 : 0, stdout, stderr }),
        ),
      );
      expect(psql.stderr).toBe('');
      expect(psql.stdout).toBe('via-ciport:postgres\n');

      const [active] = await gateway.manager.list({ activeOnly: true });
      expect(active?.state).toBe('active');
      const close = await runClient(['close', '--state', stateFile]);
      expect(close.code).toBe(0);
      expect(await exited).toBe(0);
      expect(openStderr).not.toContain('CIPORT_E_');
      await waitFor(
        async () => (await gateway.manager.list({ activeOnly: true })).length === 0,
        5_000,
        'the session to end',
      );
      const ended = (await gateway.manager.list({ activeOnly: false })).find((s) => s.id === active?.id);
      expect(ended?.endReason).toBe('client_end');
    } finally {
      open.kill('SIGKILL');
    }
  }, 60_000);

  it('the bundle alone runs on any node: node ciport.cjs exec', async () => {
    const withNode = join(dir, 'bin-node');
    mkdirSync(withNode, { recursive: true });
    for (const tool of ['psql', 'sh', 'env']) symlinkSync(which(tool), join(withNode, tool));
    symlinkSync(process.execPath, join(withNode, 'node'));
    const r = await new Promise<Run>((resolve) =>
      execFile(
        join(withNode, 'node'),
        [CLIENT_BUNDLE, 'exec', 'db', '--', 'psql', '-tAc', QUERY],
        { env: { ...runnerEnv(), PATH: withNode }, cwd: dir, timeout: 30_000 },
        (err, stdout, stderr) => resolve({ code: err ? 1 : 0, stdout, stderr }),
      ),
    );
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('via-ciport:postgres\n');
  });

  it('links nothing but the C and C++ runtimes', () => {
    const libs = execFileSync('ldd', [CLIENT_EXE], { encoding: 'utf8' })
      .split('\n')
      .map((line) => line.trim().split(/\s+/)[0] as string)
      .filter(Boolean);
    const runtime =
      /^(linux-vdso\.so|\/lib64\/ld-linux-x86-64\.so|lib(c|m|dl|pthread|rt|stdc\+\+|gcc_s)\.so)/;
    expect(libs.filter((lib) => !runtime.test(lib))).toEqual([]);
  });
});

describe('the install steps of docs/client.md, against a gateway serving its own client', () => {
  const doc = readFileSync(join(ROOT, 'docs/client.md'), 'utf8');
  const section = doc.slice(doc.indexOf('### Verifying what a job downloads'));
  const script = /```sh\n([\s\S]*?)```/.exec(section)?.[1] as string;
  const pinnedCa = () => sha256File(gateway.caFile as string);
  const pinnedClient = () => (readFileSync(`${CLIENT_EXE}.sha256`, 'utf8').split(' ')[0] as string).trim();

  function job(name: string, pins: { ca: string; client: string }): Promise<Run & { cwd: string }> {
    const cwd = join(dir, name);
    mkdirSync(cwd, { recursive: true });
    return new Promise((resolve) =>
      execFile(
        join(installBin, 'sh'),
        ['-c', script],
        {
          cwd,
          timeout: 60_000,
          env: {
            PATH: installBin,
            HOME: dir,
            CIPORT_GATEWAY: gateway.url,
            CIPORT_ID_TOKEN: token,
            CIPORT_CA_SHA256: pins.ca,
            CIPORT_CLIENT_SHA256: pins.client,
          },
        },
        (err, stdout, stderr) =>
          resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stdout, stderr, cwd }),
      ),
    );
  }

  it('downloads the CA and the client, checks both, and runs psql through the port', async () => {
    expect(script).toContain('sha256sum -c');
    const r = await job('job-ok', { ca: pinnedCa(), client: pinnedClient() });
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('ciport-ca.crt: OK\nciport: OK\nciport: OK\nvia ciport\n');
    expect(r.code).toBe(0);
  }, 120_000);

  it('a CA that is not the pinned one stops the job before the client is fetched', async () => {
    const r = await job('job-bad-ca', { ca: '0'.repeat(64), client: pinnedClient() });
    expect(r.code).not.toBe(0);
    expect(r.stdout).toMatch(/ciport-ca\.crt: FAILED/);
    expect(existsSync(join(r.cwd, 'ciport'))).toBe(false);
  });

  it('a client that is not the released one is never run', async () => {
    const sessions = (await gateway.manager.list({ activeOnly: false })).length;
    const r = await job('job-bad-client', { ca: pinnedCa(), client: 'f'.repeat(64) });
    expect(r.code).not.toBe(0);
    expect(r.stdout).toMatch(/^ciport-ca\.crt: OK\nciport: OK\nciport: FAILED\n$/);
    expect((await gateway.manager.list({ activeOnly: false })).length).toBe(sessions);
  }, 120_000);
});

function sha256File(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

describe("docs/client.md's `ciport open` example, with the self-contained client", () => {
  const doc = readFileSync(join(ROOT, 'docs/client.md'), 'utf8');
  const section = doc.slice(doc.indexOf('## `ciport open'));
  const example = (/```sh\n([\s\S]*?)```/.exec(section)?.[1] ?? '').replaceAll('staging-db', 'db');

  function runExample(name: string, env: NodeJS.ProcessEnv): Promise<Run> {
    const cwd = join(dir, name);
    const bin = join(cwd, 'bin');
    mkdirSync(bin, { recursive: true });
    symlinkSync(CLIENT_EXE, join(bin, 'ciport'));
    for (const tool of ['psql', 'sh', 'env', 'sleep']) symlinkSync(which(tool), join(bin, tool));
    return new Promise((resolve) =>
      execFile(
        join(bin, 'sh'),
        ['-c', example],
        { cwd, env: { ...env, PATH: bin }, timeout: 60_000 },
        (err, stdout, stderr) =>
          resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stdout, stderr }),
      ),
    );
  }

  it('opens the port, psql uses its variables, and close ends the session', async () => {
    const r = await runExample('doc-open', runnerEnv());
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('?column?');
  }, 90_000);

  it('does not wait forever when open fails: the example exits with its code', async () => {
    const r = await runExample('doc-open-refused', { ...runnerEnv(), CIPORT_ID_TOKEN: 'not-a-token' });
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(/CIPORT_E_TOKEN/);
  }, 90_000);
});
