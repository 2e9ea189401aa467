import { createHash, randomBytes } from 'node:crypto';
import { statSync } from 'node:fs';
import type { ClientHttp2Stream } from 'node:http2';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Agent, backoffDelay } from '../../src/agent/agent.js';
import { CREDENTIAL_FILE } from '../../src/agent/credential.js';
import type { CiportError } from '../../src/errors/index.js';
import type { RunningGateway } from '../../src/gateway/server.js';
import { waitFor } from '../fixtures/wait-for.js';
import {
  ADMIN,
  agentConfig,
  api,
  echoServer,
  sleep,
  startAgentGateway,
  storeText,
  tempDir,
} from './harness.js';

const REDIS = '127.0.0.1:6379';

/** Write `data`, end, and collect everything that comes back. */
function roundTrip(stream: ClientHttp2Stream, data: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.once('end', () => resolve(Buffer.concat(chunks)));
    stream.once('error', reject);
    stream.end(data);
  });
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('agent: reverse HTTP/2 through the hub', () => {
  let tmp: ReturnType<typeof tempDir>;
  let gw: RunningGateway;
  let echo: Awaited<ReturnType<typeof echoServer>>;
  const agents: Agent[] = [];

  async function enroll(name: string, targets = ['echo']): Promise<string> {
    const res = await api(gw, 'POST', '/v1/agents/enroll', ADMIN, { name, targets });
    expect(res.status).toBe(201);
    return res.body.token as string;
  }

  async function newAgent(
    name: string,
    dataDir: string,
    targets = [{ name: 'echo', protocol: 'tcp', address: echo.address }],
  ) {
    const token = await enroll(
      name,
      targets.map((t) => t.name),
    );
    const agent = new Agent(agentConfig({ gateway: gw.url, dataDir, name, targets }), {
      ca: gw.caPem,
      env: { CIPORT_TEST_ENROLLMENT_TOKEN: token },
    });
    agents.push(agent);
    await agent.start();
    await agent.waitConnected(5_000);
    // the agent's session is up a moment before the hub has fetched its targets
    await waitFor(
      () => gw.agents.hub.list().some((c) => c.agent === agent.agentId),
      5_000,
      'hub saw the agent',
    );
    return agent;
  }

  beforeEach(async () => {
    tmp = tempDir();
    // A 1 s request timeout: Node's HTTP/1.1 timers must not reach an upgraded agent socket.
    gw = await startAgentGateway({ dataDir: join(tmp.dir, 'gw'), server: { request_timeout: '1s' } });
    echo = await echoServer();
  });

  afterEach(async () => {
    await Promise.all(agents.splice(0).map((a) => a.close()));
    await gw.close();
    await echo.close();
    tmp.cleanup();
  });

  it('enrolls once, stores the credential 0600, advertises targets and carries bytes intact', async () => {
    const connected: string[] = [];
    gw.agents.hub.on('agent.connected', (a) => connected.push(a.name));
    const agent = await newAgent('dc1', join(tmp.dir, 'a1'), [
      { name: 'echo', protocol: 'tcp', address: echo.address },
      { name: 'cache', protocol: 'redis', address: REDIS },
    ]);
    await waitFor(() => gw.agents.hub.serves('echo'), 2_000, 'advertised');
    expect(connected).toEqual(['dc1']);
    expect([...gw.agents.hub.targets()].sort()).toEqual(['cache', 'echo']);
    expect(statSync(join(tmp.dir, 'a1', CREDENTIAL_FILE)).mode & 0o777).toBe(0o600);
    expect(agent.agentId).toMatch(/^agt_/);
    // HTTP/1.1 request timeouts (1 s here) do not touch the upgraded socket
    await sleep(2_500);
    expect(gw.agents.hub.list()).toHaveLength(1);

    // several concurrent connections, 1 MiB each, checked by hash
    const payloads = Array.from({ length: 4 }, () => randomBytes(1 << 20));
    const results = await Promise.all(
      payloads.map(async (p) => roundTrip(await gw.agents.hub.open('echo'), p)),
    );
    results.forEach((r, i) => {
      expect(sha(r)).toBe(sha(payloads[i] as Buffer));
    });

    const list = await api(gw, 'GET', '/v1/agents', ADMIN);
    expect(list.status).toBe(200);
    expect(list.body[0]).toMatchObject({ name: 'dc1', revoked_at: null });
    expect(list.body[0].connections).toHaveLength(1);
    expect(JSON.stringify(list.body)).not.toContain('credential_hash');
  });

  it('reaches Redis through the agent (PING → +PONG)', async () => {
    await newAgent('dc1', join(tmp.dir, 'a1'), [{ name: 'cache', protocol: 'redis', address: REDIS }]);
    const stream = await gw.agents.hub.open('cache');
    const reply = await new Promise<string>((resolve, reject) => {
      stream.once('data', (d: Buffer) => resolve(d.toString()));
      stream.once('error', reject);
      stream.write('*1\r\n$4\r\nPING\r\n');
    });
    expect(reply).toBe('+PONG\r\n');
    stream.close();
  });

  it('an enrollment token is single-use; bad tokens and admin-less enrollment are refused', async () => {
    const token = await enroll('dc1');
    const first = await api(gw, 'POST', '/v1/agents/register', token, {});
    expect(first.status).toBe(201);
    expect(first.body.credential).toMatch(/^cpa_agt_/);
    const again = await api(gw, 'POST', '/v1/agents/register', token, {});
    expect(again.status).toBe(401);
    expect(again.body.error.code).toBe('CIPORT_E_ENROLLMENT_INVALID');
    expect((await api(gw, 'POST', '/v1/agents/register', 'cpe_nope', {})).body.error.code).toBe(
      'CIPORT_E_ENROLLMENT_INVALID',
    );
    expect(
      (await api(gw, 'POST', '/v1/agents/enroll', 'wrong', { name: 'x', targets: ['echo'] })).status,
    ).toBe(401);
    // the store holds hashes only
    const doc = storeText(join(tmp.dir, 'gw'));
    expect(doc).toContain(createHash('sha256').update(token).digest('hex'));
    expect(doc).not.toContain(token);
    expect(doc).not.toContain(first.body.credential.split('.')[1]);
  });

  it('no agent for a target: CIPORT_E_NO_AGENT; an unknown target on the agent is refused with its code', async () => {
    await expect(gw.agents.hub.open('echo')).rejects.toMatchObject({ code: 'CIPORT_E_NO_AGENT' });
    await newAgent('dc1', join(tmp.dir, 'a1'), [{ name: 'dead', protocol: 'tcp', address: '127.0.0.1:1' }]);
    await expect(gw.agents.hub.open('dead')).rejects.toMatchObject({ code: 'CIPORT_E_UPSTREAM_UNREACHABLE' });
    await expect(gw.agents.hub.open('echo')).rejects.toMatchObject({ code: 'CIPORT_E_NO_AGENT' });
  });

  it('two agents for one target: spreads connections, and one killed → new connections keep succeeding', async () => {
    const a = await newAgent('dc1', join(tmp.dir, 'a1'));
    const b = await newAgent('dc2', join(tmp.dir, 'a2'));
    await waitFor(() => gw.agents.hub.list().length === 2, 2_000, 'two agents');
    const open = await Promise.all([1, 2, 3, 4].map(() => gw.agents.hub.open('echo')));
    await waitFor(() => a.streams === 2 && b.streams === 2, 2_000, 'spread 2/2');
    for (const s of open) s.close();

    const disconnected: string[] = [];
    gw.agents.hub.on('agent.disconnected', (x) => disconnected.push(`${x.name}:${x.reason}`));
    await a.close();
    for (let i = 0; i < 10; i++) {
      const p = randomBytes(4096);
      expect(sha(await roundTrip(await gw.agents.hub.open('echo'), p))).toBe(sha(p));
    }
    await waitFor(() => disconnected.length === 1, 2_000, 'disconnect event');
    expect(disconnected[0]).toMatch(/^dc1:/);
  });

  it('agent restart: in-flight streams end cleanly, new ones work with the stored credential', async () => {
    const dir = join(tmp.dir, 'a1');
    const a = await newAgent('dc1', dir);
    const inflight = await gw.agents.hub.open('echo');
    const ended = new Promise<string>((resolve) => {
      inflight.on('data', () => {});
      inflight.once('error', (e) => resolve(`error ${(e as Error).message}`));
      inflight.once('close', () => resolve(`close ${inflight.rstCode}`));
    });
    inflight.write('hello');
    await a.close();
    expect(await ended).toMatch(/close|error/);

    // Same data dir: no enrollment token needed any more.
    const again = new Agent(
      agentConfig({
        gateway: gw.url,
        dataDir: dir,
        name: 'dc1',
        targets: [{ name: 'echo', protocol: 'tcp', address: echo.address }],
      }),
      {
        ca: gw.caPem,
        env: {},
      },
    );
    agents.push(again);
    await again.start();
    await again.waitConnected(5_000);
    await waitFor(() => gw.agents.hub.serves('echo'), 2_000, 'served again');
    const p = randomBytes(10_000);
    expect(sha(await roundTrip(await gw.agents.hub.open('echo'), p))).toBe(sha(p));
  });

  it('gateway restart: the agent is back within 5 s', async () => {
    const a = await newAgent('dc1', join(tmp.dir, 'a1'));
    const port = gw.port;
    await gw.close();
    await waitFor(() => !a.connected, 2_000, 'agent saw the gateway go');
    await sleep(1_500); // the gateway is down for a while; the agent keeps retrying
    gw = await startAgentGateway({ dataDir: join(tmp.dir, 'gw'), port, server: { request_timeout: '1s' } });
    await waitFor(() => gw.agents.hub.serves('echo'), 5_000, 'agent back');
    const p = randomBytes(1000);
    expect(sha(await roundTrip(await gw.agents.hub.open('echo'), p))).toBe(sha(p));
  });

  it('revocation disconnects the agent at once and its credential is refused afterwards', async () => {
    const a = await newAgent('dc1', join(tmp.dir, 'a1'));
    const failures: CiportError[] = [];
    a.on('failed', (e) => failures.push(e));
    const gone = new Promise<string>((resolve) =>
      gw.agents.hub.once('agent.disconnected', (x) => resolve(x.reason)),
    );
    const res = await api(gw, 'POST', '/v1/agents/dc1/revoke', ADMIN, {});
    expect(res.status).toBe(200);
    expect(res.body.revoked[0]).toMatchObject({ name: 'dc1' });
    expect(await gone).toBe('revoked');
    expect(gw.agents.hub.serves('echo')).toBe(false);
    await waitFor(() => failures.length > 0, 5_000, 'reconnect refused');
    expect(failures[0]?.code).toBe('CIPORT_E_AGENT_UNAUTHORIZED');
    expect(a.connected).toBe(false);
    await expect(gw.agents.hub.open('echo')).rejects.toMatchObject({ code: 'CIPORT_E_NO_AGENT' });
  });
});

describe('agent backoff', () => {
  it('is jittered, grows, and is capped so a restarted gateway sees its agents within ~3 s', () => {
    const lo = () => 0;
    const hi = () => 0.999999;
    expect(backoffDelay(0, {}, lo)).toBe(100);
    expect(backoffDelay(0, {}, hi)).toBe(200);
    expect(backoffDelay(3, {}, hi)).toBeGreaterThan(backoffDelay(1, {}, hi));
    for (let i = 0; i < 50; i++) expect(backoffDelay(i, {}, hi)).toBeLessThanOrEqual(3_000);
  });
});
