// End to end, the firewall for real: network namespaces put the target where only the agent can
// reach it, and the test checks that the runner cannot connect to it directly but can through
// ciport.
//
//   root namespace (this process: runner + gateway)
//     └─ veth 10.213.a.b+1/30 ── 10.213.a.b+2/30  AGT (the `ciport agent` process)
//                                 └─ veth 10.213.a.b+5/30 ── 10.213.a.b+6/30  TGT (redis-server)
//
// TGT is wired only to AGT; root has no route of its own to TGT's /30 (only, maybe, a default
// route out of the machine, which may lead to a proxy that accepts any connect: the direct probe
// therefore checks that the target never answers, not only that the connect fails) and no
// namespace forwards. The gateway listens on its veth address only (not 0.0.0.0); its generated
// certificate covers that address because it is the `listen:` host (src/transport/tls.ts
// serverNames). The redis password lives only in the agent's environment.
//
// Needs root and a working `ip netns` (iproute2). Without them the suite is reported as skipped,
// with the reason in its title and on stderr. The names carry a random suffix so parallel runs
// do not clash; afterAll deletes the namespaces (which deletes their veths) even after a failed
// beforeAll.
import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseGatewayConfig } from '../../src/config/load.js';
import { type RunningGateway, startGateway } from '../../src/gateway/server.js';
import { createLogger } from '../../src/log/logger.js';
import { agentYamlHead } from '../fixtures/agent-yaml.js';
import { baseEnv, ensureBuilt, LAUNCHER, ROOT, runCli } from '../fixtures/cli.js';
import { e2eGatewayDoc } from '../fixtures/gateway-doc.js';
import { FixtureIssuer } from '../fixtures/oidc-issuer.js';
import { waitFor } from '../fixtures/wait-for.js';

// ---- can this machine build namespaces? (synchronous, at collection) ------------------------

function probe(): { ok: true } | { ok: false; reason: string } {
  if (process.platform !== 'linux')
    return { ok: false, reason: `network namespaces need Linux (${process.platform})` };
  if (process.getuid?.() !== 0) return { ok: false, reason: 'not root: ip netns add needs CAP_SYS_ADMIN' };
  for (const [cmd, args] of [
    ['ip', ['-V']],
    ['redis-server', ['--version']],
    ['redis-cli', ['--version']],
  ] as const) {
    try {
      execFileSync(cmd, [...args], { stdio: 'ignore', timeout: 10_000 });
    } catch (err) {
      return { ok: false, reason: `${cmd} unavailable (${(err as Error).message.split('\n')[0]})` };
    }
  }
  const ns = `cpa-probe-${randomBytes(3).toString('hex')}`;
  try {
    execFileSync('ip', ['netns', 'add', ns], { stdio: 'pipe', timeout: 10_000 });
  } catch (err) {
    return { ok: false, reason: `ip netns add fails: ${stderrOf(err)}` };
  }
  try {
    execFileSync('ip', ['-n', ns, 'link', 'add', 'p0', 'type', 'veth', 'peer', 'name', 'p1'], {
      stdio: 'pipe',
      timeout: 10_000,
    });
    execFileSync('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up'], {
      stdio: 'pipe',
      timeout: 10_000,
    });
    return { ok: true };
  } catch (err) {
    return { ok: false, reason: `cannot use a network namespace (veth, ip netns exec): ${stderrOf(err)}` };
  } finally {
    try {
      execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore', timeout: 10_000 });
    } catch {
      // nothing to clean up
    }
  }
}

function stderrOf(err: unknown): string {
  const e = err as { stderr?: Buffer | string; message: string };
  return (e.stderr?.toString().trim() || e.message).split('\n')[0] ?? '';
}

const canNetns = probe();
const SKIP_REASON = canNetns.ok ? '' : canNetns.reason;
if (!canNetns.ok) console.warn(`agent-netns.test.ts: SKIPPED: ${SKIP_REASON}`);

// ---- topology ----------------------------------------------------------------------------

