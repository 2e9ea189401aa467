// HOSTILE: the CLI side of `ciport login` (docs/login.md). A local attacker pokes the loopback
// listener while a login waits (forged callbacks with another state, other paths and methods,
// a foreign Host, a body, repeated parameters, a huge URL) — each is refused and the real
// sign-in still completes; a provider error with the right state ends the login with nothing
// cached. The credentials cache is refused when it is group/world readable, a symlink, owned by
// another user or in a shared directory. The token never reaches argv or the environment of the
// browser the CLI starts, nor the CLI's own argv and environment.
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { runCli, spawnCli } from '../fixtures/cli.js';
import { waitFor } from '../fixtures/wait-for.js';
import { api } from '../gateway/helpers.js';
import {
  configHome,
  type LoginHarness,
  loginHarnessPerFile,
  operatorEnv,
  printedAuthUrl,
  runLogin,
} from '../sso/login-harness.js';

const harness = loginHarnessPerFile();

let lh: LoginHarness;
beforeAll(() => {
  lh = harness();
});

/** A raw HTTP request to the loopback listener; resolves with the status (0 when cut). */
function poke(
  port: number,
  options: { method?: string; path: string; host?: string; body?: string },
): Promise<number> {
  return new Promise((resolve) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        method: options.method ?? 'GET',
        path: options.path,
        headers: {
          host: options.host ?? `127.0.0.1:${port}`,
          ...(options.body !== undefined ? { 'content-length': Buffer.byteLength(options.body) } : {}),
        },
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('error', () => resolve(0));
    req.end(options.body);
  });
}

function credentials(xdg: string): string {
  return join(xdg, 'ciport', 'credentials.json');
}

describe('hostile: the loopback listener', () => {
  it('refuses forged and malformed callbacks while it waits, then takes the real one', async () => {
    const home = configHome(lh.h, 'poked');
    const statuses: Record<string, number> = {};
    const run = await runLogin(lh, 'ana', operatorEnv(lh, home), {
      async beforeCallback(callback) {
        const port = Number(callback.port);
        const q = callback.search.slice(1);
        const state = callback.searchParams.get('state') as string;
        const code = callback.searchParams.get('code') as string;
        statuses.wrongState = await poke(port, {
          path: `/callback?code=forged&state=${'x'.repeat(state.length)}`,
        });
        statuses.noState = await poke(port, { path: '/callback?code=forged' });
        statuses.errorWrongState = await poke(port, { path: '/callback?error=access_denied&state=nope' });
        statuses.otherPath = await poke(port, { path: `/callbackx?${q}` });
        statuses.dotPath = await poke(port, { path: `/x/../callback?${q}` });
        statuses.post = await poke(port, { method: 'POST', path: `/callback?${q}`, body: '' });
        statuses.foreignHost = await poke(port, { path: `/callback?${q}`, host: 'attacker.example' });
        statuses.body = await poke(port, { path: `/callback?${q}`, body: 'junk' });
        statuses.twice = await poke(port, { path: `/callback?${q}&code=${code}x` });
        statuses.twoStates = await poke(port, { path: `/callback?${q}&state=${state}` });
        statuses.huge = await poke(port, { path: `/callback?${q}&pad=${'a'.repeat(5000)}` });
      },
    });
    expect(statuses).toEqual({
      wrongState: 400,
      noState: 400,
      errorWrongState: 400,
      otherPath: 404,
      dotPath: 404,
      post: 405,
      foreignHost: 400,
      body: 400,
      twice: 400,
      twoStates: 400,
      huge: expect.toSatisfy((s: number) => s === 414 || s === 431 || s === 0),
    });
    expect(run.result.code, run.result.stderr).toBe(0);
    expect(run.page?.status).toBe(200);
    expect(run.result.stderr).toContain(
      'the sign-in listener refused a request: a callback with another state',
    );
    expect(run.result.stderr).toContain('the sign-in listener refused a request: Host attacker.example');
    // Only the cache file is left in the directory (the temporary file was renamed).
    expect(readdirSync(join(home, 'ciport'))).toEqual(['credentials.json']);
    // After the sign-in, the listener is gone.
    expect(await poke(Number(run.callback.port), { path: '/callback' })).toBe(0);
  }, 180_000);

  it("a provider error with the login's own state ends the login (exit 4), nothing cached", async () => {
    const home = configHome(lh.h, 'denied');
    const run = spawnCli(['login', '--gateway', lh.url], { env: operatorEnv(lh, home), timeoutMs: 120_000 });
    const authUrl = await waitFor(() => printedAuthUrl(run.stderr(), lh.idp.issuer), 60_000);
    const params = new URL(authUrl).searchParams;
    const redirect = new URL(params.get('redirect_uri') as string);
    const status = await poke(Number(redirect.port), {
      path: `/callback?error=access_denied&error_description=${encodeURIComponent('nope\u001b[2J')}&state=${params.get('state')}`,
    });
    expect(status).toBe(400);
    const result = await run.result;
    expect(result.code).toBe(4);
    expect(result.stderr).toContain(
      'CIPORT_E_SSO_FAILED: the identity provider answered access_denied: nope\\x1b[2J',
    );
    expect(existsSync(credentials(home))).toBe(false);
  }, 120_000);

  it('gives up after --timeout with a clear error', async () => {
    const home = configHome(lh.h, 'slow');
    const result = await runCli(['login', '--gateway', lh.url, '--timeout', '2'], {
      env: operatorEnv(lh, home),
      timeoutMs: 60_000,
    });
    expect(result.code).toBe(4);
    expect(result.stderr).toContain('no sign-in arrived within 2 s');
  }, 90_000);
});

