// `ciport login` end to end (docs/login.md): the CLI as a process, a real gateway, a real OpenID
// provider. A person signs in through the printed URL (loopback redirect) or with a user code
// (device grant); the admin commands then act as them with the cached token, their roles apply,
// the audit log names them, logout ends the sign-in at the gateway, and a person without a
// mapped group is refused with nothing cached.
import { existsSync, lstatSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Writable } from 'node:stream';
import { beforeAll, describe, expect, it } from 'vitest';
import { exportEvents } from '../../src/audit/index.js';
import { baseEnv, runCli } from '../fixtures/cli.js';
import { ADMIN_TOKEN, api, openSession, startHarness } from '../gateway/helpers.js';
import {
  configHome,
  type LoginHarness,
  loginHarnessPerFile,
  operatorEnv,
  runDeviceLogin,
  runLogin,
  ssoSection,
} from './login-harness.js';

const harness = loginHarnessPerFile();
/** Every secret the tests saw: operator tokens, authorization codes, user codes. */
const seen: string[] = [];

let lh: LoginHarness;
beforeAll(() => {
  lh = harness();
});

function credentialsFile(xdg: string): string {
  return join(xdg, 'ciport', 'credentials.json');
}

function cachedToken(xdg: string): string {
  const doc = JSON.parse(readFileSync(credentialsFile(xdg), 'utf8'));
  const token = Object.values(doc.gateways as Record<string, { token: string }>)[0]?.token as string;
  seen.push(token);
  return token;
}

/** runLogin, keeping the code the provider issued. */
async function login(user: string, env: NodeJS.ProcessEnv) {
  const run = await runLogin(lh, user, env);
  seen.push(run.callback.searchParams.get('code') as string);
  return run;
}

async function auditOf(type: string) {
  return (await lh.h.gateway.store.auditEvents({ limit: 10_000 })).filter((e) => e.type === type);
}

