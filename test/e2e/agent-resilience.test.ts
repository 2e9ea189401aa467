// Issue 4 (resilience) and issue 6 (crash safety, agents): agents as real processes
// (`ciport agent`, SIGKILLed), a real gateway restarted on the same port and store, jobs as
// `ciport open` / `ciport exec`. Gateway restart → agents back within 5 s; agent killed →
// in-flight connections close, new ones work after its restart; two agents for one target, one
// killed mid-run → new connections keep succeeding; an agent killed while a session holds a
// per-session role, the session ending while it is down → the role is dropped when it returns.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { GatewayConfig } from '../../src/config/schema.js';
import type { RunningGateway } from '../../src/gateway/server.js';
import { agentYamlHead } from '../fixtures/agent-yaml.js';
import { baseEnv, ensureBuilt, LAUNCHER, openedEnv, runCli, spawnCli } from '../fixtures/cli.js';
import { freePort } from '../fixtures/free-port.js';
import { gatewayConfig, startTestGateway } from '../fixtures/gateway.js';
import { e2eGatewayDoc } from '../fixtures/gateway-doc.js';
import { FixtureIssuer } from '../fixtures/oidc-issuer.js';
import { createDynamicAdmin } from '../fixtures/pg-dynamic-admin.js';
import { type PgServer, startPgServer } from '../fixtures/pg-server.js';
import { waitFor } from '../fixtures/wait-for.js';

const dir = mkdtempSync(join(tmpdir(), 'ciport-agent-res-'));
const ADMIN = `admin-${Math.random().toString(36).slice(2)}`;

let cfg: GatewayConfig;
let gateway: RunningGateway;
let issuer: FixtureIssuer;
let pg: PgServer;
let echo: Server;
let echoPort: number;
let token: string;
const agents = new Map<string, ChildProcess>();
const served: Record<string, number> = {};

function startEcho(): Promise<void> {
  echo = createServer((socket) => {
    socket.on('error', () => {});
    socket.pipe(socket);
  });
  return new Promise((resolve) =>
    echo.listen(0, '127.0.0.1', () => {
      echoPort = (echo.address() as { port: number }).port;
      resolve();
    }),
  );
}

function startGw(): Promise<RunningGateway> {
  return startTestGateway(cfg, { sweepIntervalMs: 250 });
}

const adminEnv = () =>
  baseEnv({ CIPORT_GATEWAY: gateway.url, CIPORT_CA_FILE: gateway.caFile, CIPORT_ADMIN_TOKEN: ADMIN });

/** Enroll (first time) and start `ciport agent` for `name`, serving the echo and pg targets. */
async function startAgent(name: string): Promise<ChildProcess> {
  const config = join(dir, `${name}.yaml`);
  let enrollment = '';
  try {
    readFileSync(config);
  } catch {
    const r = await runCli(['agents', 'enroll', '--name', name, '--targets', 'echo,db-dyn'], {
      env: adminEnv(),
    });
    expect(r.code).toBe(0);
    enrollment = r.stdout.trim();
    writeFileSync(
      config,
      [
        ...agentYamlHead(gateway, name, join(dir, name)),
        `  - {name: echo, protocol: tcp, address: "127.0.0.1:${echoPort}"}`,
        `  - {name: db-dyn, protocol: postgres, address: "127.0.0.1:${pg.port}", database: app,`,
        '     credentials: {dynamic: {admin: {user: dyn_admin, password: {env: SUPER_PW}}, grant: [readonly], owner: app}}}',
        '',
      ].join('\n'),
    );
  }
  const child = spawn(process.execPath, ['--', LAUNCHER, 'agent', '--config', config], {
    env: baseEnv({ CIPORT_ENROLLMENT_TOKEN: enrollment, SUPER_PW: pg.superPassword }),
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  child.stderr?.on('data', () => {});
  agents.set(name, child);
  return child;
}

function kill(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGKILL');
  });
}

const connectedAgents = () => new Set(gateway.agents.hub.list().map((a) => a.name));