describe('hostile: the credentials cache', () => {
  let good: string;
  beforeAll(async () => {
    const home = configHome(lh.h, 'good');
    const run = await runLogin(lh, 'ana', operatorEnv(lh, home));
    expect(run.result.code, run.result.stderr).toBe(0);
    good = readFileSync(credentials(home), 'utf8');
  }, 180_000);

  /** A config home whose cache holds the good sign-in, then `damage` applied. */
  function homeWith(name: string, damage: (file: string, dir: string) => void): string {
    const home = configHome(lh.h, name);
    const dir = join(home, 'ciport');
    mkdirSync(dir, { mode: 0o700 });
    writeFileSync(join(dir, 'credentials.json'), good, { mode: 0o600 });
    damage(join(dir, 'credentials.json'), dir);
    return home;
  }

  const cases: Array<[string, (file: string, dir: string) => void, RegExp]> = [
    ['mode 0644', (f) => chmodSync(f, 0o644), /has mode 0644: group or others may use it; chmod 600/],
    ['mode 0660', (f) => chmodSync(f, 0o660), /has mode 0660/],
    ['directory 0755', (_f, d) => chmodSync(d, 0o755), /has mode 0755.*chmod 700/],
    [
      'a symlink to a private file',
      (f, d) => {
        copyFileSync(f, join(d, 'elsewhere.json'));
        chmodSync(join(d, 'elsewhere.json'), 0o600);
        renameSync(f, `${f}.old`);
        symlinkSync(join(d, 'elsewhere.json'), f);
      },
      /is a symbolic link/,
    ],
    ['owned by another user', (f) => chownSync(f, 65534, 65534), /belongs to uid 65534, not to you/],
    [
      'a directory owned by another user',
      (_f, d) => chownSync(d, 65534, 65534),
      /ciport belongs to uid 65534/,
    ],
    [
      'a symlinked directory',
      (_f, d) => {
        renameSync(d, `${d}.real`);
        symlinkSync(`${d}.real`, d);
      },
      /ciport is a symbolic link/,
    ],
    [
      'a directory in its place',
      (f) => {
        renameSync(f, `${f}.old`);
        mkdirSync(f, { mode: 0o700 });
      },
      /is not a file/,
    ],
  ];

  for (const [name, damage, message] of cases) {
    it(`${name}: admin commands and ciport login refuse it (exit 2, CIPORT_E_CREDENTIALS_INSECURE)`, async () => {
      const home = homeWith(name.replace(/\W+/g, '-'), damage);
      const env = operatorEnv(lh, home);
      const list = await runCli(['sessions', 'list', '--gateway', lh.url], { env });
      expect(list.code).toBe(2);
      expect(list.stderr).toContain('CIPORT_E_CREDENTIALS_INSECURE');
      expect(list.stderr).toMatch(message);
      // login refuses before it prints a URL: nobody signs in to a token that cannot be kept.
      const login = await runCli(['login', '--gateway', lh.url], { env, timeoutMs: 60_000 });
      expect(login.code).toBe(2);
      expect(login.stderr).toContain('CIPORT_E_CREDENTIALS_INSECURE');
      expect(login.stderr).not.toContain(lh.idp.issuer);
      expect(list.stderr + login.stderr).not.toMatch(/cpo_/);
    }, 120_000);
  }
});

