// docs/github-actions.md: its workflow runs as written, step by step, in a simulated runner
// against a real gateway (the `uses: ciport/ciport@v1` step is this repository's action/dist,
// `run:` steps go to bash with the job's environment, `${{ vars.* }}` and
// `${{ steps.*.outputs.* }}` are filled in as GitHub would); its gateway snippet validates.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { parseGatewayConfig } from '../../src/config/load.js';
import type { StepResult } from '../fixtures/actions-runner.js';
import { type ActionHarness, MAIN, POST, ROOT, startActionHarness } from './harness.js';

const doc = readFileSync(join(ROOT, 'docs/github-actions.md'), 'utf8');
const blocks = [...doc.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1] as string);
const workflow = parse(blocks.find((b) => /^jobs:/m.test(b)) as string);
const gatewaySnippet = blocks.find((b) => /^issuers:/m.test(b)) as string;

interface Step {
  id?: string;
  name?: string;
  uses?: string;
  with?: Record<string, string>;
  run?: string;
  env?: Record<string, string>;
}

let h: ActionHarness;
beforeAll(async () => {
  h = await startActionHarness();
}, 60_000);
afterAll(async () => {
  await h?.close();
});

describe('the workflow in docs/github-actions.md', () => {
  const [jobName, job] = Object.entries(
    workflow.jobs as Record<string, { permissions: object; steps: Step[] }>,
  )[0] as [string, { permissions: object; steps: Step[] }];

  it('asks for the OIDC token and nothing more', () => {
    expect(jobName).toBe('migrate');
    expect(job.permissions).toEqual({ 'id-token': 'write', contents: 'read' });
    const ours = job.steps.filter((s) => s.uses?.startsWith('ciport/ciport@'));
    expect(ours).toHaveLength(1);
  });

  it('runs: the port opens, the steps reach PostgreSQL, the post step ends the session', async () => {
    const runner = h.runner();
    const vars: Record<string, string> = {
      CIPORT_GATEWAY: h.gateway.url,
      CIPORT_CA_PEM: h.gateway.caPem as string,
    };
    const outputs: Record<string, Record<string, string>> = {};
    const expand = (text: string) =>
      text.replace(/\$\{\{\s*([^}]+?)\s*\}\}/g, (_all, expr: string) => {
        const v = /^vars\.([A-Za-z0-9_]+)$/.exec(expr);
        if (v) return vars[v[1] as string] ?? '';
        const o = /^steps\.([A-Za-z0-9_-]+)\.outputs\.([A-Za-z0-9_-]+)$/.exec(expr);
        if (o) return outputs[o[1] as string]?.[o[2] as string] ?? '';
        throw new Error(`the test does not evaluate \${{ ${expr} }}`);
      });
    const results: Array<{ step: Step; result: StepResult }> = [];
    const posts: Array<Record<string, string>> = [];
    for (const step of job.steps) {
      if (step.uses?.startsWith('actions/checkout@')) continue; // nothing to check out here
      let result: StepResult;
      if (step.uses?.startsWith('ciport/ciport@')) {
        const inputs = Object.fromEntries(
          Object.entries(step.with ?? {}).map(([k, v]) => [k, expand(String(v))]),
        );
        result = await runner.runAction(MAIN, inputs);
        posts.push(inputs);
      } else if (step.run !== undefined) {
        result = await runner.runShell(expand(step.run), step.env ?? {});
      } else {
        throw new Error(`unexpected step ${JSON.stringify(step)}`);
      }
      if (step.id) outputs[step.id] = result.outputs;
      results.push({ step, result });
      expect(result.code, `${step.name}: ${result.stdout}${result.stderr}`).toBe(0);
    }
    const sessionId = outputs.ciport?.['session-id'] as string;
    expect(sessionId).toMatch(/\S/);
    const migrate = results.find((r) => r.step.name === 'Migrate')?.result;
    expect(migrate?.log).toEqual([`${h.role}|test`]);
    const note = results.find((r) => r.step.name === 'Note the session')?.result;
    expect(note?.log).toEqual([`ciport session ${sessionId}, PostgreSQL on port ${runner.jobEnv.PGPORT}`]);
    // Post steps run after the last step, in reverse order.
    for (const inputs of posts.reverse()) {
      const post = await runner.runAction(POST, inputs, { post: true });
      expect(post.code).toBe(0);
    }
    const session = (await h.gateway.manager.list()).find((s) => s.id === sessionId);
    expect(session?.state).toBe('ended');
    expect(session?.endReason).toBe('client_end');
    // The whole job log: no one-time password, no token.
    const log = runner.log.join('\n');
    expect(log).not.toContain(runner.jobEnv.PGPASSWORD as string);
    for (const token of h.minted) expect(log).not.toContain(token);
  }, 60_000);
});

describe('the gateway snippet in docs/github-actions.md', () => {
  it('validates as part of a gateway configuration', () => {
    const config = `listen: 127.0.0.1:8443
data_dir: ./ciport-data
targets:
  - name: staging-db
    protocol: postgres
    address: db.internal:5432
    database: app
    credentials: {user: app, password: {env: STAGING_DB_PASSWORD}}
${gatewaySnippet}`;
    const parsed = parseGatewayConfig(config, 'github-actions.md', { resolveSecrets: false });
    expect(parsed.issuers.map((i) => i.kind)).toEqual(['github']);
    expect(parsed.rules.map((r) => r.name)).toEqual(['ledger-main-migrates-staging']);
  });
});