describe('ciport login (loopback redirect)', () => {
  let anaHome: string;

  it('ana (platform → admin) signs in; the token is cached 0600 in a 0700 directory; the tab says so', async () => {
    anaHome = configHome(lh.h, 'ana');
    const { result, page } = await login('ana', operatorEnv(lh, anaHome));
    expect(result.stderr).toContain('signed in to');
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toMatch(/as ana@example\.com \(Ana Admin\), role admin, until 20\d\d-/);
    expect(page?.status).toBe(200);
    expect(page?.text).toContain('You can close this tab');
    expect(page?.headers.get('content-security-policy')).toContain("default-src 'none'");
    const file = credentialsFile(anaHome);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(dirname(file)).mode & 0o777).toBe(0o700);
    expect(lstatSync(file).isFile()).toBe(true);
    const doc = JSON.parse(readFileSync(file, 'utf8'));
    expect(Object.keys(doc.gateways)).toEqual([lh.url]);
    expect(doc.gateways[lh.url]).toMatchObject({
      token: expect.stringMatching(/^cpo_[A-Za-z0-9_-]{43}$/),
      operator: { by: `oidc:${lh.idp.issuer}#ana`, email: 'ana@example.com', roles: ['admin'] },
    });
    // Nothing of the token in what the CLI printed.
    expect(result.stdout + result.stderr).not.toContain(doc.gateways[lh.url].token);
    const [signedIn] = (await auditOf('operator.signed_in')).filter((e) => e.data.subject === 'ana');
    expect(signedIn?.data).toMatchObject({
      by: `oidc:${lh.idp.issuer}#ana`,
      email: 'ana@example.com',
      roles: ['admin'],
      via: 'cli',
    });
  }, 180_000);

  it('the admin commands use the sign-in: ana lists and revokes; session.ended says by oidc:<issuer>#ana', async () => {
    const env = operatorEnv(lh, anaHome);
    const c = await lh.h.client();
    const s = await openSession(c, await lh.h.token(), { targets: ['echo'] });
    const list = await runCli(['sessions', 'list', '--gateway', lh.url, '--json'], { env });
    expect(list.code, list.stderr).toBe(0);
    expect(JSON.parse(list.stdout).map((x: { id: string }) => x.id)).toContain(s.id);
    const revoke = await runCli(
      ['sessions', 'revoke', s.id, '--gateway', lh.url, '--reason', 'INC-7: found by ana'],
      { env },
    );
    expect(revoke.code, revoke.stderr).toBe(0);
    const ended = (await auditOf('session.ended')).find((e) => e.data.session === s.id);
    expect(ended?.data).toMatchObject({
      reason: 'revoked',
      by: `oidc:${lh.idp.issuer}#ana`,
      note: 'INC-7: found by ana',
    });
    const status = await runCli(['login', '--status', '--gateway', lh.url], { env });
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout).toContain(`${lh.url}: signed in as ana@example.com (Ana Admin), role admin, until`);
  }, 120_000);

  it('carla (compliance → auditor) signs in, may list but not revoke (403, exit 3)', async () => {
    const home = configHome(lh.h, 'carla');
    const { result } = await login('carla', operatorEnv(lh, home));
    expect(result.code, result.stderr).toBe(0);
    const env = operatorEnv(lh, home);
    const c = await lh.h.client();
    const s = await openSession(c, await lh.h.token(), { targets: ['echo'] });
    expect((await runCli(['sessions', 'list', '--gateway', lh.url], { env })).code).toBe(0);
    const revoke = await runCli(['sessions', 'revoke', s.id, '--gateway', lh.url], { env });
    expect(revoke.code).toBe(3);
    expect(revoke.stderr).toContain('CIPORT_E_ADMIN_FORBIDDEN');
    expect(revoke.stderr).toContain(`oidc:${lh.idp.issuer}#carla`);
    const session = await api(c, 'GET', `/v1/sessions/${s.id}`, { bearer: ADMIN_TOKEN });
    expect(session.body.state).toBe('active');
    // CIPORT_ADMIN_TOKEN, when set, wins over the cached sign-in (docs/login.md).
    // Carla reads and signs off access reviews with the same sign-in; she is the reviewer.
    const review = await runCli(
      ['review', '--gateway', lh.url, '--since', '1d', '--until', 'now', '--format', 'json'],
      { env },
    );
    expect(review.code, review.stderr).toBe(0);
    const attest = await runCli(
      ['review', 'attest', '--gateway', lh.url, '--since', '2d', '--until', '1d', '--json'],
      { env },
    );
    expect(attest.code, attest.stderr).toBe(0);
    const attested = (await auditOf('review.attested')).at(-1);
    expect(attested?.data.reviewer).toMatchObject({
      issuer: lh.idp.issuer,
      subject: 'carla',
      email: 'carla@example.com',
    });
    const asToken = await runCli(['sessions', 'revoke', s.id, '--gateway', lh.url], {
      env: { ...env, CIPORT_ADMIN_TOKEN: ADMIN_TOKEN },
    });
    expect(asToken.code, asToken.stderr).toBe(0);
    const ended = (await auditOf('session.ended')).find((e) => e.data.session === s.id);
    expect(ended?.data.by).toBe('token:admin-token-1');
  }, 180_000);

  it('nobody (no mapped group) is refused: exit 3 CIPORT_E_SSO_NO_ROLE, nothing cached, the failure audited', async () => {
    const home = configHome(lh.h, 'nobody');
    const { result, page } = await login('nobody', operatorEnv(lh, home));
    expect(result.code).toBe(3);
    expect(result.stderr).toContain('CIPORT_E_SSO_NO_ROLE');
    expect(page?.status).toBe(403);
    expect(page?.text).toContain('CIPORT_E_SSO_NO_ROLE');
    expect(existsSync(credentialsFile(home))).toBe(false);
    const failed = (await auditOf('operator.sign_in_failed')).find((e) => e.data.subject === 'nobody');
    expect(failed?.data).toMatchObject({
      code: 'CIPORT_E_SSO_NO_ROLE',
      via: 'cli',
      email: 'nobody@example.com',
    });
  }, 180_000);

  it('logout ends the sign-in at the gateway: the old token is refused, the cache is gone, signed_out audited', async () => {
    const home = configHome(lh.h, 'ana-logout');
    const env = operatorEnv(lh, home);
    expect((await login('ana', env)).result.code).toBe(0);
    const token = cachedToken(home);
    const c = await lh.h.client();
    expect((await api(c, 'GET', '/v1/sessions', { bearer: token })).status).toBe(200);
    const out = await runCli(['logout', '--gateway', lh.url], { env });
    expect(out.code, out.stderr).toBe(0);
    expect(out.stderr).toContain(`signed out of ${lh.url}`);
    expect(existsSync(credentialsFile(home))).toBe(false);
    const refused = await api(c, 'GET', '/v1/sessions', { bearer: token });
    expect(refused.status).toBe(401);
    const signedOut = await auditOf('operator.signed_out');
    expect(signedOut.some((e) => e.data.subject === 'ana' && e.data.via === 'cli')).toBe(true);
    // Nothing cached any more: a plain usage error naming both ways in.
    const list = await runCli(['sessions', 'list', '--gateway', lh.url], { env });
    expect(list.code).toBe(2);
    expect(list.stderr).toMatch(/ciport login --gateway .*CIPORT_ADMIN_TOKEN/);
  }, 180_000);

  it('a cached sign-in ended elsewhere: the admin command says to run ciport login again (exit 4)', async () => {
    const home = configHome(lh.h, 'ana-ended');
    const env = operatorEnv(lh, home);
    expect((await login('ana', env)).result.code).toBe(0);
    const c = await lh.h.client();
    const end = await api(c, 'DELETE', '/v1/operator/sessions/current', { bearer: cachedToken(home) });
    expect(end.body).toEqual({ signed_out: true });
    const list = await runCli(['sessions', 'list', '--gateway', lh.url], { env });
    expect(list.code).toBe(4);
    expect(list.stderr).toContain('CIPORT_E_LOGIN_REQUIRED');
    expect(list.stderr).toContain(`run \`ciport login --gateway ${lh.url}\` again`);
    const status = await runCli(['login', '--status', '--gateway', lh.url], { env });
    expect(status.code).toBe(4);
    expect(status.stderr).toContain('CIPORT_E_LOGIN_REQUIRED');
    // A cache entry past its expiry is refused without asking the gateway.
    const file = credentialsFile(home);
    const doc = JSON.parse(readFileSync(file, 'utf8'));
    doc.gateways[lh.url].expires_at = '2020-01-01T00:00:00.000Z';
    writeFileSync(file, JSON.stringify(doc), { mode: 0o600 });
    const expired = await runCli(['agents', 'list', '--gateway', lh.url], { env });
    expect(expired.code).toBe(4);
    expect(expired.stderr).toContain('CIPORT_E_LOGIN_REQUIRED: your sign-in to');
    expect(expired.stderr).toContain('expired at 2020-01-01T00:00:00.000Z');
  }, 180_000);
});