beforeAll(async () => {
  const built = ensureBuilt();
  issuer = await FixtureIssuer.start({ kind: 'gitlab' });
  pg = await startPgServer({
    roles: [{ name: 'app', password: 'app-pw-unused' }],
    databases: { app: 'app' },
  });
  await pg.sql('CREATE ROLE readonly NOLOGIN;');
  // A least-privilege admin, with the generated password for brevity.
  await createDynamicAdmin(pg, { password: pg.superPassword, owner: 'app', grant: ['readonly'] });
  await startEcho();
  cfg = gatewayConfig(
    {
      listen: `127.0.0.1:${await freePort()}`,
      ...e2eGatewayDoc(join(dir, 'gw'), issuer.url, { adminEnv: 'ADMIN' }),
      rules: [{ name: 'main', issuer: 'gitlab', when: { ref_protected: true }, allow: ['echo', 'db-dyn'] }],
    },
    { ADMIN },
  );
  gateway = await startGw();
  token = await issuer.mint({}, { preset: 'gitlab-main', audience: 'ciport' });
  await built;
}, 120_000);

afterAll(async () => {
  await Promise.all([...agents.values()].map(kill));
  await gateway?.close();
  await issuer?.close();
  await pg?.stop();
  echo?.close();
  rmSync(dir, { recursive: true, force: true });
});

const jobEnv = () =>
  baseEnv({ CIPORT_GATEWAY: gateway.url, CIPORT_CA_FILE: gateway.caFile, CIPORT_ID_TOKEN: token });

/** `ciport open echo` in the background; resolves with its port and a close function. */
async function openPort(targets: string[] = ['echo']) {
  const envFile = join(dir, `open-${Math.random().toString(36).slice(2)}.env`);
  const state = `${envFile}.state`;
  const open = spawnCli(['open', ...targets, '--env-file', envFile, '--state', state], {
    env: jobEnv(),
    timeoutMs: 120_000,
  });
  const vars = await openedEnv(envFile);
  return {
    vars,
    stderr: open.stderr,
    port: Number(vars.CIPORT_ECHO_PORT),
    async close() {
      await runCli(['close', '--state', state], { env: jobEnv() });
      await open.result;
    },
  };
}

/** One connection through the port: send a line, expect it echoed. Resolves true on success. */
function roundTrip(port: number, text = 'ping'): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    let got = '';
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), 10_000);
    s.on('error', () => done(false));
    s.on('close', () => {
      clearTimeout(timer);
      resolve(got === text);
    });
    s.on('data', (d) => {
      got += d.toString();
      if (got === text) {
        clearTimeout(timer);
        done(true);
      }
    });
    s.write(text);
  });
}

/** An open connection through the port, echo checked once. */
async function holdConnection(port: number): Promise<{ socket: Socket; closed: Promise<string> }> {
  const socket = connect({ host: '127.0.0.1', port });
  const closed = new Promise<string>((resolve) => {
    socket.on('error', (err) => resolve(`error ${err.message}`));
    socket.on('close', () => resolve('closed'));
  });
  await new Promise<void>((resolve, reject) => {
    socket.once('data', () => resolve());
    socket.once('error', reject);
    socket.write('hello');
  });
  return { socket, closed };
}

