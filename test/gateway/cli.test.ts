// `ciport sessions list|revoke` against a running gateway, `ciport gateway` in-process with a
// stand-in signal source, and `ciport gateway` as a real child process drained by SIGTERM.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { registerGateway, runGateway, signalSource } from '../../src/cli/commands/gateway.js';
import { registerSessions } from '../../src/cli/commands/sessions.js';
import { openStore } from '../../src/store/open.js';
import { FixtureIssuer } from '../fixtures/oidc-issuer.js';
import { waitFor } from '../fixtures/wait-for.js';
import { type Run, runCli } from './cli-run.js';
import {
  ADMIN_TOKEN,
  api,
  Capture,
  closed,
  connectClient,
  type Harness,
  h2,
  openSession,
  startEcho,
  startHarness,
  tempDir,
  tunnel,
} from './helpers.js';

function cli(args: string[], env: NodeJS.ProcessEnv): Promise<Run> {
  return runCli([registerSessions, registerGateway], args, env);
}

describe('ciport sessions', () => {
  let h: Harness;
  let env: NodeJS.ProcessEnv;
  beforeAll(async () => {
    h = await startHarness();
    env = {
      CIPORT_ADMIN_TOKEN: ADMIN_TOKEN,
      CIPORT_CA_FILE: h.gateway.caFile,
      CIPORT_GATEWAY: h.gateway.url,
      NO_COLOR: '1',
    };
  });
  afterAll(async () => {
    await h?.stop();
  });

  it('list --json prints the documented array; --active narrows it', async () => {
    const c = await h.client();
    const live = await openSession(c, await h.token(), { targets: ['echo'] });
    const gone = await openSession(c, await h.token(), { targets: ['redis'] });
    await api(c, 'DELETE', `/v1/sessions/${gone.id}`, { bearer: gone.secret });

    const all = await cli(['sessions', 'list', '--json'], env);
    expect(all.code).toBe(0);
    const list = JSON.parse(all.stdout) as Array<Record<string, unknown>>;
    const mine = list.find((s) => s.id === live.id);
    expect(mine).toMatchObject({ id: live.id, state: 'active', end_reason: null, targets: ['echo'] });
    expect(Object.keys(mine ?? {})).toEqual(
      expect.arrayContaining([
        'id',
        'state',
        'end_reason',
        'targets',
        'principal',
        'created_at',
        'expires_at',
      ]),
    );
    expect(list.find((s) => s.id === gone.id)).toMatchObject({ state: 'ended', end_reason: 'client_end' });

    const active = JSON.parse((await cli(['sessions', 'list', '--active', '--json'], env)).stdout) as Array<{
      id: string;
      state: string;
    }>;
    expect(active.every((s) => s.state === 'active')).toBe(true);
    expect(active.map((s) => s.id)).toContain(live.id);
    expect(active.map((s) => s.id)).not.toContain(gone.id);

    const table = await cli(['sessions', 'list', '--gateway', h.gateway.url], {
      ...env,
      CIPORT_GATEWAY: undefined,
    });
    expect(table.code).toBe(0);
    expect(table.stdout.split('\n')[0]).toMatch(/^ID\s+STATE\s+END\s+TARGETS\s+WHO\s+CREATED\s+EXPIRES$/);
    expect(table.stdout).toContain(`${live.id}  active`);
    expect(table.stdout).toContain('acme/ledger@main');
  });

  it('list --json through a slow pipe is whole: the process drains stdout before it exits', async () => {
    // > 64 KiB of JSON (a pipe's buffer), read by a consumer that starts late, like `| jq` on a busy box.
    const c = await h.client();
    for (let i = 0; i < 150; i++) await openSession(c, await h.token(), { targets: ['echo'] });
    const bin = join(import.meta.dirname, '../../bin/ciport.js');
    const script = `node ${JSON.stringify(bin)} sessions list --json | (sleep 2; cat)`;
    const out = await new Promise<string>((resolve, reject) => {
      execFile(
        'sh',
        ['-c', script],
        { env: { ...process.env, ...env }, maxBuffer: 1 << 24 },
        (err, stdout) => (err ? reject(err) : resolve(stdout)),
      );
    });
    expect(out.length).toBeGreaterThan(65_536);
    expect((JSON.parse(out) as unknown[]).length).toBeGreaterThanOrEqual(150);
  });

  it('revoke ends the session and cuts its tunnel', async () => {
    const c = await h.client();
    const s = await openSession(c, await h.token(), { targets: ['echo'] });
    const stream = await tunnel(c, s, 'echo');
    stream.write('x');
    const run = await cli(['sessions', 'revoke', s.id, '--json'], env);
    expect(run.code).toBe(0);
    expect(JSON.parse(run.stdout)).toMatchObject({ state: 'ended', end_reason: 'revoked', revoked: true });
    expect(await closed(stream)).toBe(h2.NGHTTP2_CANCEL);
    // Again: it says that the session had ended already, and how; exit 0 (it is not active).
    const human = await cli(['sessions', 'revoke', s.id], env);
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(
      new RegExp(
        `^${s.id}: already ended \\(revoked at \\d{4}-[^)]+Z\\); nothing revoked, nothing recorded\\n$`,
      ),
    );
  });

  it('revoking a session its client ended says so instead of "ended (client_end)", and records nothing', async () => {
    const c = await h.client();
    const s = await openSession(c, await h.token(), { targets: ['echo'] });
    await api(c, 'DELETE', `/v1/sessions/${s.id}`, { bearer: s.secret });
    const before = (await h.gateway.store.auditEvents({ limit: 10_000 })).length;
    const human = await cli(['sessions', 'revoke', s.id, '--reason', 'too late'], env);
    expect(human.code).toBe(0);
    expect(human.stdout).toContain(`${s.id}: already ended (client_end at `);
    expect(human.stdout).toContain('nothing revoked');
    const json = await cli(['sessions', 'revoke', s.id, '--json'], env);
    expect(JSON.parse(json.stdout)).toMatchObject({
      state: 'ended',
      end_reason: 'client_end',
      revoked: false,
    });
    expect((await h.gateway.store.auditEvents({ limit: 10_000 })).length).toBe(before);
  });

  it('exits 2 for an unknown session or a missing admin token, 4 for a wrong one, 5 when unreachable', async () => {
    const unknown = await cli(['sessions', 'revoke', 'ses_doesnotexist'], env);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('CIPORT_E_SESSION_NOT_FOUND');
    const noToken = await cli(['sessions', 'list'], { ...env, CIPORT_ADMIN_TOKEN: undefined });
    expect(noToken.code).toBe(2);
    const wrong = await cli(['sessions', 'list', '--json'], { ...env, CIPORT_ADMIN_TOKEN: 'nope' });
    expect(wrong.code).toBe(4);
    expect(JSON.parse(wrong.stdout).error.code).toBe('CIPORT_E_ADMIN_UNAUTHORIZED');
    const down = await cli(['sessions', 'list', '--gateway', 'https://127.0.0.1:1'], env);
    expect(down.code).toBe(5);
  });
});

