// Agents lost without a goodbye: a host that dies (connection reset) and a partition (bytes
// stop, nothing closes — only keepalive pings notice).
import { createHash, randomBytes } from 'node:crypto';
import type { ClientHttp2Stream } from 'node:http2';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import type { RunningGateway } from '../../src/gateway/server.js';
import { waitFor } from '../fixtures/wait-for.js';
import { ADMIN, agentConfig, api, echoServer, relay, startAgentGateway, tempDir } from './harness.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function roundTrip(stream: ClientHttp2Stream, data: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.once('end', () => resolve(Buffer.concat(chunks)));
    stream.once('error', reject);
    stream.end(data);
  });
}

describe('agent resilience', () => {
  let tmp: ReturnType<typeof tempDir>;
  let gw: RunningGateway;
  let echo: Awaited<ReturnType<typeof echoServer>>;
  const cleanups: Array<() => Promise<void>> = [];

  beforeEach(async () => {
    tmp = tempDir();
    gw = await startAgentGateway({ dataDir: join(tmp.dir, 'gw') });
    echo = await echoServer();
  });
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
    await gw.close();
    await echo.close();
    tmp.cleanup();
  });

  async function agentVia(name: string, port: number): Promise<Agent> {
    const enroll = await api(gw, 'POST', '/v1/agents/enroll', ADMIN, { name, targets: ['echo'] });
    const agent = new Agent(
      agentConfig({
        gateway: `https://127.0.0.1:${port}`,
        dataDir: join(tmp.dir, name),
        name,
        targets: [{ name: 'echo', protocol: 'tcp', address: echo.address }],
      }),
      { ca: gw.caPem, env: { CIPORT_TEST_ENROLLMENT_TOKEN: enroll.body.token } },
    );
    cleanups.push(() => agent.close());
    await agent.start();
    await agent.waitConnected(5_000);
    await waitFor(
      () => gw.agents.hub.list().some((c) => c.agent === agent.agentId),
      5_000,
      'hub saw the agent',
    );
    return agent;
  }

  it('two agents, one dies mid-run: its in-flight streams fail, new connections keep succeeding', async () => {
    const link = await relay(gw.port);
    cleanups.push(() => link.close());
    const a = await agentVia('dc1', link.port);
    const b = await agentVia('dc2', gw.port);
    // a long-running connection on each agent
    const streams = await Promise.all([1, 2, 3, 4].map(() => gw.agents.hub.open('echo')));
    await waitFor(() => a.streams === 2 && b.streams === 2, 2_000, 'spread');
    const outcomes = streams.map(
      (s) =>
        new Promise<string>((resolve) => {
          s.on('data', () => {});
          s.once('error', () => {});
          s.once('close', () => resolve(s.rstCode === 0 ? 'closed' : `rst ${s.rstCode}`));
        }),
    );
    const gone = new Promise<string>((r) => gw.agents.hub.once('agent.disconnected', (x) => r(x.name)));
    link.cut(); // dc1's host is gone: connection reset
    expect(await gone).toBe('dc1');
    // new connections keep working while dc1 is away (it retries through the dead link)
    for (let i = 0; i < 20; i++) {
      const p = randomBytes(2048);
      expect(sha(await roundTrip(await gw.agents.hub.open('echo'), p))).toBe(sha(p));
    }
    // dc2's long-running streams are untouched
    const alive = streams.filter((s) => !s.closed);
    expect(alive.length).toBe(2);
    for (const s of alive) s.close();
    const settled = await Promise.all(outcomes);
    expect(settled.length).toBe(4);
  });

  it('the same agent connected twice: new streams go to its newest connection', async () => {
    const first = await agentVia('dc1', gw.port);
    const dup = new Agent(first.config, { ca: gw.caPem, env: {} });
    cleanups.push(() => dup.close());
    await dup.start();
    await waitFor(() => gw.agents.hub.list().length === 2, 5_000, 'second connection');
    const streams = await Promise.all([1, 2, 3].map(() => gw.agents.hub.open('echo')));
    await waitFor(() => dup.streams === 3, 2_000, 'all on the newest');
    expect(first.streams).toBe(0);
    for (const s of streams) s.close();
  });

  it('an agent started before the gateway registers as soon as the gateway is up', async () => {
    const enrolled = await api(gw, 'POST', '/v1/agents/enroll', ADMIN, { name: 'early', targets: ['echo'] });
    const token = enrolled.body.token as string;
    const port = gw.port;
    await gw.close();
    const agent = new Agent(
      agentConfig({
        gateway: `https://127.0.0.1:${port}`,
        dataDir: join(tmp.dir, 'early'),
        name: 'early',
        targets: [{ name: 'echo', protocol: 'tcp', address: echo.address }],
      }),
      { ca: gw.caPem, env: { CIPORT_TEST_ENROLLMENT_TOKEN: token } },
    );
    cleanups.push(() => agent.close());
    const started = agent.start();
    await new Promise((r) => setTimeout(r, 1_000));
    gw = await startAgentGateway({ dataDir: join(tmp.dir, 'gw'), port });
    await started;
    await waitFor(() => gw.agents.hub.serves('echo'), 5_000, 'registered and connected');
  });

  it('a partitioned agent (no FIN, no RST) is noticed by keepalive within 15 s', async () => {
    const link = await relay(gw.port);
    cleanups.push(() => link.close());
    await agentVia('dc1', link.port);
    const started = Date.now();
    const gone = new Promise<{ reason: string }>((r) =>
      gw.agents.hub.once('agent.disconnected', (x) => r(x)),
    );
    link.freeze();
    const { reason } = await gone;
    const took = Date.now() - started;
    // Usually the unanswered ping ends it; on a busy machine the frozen socket may be torn down
    // first. Either way the agent must be gone from routing within the keepalive bound.
    expect(['keepalive timeout', 'connection lost']).toContain(reason);
    expect(took).toBeLessThanOrEqual(15_500);
    await expect(gw.agents.hub.open('echo')).rejects.toMatchObject({ code: 'CIPORT_E_NO_AGENT' });
  }, 25_000);
});