describe('agents survive restarts and failures', () => {
  it('a restarted gateway has its agent back within 5 s; tunnels work again', async () => {
    await startAgent('dc1');
    await waitFor(() => connectedAgents().has('dc1'), 20_000, 'dc1 to connect');
    const port = await openPort();
    expect(await roundTrip(port.port)).toBe(true);
    await port.close();

    await gateway.close(); // as a crash would: sockets destroyed, nothing ended
    gateway = await startGw();
    const listening = Date.now();
    await waitFor(() => connectedAgents().has('dc1'), 5_000, 'dc1 back within 5 s');
    served.reconnectMs = Date.now() - listening;
    const again = await openPort();
    expect(await roundTrip(again.port)).toBe(true);
    await again.close();
  });

  it('an agent killed mid-connection: the app sees its connection close; after a restart new ones work', async () => {
    const port = await openPort();
    const held = await holdConnection(port.port);
    await kill(agents.get('dc1'));
    expect(await held.closed).toMatch(/closed|error/);
    // The client says why (one line, even without --verbose).
    await waitFor(
      () => /echo: connection \d+ closed: .*agent carrying the connection went away/.test(port.stderr()),
      5_000,
      'the client to log why',
    );
    await waitFor(() => !connectedAgents().has('dc1'), 5_000, 'the gateway to notice');
    expect(await roundTrip(port.port)).toBe(false); // no agent serves echo now
    await startAgent('dc1');
    await waitFor(() => connectedAgents().has('dc1'), 10_000, 'dc1 restarted');
    expect(await roundTrip(port.port)).toBe(true);
    await port.close();
  });

  it('two agents for one target, one killed mid-run: new connections keep succeeding', async () => {
    await startAgent('dc2');
    await waitFor(() => connectedAgents().has('dc2') && connectedAgents().has('dc1'), 20_000, 'dc1 and dc2');
    const port = await openPort();
    const before: boolean[] = [];
    for (let i = 0; i < 10; i++) before.push(await roundTrip(port.port, `b${i}`));
    expect(before.every(Boolean)).toBe(true);
    // The session's connections stick to one agent; whichever it was, killing dc1 must not
    // stop new connections (they move to dc2).
    await kill(agents.get('dc1'));
    const after: boolean[] = [];
    for (let i = 0; i < 20; i++) after.push(await roundTrip(port.port, `a${i}`));
    expect(after).toEqual(Array(20).fill(true));
    const events = await gateway.store.auditEvents({ limit: 10_000 });
    const exits = new Set(
      events
        .filter((e) => e.type === 'connection.opened')
        .slice(-20)
        .map((e) => (e.data as { exit: string }).exit),
    );
    expect(exits).toEqual(new Set(['dc2']));
    await port.close();
    await startAgent('dc1');
    await waitFor(() => connectedAgents().has('dc1'), 10_000, 'dc1 restarted');
  });

  it('an agent down when a session ends drops that session role once it is back (reaper)', async () => {
    await kill(agents.get('dc2')); // one agent for db-dyn: the role is on dc1
    await waitFor(() => !connectedAgents().has('dc2'), 5_000, 'dc2 gone');
    const port = await openPort(['db-dyn']);
    const url = port.vars.CIPORT_DB_DYN_URL as string;
    const psql = await new Promise<string>((resolve, reject) => {
      const p = spawn('psql', [url, '-tAc', 'select current_user'], {
        env: { ...process.env, PSQLRC: '/dev/null' },
      });
      let out = '';
      p.stdout.on('data', (d) => {
        out += d;
      });
      p.on('exit', (code) => (code === 0 ? resolve(out.trim()) : reject(new Error(`psql exited ${code}`))));
    });
    expect(psql).toMatch(/^ciport_[0-9a-f]{16}$/);
    const [session] = await gateway.manager.list({ activeOnly: true });
    await kill(agents.get('dc1'));
    await waitFor(() => !connectedAgents().has('dc1'), 5_000, 'dc1 gone');
    await port.close(); // the session ends while no agent can drop the role
    expect(String(await pg.sql(`select count(*) from pg_roles where rolname = '${psql}'`))).toContain('1');
    await startAgent('dc1');
    await waitFor(
      async () =>
        String(await pg.sql(`select count(*) from pg_roles where rolname = '${psql}'`)).includes('0'),
      15_000,
      'the role to be reaped',
    );
    await waitFor(
      async () =>
        (await gateway.store.auditEvents({ limit: 10_000 })).some(
          (e) =>
            e.type === 'credential.revoked' &&
            (e.data as { session?: string; reason?: string }).session === session?.id &&
            (e.data as { reason?: string }).reason === 'reaper',
        ),
      10_000,
      'credential.revoked (reaper) in the audit log',
    );
  });
});
