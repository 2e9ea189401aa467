// SIGHUP reloads the configuration of a real `ciport gateway` process (bin/ciport.js): a new
// rule allows a job that was denied, a live session keeps its grant when a rule goes away, an
// invalid file or a change that needs a restart is refused (logged, old policy kept, process
// alive), and every applied reload is a `config.loaded` event with the new hash.
import type { ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import type { ClientHttp2Stream } from 'node:http2';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { restartOnlyChanges } from '../../src/gateway/reload.js';
import { openStore } from '../../src/store/open.js';
import { baseEnv, ensureBuilt, spawnCli } from '../fixtures/cli.js';
import { gatewayConfig } from '../fixtures/gateway.js';
import { FixtureIssuer } from '../fixtures/oidc-issuer.js';
import { waitFor } from '../fixtures/wait-for.js';
import {
  ADMIN_TOKEN,
  api,
  connectClient,
  type EchoServer,
  openSession,
  startEcho,
  tempDir,
  tunnel,
} from './helpers.js';

const { dir, cleanup } = tempDir('ciport-reload-');
let issuer: FixtureIssuer;
let echo: EchoServer;
let other: EchoServer;

function config(rules: unknown[], extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    listen: '127.0.0.1:0',
    data_dir: join(dir, 'data'),
    admin_tokens: [{ env: 'CIPORT_ADMIN_TOKEN' }],
    sessions: { rate_limit: { per_minute: 6000, burst: 1000 } },
    issuers: [{ name: 'gitlab', kind: 'gitlab', issuer: issuer.url, audience: 'ciport' }],
    targets: [
      { name: 'echo', protocol: 'tcp', address: `127.0.0.1:${echo.port}` },
      { name: 'other', protocol: 'tcp', address: `127.0.0.1:${other.port}` },
    ],
    rules,
    ...extra,
  };
}

/** Write to a live tunnel and read the echo back, keeping the stream open. */
function echoOnce(stream: ClientHttp2Stream, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = '';
    const onData = (c: Buffer) => {
      got += c.toString();
      if (got.length >= text.length) {
        stream.off('data', onData);
        resolve(got);
      }
    };
    stream.on('data', onData);
    stream.once('error', reject);
    stream.write(text);
  });
}

const mainRule = { name: 'main', issuer: 'gitlab', when: { ref_protected: true }, allow: ['echo'] };
const otherRule = { name: 'other', issuer: 'gitlab', when: { project_id: '61577203' }, allow: ['other'] };

beforeAll(async () => {
  await ensureBuilt();
  issuer = await FixtureIssuer.start();
  echo = await startEcho();
  other = await startEcho();
}, 180_000);

afterAll(async () => {
  await echo?.close();
  await other?.close();
  await issuer?.close();
  cleanup();
});