describe('ciport login --device', () => {
  it('dave (dba → approver) enters the user code at the provider; the gateway polls; sessions list works', async () => {
    const home = configHome(lh.h, 'dave');
    const env = operatorEnv(lh, home);
    const tokenHits = () => lh.idp.hits.get('/token') ?? 0;
    const before = tokenHits();
    const { result, userCode } = await runDeviceLogin(lh, 'dave', env, ['--device', '--json']);
    seen.push(userCode);
    expect(result.code, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout)).toEqual({
      gateway: lh.url,
      operator: expect.objectContaining({ by: `oidc:${lh.idp.issuer}#dave`, roles: ['approver'] }),
      expires_at: expect.any(String),
    });
    // One provider request per poll: no more token requests than polls the interval allows.
    expect(tokenHits() - before).toBeGreaterThanOrEqual(1);
    expect(tokenHits() - before).toBeLessThanOrEqual(3);
    expect((await runCli(['sessions', 'list', '--gateway', lh.url], { env })).code).toBe(0);
    const token = cachedToken(home);
    expect(result.stdout + result.stderr).not.toContain(token);
  }, 180_000);
});

describe('which flow runs', () => {
  it('over SSH without a display, ciport login uses the device grant by itself', async () => {
    const home = configHome(lh.h, 'ssh');
    const env = operatorEnv(lh, home, {
      SSH_CONNECTION: '192.0.2.7 50123 192.0.2.1 22',
      SSH_TTY: '/dev/pts/3',
    });
    const { result, userCode } = await runDeviceLogin(lh, 'carla', env, []);
    seen.push(userCode);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).not.toContain('/auth?');
    expect(result.stderr).toContain('role auditor');
    // --loopback overrides the choice even there.
    const forced = await runLogin(
      lh,
      'carla',
      operatorEnv(lh, configHome(lh.h, 'ssh-loopback'), { SSH_TTY: '/dev/pts/3' }),
      {
        args: ['--loopback'],
      },
    );
    seen.push(forced.callback.searchParams.get('code') as string);
    expect(forced.result.code, forced.result.stderr).toBe(0);
  }, 180_000);
});