/** A /29 in 10.213.0.0/16 (two /30s) that no address or route of the root namespace mentions. */
function pickSubnet(): { a: number; b: number } {
  let taken = '';
  try {
    taken = execFileSync('ip', ['-4', '-o', 'addr', 'show'], { encoding: 'utf8' });
    taken += execFileSync('ip', ['-4', 'route', 'show', 'table', 'all'], { encoding: 'utf8' });
  } catch {
    // best effort: the random choice alone makes a clash unlikely
  }
  const used = new Set<number>();
  for (const m of taken.matchAll(/\b10\.213\.(\d+)\.(\d+)/g))
    used.add(Number(m[1]) * 32 + (Number(m[2]) >> 3));
  for (;;) {
    const block = randomBytes(2).readUInt16BE(0) % 8192;
    if (!used.has(block)) return { a: block >> 5, b: (block & 31) << 3 };
  }
}

const ID = randomBytes(3).toString('hex');
const AGT = `cpa-${ID}-agt`;
const TGT = `cpa-${ID}-tgt`;
const VETH_ROOT = `cpa${ID}r`; // root side of root↔AGT
const VETH_AGT = `cpa${ID}a`; // AGT side of root↔AGT
const VETH_AGT2 = `cpa${ID}b`; // AGT side of AGT↔TGT
const VETH_TGT = `cpa${ID}t`; // TGT side of AGT↔TGT
const { a: NET_A, b: NET_B } = canNetns.ok ? pickSubnet() : { a: 0, b: 0 };
const ip4 = (offset: number) => `10.213.${NET_A}.${NET_B + offset}`;
const ROOT_IP = ip4(1);
const AGT_IP = ip4(2);
const AGT_IP2 = ip4(5);
const TGT_IP = ip4(6);
const REDIS_PORT = 20_000 + (randomBytes(2).readUInt16BE(0) % 20_000);
const REDIS_PASSWORD = `redis-Secret-${randomBytes(12).toString('hex')}-pw`;
const ADMIN = `admin-${randomBytes(12).toString('hex')}`;
const AGENT_NAME = `netns-${ID}`;

// ---- helpers -----------------------------------------------------------------------------

interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Run CMD ARGS to completion (killed after `timeoutMs`); never rejects. */
function run(cmd: string, args: string[], timeoutMs = 10_000): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(
      cmd,
      args,
      { timeout: timeoutMs, killSignal: 'SIGKILL', encoding: 'utf8' },
      (err, stdout, stderr) => {
        const e = err as (NodeJS.ErrnoException & { code?: number | string; signal?: NodeJS.Signals }) | null;
        resolve({
          code: e ? (typeof e.code === 'number' ? e.code : null) : 0,
          signal: e?.signal ?? null,
          stdout,
          stderr: stderr || (e && typeof e.code === 'string' ? e.message : ''),
        });
      },
    );
  });
}

/** `ip ARGS`, throwing with ip's message when it fails. */
async function ip(...args: string[]): Promise<string> {
  const r = await run('ip', args);
  if (r.code !== 0)
    throw new Error(`ip ${args.join(' ')}: ${r.stderr.trim() || `exit ${r.code ?? r.signal}`}`);
  return r.stdout;
}

interface Proc {
  child: ChildProcess;
  output: () => string;
  exited: Promise<void>;
}

/** Start CMD ARGS inside namespace NS (`ip netns exec` execs in place: the child is CMD). */
function spawnIn(ns: string, cmd: string, args: string[], env: NodeJS.ProcessEnv): Proc {
  const child = spawn('ip', ['netns', 'exec', ns, cmd, ...args], {
    cwd: ROOT,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const append = (c: Buffer) => {
    output = (output + c.toString()).slice(-200_000);
  };
  child.stdout?.on('data', append);
  child.stderr?.on('data', append);
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    child.once('close', () => resolve());
    child.once('error', () => resolve());
  });
  return { child, output: () => output, exited };
}

async function stop(proc: Proc | undefined): Promise<void> {
  if (!proc || proc.child.exitCode !== null || proc.child.signalCode !== null) return;
  proc.child.kill('SIGTERM');
  const timer = setTimeout(() => proc.child.kill('SIGKILL'), 5_000);
  await proc.exited;
  clearTimeout(timer);
}

/**
 * A TCP connect from this (root) namespace, bounded, then `PING`: how the connect ended (an errno
 * code, 'TIMEOUT' or 'connected') and what answered. A password-protected redis-server answers
 * `-NOAUTH`; whatever else the root namespace's default route leads to (a proxy, say) does not.
 */
