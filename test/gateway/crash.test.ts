// Crash safety with real processes: `ciport gateway` is SIGKILLed mid-session (a tunnel open) and
// restarted on the same data dir. Sessions whose TTL or lease passed while it was down end with
// `expired_while_down`; a session whose client kept heartbeating lives on; the audit chain
// still verifies (`ciport audit verify --config` exits 0).
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
  closed,
  connectClient,
  type EchoServer,
  openSession,
  roundTrip,
  sleep,
  startEcho,
  tempDir,
  tunnel,
} from './helpers.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function writeConfig(dir: string, port: number, issuerUrl: string, echo: EchoServer): string {
  const file = join(dir, 'gateway.yaml');
  writeFileSync(
    file,
    stringify({
      listen: `127.0.0.1:${port}`,
      data_dir: dir,
      admin_tokens: [{ env: 'TEST_ADMIN_TOKEN' }],
      sessions: { default_ttl: '15m', lease_timeout: '10s' },
      issuers: [{ name: 'gitlab', kind: 'gitlab', issuer: issuerUrl, audience: 'ciport' }],
      targets: [{ name: 'echo', protocol: 'tcp', address: `127.0.0.1:${echo.port}` }],
      rules: [
        {
          name: 'ledger-main',
          issuer: 'gitlab',
          when: { project_id: '61577203', ref_protected: true },
          allow: ['echo'],
          max_ttl: '30m',
        },
      ],
    }),
  );
  return file;
}

describe('crash safety (SIGKILL)', () => {
  it('restart after SIGKILL: lapsed sessions end expired_while_down, a heartbeating one lives on, the chain verifies', async () => {
    await ensureBuilt();
    const issuer = await FixtureIssuer.start();
    cleanups.push(() => issuer.close());
    const echo = await startEcho();
    cleanups.push(() => echo.close());
    const { dir, cleanup } = tempDir('ciport-crash-');
    cleanups.push(cleanup);
    const port = await freePort();
    const configFile = writeConfig(dir, port, issuer.url, echo);
    const env = baseEnv({ TEST_ADMIN_TOKEN: ADMIN_TOKEN, CIPORT_LOG_LEVEL: 'warn' });
    const url = `https://127.0.0.1:${port}`;

    const children: ChildProcess[] = [];
    cleanups.push(() => {
      for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    });
    const clients: ClientHttp2Session[] = [];
    cleanups.push(() => {
      for (const c of clients) c.destroy();
    });
    const launch = async () => {
      const run = spawnCli(['gateway', '--config', configFile], { env, timeoutMs: 120_000 });
      children.push(run.child);
      const ca = await waitFor(() => {
        try {
          return readFileSync(join(dir, 'ca.crt'), 'utf8');
        } catch {
          return undefined;
        }
      }, 20_000);
      const client = await waitFor(async () => connectClient(url, ca), 20_000);
      clients.push(client);
      await waitFor(async () => (await api(client, 'GET', '/readyz')).status === 200, 20_000);
      return { run, client };
    };

    const first = await launch();
    const c = first.client;
    // ttl: its TTL passes while the gateway is down (it is killed ~8.5 s after these opens).
    const short = await openSession(c, await issuer.mint({}, { preset: 'gitlab-main' }), {
      targets: ['echo'],
      ttl: '9s',
    });
    // quiet: no heartbeat at all; its lease (10 s) passes while the gateway is down.
    const quiet = await openSession(c, await issuer.mint({}, { preset: 'gitlab-main' }), {
      targets: ['echo'],
    });
    // live: the client keeps heartbeating, and holds a tunnel.
    const live = await openSession(c, await issuer.mint({}, { preset: 'gitlab-main' }), {
      targets: ['echo'],
    });
    const stream = await tunnel(c, live, 'echo');
    const echoed = new Promise<Buffer>((resolve) => stream.once('data', resolve));
    stream.write('before');
    expect((await echoed).toString()).toBe('before');

    // The heartbeating client: every 300 ms, on whatever connection works, until told to stop.
    let heartbeats = 0;
    let lastOk = 0;
    let current = c;
    let beating = true;
    const beat = (async () => {
      while (beating) {
        try {
          const r = await Promise.race([
            api(current, 'POST', `/v1/sessions/${live.id}/heartbeat`, { bearer: live.secret }),
            sleep(1000).then(() => undefined),
          ]);
          if (r?.status === 200) {
            heartbeats++;
            lastOk = Date.now();
          }
        } catch {
          // gateway down: retry
        }
        await sleep(300);
      }
    })();
    cleanups.push(async () => {
      beating = false;
      await beat;
    });

    // quiet's lease (10 s) ends ~1.5 s after the kill; live's is renewed meanwhile, so it runs
    // until ~10 s after the kill: the restart below has ~8 s to come up, even on a loaded machine
    // (a shorter lease made this a race with the restart's speed).
    await sleep(8_500);
    expect(heartbeats).toBeGreaterThan(3);
    const killedAt = Date.now();
    first.run.child.kill('SIGKILL');
    const exit = await first.run.result;
    expect(exit.signal).toBe('SIGKILL');
    // The tunnel died with the process.
    await closed(stream);
    await sleep(2_000);

    const second = await launch();
    current = second.client;
    expect(Date.now() - lastOk).toBeLessThan(10_000); // live's lease had not run out
    // The client's next heartbeat lands on the restarted gateway.
    const beforeRestart = heartbeats;
    await waitFor(() => heartbeats > beforeRestart, 5_000);
    expect(Date.now() - killedAt).toBeGreaterThan(1_500);

    // Read the store the way the operator's CLI would (SQLite, while the gateway runs).
    const store = await openStore(undefined, { dataDir: dir });
    cleanups.push(() => store.close());
    expect(await store.getSession(short.id)).toMatchObject({
      state: 'ended',
      endReason: 'expired_while_down',
    });
    expect(await store.getSession(quiet.id)).toMatchObject({
      state: 'ended',
      endReason: 'expired_while_down',
    });
    expect((await store.getSession(live.id))?.state).toBe('active');
    const endedEvents = (await store.auditEvents({ limit: 10_000 })).filter(
      (e) => e.type === 'session.ended',
    );
    expect(endedEvents.map((e) => [e.data.session, e.data.reason]).sort()).toEqual(
      [
        [short.id, 'expired_while_down'],
        [quiet.id, 'expired_while_down'],
      ].sort(),
    );

    // The live session still tunnels, through the restarted gateway.
    const again = await tunnel(current, live, 'echo');
    expect((await roundTrip(again, Buffer.from('after'))).toString()).toBe('after');
    // The lapsed ones are refused.
    const gone = await api(current, 'POST', `/v1/sessions/${quiet.id}/heartbeat`, { bearer: quiet.secret });
    expect(gone.status).toBe(410);
    expect(gone.body.error.end_reason).toBe('expired_while_down');

    beating = false;
    await beat;
    // Kill it again mid-session and verify the chain offline.
    second.run.child.kill('SIGKILL');
    await second.run.result;
    const verify = await runCli(['audit', 'verify', '--config', configFile], { env });
    expect(verify.stderr).toBe('');
    expect(verify.code).toBe(0);
  }, 300_000);
});
