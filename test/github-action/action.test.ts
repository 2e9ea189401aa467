// Issue 12, GitHub Actions: the committed action (action/dist/main.cjs and post.cjs, run by node as
// the runner runs them) in a simulated runner job against a real gateway. Its main step opens
// the port in the background and exports the variables through GITHUB_ENV with the one-time
// password masked first; the next step runs psql with nothing but that environment; the post
// step ends the session. Hostile cases: values with newlines and `=`, target names that try to
// smuggle a variable or a flag, a GITHUB_ENV that is a symlink, and a job policy denies.
import { existsSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ActionsRunner, StepResult } from '../fixtures/actions-runner.js';
import { freePort } from '../fixtures/free-port.js';
import { waitFor } from '../fixtures/wait-for.js';
import { type ActionHarness, HOSTILE_DATABASE, MAIN, POST, startActionHarness } from './harness.js';

let h: ActionHarness;

beforeAll(async () => {
  h = await startActionHarness();
}, 60_000);

afterAll(async () => {
  await h?.close();
});

const inputs = (extra: Record<string, string> = {}) => ({
  gateway: h.gateway.url,
  ca: h.gateway.caPem as string,
  ...extra,
});

async function session(id: string) {
  return (await h.gateway.manager.list()).find((s) => s.id === id);
}

/** Secrets that must never be shown: the ID tokens, the runner's request token. */
function neverPrinted(step: StepResult): void {
  const raw = `${step.stdout}${step.stderr}${step.envFileText}`;
  for (const token of h.minted) {
    expect(raw).not.toContain(token);
    expect(raw).not.toContain(token.split('.')[2] as string);
  }
  expect(raw).not.toContain(h.endpoint.requestToken);
}

/**
 * A secret is written only in `::add-mask::` lines (so never shown, and masked before any other
 * output could show it), one of them masks it exactly, and the job log has no trace of it.
 */
function maskedFirst(step: StepResult, secret: string): void {
  const lines = step.stdout.split('\n');
  expect(lines).toContain(`::add-mask::${secret}`);
  for (const line of lines) if (line.includes(secret)) expect(line).toMatch(/^::add-mask::/);
  expect(step.stderr).not.toContain(secret);
  for (const line of step.log) expect(line).not.toContain(secret);
}

describe('a target whose rule needs approval', () => {
  it('main shows the waiting line with the link at once, and opens the port once approved', async () => {
    const runner = h.runner();
    const running = runner.runAction(MAIN, inputs({ targets: 'gated' }));
    const pending = await waitFor(
      async () => (await h.gateway.manager.pendingApprovals())[0]?.record,
      30_000,
      'a pending session',
    );
    await h.gateway.manager.decide(
      pending.id,
      { kind: 'token', name: 'bob', roles: ['approver'], groups: ['dba'] },
      'approve',
    );
    const main = await running;
    expect(main.code).toBe(0);
    const waiting = main.log.filter((l) => l.includes('waits for approval'));
    expect(waiting).toEqual([
      expect.stringMatching(
        new RegExp(
          `^ciport: session ${pending.id} waits for approval \\(1 approver of dba, until \\S+Z\\): ${h.gateway.url}/ui/approvals/${pending.id}$`,
        ),
      ),
    ]);
    expect(main.outputs['session-id']).toBe(pending.id);
    expect(runner.jobEnv.PGPORT).toMatch(/^\d+$/);
    await runner.runAction(POST, inputs({ targets: 'gated' }), { post: true });
    expect((await session(pending.id))?.state).toBe('ended');
  }, 60_000);
});

