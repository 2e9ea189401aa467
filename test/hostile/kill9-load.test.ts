// Hostile review (issue 11): SIGKILL the gateway (a real `ciport gateway` process, SQLite store,
// writer thread, group commit) while 8 clients loop open session → tunnel → bytes → end.
// Afterwards: `ciport audit verify` passes, every session a client was handed (201) has its row
// and its session.opened event, and every end a client was told about has its session.ended.
import type { ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import type { ClientHttp2Session } from 'node:http2';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { openStore } from '../../src/store/open.js';
import { baseEnv, ensureBuilt, runCli, spawnCli } from '../fixtures/cli.js';
import { freePort } from '../fixtures/free-port.js';
import { FixtureIssuer } from '../fixtures/oidc-issuer.js';
import { waitFor } from '../fixtures/wait-for.js';
import {
  ADMIN_TOKEN,
  api,
  connectClient,
  roundTrip,
  startEcho,
  tempDir,
  tunnel,
} from '../gateway/helpers.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe('SIGKILL under session and tunnel load (hostile review)', () => {
  it('loses no handed-out session.opened, no acknowledged session.ended, and the chain verifies', async () => {
    await ensureBuilt();
    const issuer = await FixtureIssuer.start();
    cleanups.push(() => issuer.close());
    const echo = await startEcho();
    cleanups.push(() => echo.close());
    const { dir, cleanup } = tempDir('ciport-kill9-');
    cleanups.push(cleanup);
    const port = await freePort();
    const configFile = join(dir, 'gateway.yaml');
    writeFileSync(
      configFile,
      stringify({
        listen: `127.0.0.1:${port}`,
        data_dir: dir,
        admin_tokens: [{ env: 'TEST_ADMIN_TOKEN' }],
        sessions: {
          default_ttl: '15m',
          lease_timeout: '30s',
          rate_limit: { per_minute: 100000, burst: 10000 },
        },
        issuers: [{ name: 'gitlab', kind: 'gitlab', issuer: issuer.url, audience: 'ciport' }],
        targets: [{ name: 'echo', protocol: 'tcp', address: `127.0.0.1:${echo.port}` }],
        rules: [
          {
            name: 'ledger-main',
            issuer: 'gitlab',
            when: { project_id: '61577203', ref_protected: true },
            allow: ['echo'],
          },
        ],
      }),
    );
    const env = baseEnv({ TEST_ADMIN_TOKEN: ADMIN_TOKEN, CIPORT_LOG_LEVEL: 'warn' });
    const run = spawnCli(['gateway', '--config', configFile], { env, timeoutMs: 120_000 });
    const child: ChildProcess = run.child;
    cleanups.push(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });
    const ca = await waitFor(() => {
      try {
        return readFileSync(join(dir, 'ca.crt'), 'utf8');
      } catch {
        return undefined;
      }
    }, 20_000);
    const url = `https://127.0.0.1:${port}`;
    const clients: ClientHttp2Session[] = [];
    cleanups.push(() => {
      for (const c of clients) c.destroy();
    });
    for (let i = 0; i < 8; i++) clients.push(await waitFor(async () => connectClient(url, ca), 20_000));
    await waitFor(
      async () => (await api(clients[0] as ClientHttp2Session, 'GET', '/readyz')).status === 200,
      20_000,
    );

    const handed: string[] = [];
    const endedAck: string[] = [];
    let running = true;
    const loops = clients.map(async (c) => {
      while (running) {
        try {
          const token = await issuer.mint({}, { preset: 'gitlab-main' });
          const r = await api(c, 'POST', '/v1/sessions', { bearer: token, body: { targets: ['echo'] } });
          if (r.status !== 201) continue;
          handed.push(r.body.id);
          const s = await tunnel(c, { id: r.body.id, secret: r.body.secret }, 'echo');
          await roundTrip(s, Buffer.from('ping'));
          const d = await api(c, 'DELETE', `/v1/sessions/${r.body.id}`, { bearer: r.body.secret });
          if (d.status >= 200 && d.status < 300) endedAck.push(r.body.id);
        } catch {
          return; // the gateway is gone
        }
      }
    });
    await waitFor(() => endedAck.length >= 40, 60_000);
    child.kill('SIGKILL');
    running = false;
    await run.result;
    await Promise.all(loops);

    const verify = await runCli(['audit', 'verify', '--config', configFile], { env });
    expect(verify.stderr).toBe('');
    expect(verify.code).toBe(0);

    const store = await openStore(undefined, { dataDir: dir });
    cleanups.push(() => store.close());
    const events = await store.auditEvents({ limit: 10_000 });
    const ids = (type: string) =>
      new Set(events.filter((e) => e.type === type).map((e) => (e.data as { session: string }).session));
    const opened = ids('session.opened');
    const ended = ids('session.ended');
    expect(handed.filter((id) => !opened.has(id))).toEqual([]);
    expect(endedAck.filter((id) => !ended.has(id))).toEqual([]);
    for (const id of handed) expect(await store.getSession(id), id).toBeDefined();
  }, 180_000);
});