describe('secrets stay out of logs and the audit log', () => {
  it('no operator token, code or device code in the gateway log or the audit export', async () => {
    let exported = '';
    const sink = new Writable({
      write(chunk, _enc, cb) {
        exported += chunk.toString();
        cb();
      },
    });
    await exportEvents(lh.h.gateway.store, { format: 'jsonl' }, sink);
    const logs = lh.logLines.join('\n');
    expect(exported).toContain('operator.signed_in');
    expect(seen.length).toBeGreaterThanOrEqual(8);
    for (const text of [exported, logs]) {
      expect(text).not.toMatch(/cpo_[A-Za-z0-9_-]{20}/);
      expect(text).not.toMatch(/"(code_verifier|device_code|id_token|access_token|token)":/);
      expect(text).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}\.eyJ/); // no JWT (ID token)
      for (const secret of seen) expect(text).not.toContain(secret);
    }
    expect(logs).toContain('operator signed in');
  });
});

describe('gateways that do not offer ciport login', () => {
  it('no sso: section, or sso without cli_client_id: exit 2 CIPORT_E_SSO_NOT_CONFIGURED, 404 on the endpoints', async () => {
    const plain = await startHarness();
    const consoleOnly = await startHarness({
      extra: { sso: { ...ssoSection(lh.idp.issuer), cli_client_id: undefined } },
      env: { CONSOLE_SECRET: 'console-secret' },
    });
    try {
      for (const [h, why] of [
        [plain, 'no sso: section'],
        [consoleOnly, 'no sso.cli_client_id'],
      ] as const) {
        const home = configHome(h, 'none');
        const env = baseEnv({ CIPORT_CA_FILE: h.gateway.caFile as string, XDG_CONFIG_HOME: home });
        const out = await runCli(['login', '--gateway', h.gateway.url], { env, timeoutMs: 60_000 });
        expect(out.code, why).toBe(2);
        expect(out.stderr).toContain('CIPORT_E_SSO_NOT_CONFIGURED');
        const c = await h.client();
        expect((await api(c, 'GET', '/v1/info')).body.sso).toBeUndefined();
        const res = await api(c, 'POST', '/v1/operator/sessions', { body: {} });
        expect(res.status).toBe(404);
        expect(res.body.error.code).toBe('CIPORT_E_SSO_NOT_CONFIGURED');
        expect(res.body.error.message).toContain(h === plain ? 'no sso: section' : 'no sso.cli_client_id');
      }
    } finally {
      await plain.stop();
      await consoleOnly.stop();
    }
  }, 120_000);

  it('GET /v1/info advertises sign-in: issuer, public client id, scopes, device grant', async () => {
    const c = await lh.h.client();
    const info = await api(c, 'GET', '/v1/info');
    expect(info.body.sso).toEqual({
      issuer: lh.idp.issuer,
      cli_client_id: 'ciport-cli',
      scopes: ['openid', 'email', 'profile', 'groups'],
      device: true,
    });
    expect(JSON.stringify(info.body)).not.toContain('console-secret');
  });
});