function probeDirect(
  host: string,
  port: number,
  timeoutMs: number,
): Promise<{ outcome: string; reply: string }> {
  return new Promise((resolve) => {
    let outcome = 'TIMEOUT';
    let reply = '';
    const socket = connect({ host, port });
    const done = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ outcome, reply });
    };
    const timer = setTimeout(done, timeoutMs);
    socket.once('connect', () => {
      outcome = 'connected';
      socket.write('PING\r\n');
    });
    socket.on('data', (d: Buffer) => {
      reply += d.toString('latin1');
      if (reply.includes('\r\n')) done();
    });
    socket.once('error', (err: NodeJS.ErrnoException) => {
      if (outcome !== 'connected') outcome = err.code ?? err.message;
      done();
    });
    socket.once('close', done);
  });
}

// ---- the suite ---------------------------------------------------------------------------

const TITLE = 'ciport exec through an agent in another network namespace';

describe.skipIf(!canNetns.ok)(canNetns.ok ? TITLE : `${TITLE} (skipped: ${SKIP_REASON})`, () => {
  const namespaces: string[] = [];
  const logLines: string[] = [];
  let dir: string | undefined;
  let gateway: RunningGateway | undefined;
  let issuer: FixtureIssuer | undefined;
  let redis: Proc | undefined;
  let agent: Proc | undefined;
  let token = '';

  const tgtRedisCli = (...args: string[]) =>
    run('ip', [
      'netns',
      'exec',
      TGT,
      'redis-cli',
      '-h',
      TGT_IP,
      '-p',
      String(REDIS_PORT),
      '-a',
      REDIS_PASSWORD,
      '--no-auth-warning',
      ...args,
    ]);

  const gw = () => {
    if (!gateway) throw new Error('no gateway');
    return gateway;
  };

  /** The environment of the CI job: gateway URL, CA, ID token; no redis password anywhere. */
  const jobEnv = () =>
    baseEnv({ CIPORT_GATEWAY: gw().url, CIPORT_CA_FILE: gw().caFile, CIPORT_ID_TOKEN: token });

  beforeAll(async () => {
    const built = ensureBuilt();
    dir = mkdtempSync(join(tmpdir(), 'ciport-e2e-netns-'));

    // Namespaces first (each recorded once created, so afterAll deletes whatever exists).
    for (const ns of [AGT, TGT]) {
      await ip('netns', 'add', ns);
      namespaces.push(ns);
      await ip('-n', ns, 'link', 'set', 'lo', 'up');
    }
    // root ↔ AGT
    await ip('link', 'add', VETH_ROOT, 'type', 'veth', 'peer', 'name', VETH_AGT, 'netns', AGT);
    await ip('addr', 'add', `${ROOT_IP}/30`, 'dev', VETH_ROOT);
    await ip('link', 'set', VETH_ROOT, 'up');
    await ip('-n', AGT, 'addr', 'add', `${AGT_IP}/30`, 'dev', VETH_AGT);
    await ip('-n', AGT, 'link', 'set', VETH_AGT, 'up');
    // AGT ↔ TGT (nothing of it in the root namespace)
    await ip('-n', AGT, 'link', 'add', VETH_AGT2, 'type', 'veth', 'peer', 'name', VETH_TGT, 'netns', TGT);
    await ip('-n', AGT, 'addr', 'add', `${AGT_IP2}/30`, 'dev', VETH_AGT2);
    await ip('-n', AGT, 'link', 'set', VETH_AGT2, 'up');
    await ip('-n', TGT, 'addr', 'add', `${TGT_IP}/30`, 'dev', VETH_TGT);
    await ip('-n', TGT, 'link', 'set', VETH_TGT, 'up');

    // The target: a password-protected redis-server in TGT, bound to TGT's address only.
    const redisDir = join(dir, 'redis');
    mkdirSync(redisDir);
    redis = spawnIn(
      TGT,
      'redis-server',
      [
        '--port',
        String(REDIS_PORT),
        '--bind',
        TGT_IP,
        '--save',
        '',
        '--appendonly',
        'no',
        '--dir',
        redisDir,
        '--requirepass',
        REDIS_PASSWORD,
      ],
      baseEnv(),
    );
    await waitFor(
      async () => {
        if (redis?.child.exitCode !== null) throw new Error(`redis-server exited:\n${redis?.output()}`);
        return (await tgtRedisCli('PING')).stdout.trim() === 'PONG';
      },
      15_000,
      'redis-server in the target namespace',
    );

    // The gateway, in this process, on the root side of the veth only.
    issuer = await FixtureIssuer.start({ kind: 'gitlab' });
    const cfg = parseGatewayConfig(
      JSON.stringify({
        listen: `${ROOT_IP}:0`,
        ...e2eGatewayDoc(join(dir, 'gw'), issuer.url, { adminEnv: 'ADMIN' }),
        rules: [
          {
            name: 'main',
            issuer: 'gitlab',
            when: { project_id: '61577203', ref_protected: true },
            allow: ['cache'],
            max_ttl: '30m',
          },
        ],
      }),
      'gateway.json',
      { resolveSecrets: true, env: { ADMIN } },
    );
    const destination = new Writable({
      write(chunk, _enc, cb) {
        logLines.push(...chunk.toString().split('\n').filter(Boolean));
        cb();
      },
    });
    gateway = await startGateway(cfg, {
      logger: createLogger({ level: 'debug', destination: destination as never }),
      stderr: { write: () => true } as never,
      sweepIntervalMs: 250,
    });
    expect(gateway.url).toBe(`https://${ROOT_IP}:${gateway.port}`);
    expect(gateway.caFile).toBeTruthy();
    token = await issuer.mint({}, { preset: 'gitlab-main', audience: 'ciport' });
    await built;

    const enrolled = await runCli(['agents', 'enroll', '--name', AGENT_NAME, '--targets', 'cache'], {
      env: baseEnv({
        CIPORT_GATEWAY: gateway.url,
        CIPORT_CA_FILE: gateway.caFile,
        CIPORT_ADMIN_TOKEN: ADMIN,
      }),
    });
    expect(enrolled.stderr).toBe('');
    expect(enrolled.code).toBe(0);
    const enrollment = enrolled.stdout.trim();
    expect(enrollment).toMatch(/^cpe_[A-Za-z0-9_-]{43}$/);

    // The agent, in AGT: it reaches the gateway over the first veth and the target over the second.
    const agentConfig = join(dir, 'agent.yaml');
    writeFileSync(
      agentConfig,
      [
        ...agentYamlHead(gateway, AGENT_NAME, join(dir, 'agent')),
        `  - {name: cache, protocol: redis, address: "${TGT_IP}:${REDIS_PORT}", credentials: {password: {env: REDIS_PW}}}`,
        '',
      ].join('\n'),
    );
    // `--` before the script, as spawnCli does (Node 20 would otherwise read options after it).
    agent = spawnIn(
      AGT,
      process.execPath,
      ['--', LAUNCHER, 'agent', '--config', agentConfig, '--log-level', 'debug'],
      baseEnv({ CIPORT_ENROLLMENT_TOKEN: enrollment, REDIS_PW: REDIS_PASSWORD }),
    );
    await waitFor(
      () => {
        if (agent?.child.exitCode !== null) throw new Error(`the agent exited:\n${agent?.output()}`);
        return gw().agents.hub.serves('cache');
      },
      30_000,
      'the agent (in its namespace) to connect',
    ).catch((err: Error) => {
      throw new Error(`${err.message}\nagent output:\n${agent?.output().slice(-5_000)}`);
    });
  }, 180_000);

  afterAll(async () => {
    const errors: string[] = [];
    const attempt = async (what: string, fn: () => Promise<unknown> | undefined) => {
      try {
        await fn();
      } catch (err) {
        errors.push(`${what}: ${(err as Error).message}`);
      }
    };
    await attempt('stop the agent', () => stop(agent));
    await attempt('stop redis-server', () => stop(redis));
    await attempt('close the gateway', () => gateway?.close());
    await attempt('close the issuer', () => issuer?.close());
    // Deleting a namespace deletes the veths in it, and with them their peers in root.
    for (const ns of namespaces.reverse()) await attempt(`ip netns del ${ns}`, () => ip('netns', 'del', ns));
    // The kernel tears a deleted namespace down asynchronously; its veths (and their root ends)
    // go with it shortly after. Should the root end outlive that, remove it.
    const rootEndGone = async () => (await run('ip', ['link', 'show', VETH_ROOT])).code !== 0;
    if (
      !(await waitFor(rootEndGone, 10_000).then(
        () => true,
        () => false,
      ))
    ) {
      await attempt(`ip link del ${VETH_ROOT}`, async () => {
        const r = await run('ip', ['link', 'del', VETH_ROOT]);
        if (r.code !== 0 && !(await rootEndGone())) throw new Error(r.stderr.trim());
      });
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
    if (errors.length) throw new Error(`cleanup:\n${errors.join('\n')}`);
  }, 60_000);

  it('the topology: the agent namespace reaches the target; the root namespace has no route to it', async () => {
    const fromAgent = await run('ip', [
      'netns',
      'exec',
      AGT,
      'redis-cli',
      '-h',
      TGT_IP,
      '-p',
      String(REDIS_PORT),
      '-a',
      REDIS_PASSWORD,
      '--no-auth-warning',
      'PING',
    ]);
    expect(fromAgent.stdout.trim()).toBe('PONG');
    // Without the password it answers NOAUTH: what the direct probe below must never see.
    const noAuth = await run('ip', [
      'netns',
      'exec',
      AGT,
      'redis-cli',
      '-h',
      TGT_IP,
      '-p',
      String(REDIS_PORT),
      'PING',
    ]);
    expect(noAuth.stdout + noAuth.stderr).toMatch(/NOAUTH/);
    // The root namespace's route to TGT, if any, is not through our veth (it is the default
    // route here, or none): the AGT↔TGT link exists only inside the namespaces.
    const route = await run('ip', ['-4', 'route', 'get', TGT_IP]);
    expect(route.stdout).not.toContain(`dev ${VETH_ROOT}`);
    expect(await ip('-4', 'route', 'show')).not.toContain(`${ip4(4)}/30`);
  });

  it('the runner cannot reach the target directly', async () => {
    const { outcome, reply } = await probeDirect(TGT_IP, REDIS_PORT, 2_000);
    // Never the target: it would answer PING with -NOAUTH (see the topology test).
    expect(reply).not.toMatch(/^[+-](PONG|NOAUTH)/);
    const route = await run('ip', ['-4', 'route', 'get', TGT_IP]);
    if (route.code !== 0) {
      // No route at all (no default route in this namespace): the connect fails at once.
      expect(['ENETUNREACH', 'EHOSTUNREACH']).toContain(outcome);
    } else {
      // The default route (not our veth) takes it: nothing answers, or something that is not the
      // target does (some sandboxes put a transparent proxy there that accepts every connect).
      expect(route.stdout).not.toContain(`dev ${VETH_ROOT}`);
      expect([
        'ENETUNREACH',
        'EHOSTUNREACH',
        'ECONNREFUSED',
        'ECONNRESET',
        'ETIMEDOUT',
        'TIMEOUT',
        'connected',
      ]).toContain(outcome);
    }
    const cli = await run('redis-cli', ['-h', TGT_IP, '-p', String(REDIS_PORT), 'PING'], 5_000);
    expect(cli.code).not.toBe(0);
    expect(cli.stdout + cli.stderr).not.toMatch(/PONG|NOAUTH/);
  });

  it('the runner reaches it through ciport, without the password; the agent is the exit', async () => {
    const r = await runCli(
      [
        'exec',
        'cache',
        '--',
        'sh',
        '-c',
        'redis-cli --no-auth-warning -u "$CIPORT_CACHE_URL" SET k v && redis-cli -h "$CIPORT_CACHE_HOST" -p "$CIPORT_CACHE_PORT" GET k && env',
      ],
      { env: jobEnv(), timeoutMs: 30_000 },
    );
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const [set, get, ...envLines] = r.stdout.trim().split('\n');
    expect([set, get]).toEqual(['OK', 'v']);
    // The job never saw the password: not in its environment, not in what it printed.
    expect(envLines.join('\n')).toMatch(/^CIPORT_CACHE_URL=redis:\/\/(\S+@)?127\.0\.0\.1:\d+$/m);
    expect(r.stdout).not.toContain(REDIS_PASSWORD);

    // The key is really in the redis-server of the target namespace.
    const direct = await tgtRedisCli('GET', 'k');
    expect(direct.stdout.trim()).toBe('v');

    // The gateway audited the connection with the agent as its exit.
    const [session] = await gw().manager.list();
    expect(session).toBeTruthy();
    const events = (await gw().store.auditEvents({ limit: 10_000 })).filter(
      (e) => (e.data as { session?: string }).session === session?.id,
    );
    const opened = events.find((e) => e.type === 'connection.opened');
    expect(opened?.data).toMatchObject({ exit: AGENT_NAME, target: 'cache' });
  });

  it('the password reached neither the gateway logs nor its audit log', async () => {
    const all = JSON.stringify(await gw().store.auditEvents({ limit: 10_000 })) + logLines.join('\n');
    expect(all).not.toContain(REDIS_PASSWORD);
  });
});
