// Issue 10, item 1, through an agent: the same upstreams as http-upstreams.test.ts (Node's http
// server, Python's http.server in HTTP/1.0 and 1.1, nginx with gzip), but declared by a
// `ciport agent` process that injects the token; the gateway only relays. A job opens the four
// targets with `ciport open`, then curl, fetch and Python's urllib fetch bodies of 0 B..1 MiB one
// after the other and concurrently; every body is checked by SHA-256.
import { type ChildProcess, execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningGateway } from '../../src/gateway/server.js';
import { agentYamlHead } from '../fixtures/agent-yaml.js';
import { baseEnv, ensureBuilt, openedEnv, runCli, spawnCli } from '../fixtures/cli.js';
import { freePort } from '../fixtures/free-port.js';
import { gatewayConfig, startTestGateway } from '../fixtures/gateway.js';
import { FixtureIssuer } from '../fixtures/oidc-issuer.js';
import {
  MATRIX_COUNTS as COUNTS,
  describeUpstreamMatrix,
  openedUrl,
  startMatrixUpstreams,
  MATRIX_TARGETS as TARGETS,
} from '../fixtures/upstream-matrix.js';
import type { HttpUpstream } from '../fixtures/upstreams.js';
import { waitFor } from '../fixtures/wait-for.js';

const dir = mkdtempSync(join(tmpdir(), 'ciport-e2e-http-agent-'));
const TOKEN = `api-token-${Math.random().toString(36).slice(2)}-xyz`;
const ADMIN = `admin-${Math.random().toString(36).slice(2)}`;

let gateway: RunningGateway;
let issuer: FixtureIssuer;
let upstreams = new Map<string, HttpUpstream>();
let agent: { child: ChildProcess; stderr: () => string; result: Promise<unknown> } | undefined;
let open: ReturnType<typeof spawnCli> | undefined;
let vars: Record<string, string> = {};

const env = (extra: NodeJS.ProcessEnv = {}) =>
  baseEnv({ CIPORT_GATEWAY: gateway.url, CIPORT_CA_FILE: gateway.caFile, ...extra });
const urlOf = (target: string) => openedUrl(vars, target);
const jobEnv = () => ({ PATH: process.env.PATH ?? '', ...vars });

beforeAll(async () => {
  const built = ensureBuilt();
  issuer = await FixtureIssuer.start({ kind: 'gitlab' });
  upstreams = await startMatrixUpstreams(TOKEN);
  // The gateway names no http target: the agent declares them and injects the token.
  const cfg = gatewayConfig(
    {
      listen: `127.0.0.1:${await freePort()}`,
      data_dir: join(dir, 'gw'),
      store: { sqlite: { path: join(dir, 'gw', 'ciport.db') } },
      admin_tokens: [{ env: 'ADMIN' }],
      sessions: { default_ttl: '15m', rate_limit: { per_minute: 10000, burst: 1000 } },
      issuers: [{ name: 'gitlab', kind: 'gitlab', issuer: issuer.url, audience: 'ciport' }],
      rules: [
        {
          name: 'main',
          issuer: 'gitlab',
          when: { project_id: '61577203', ref_protected: true },
          allow: [...TARGETS],
          max_ttl: '30m',
        },
      ],
    },
    { ADMIN },
  );
  gateway = await startTestGateway(cfg);
  await built;
  const adminEnv = env({ CIPORT_ADMIN_TOKEN: ADMIN });
  const enrolled = await runCli(['agents', 'enroll', '--name', 'dc1', '--targets', TARGETS.join(',')], {
    env: adminEnv,
  });
  expect(enrolled.code).toBe(0);
  writeFileSync(
    join(dir, 'agent.yaml'),
    [
      ...agentYamlHead(gateway, 'dc1', join(dir, 'agent')),
      ...TARGETS.map(
        (name) =>
          `  - {name: ${name}, protocol: http, address: "${upstreams.get(name)?.address}", credentials: {token: {env: API_TOKEN}}}`,
      ),
      '',
    ].join('\n'),
  );
  agent = spawnCli(['agent', '--config', join(dir, 'agent.yaml')], {
    env: baseEnv({ CIPORT_ENROLLMENT_TOKEN: enrolled.stdout.trim(), API_TOKEN: TOKEN }),
    timeoutMs: 600_000,
  });
  await waitFor(() => gateway.agents.hub.serves('nginx'), 30_000, 'the agent to connect');
  const token = await issuer.mint({}, { preset: 'gitlab-main', audience: 'ciport' });
  const envFile = join(dir, '.ciport.env');
  open = spawnCli(['open', ...TARGETS, '--env-file', envFile, '--state', join(dir, 'open.json')], {
    env: env({ CIPORT_ID_TOKEN: token }),
    timeoutMs: 600_000,
  });
  vars = await openedEnv(envFile, 30_000);
}, 120_000);

afterAll(async () => {
  if (open) {
    await runCli(['close', '--state', join(dir, 'open.json')], { env: env() });
    await open.result;
  }
  agent?.child.kill('SIGTERM');
  await agent?.result;
  await gateway?.close();
  await issuer?.close();
  await Promise.all([...upstreams.values()].map((u) => u.stop()));
  rmSync(dir, { recursive: true, force: true });
});

describeUpstreamMatrix('through the agent to %s', urlOf, jobEnv);

describe('the agent exit', () => {
  it('refuses TRACE with 405 CIPORT_E_METHOD_NOT_ALLOWED; the token never reaches the job', async () => {
    const out = await new Promise<string>((resolve) =>
      execFile('curl', ['-sS', '-i', '-X', 'TRACE', `${urlOf('py10')}/`], { env: jobEnv() }, (_e, so) =>
        resolve(so),
      ),
    );
    expect(out).toMatch(/^HTTP\/1\.1 405 /);
    expect(out).toMatch(/ciport-error: CIPORT_E_METHOD_NOT_ALLOWED/i);
    expect(out).not.toContain(TOKEN);
  });

  it('reports http.request events from the agent (exit dc1) for the matrix', async () => {
    const [session] = await gateway.manager.list();
    const made = Object.values(COUNTS).reduce((n, c) => n + c.sequential + c.concurrent, 0);
    const ok = async () =>
      (await gateway.store.auditEvents({ limit: 100_000 })).filter(
        (e) =>
          e.type === 'http.request' &&
          (e.data as { session?: string }).session === session?.id &&
          (e.data as { status: number }).status === 200,
      );
    // Agent events arrive in batches: wait for all of them.
    await waitFor(async () => (await ok()).length >= TARGETS.length * made, 30_000, 'the agent events');
    const events = await ok();
    expect(events[0]?.data).toMatchObject({ exit: 'dc1', method: 'GET' });
    expect(JSON.stringify(events)).not.toContain(TOKEN);
  });
});