describe('hostile: the token never reaches argv or a child environment', () => {
  it('the browser the CLI opens gets the authorization URL only; no CIPORT_* variable, no token', async () => {
    const home = configHome(lh.h, 'opener');
    const first = await runLogin(lh, 'ana', operatorEnv(lh, home));
    expect(first.result.code).toBe(0);
    const token = JSON.parse(readFileSync(credentials(home), 'utf8')).gateways[lh.url].token as string;
    // A fake xdg-open records what it was given.
    const bin = join(home, 'bin');
    mkdirSync(bin);
    const record = join(home, 'opened.txt');
    writeFileSync(
      join(bin, 'xdg-open'),
      `#!/bin/sh\n{ printf 'ARGC=%s\\n' "$#"; for a in "$@"; do printf 'ARG=%s\\n' "$a"; done; env; } > '${record}'\n`,
      { mode: 0o755 },
    );
    const env = operatorEnv(lh, home, {
      PATH: `${bin}:${process.env.PATH}`,
      DISPLAY: ':99',
      CIPORT_ADMIN_TOKEN: 'adm-not-for-the-browser-0123456789',
    });
    let procSeen = '';
    const second = await runLogin(lh, 'ana', env, {
      async beforeCallback() {
        // While it waits, the CLI holds the previous sign-in: not in its argv or environment.
        const pid = Number(
          execFileSync('pgrep', ['-f', '-n', `login --gateway ${lh.url}`])
            .toString()
            .trim(),
        );
        procSeen =
          readFileSync(`/proc/${pid}/cmdline`, 'utf8') + readFileSync(`/proc/${pid}/environ`, 'utf8');
      },
    });
    expect(second.result.code, second.result.stderr).toBe(0);
    expect(second.result.stderr).toContain('a browser was opened');
    const opened = await waitFor(() => existsSync(record) && readFileSync(record, 'utf8'), 10_000);
    expect(opened).toContain('ARGC=1');
    expect(opened).toContain(`ARG=${second.authUrl}`);
    expect(opened).not.toMatch(/CIPORT_/);
    expect(opened).not.toContain('adm-not-for-the-browser');
    expect(opened).not.toContain(token);
    expect(procSeen).toContain('login');
    expect(procSeen).not.toContain(token);
    expect(procSeen).not.toMatch(/cpo_/);
    // The new sign-in replaced the old one, which the gateway no longer accepts.
    const status = await runCli(['login', '--status', '--gateway', lh.url], {
      env: operatorEnv(lh, home),
    });
    expect(status.code).toBe(0);
    const c = await lh.h.client();
    expect((await api(c, 'GET', '/v1/sessions', { bearer: token })).status).toBe(401);
  }, 240_000);
});