/** A config file for a gateway on 127.0.0.1:0 with the fixture issuer and an echo target. */
function writeConfig(
  dir: string,
  issuerUrl: string,
  echoPort: number,
  extra: Record<string, unknown> = {},
): string {
  const file = join(dir, 'gateway.yaml');
  writeFileSync(
    file,
    stringify({
      listen: '127.0.0.1:0',
      data_dir: join(dir, 'data'),
      admin_tokens: [{ env: 'CIPORT_ADMIN_TOKEN' }],
      sessions: { rate_limit: { per_minute: 600, burst: 100 } },
      issuers: [{ name: 'gitlab', kind: 'gitlab', issuer: issuerUrl, audience: 'ciport' }],
      targets: [{ name: 'echo', protocol: 'tcp', address: `127.0.0.1:${echoPort}` }],
      rules: [{ name: 'main', issuer: 'gitlab', when: { ref_protected: true }, allow: ['echo'] }],
      ...extra,
    }),
  );
  return file;
}

describe('ciport gateway', () => {
  it('runs until SIGTERM, drains, ends sessions with gateway_shutdown and returns 0', async () => {
    const issuer = await FixtureIssuer.start();
    const echo = await startEcho();
    const { dir, cleanup } = tempDir('ciport-cli-');
    try {
      const file = writeConfig(dir, issuer.url, echo.port, { server: { drain_grace: '1s' } });
      const stderr = new Capture();
      const signals = signalSource();
      const io = {
        stdout: new Capture(),
        stderr,
        env: { CIPORT_ADMIN_TOKEN: ADMIN_TOKEN, CIPORT_LOG_LEVEL: 'silent' },
      };
      const running = runGateway(file, io, { signals });
      const url = await waitFor(() => /listening on (https:\/\/\S+)/.exec(stderr.text)?.[1]);
      expect(stderr.text).toContain(join(dir, 'data', 'ca.crt'));
      const caPem = (await import('node:fs')).readFileSync(join(dir, 'data', 'ca.crt'), 'utf8');
      const c = await connectClient(url, caPem);
      const s = await openSession(c, await issuer.mint({}, { preset: 'gitlab-main' }), { targets: ['echo'] });
      const stream = await tunnel(c, s, 'echo');
      signals.emit('SIGTERM');
      expect(await closed(stream)).toBe(h2.NGHTTP2_CANCEL);
      expect(await running).toBe(0);
      expect(stderr.text).toContain('SIGTERM: draining');
      c.destroy();
      const store = await openStore(undefined, { dataDir: join(dir, 'data') });
      try {
        expect(await store.getSession(s.id)).toMatchObject({ state: 'ended', endReason: 'gateway_shutdown' });
      } finally {
        await store.close();
      }
    } finally {
      await echo.close();
      await issuer.close();
      cleanup();
    }
  });

  it('exits 2 when its port is taken', async () => {
    const issuer = await FixtureIssuer.start();
    const echo = await startEcho();
    const { dir, cleanup } = tempDir('ciport-cli-');
    try {
      const file = writeConfig(dir, issuer.url, echo.port, { listen: `127.0.0.1:${echo.port}` });
      const run = await cli(['gateway', '--config', file], {
        CIPORT_ADMIN_TOKEN: ADMIN_TOKEN,
        CIPORT_LOG_LEVEL: 'silent',
      });
      expect(run.code).toBe(2);
      expect(run.stderr).toContain(`cannot listen on 127.0.0.1:${echo.port} (EADDRINUSE)`);
    } finally {
      await echo.close();
      await issuer.close();
      cleanup();
    }
  });

  it('exits 2 with a configuration error', async () => {
    const { dir, cleanup } = tempDir('ciport-cli-');
    try {
      const file = join(dir, 'bad.yaml');
      writeFileSync(file, 'listen: nope\n');
      const run = await cli(['gateway', '--config', file], {});
      expect(run.code).toBe(2);
      expect(run.stderr).toContain('CIPORT_E_CONFIG_INVALID');
    } finally {
      cleanup();
    }
  });
});