describe('main, a psql step, post', () => {
  let runner: ActionsRunner;
  let main: StepResult;

  beforeAll(async () => {
    runner = h.runner();
    main = await runner.runAction(MAIN, inputs({ targets: 'db' }));
  }, 60_000);

  it('main opens the port and exports the variables for the next steps', async () => {
    expect(main.stderr).toBe('');
    expect(main.code).toBe(0);
    const env = runner.jobEnv;
    expect(Object.keys(env).sort()).toEqual(
      [
        'CIPORT_DB_HOST',
        'CIPORT_DB_PORT',
        'CIPORT_DB_URL',
        'DATABASE_URL',
        'PGDATABASE',
        'PGHOST',
        'PGPASSWORD',
        'PGPORT',
        'PGUSER',
      ].sort(),
    );
    expect(env.PGPASSWORD).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(env.DATABASE_URL).toBe(`postgres://${h.role}:${env.PGPASSWORD}@127.0.0.1:${env.PGPORT}/test`);
    expect(env.PGUSER).toBe(h.role);
    const id = main.outputs['session-id'] as string;
    expect((await session(id))?.state).toBe('active');
    expect(main.log).toContain(
      `ciport: port open: session ${id}, rule ledger-main, until ${main.outputs['expires-at']}`,
    );
    expect(main.log).toContain('ciport: masked in the log: CIPORT_DB_URL, DATABASE_URL, PGPASSWORD');
  });

  it('masks the one-time password and the URLs carrying it before anything else, and never prints a token', () => {
    const env = runner.jobEnv;
    maskedFirst(main, env.PGPASSWORD as string);
    maskedFirst(main, env.DATABASE_URL as string);
    expect(runner.masks).toEqual(new Set([env.PGPASSWORD, env.DATABASE_URL]));
    neverPrinted(main);
    // The runner got the values in heredoc form only.
    expect(main.envFileText).toMatch(/^PGPASSWORD<<ghadelimiter_[0-9a-f-]{36}$/m);
  });

  it('the next step runs psql with the exported environment; the log shows *** for the password', async () => {
    const step = await runner.runShell(
      'psql -X -v ON_ERROR_STOP=1 -tAc "select current_user, current_database()"\necho "pw=$PGPASSWORD"\n',
    );
    expect(step.stderr).toBe('');
    expect(step.code).toBe(0);
    expect(step.stdout.split('\n')[0]).toBe(`${h.role}|test`);
    expect(step.log).toEqual([`${h.role}|test`, 'pw=***']);
  });

  it('post ends the session and removes what main left in RUNNER_TEMP', async () => {
    const id = main.outputs['session-id'] as string;
    const workDir = runner.state.work_dir as string;
    expect(existsSync(join(workDir, 'port.env'))).toBe(true);
    const post = await runner.runAction(POST, inputs({ targets: 'db' }), { post: true });
    expect(post.code).toBe(0);
    expect(post.log).toEqual([`ciport: port closed: session ${id} ended`]);
    const ended = await session(id);
    expect(ended?.state).toBe('ended');
    expect(ended?.endReason).toBe('client_end');
    expect(existsSync(workDir)).toBe(false);
    neverPrinted(post);
    // The port is gone: psql cannot connect any more.
    const after = await runner.runShell('psql -X -tAc "select 1"\n');
    expect(after.code).not.toBe(0);
  });
});

describe('parallel jobs', () => {
  it('three jobs at once each get their own port, password and session, and close only their own', async () => {
    const runners = [h.runner(), h.runner(), h.runner()];
    const mains = await Promise.all(runners.map((r) => r.runAction(MAIN, inputs({ targets: 'db' }))));
    expect(mains.map((m) => m.code)).toEqual([0, 0, 0]);
    const ids = mains.map((m) => m.outputs['session-id'] as string);
    expect(new Set(ids).size).toBe(3);
    expect(new Set(runners.map((r) => r.jobEnv.PGPASSWORD)).size).toBe(3);
    const steps = await Promise.all(
      runners.map((r) => r.runShell('psql -X -v ON_ERROR_STOP=1 -tAc "select 1"\n')),
    );
    expect(steps.map((s) => s.stdout)).toEqual(['1\n', '1\n', '1\n']);
    // The first job ends; the others keep their ports.
    expect((await runners[0]?.runAction(POST, {}, { post: true }))?.code).toBe(0);
    expect((await session(ids[0] as string))?.state).toBe('ended');
    expect((await session(ids[1] as string))?.state).toBe('active');
    expect((await runners[1]?.runShell('psql -X -tAc "select 2"\n'))?.stdout).toBe('2\n');
    // Another job's password does not open this job's port.
    const crossed = await runners[2]?.runShell('psql -X -tAc "select 3"\n', {
      PGPASSWORD: runners[1]?.jobEnv.PGPASSWORD as string,
    });
    expect(crossed?.code).not.toBe(0);
    expect(crossed?.stderr).toMatch(/password authentication failed|CIPORT_E_PG_AUTH/);
    for (const r of runners.slice(1)) expect((await r.runAction(POST, {}, { post: true })).code).toBe(0);
    for (const id of ids) expect((await session(id))?.state).toBe('ended');
  }, 60_000);
});

describe('the session ends during the job', () => {
  it('post shows why, as the client logged it, and warns instead of closing', async () => {
    const runner = h.runner();
    const main = await runner.runAction(MAIN, inputs({ targets: 'db' }));
    expect(main.code).toBe(0);
    const id = main.outputs['session-id'] as string;
    await h.gateway.manager.revoke(id, 'test', 'rotating credentials');
    // The client notices within a heartbeat, says why on its log and exits.
    const stateFile = runner.state.state_file as string;
    await waitFor(() => !existsSync(stateFile), 15_000, 'the client to exit and remove its state file');
    const post = await runner.runAction(POST, {}, { post: true });
    expect(post.code).toBe(0);
    expect(post.log[0]).toMatch(/^ciport: session ended: .*revoked/);
    expect(post.annotations).toEqual([
      {
        level: 'warning',
        message: expect.stringMatching(/^ciport: the port had closed before the post step: /),
      },
    ]);
  });
});

