// Issue 10, item 1: the `http` exit against the upstreams users run, through the real gateway.
// A job opens four http targets with `ciport open` (Node's http server, Python's http.server
// speaking HTTP/1.0 close-delimited and HTTP/1.1 keep-alive, nginx with gzip, i.e. chunked), then
// curl, fetch and Python's urllib make hundreds of sequential and concurrent requests of 0 B to
// 1 MiB through the exported URLs; every body is checked by SHA-256. Each upstream answers 401
// without the injected token, so a 200 also proves the injection. Before the fix, Node's
// http.Server sent most of these answers with the status line overwritten by freed heap memory.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningGateway } from '../../src/gateway/server.js';
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
import { curlAll, type HttpUpstream } from '../fixtures/upstreams.js';
import { waitFor } from '../fixtures/wait-for.js';

const dir = mkdtempSync(join(tmpdir(), 'ciport-e2e-http-'));
const TOKEN = `api-token-${Math.random().toString(36).slice(2)}-xyz`;

let gateway: RunningGateway;
let issuer: FixtureIssuer;
let upstreams = new Map<string, HttpUpstream>();
let open: ReturnType<typeof spawnCli> | undefined;
let vars: Record<string, string> = {};

const env = (extra: NodeJS.ProcessEnv = {}) =>
  baseEnv({ CIPORT_GATEWAY: gateway.url, CIPORT_CA_FILE: gateway.caFile, ...extra });
const urlOf = (target: string) => openedUrl(vars, target);

beforeAll(async () => {
  const built = ensureBuilt();
  issuer = await FixtureIssuer.start({ kind: 'gitlab' });
  upstreams = await startMatrixUpstreams(TOKEN);
  const cfg = gatewayConfig(
    {
      listen: `127.0.0.1:${await freePort()}`,
      data_dir: join(dir, 'gw'),
      store: { sqlite: { path: join(dir, 'gw', 'ciport.db') } },
      sessions: { default_ttl: '15m', rate_limit: { per_minute: 10000, burst: 1000 } },
      issuers: [{ name: 'gitlab', kind: 'gitlab', issuer: issuer.url, audience: 'ciport' }],
      targets: TARGETS.map((name) => ({
        name,
        protocol: 'http',
        address: upstreams.get(name)?.address,
        credentials: { token: { env: 'API_TOKEN' } },
      })),
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
    { API_TOKEN: TOKEN },
  );
  gateway = await startTestGateway(cfg);
  const token = await issuer.mint({}, { preset: 'gitlab-main', audience: 'ciport' });
  await built;
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
  await gateway?.close();
  await issuer?.close();
  await Promise.all([...upstreams.values()].map((u) => u.stop()));
  rmSync(dir, { recursive: true, force: true });
});

/** What the job's tools see: the exported variables, nothing else of the test's environment. */
const jobEnv = () => ({ PATH: process.env.PATH ?? '', ...vars });

describeUpstreamMatrix('through the gateway to %s', urlOf, jobEnv);

describe('what the exit refuses and reports', () => {
  const curlRaw = (args: string[]) =>
    new Promise<string>((resolve) =>
      execFile('curl', ['-sS', '-i', ...args], { env: jobEnv() }, (_e, out) => resolve(out)),
    );

  it('TRACE gets 405 CIPORT_E_METHOD_NOT_ALLOWED (TRACK 400): the echoing upstream never sees them', async () => {
    const r = await curlAll([`${urlOf('py11')}/bytes/1`], 1, jobEnv());
    expect(r[0]?.status).toBe(200); // the target works, and echoes TRACE when asked directly:
    const direct = await curlRaw([
      '-X',
      'TRACE',
      '-H',
      `Authorization: Bearer ${TOKEN}`,
      `http://${upstreams.get('py11')?.address}/`,
    ]);
    expect(direct).toContain(`Authorization: Bearer ${TOKEN}`);
    const trace = await curlRaw(['-X', 'TRACE', `${urlOf('py11')}/`]);
    expect(trace).toMatch(/^HTTP\/1\.1 405 /);
    expect(trace).toMatch(/ciport-error: CIPORT_E_METHOD_NOT_ALLOWED/i);
    expect(trace).not.toContain(TOKEN);
    // Node's strict parser does not know TRACK: refused as malformed, never forwarded.
    const track = await curlRaw(['-X', 'TRACK', `${urlOf('py11')}/`]);
    expect(track).toMatch(/^HTTP\/1\.1 400 /);
    expect(track).not.toContain(TOKEN);
  });

  it('every request is audited as http.request with its status and byte counts', async () => {
    const [session] = await gateway.manager.list();
    const requests = async () =>
      (await gateway.store.auditEvents({ limit: 100_000 })).filter(
        (e) => e.type === 'http.request' && (e.data as { session?: string }).session === session?.id,
      );
    // The previous case's TRACE is audited once its exchange is over: wait for its event.
    const events = await waitFor(
      async () => {
        const all = await requests();
        return all.some((e) => (e.data as { status: number }).status === 405) ? all : undefined;
      },
      10_000,
      "the TRACE's http.request event",
    );
    const ok = events.filter((e) => (e.data as { status: number }).status === 200);
    // Every request of the matrix, plus the TRACE test's GETs.
    const made = Object.values(COUNTS).reduce((n, c) => n + c.sequential + c.concurrent, 0);
    expect(ok.length).toBeGreaterThanOrEqual(TARGETS.length * made);
    const big = ok.find((e) => (e.data as { path: string }).path === '/bytes/1048576');
    expect(big?.data).toMatchObject({ method: 'GET', bytes_out: expect.any(Number) });
    const refused = events.filter((e) => (e.data as { status: number }).status === 405);
    expect(refused.map((e) => (e.data as { error?: string }).error)).toEqual(['CIPORT_E_METHOD_NOT_ALLOWED']);
    expect(JSON.stringify(events)).not.toContain(TOKEN);
  });
});