describe('ciport gateway as a process', () => {
  const root = new URL('../..', import.meta.url).pathname;
  const { dir: buildDir, cleanup: cleanBuild } = tempDir('ciport-build-');
  afterAll(() => cleanBuild());

  beforeAll(async () => {
    // Compile the sources to a private directory (type errors elsewhere do not stop emit).
    await new Promise<void>((resolve) => {
      execFile(
        process.execPath,
        [
          join(root, 'node_modules/typescript/bin/tsc'),
          '-p',
          join(root, 'tsconfig.build.json'),
          '--outDir',
          buildDir,
        ],
        { cwd: root },
        () => resolve(),
      );
    });
  }, 120_000);

  it('drains on a real SIGTERM and exits 0', async () => {
    const issuer = await FixtureIssuer.start();
    const echo = await startEcho();
    const { dir, cleanup } = tempDir('ciport-proc-');
    let child: ChildProcess | undefined;
    try {
      const file = writeConfig(dir, issuer.url, echo.port, { server: { drain_grace: '5s' } });
      const entry = join(buildDir, 'src/cli/commands/gateway.js');
      const script = `
        const { Command } = await import('commander');
        const { registerGateway } = await import(${JSON.stringify(entry)});
        const ctx = { io: { stdout: process.stdout, stderr: process.stderr, env: process.env }, exitCode: 0 };
        const program = new Command('ciport');
        registerGateway(program, ctx);
        await program.parseAsync(process.argv);
        process.exitCode = ctx.exitCode;`;
      child = spawn(
        process.execPath,
        ['--input-type=module', '-e', script, 'ciport', 'gateway', '--config', file],
        {
          cwd: root,
          env: { ...process.env, CIPORT_ADMIN_TOKEN: ADMIN_TOKEN, CIPORT_LOG_LEVEL: 'info' },
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      );
      let stderr = '';
      child.stderr?.on('data', (d: Buffer) => {
        stderr += d.toString();
      });
      const exited = new Promise<number | null>((resolve) => child?.once('exit', (code) => resolve(code)));
      const url = await waitFor(() => /listening on (https:\/\/\S+)/.exec(stderr)?.[1], 20_000);
      const caPem = (await import('node:fs')).readFileSync(join(dir, 'data', 'ca.crt'), 'utf8');
      const c = await connectClient(url, caPem);
      const token = await issuer.mint({}, { preset: 'gitlab-main' });
      const s = await openSession(c, token, { targets: ['echo'] });
      const stream = await tunnel(c, s, 'echo');

      child.kill('SIGTERM');
      // During the grace: no new sessions, the live tunnel still carries bytes.
      const refused = await waitFor(async () => {
        const r = await api(c, 'POST', '/v1/sessions', { bearer: token, body: {} });
        return r.status === 503 ? r : undefined;
      });
      expect(refused.body.error.code).toBe('CIPORT_E_GATEWAY_DRAINING');
      stream.write('grace');
      expect(await new Promise<string>((r) => stream.once('data', (d: Buffer) => r(d.toString())))).toBe(
        'grace',
      );
      // The client finishes its work: the drain ends early and the process exits 0.
      stream.end();
      expect(await closed(stream)).toBe(0);
      expect(await exited).toBe(0);
      expect(stderr).toContain('gateway stopped');
      // Logs are JSON lines on stderr and never carry the token or the secret.
      expect(stderr).toContain('"msg":"session opened"');
      expect(stderr).not.toContain(token);
      expect(stderr).not.toContain(s.secret);
      c.destroy();
      const store = await openStore(undefined, { dataDir: join(dir, 'data') });
      try {
        expect(await store.getSession(s.id)).toMatchObject({ state: 'ended', endReason: 'gateway_shutdown' });
      } finally {
        await store.close();
      }
    } finally {
      if (child && child.exitCode === null) child.kill('SIGKILL');
      await echo.close();
      await issuer.close();
      cleanup();
    }
  }, 60_000);
});
