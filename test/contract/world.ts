// One gateway (in process, SQLite store) and one agent (`ciport agent`, enrolled with `ciport
// agents enroll`) shared by every case of the contract suite. Each driver's target is configured
// twice: `<protocol>-gw` in the gateway's own config (the gateway is the exit) and `<protocol>-ag`
// in the agent's (the agent is). Jobs are `ciport open` processes, one per case.
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { constants as h2, connect as h2connect } from 'node:http2';
import { join } from 'node:path';
import type { AuditEvent } from '../../src/audit/events.js';
import type { RunningGateway } from '../../src/gateway/server.js';
import { agentYamlHead } from '../fixtures/agent-yaml.js';
import { baseEnv, type CliResult, ensureBuilt, openedEnv, runCli, spawnCli } from '../fixtures/cli.js';
import { freePort } from '../fixtures/free-port.js';
import { gatewayConfig, startTestGateway } from '../fixtures/gateway.js';
import { e2eGatewayDoc } from '../fixtures/gateway-doc.js';
import { FixtureIssuer } from '../fixtures/oidc-issuer.js';
import { waitFor } from '../fixtures/wait-for.js';
import { type Driver, type JobPort, run } from './driver.js';
import type { Upstreams } from './upstreams.js';

export const AGENT = 'contract-dc';
const ADMIN = `admin-${Math.random().toString(36).slice(2)}`;

export interface World {
  gateway: RunningGateway;
  /** The environment `ciport open` runs with (the job's: gateway, CA, its OIDC token). */
  jobEnv: NodeJS.ProcessEnv;
  /** Open a port to `target` in a new session. */
  open(target: string): Promise<JobPort>;
  /**
   * A CONNECT to `target` straight to the gateway with the session's id and secret (the secret as
   * the job's client presented it on an earlier tunnel): the gateway's answer, not the client's.
   */
  tunnel(session: string, target: string): Promise<{ status: number; body: string }>;
  /** `ciport sessions revoke ID` with the admin token. */
  revoke(session: string): Promise<CliResult>;
  eventsOf(session: string): Promise<AuditEvent[]>;
  /** What the agent process wrote to stderr so far (its log). */
  agentStderr(): string;
  /** The agent process's id (its argv and environment are in /proc). */
  agentPid(): number | undefined;
  /** End the jobs a failed case left open. */
  endJobs(): Promise<void>;
  stop(): Promise<void>;
}

export const targetName = (protocol: string, host: 'gateway' | 'agent') =>
  `${protocol}-${host === 'gateway' ? 'gw' : 'ag'}`;

export interface WorldOptions {
  /** Keep the gateway's log lines (debug level) here; else the gateway logs nothing. */
  logLines?: string[];
}