describe('hostile values and inputs', () => {
  it('a value with newlines and `=` reaches the next step as one value and defines nothing else', async () => {
    const runner = h.runner();
    // The CA as a path in the workspace this time.
    writeFileSync(join(runner.workspace, 'ciport-ca.pem'), h.gateway.caPem as string);
    const main = await runner.runAction(MAIN, inputs({ targets: 'odd', ca: 'ciport-ca.pem' }));
    expect(main.code).toBe(0);
    expect(runner.jobEnv.PGDATABASE).toBe(HOSTILE_DATABASE);
    expect(Object.keys(runner.jobEnv)).not.toContain('INJECTED');
    expect(Object.keys(runner.jobEnv)).not.toContain('OTHER');
    const step = await runner.runShell(
      'printf "%s" "$PGDATABASE" | od -c | head -1\nif printenv INJECTED >/dev/null; then echo injected; else echo clean; fi\n',
    );
    expect(step.stdout).toContain('x   =   y  \\n   I   N   J');
    expect(step.stdout).toMatch(/\nclean\n$/);
    const post = await runner.runAction(POST, {}, { post: true });
    expect(post.code).toBe(0);
    expect((await session(main.outputs['session-id'] as string))?.state).toBe('ended');
  });

  it.each([
    ['a newline and a variable', 'db\nINJECTED=1'],
    ['a flag', 'db --gateway=https://evil.example'],
    ['a flag glued with a comma', 'db,--audience=evil'],
  ])('a target list with %s is refused before anything starts', async (_what, targets) => {
    const before = (await h.gateway.manager.list()).length;
    const tokens = h.endpoint.requests.length;
    const runner = h.runner();
    const main = await runner.runAction(MAIN, inputs({ targets }));
    expect(main.code).toBe(2);
    expect(main.annotations[0]?.message).toMatch(/^ciport: CIPORT_E_USAGE: target "/);
    expect(main.env).toEqual({});
    expect(main.state).toEqual({});
    expect((await h.gateway.manager.list()).length).toBe(before);
    expect(h.endpoint.requests.length).toBe(tokens);
    const post = await runner.runAction(POST, {}, { post: true });
    expect(post.code).toBe(0);
    expect(post.log).toEqual(['ciport: nothing to close: the main step opened no port']);
  });

  it('a GITHUB_ENV that is a symlink is refused: no session, nothing written through it', async () => {
    const before = (await h.gateway.manager.list()).length;
    const runner = h.runner();
    const victim = join(runner.workspace, 'victim');
    writeFileSync(victim, 'untouched\n');
    const main = await runner.runAction(MAIN, inputs({ targets: 'db' }), {
      // An earlier step replaced the runner's file by a link to another file.
      prepare: (files) => {
        rmSync(files.GITHUB_ENV);
        symlinkSync(victim, files.GITHUB_ENV);
      },
    });
    expect(main.code).toBe(2);
    expect(main.annotations[0]?.message).toMatch(
      /^ciport: CIPORT_E_RUNNER_FILE: GITHUB_ENV \(.+\) is a symbolic link$/,
    );
    expect(readFileSync(victim, 'utf8')).toBe('untouched\n');
    expect((await h.gateway.manager.list()).length).toBe(before);
  });
});

describe('the client fails', () => {
  it("an unreachable gateway: exit 5 with the client's message", async () => {
    const runner = h.runner();
    const main = await runner.runAction(
      MAIN,
      inputs({ targets: 'db', gateway: `https://127.0.0.1:${await freePort()}` }),
    );
    expect(main.code).toBe(5);
    expect(main.annotations.map((a) => a.message)).toEqual([
      expect.stringMatching(/^ciport: CIPORT_E_GATEWAY_UNREACHABLE: /),
    ]);
    expect(main.env).toEqual({});
  });

  it("the runner's token endpoint fails: exit 4, its request token never shown", async () => {
    h.endpoint.fail = { status: 500, body: '{"message":"boom"}' };
    try {
      const runner = h.runner();
      const main = await runner.runAction(MAIN, inputs({ targets: 'db' }));
      expect(main.code).toBe(4);
      expect(main.annotations[0]?.message).toMatch(/^ciport: CIPORT_E_TOKEN_UNAVAILABLE: .*HTTP 500/);
      neverPrinted(main);
    } finally {
      h.endpoint.fail = undefined;
    }
  });
});

describe('the gateway denies', () => {
  it("main fails with the client's message and exit code; post is a no-op", async () => {
    h.claims.ref = 'refs/heads/feature';
    const before = (await h.gateway.manager.list()).length;
    try {
      const runner = h.runner();
      const main = await runner.runAction(MAIN, inputs({ targets: 'db' }));
      expect(main.code).toBe(3);
      expect(main.annotations).toHaveLength(1);
      expect(main.annotations[0]?.level).toBe('error');
      expect(main.annotations[0]?.message).toMatch(/^ciport: CIPORT_E_POLICY_DENIED: .*refs\/heads\/feature/);
      expect(main.log.some((l) => l.startsWith('ciport: CIPORT_E_POLICY_DENIED:'))).toBe(true);
      expect(main.env).toEqual({});
      expect(main.state).toEqual({});
      neverPrinted(main);
      const post = await runner.runAction(POST, {}, { post: true });
      expect(post.code).toBe(0);
      expect(post.log).toEqual(['ciport: nothing to close: the main step opened no port']);
      expect((await h.gateway.manager.list()).length).toBe(before);
    } finally {
      delete h.claims.ref;
    }
  });
});