describe('ciport gateway: SIGHUP reloads the configuration', () => {
  it('applies new rules to new sessions, keeps live ones, refuses bad or restart-only changes', async () => {
    const file = join(dir, 'gateway.yaml');
    writeFileSync(file, stringify(config([mainRule])));
    let child: ChildProcess | undefined;
    const proc = spawnCli(['gateway', '--config', file], {
      env: baseEnv({ CIPORT_ADMIN_TOKEN: ADMIN_TOKEN, CIPORT_LOG_LEVEL: 'info' }),
      timeoutMs: 120_000,
    });
    child = proc.child;
    try {
      const url = await waitFor(() => /listening on (https:\/\/\S+)/.exec(proc.stderr())?.[1], 30_000);
      const caPem = (await import('node:fs')).readFileSync(join(dir, 'data', 'ca.crt'), 'utf8');
      const c = await connectClient(url, caPem);
      const token = await issuer.mint({}, { preset: 'gitlab-main' });
      const ask = (targets: string[]) => api(c, 'POST', '/v1/sessions', { bearer: token, body: { targets } });
      const reloads = () => (proc.stderr().match(/SIGHUP: configuration reloaded/g) ?? []).length;
      const refusals = () => (proc.stderr().match(/SIGHUP: reload refused/g) ?? []).length;

      // Before: `other` is denied; a session on echo is live.
      expect((await ask(['other'])).status).toBe(403);
      const live = await openSession(c, token, { targets: ['echo'] });
      const liveStream = await tunnel(c, live, 'echo');
      expect(await echoOnce(liveStream, 'before')).toBe('before');

      // A new rule, SIGHUP: the job that was denied gets its session. The same reload names the
      // admin token and makes it an auditor: it still lists sessions, it revokes none.
      const auditorTokens = [{ name: 'ops', token: { env: 'CIPORT_ADMIN_TOKEN' }, role: 'auditor' }];
      expect((await api(c, 'GET', '/v1/sessions', { bearer: ADMIN_TOKEN })).status).toBe(200);
      writeFileSync(file, stringify(config([mainRule, otherRule], { admin_tokens: auditorTokens })));
      child.kill('SIGHUP');
      await waitFor(() => reloads() === 1 || undefined, 20_000);
      const allowed = await ask(['other']);
      expect(allowed.status).toBe(201);
      expect((await api(c, 'GET', '/v1/sessions', { bearer: ADMIN_TOKEN })).status).toBe(200);
      const forbidden = await api(c, 'POST', `/v1/sessions/${live.id}/revoke`, {
        bearer: ADMIN_TOKEN,
        body: {},
      });
      expect(forbidden.status).toBe(403);
      expect(forbidden.body.error.code).toBe('CIPORT_E_ADMIN_FORBIDDEN');
      expect(forbidden.body.error.message).toContain('token:ops');
      const otherSession = allowed.body as { id: string; secret: string };
      const otherStream = await tunnel(c, otherSession as never, 'other');

      // An invalid file: refused, logged, the reloaded policy stays, the process lives.
      writeFileSync(file, 'rules:\n  - name: Not A Name\n');
      child.kill('SIGHUP');
      await waitFor(() => refusals() === 1 || undefined, 20_000);
      expect(proc.stderr()).toContain(
        'reload refused, the running configuration is kept: CIPORT_E_CONFIG_INVALID',
      );
      expect(proc.stderr()).toMatch(
        /"level":50.*"code":"CIPORT_E_CONFIG_INVALID".*"msg":"configuration reload refused"/,
      );
      expect((await ask(['other'])).status).toBe(201);

      // A change that needs a restart (the port, a target): refused as a whole, naming the keys.
      writeFileSync(file, stringify(config([mainRule], { listen: '127.0.0.1:1' })));
      child.kill('SIGHUP');
      await waitFor(() => refusals() === 2 || undefined, 20_000);
      expect(proc.stderr()).toContain('CIPORT_E_CONFIG_RELOAD_REFUSED: listen changed: this needs a restart');
      expect((await ask(['other'])).status).toBe(201);

      // The rule goes away: new sessions are denied, the live ones keep their grant.
      writeFileSync(file, stringify(config([mainRule])));
      child.kill('SIGHUP');
      await waitFor(() => reloads() === 2 || undefined, 20_000);
      expect((await ask(['other'])).status).toBe(403);
      expect(await echoOnce(otherStream, 'still')).toBe('still');
      expect(await echoOnce(liveStream, 'after')).toBe('after');
      expect(child.exitCode).toBeNull();

      c.destroy();
      child.kill('SIGTERM');
      const exited = await proc.result;
      expect(exited.code).toBe(0);
      child = undefined;

      const store = await openStore(undefined, { dataDir: join(dir, 'data') });
      try {
        const loaded = (await store.auditEvents({ limit: 10_000 })).filter((e) => e.type === 'config.loaded');
        expect(loaded).toHaveLength(3);
        const [first, second, third] = loaded.map((e) => e.data) as Array<Record<string, unknown>>;
        expect(second).toMatchObject({ previous_hash: first?.config_hash, rules: ['main', 'other'] });
        expect(second?.config_hash).not.toBe(first?.config_hash);
        expect(third).toMatchObject({ previous_hash: second?.config_hash, config_hash: first?.config_hash });
      } finally {
        await store.close();
      }
    } finally {
      if (child && child.exitCode === null) child.kill('SIGKILL');
    }
  }, 180_000);
});

describe('restartOnlyChanges', () => {
  const base = () => config([mainRule]);
  it('lets rules, issuers and admin tokens change; names every other changed key', () => {
    const a = gatewayConfig(base(), { CIPORT_ADMIN_TOKEN: 'a' });
    expect(
      restartOnlyChanges(a, gatewayConfig(config([mainRule, otherRule]), { CIPORT_ADMIN_TOKEN: 'a' })),
    ).toEqual([]);
    const issuers = {
      ...base(),
      issuers: [{ name: 'gl2', kind: 'gitlab', issuer: issuer.url, audience: 'x' }],
    };
    expect(
      restartOnlyChanges(
        a,
        gatewayConfig({ ...issuers, rules: [{ ...mainRule, issuer: 'gl2' }] }, { CIPORT_ADMIN_TOKEN: 'a' }),
      ),
    ).toEqual([]);
    expect(
      restartOnlyChanges(a, gatewayConfig({ ...base(), admin_tokens: [{ env: 'B' }] }, { B: 'b' })),
    ).toEqual([]);
    const moved = gatewayConfig(
      { ...base(), listen: '127.0.0.1:9', targets: [], sessions: { default_ttl: '1m' } },
      { CIPORT_ADMIN_TOKEN: 'a' },
    );
    expect(restartOnlyChanges(a, moved)).toEqual(['listen', 'sessions', 'targets']);
    const liveness = gatewayConfig(
      {
        ...base(),
        issuers: [
          {
            name: 'gitlab',
            kind: 'gitlab',
            issuer: issuer.url,
            audience: 'ciport',
            job_api: { url: 'https://gitlab.example.com/api/v4', token: { env: 'T' } },
          },
        ],
      },
      { CIPORT_ADMIN_TOKEN: 'a', T: 't' },
    );
    expect(restartOnlyChanges(a, liveness)).toEqual(['issuers[].job_api']);
  });
});
