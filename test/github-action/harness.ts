// What the action's tests share: a real gateway (in process, its generated CA, SQLite) trusting
// a GitHub-shaped issuer on loopback; the runner's token endpoint minting that issuer's tokens
// for the audience asked (claims adjustable per test: a denial is a token for another branch);
// postgres targets on the machine's PostgreSQL as a throwaway least-privilege login role; and a
// simulated runner per job, with the job environment a runner with `id-token: write` gives.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RunningGateway } from '../../src/gateway/server.js';
import { ActionsRunner } from '../fixtures/actions-runner.js';
import { baseEnv } from '../fixtures/cli.js';
import { gatewayConfig, startTestGateway } from '../fixtures/gateway.js';
import { GithubTokenEndpoint } from '../fixtures/github-actions-token.js';
import { FixtureIssuer } from '../fixtures/oidc-issuer.js';

export const ROOT = new URL('../../', import.meta.url).pathname;
export const MAIN = join(ROOT, 'action/dist/main.cjs');
export const POST = join(ROOT, 'action/dist/post.cjs');
const AUDIENCE = 'https://ciport.example.com';

/** A database name no variable line survives unquoted: `=`, newlines, a would-be heredoc end. */
export const HOSTILE_DATABASE = 'x=y\nINJECTED=1\nEOF\nOTHER<<EOF';

export interface ActionHarness {
  gateway: RunningGateway;
  endpoint: GithubTokenEndpoint;
  /** Claims the next minted tokens get on top of the `github-push` preset. */
  claims: Record<string, unknown>;
  /** Every ID token the endpoint handed out. */
  minted: string[];
  role: string;
  runner(): ActionsRunner;
  psqlAdmin(sql: string): Promise<{ code: number; stdout: string; stderr: string }>;
  close(): Promise<void>;
}

export async function startActionHarness(): Promise<ActionHarness> {
  const dir = mkdtempSync(join(tmpdir(), 'ciport-action-'));
  const role = `ghaction_${Math.random().toString(36).slice(2, 10)}`;
  const github = await FixtureIssuer.start({ kind: 'github' });
  const claims: Record<string, unknown> = {};
  const minted: string[] = [];
  const endpoint = await GithubTokenEndpoint.start({
    mint: async (audience) => {
      const token = await github.mint({ ...claims }, { preset: 'github-push', audience: audience ?? 'none' });
      minted.push(token);
      return token;
    },
  });
  const created = await psqlAdmin(`CREATE ROLE ${role} LOGIN`);
  if (created.code !== 0) throw new Error(`cannot create role ${role}: ${created.stderr}`);
  const pg = (name: string, database: string) => ({
    name,
    protocol: 'postgres',
    address: '127.0.0.1:5432',
    database,
    credentials: { user: role },
  });
  const gateway = await startTestGateway(
    gatewayConfig(
      {
        listen: '127.0.0.1:0',
        data_dir: join(dir, 'data'),
        store: { sqlite: { path: join(dir, 'data', 'ciport.db') } },
        sessions: { default_ttl: '15m', lease_timeout: '5s', rate_limit: { per_minute: 10000, burst: 1000 } },
        issuers: [{ name: 'github', kind: 'github', issuer: github.url, audience: AUDIENCE }],
        targets: [
          pg('db', 'test'),
          pg('staging-db', 'test'),
          pg('odd', HOSTILE_DATABASE),
          pg('gated', 'test'),
        ],
        // An approver for `gated`, whose rule needs approval (docs/approvals.md).
        admin_tokens: [{ name: 'bob', token: { env: 'BOB_TOKEN' }, role: 'approver', groups: ['dba'] }],
        rules: [
          {
            name: 'ledger-main',
            issuer: 'github',
            when: { repository: 'acme/ledger', ref: 'refs/heads/main' },
            allow: ['db', 'staging-db', 'odd'],
            max_ttl: '30m',
          },
          {
            name: 'ledger-gated',
            issuer: 'github',
            when: { repository: 'acme/ledger', ref: 'refs/heads/main' },
            allow: ['gated'],
            approval: { groups: ['dba'], timeout: '5m' },
          },
        ],
      },
      { BOB_TOKEN: 'bob-approver-token-0123456789' },
    ),
    { sweepIntervalMs: 250 },
  );
  const runners: ActionsRunner[] = [];
  return {
    gateway,
    endpoint,
    claims,
    minted,
    role,
    runner() {
      const runner = new ActionsRunner({ env: jobEnv(endpoint) });
      runners.push(runner);
      return runner;
    },
    psqlAdmin,
    async close() {
      for (const r of runners) r.close();
      await gateway.close();
      await endpoint.close();
      await github.close();
      await psqlAdmin(`DROP ROLE IF EXISTS ${role}`);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A runner job's environment: PATH and friends, the token endpoint, no ciport settings. */
function jobEnv(endpoint: GithubTokenEndpoint): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(baseEnv({ PSQLRC: '/dev/null', ...endpoint.env }))) {
    if (v !== undefined) env[k] = v;
  }
  return env;
}

function psqlAdmin(sql: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      'psql',
      ['-X', '-h', '127.0.0.1', '-U', 'postgres', '-d', 'test', '-v', 'ON_ERROR_STOP=1', '-tAc', sql],
      { env: { PATH: process.env.PATH ?? '/usr/bin:/bin' }, timeout: 20_000 },
      (err, stdout, stderr) => resolve({ code: err ? 1 : 0, stdout, stderr }),
    );
  });
}
