// Client → gateway CONNECT → agent CONNECT → target: the full reverse path through the real
// gateway, a session's tunnel to a target only agents serve (tunnel.ts: Tunnel.runViaAgent).
import { createHash, randomBytes } from 'node:crypto';
import { type ClientHttp2Session, type ClientHttp2Stream, connect, constants as h2 } from 'node:http2';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import type { RunningGateway } from '../../src/gateway/server.js';
import { FixtureIssuer } from '../fixtures/oidc-issuer.js';
import { waitFor } from '../fixtures/wait-for.js';
import {
  ADMIN,
  AGENT_TARGETS,
  agentConfig,
  api,
  echoServer,
  relay,
  startAgentGateway,
  tempDir,
} from './harness.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('client → gateway → agent → target', () => {
  let tmp: ReturnType<typeof tempDir>;
  let issuer: FixtureIssuer;
  let gw: RunningGateway;
  let echo: Awaited<ReturnType<typeof echoServer>>;
  let client: ClientHttp2Session;
  /** The test's session (granted every agent target), opened by its first tunnel. */
  let session: Promise<{ id: string; secret: string }> | undefined;
  const cleanups: Array<() => Promise<void>> = [];

  beforeEach(async () => {
    tmp = tempDir();
    issuer = await FixtureIssuer.start();
    gw = await startAgentGateway({ dataDir: join(tmp.dir, 'gw'), issuer: issuer.url });
    echo = await echoServer();
    client = connect(gw.url, { ca: gw.caPem });
    client.on('error', () => {});
    session = undefined;
  });
  afterEach(async () => {
    client.destroy();
    for (const c of cleanups.splice(0).reverse()) await c();
    await gw.close();
    await echo.close();
    await issuer.close();
    tmp.cleanup();
  });

  async function openSession(): Promise<{ id: string; secret: string }> {
    const token = await issuer.mint({}, { preset: 'gitlab-main' });
    const res = await api(gw, 'POST', '/v1/sessions', token, { targets: AGENT_TARGETS });
    expect(res.status).toBe(201);
    return { id: res.body.id, secret: res.body.secret };
  }

  async function startAgent(
    name: string,
    port = gw.port,
    bound = ['echo', 'cache'],
    beforeStart: (agent: Agent) => void = () => {},
  ): Promise<Agent> {
    const enroll = await api(gw, 'POST', '/v1/agents/enroll', ADMIN, { name, targets: bound });
    const agent = new Agent(
      agentConfig({
        gateway: `https://127.0.0.1:${port}`,
        dataDir: join(tmp.dir, name),
        name,
        targets: [
          { name: 'echo', protocol: 'tcp', address: echo.address },
          { name: 'cache', protocol: 'redis', address: '127.0.0.1:6379' },
        ],
      }),
      { ca: gw.caPem, env: { CIPORT_TEST_ENROLLMENT_TOKEN: enroll.body.token } },
    );
    cleanups.push(() => agent.close());
    beforeStart(agent);
    await agent.start();
    await waitFor(
      () => gw.agents.hub.list().some((c) => c.agent === agent.agentId),
      5_000,
      'hub saw the agent',
    );
    return agent;
  }

  async function tunnel(
    target: string,
  ): Promise<{ stream: ClientHttp2Stream; status: number; code: string | undefined; retryAfter?: string }> {
    session ??= openSession();
    const { id, secret } = await session;
    return new Promise((resolve, reject) => {
      const stream = client.request({
        ':method': 'CONNECT',
        ':authority': `${target}:443`,
        authorization: `Bearer ${secret}`,
        'ciport-session': id,
      });
      stream.once('error', reject);
      stream.once('response', (h) =>
        resolve({
          stream,
          status: Number(h[':status']),
          code: h['ciport-error'] as string | undefined,
          retryAfter: h['retry-after'] as string | undefined,
        }),
      );
    });
  }

  it('carries bytes intact both ways and counts them; Redis answers PONG', async () => {
    await startAgent('dc1');
    const t = await tunnel('echo');
    expect(t.status).toBe(200);
    const payload = randomBytes(3 << 20);
    const back = await new Promise<Buffer>((resolve, reject) => {
      const chunks: Buffer[] = [];
      t.stream.on('data', (c: Buffer) => chunks.push(c));
      t.stream.once('end', () => resolve(Buffer.concat(chunks)));
      t.stream.once('error', reject);
      t.stream.end(payload);
    });
    expect(sha(back)).toBe(sha(payload));
    // The gateway audits the connection with the agent as its exit and the bytes it carried.
    const closed = await waitFor(
      async () => (await gw.store.auditEvents({ limit: 1_000 })).find((e) => e.type === 'connection.closed'),
      2_000,
      'the connection closed',
    );
    expect(closed.data).toMatchObject({
      exit: 'dc1',
      target: 'echo',
      bytes_to_target: payload.length,
      bytes_from_target: payload.length,
    });
    expect(closed.data.error).toBeUndefined();

    const r = await tunnel('cache');
    const pong = await new Promise<string>((resolve) => {
      r.stream.once('data', (d: Buffer) => resolve(d.toString()));
      r.stream.write('*1\r\n$4\r\nPING\r\n');
    });
    expect(pong).toBe('+PONG\r\n');
    r.stream.close();
  });

  it('no agent: 503 with ciport-error CIPORT_E_NO_AGENT and retry-after', async () => {
    const t = await tunnel('echo');
    expect(t.status).toBe(503);
    expect(t.code).toBe('CIPORT_E_NO_AGENT');
    expect(t.retryAfter).toBe('5');
  });

  it('an agent is routed only what it is bound to; the rest is refused, reported once, told to it', async () => {
    const refusals: unknown[] = [];
    gw.agents.hub.on('agent.target_refused', (r) => refusals.push(r));
    // Listen before the agent connects: the gateway may tell it before startAgent returns.
    let told: Promise<string[]> | undefined;
    await startAgent('dc1', gw.port, ['cache'], (a) => {
      told = new Promise<string[]>((resolve) => a.once('refused', resolve));
    });
    expect(await told).toEqual(['echo']);
    expect(gw.agents.hub.list()[0]).toMatchObject({ targets: ['cache'], refused: ['echo'] });
    expect(gw.agents.hub.serves('echo')).toBe(false);
    expect(gw.agents.hub.targetInfo('echo')).toBeUndefined(); // not recorded as the target's advertisement
    for (let i = 0; i < 5; i++) {
      const t = await tunnel('echo');
      expect([t.status, t.code]).toEqual([503, 'CIPORT_E_NO_AGENT']);
    }
    expect((await tunnel('cache')).status).toBe(200);
    expect(refusals).toEqual([expect.objectContaining({ name: 'dc1', target: 'echo', repeats: 0 })]);
    // The binding widened on the live connection: served at once, no reconnect.
    const widened = await api(gw, 'POST', '/v1/agents/dc1/targets', ADMIN, { add: ['echo'] });
    expect(widened.status).toBe(200);
    expect((await tunnel('echo')).status).toBe(200);
    expect(gw.agents.hub.list()[0]?.targets.sort()).toEqual(['cache', 'echo']);
    expect(gw.agents.hub.list()[0]?.refused).toEqual([]);
    // Narrowed again: refused again, but not reported twice within the interval.
    expect((await api(gw, 'POST', '/v1/agents/dc1/targets', ADMIN, { set: ['cache'] })).status).toBe(200);
    expect((await tunnel('echo')).code).toBe('CIPORT_E_NO_AGENT');
    expect(refusals).toHaveLength(1);
    // Bad edits are usage errors.
    for (const body of [{ set: ['*'] }, {}, { set: ['a'], add: ['b'] }, { add: 'echo' }]) {
      expect((await api(gw, 'POST', '/v1/agents/dc1/targets', ADMIN, body)).status).toBe(400);
    }
    expect((await api(gw, 'POST', '/v1/agents/dc1/targets', 'wrong', { add: ['x'] })).status).toBe(401);
    expect((await api(gw, 'POST', '/v1/agents/enroll', ADMIN, { name: 'dc2' })).status).toBe(400);
  });

  it('agent lost mid-stream: the client stream is reset with INTERNAL_ERROR and no END_STREAM; a client reset closes the upstream', async () => {
    const link = await relay(gw.port);
    cleanups.push(() => link.close());
    const agent = await startAgent('dc1', link.port);
    const t = await tunnel('echo');
    let ended = false;
    const closed = new Promise<number | undefined>((resolve) => {
      t.stream.on('data', () => {});
      t.stream.once('end', () => {
        ended = true;
      });
      t.stream.once('error', () => {});
      t.stream.once('close', () => resolve(t.stream.rstCode));
    });
    t.stream.write('x');
    await waitFor(() => agent.streams === 1, 2_000, 'agent stream');
    link.cut();
    // A reset only: an END_STREAM first would read as the target closing the connection.
    expect(await closed).toBe(h2.NGHTTP2_INTERNAL_ERROR);
    expect(ended).toBe(false);

    await agent.waitConnected(5_000);
    await waitFor(() => gw.agents.hub.serves('echo'), 5_000, 'agent back');
    const u = await tunnel('echo');
    expect(u.status).toBe(200);
    u.stream.write('y');
    await waitFor(() => agent.streams === 1, 2_000, 'agent stream again');
    u.stream.close(h2.NGHTTP2_CANCEL);
    await waitFor(() => agent.streams === 0, 2_000, 'upstream closed after the client reset');
  });
});