export async function startWorld(
  dir: string,
  drivers: readonly Driver[],
  up: Upstreams,
  options: WorldOptions = {},
): Promise<World> {
  const built = ensureBuilt();
  const issuer = await FixtureIssuer.start({ kind: 'gitlab' });
  const gwTargets = drivers.map((d) => d.target(targetName(d.protocol, 'gateway'), up));
  const agTargets = drivers.map((d) => d.target(targetName(d.protocol, 'agent'), up));
  const cfg = gatewayConfig(
    {
      listen: `127.0.0.1:${await freePort()}`,
      ...e2eGatewayDoc(join(dir, 'gw'), issuer.url, { adminEnv: 'ADMIN' }),
      // The revoke case freezes the job's client (no heartbeats) and expects the session to be
      // revoked, not lapsed: a 5 s lease raced the revoke on a loaded machine (CI saw
      // `ended (lease_expired)`). Nothing here waits for a lease to lapse.
      sessions: { default_ttl: '15m', lease_timeout: '30s', rate_limit: { per_minute: 10000, burst: 1000 } },
      targets: gwTargets,
      rules: [
        {
          name: 'contract',
          issuer: 'gitlab',
          when: { project_id: '61577203', ref_protected: true },
          allow: [...gwTargets, ...agTargets].map((t) => t.name as string),
          max_ttl: '30m',
        },
      ],
    },
    { ADMIN, ...up.secrets },
  );
  const gateway = await startTestGateway(cfg, {
    sweepIntervalMs: 250,
    ...(options.logLines ? { logLines: options.logLines } : {}),
  });
  // The secrets jobs present on their tunnels, so a case can knock on the gateway itself after
  // the job's client gave up.
  const sessionSecrets = new Map<string, string>();
  const manager = gateway.manager;
  const authenticate = manager.authenticate.bind(manager);
  manager.authenticate = (id, secret) => {
    sessionSecrets.set(id, secret);
    return authenticate(id, secret);
  };
  const token = await issuer.mint({}, { preset: 'gitlab-main', audience: 'ciport' });
  await built;
  const adminEnv = baseEnv({
    CIPORT_GATEWAY: gateway.url,
    CIPORT_CA_FILE: gateway.caFile,
    CIPORT_ADMIN_TOKEN: ADMIN,
  });

  const names = agTargets.map((t) => t.name as string);
  const enrolled = await runCli(['agents', 'enroll', '--name', AGENT, '--targets', names.join(',')], {
    env: adminEnv,
  });
  if (enrolled.code !== 0) throw new Error(`agents enroll: ${enrolled.stderr}`);
  // JSON is YAML: one flow mapping per target.
  const yaml = [
    ...agentYamlHead(gateway, AGENT, join(dir, 'agent')),
    ...agTargets.map((t) => `  - ${JSON.stringify(t)}`),
  ];
  writeFileSync(join(dir, 'agent.yaml'), `${yaml.join('\n')}\n`);
  const agent = spawnCli(['agent', '--config', join(dir, 'agent.yaml')], {
    env: baseEnv({ CIPORT_ENROLLMENT_TOKEN: enrolled.stdout.trim(), ...up.secrets }),
    timeoutMs: 3_600_000,
  });
  await waitFor(
    () => names.every((n) => gateway.agents.hub.serves(n)),
    20_000,
    'the agent to serve its targets',
  );

  const jobEnv = baseEnv({
    CIPORT_GATEWAY: gateway.url,
    CIPORT_CA_FILE: gateway.caFile,
    CIPORT_ID_TOKEN: token,
  });
  const jobs = new Set<{ child: ChildProcess; result: Promise<CliResult> }>();
  let n = 0;

  const open = async (target: string): Promise<JobPort> => {
    const jobDir = mkdtempSync(join(dir, `job-${n++}-`));
    const envFile = join(jobDir, 'port.env');
    const stateFile = join(jobDir, 'open.json');
    const job = spawnCli(['open', target, '--env-file', envFile, '--state', stateFile], {
      env: jobEnv,
      timeoutMs: 300_000,
    });
    jobs.add(job);
    const exported = await openedEnv(envFile).catch((err: Error) => {
      throw new Error(`${err.message}: ${job.stderr()}`);
    });
    const session = (JSON.parse(readFileSync(stateFile, 'utf8')) as { session_id: string }).session_id;
    const key = `CIPORT_${target.toUpperCase().replace(/-/g, '_')}`;
    const env = {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: jobDir,
      PSQLRC: '/dev/null',
      PGPASSFILE: '/dev/null',
      ...exported,
    };
    return {
      target,
      session,
      exported,
      env,
      port: Number(exported[`${key}_PORT`]),
      url: exported[`${key}_URL`] as string,
      dir: jobDir,
      run: (cmd, options) => run(cmd, env, options),
      freeze: () => job.child.kill('SIGSTOP'),
      thaw: () => job.child.kill('SIGCONT'),
      async end() {
        if (job.child.exitCode === null && job.child.signalCode === null) {
          job.child.kill('SIGCONT');
          job.child.kill('SIGTERM');
        }
        await job.result;
        jobs.delete(job);
      },
    };
  };

  const endJobs = async () => {
    for (const job of jobs) {
      job.child.kill('SIGCONT');
      job.child.kill('SIGTERM');
    }
    await Promise.all([...jobs].map((j) => j.result));
    jobs.clear();
  };

  return {
    gateway,
    jobEnv,
    open,
    tunnel: (session, target) =>
      new Promise((resolve, reject) => {
        const secret = sessionSecrets.get(session);
        if (!secret) throw new Error(`no tunnel of ${session} seen yet`);
        const client = h2connect(gateway.url, { ca: readFileSync(gateway.caFile as string) });
        client.on('error', reject);
        const stream = client.request({
          [h2.HTTP2_HEADER_METHOD]: h2.HTTP2_METHOD_CONNECT,
          [h2.HTTP2_HEADER_AUTHORITY]: `${target}:443`,
          authorization: `Bearer ${secret}`,
          'ciport-session': session,
        });
        let status = 0;
        let body = '';
        stream.on('response', (headers) => {
          status = Number(headers[h2.HTTP2_HEADER_STATUS]);
          if (status === 200) stream.close(h2.NGHTTP2_CANCEL);
        });
        stream.on('data', (d: Buffer) => {
          body += d.toString();
        });
        stream.on('error', () => {});
        stream.once('close', () => {
          client.close();
          resolve({ status, body });
        });
        stream.end();
      }),
    revoke: (session) => runCli(['sessions', 'revoke', session], { env: adminEnv }),
    async eventsOf(session) {
      return (await gateway.store.auditEvents({ limit: 100_000 })).filter(
        (e) => (e.data as { session?: string }).session === session,
      );
    },
    agentStderr: () => agent.stderr(),
    agentPid: () => agent.child.pid,
    endJobs,
    async stop() {
      await endJobs();
      agent.child.kill('SIGTERM');
      await agent.result;
      await gateway.close();
      await issuer.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
