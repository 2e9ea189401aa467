// AgentTunnel: the session-aware wrapper tunnel.ts will run for agent-served targets (fake
// session manager and store; real sockets).
import { randomBytes } from 'node:crypto';
import { type ClientHttp2Session, connect, constants as h2 } from 'node:http2';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { AgentTunnel } from '../../src/gateway/agent-connection.js';
import { silentLogger } from '../../src/gateway/logger.js';
import { createMetrics } from '../../src/gateway/metrics.js';
import type { TunnelDeps } from '../../src/gateway/tunnel.js';
import { LiveSession } from '../../src/session/manager.js';
import { waitFor } from '../fixtures/wait-for.js';
import {
  ADMIN,
  agentConfig,
  api,
  echoServer,
  MemoryMeta,
  type MiniGateway,
  startMiniGateway,
  tempDir,
} from './harness.js';

describe('AgentTunnel', () => {
  let tmp: ReturnType<typeof tempDir>;
  let gw: MiniGateway;
  let echo: Awaited<ReturnType<typeof echoServer>>;
  let client: ClientHttp2Session;
  let agent: Agent;
  const audit: Array<{ type: string; data: Record<string, unknown> }> = [];
  const detached: string[] = [];
  const tunnels: AgentTunnel[] = [];
  let live: LiveSession;

  beforeEach(async () => {
    tmp = tempDir();
    audit.length = 0;
    detached.length = 0;
    tunnels.length = 0;
    live = new LiveSession(
      {
        id: 'ses_test',
        rule: 'r1',
        principal: { issuer: 'gitlab', subject: 's' },
        targets: ['echo'],
      } as never,
      10,
    );
    const deps = {
      manager: { detach: (_l: unknown, c: { id: string }) => detached.push(c.id) },
      store: {
        appendAudit: async (e: { type: string; data: Record<string, unknown> }) => {
          audit.push(e);
          return e;
        },
      },
      log: silentLogger(),
      metrics: createMetrics(),
      targets: new Map(),
      idleTimeoutMs: 60_000,
      connectTimeoutMs: 5_000,
    } as unknown as TunnelDeps;
    gw = await startMiniGateway({
      dir: join(tmp.dir, 'gw'),
      meta: new MemoryMeta(),
      onConnect: (hub, stream, target) => {
        const t = new AgentTunnel(deps, hub, live, target, stream);
        tunnels.push(t);
        void t.run();
      },
    });
    echo = await echoServer();
    const enroll = await api(gw, 'POST', '/v1/agents/enroll', ADMIN, { name: 'dc1', targets: ['echo'] });
    agent = new Agent(
      agentConfig({
        gateway: gw.url,
        dataDir: join(tmp.dir, 'a'),
        name: 'dc1',
        targets: [{ name: 'echo', protocol: 'tcp', address: echo.address }],
      }),
      { ca: gw.caPem, env: { CIPORT_TEST_ENROLLMENT_TOKEN: enroll.body.token } },
    );
    await agent.start();
    await waitFor(() => gw.hub.serves('echo'), 5_000, 'agent');
    client = connect(gw.url, { ca: gw.caPem });
    client.on('error', () => {});
  });
  afterEach(async () => {
    client.destroy();
    await agent.close();
    await gw.close();
    await echo.close();
    tmp.cleanup();
  });

  it('audits opened/closed with the agent as exit and bytes; cut() resets with CANCEL', async () => {
    const s = client.request({ ':method': 'CONNECT', ':authority': 'echo:443' });
    const payload = randomBytes(100_000);
    const back = await new Promise<Buffer>((resolve) => {
      const chunks: Buffer[] = [];
      s.on('data', (c: Buffer) => chunks.push(c));
      s.once('end', () => resolve(Buffer.concat(chunks)));
      s.end(payload);
    });
    expect(back.equals(payload)).toBe(true);
    await tunnels[0]?.done;
    expect(audit.map((e) => e.type)).toEqual(['connection.opened', 'connection.closed']);
    expect(audit[1]?.data).toMatchObject({
      exit: 'dc1',
      bytes_to_target: 100_000,
      bytes_from_target: 100_000,
      session: 'ses_test',
    });
    expect(detached).toEqual([tunnels[0]?.id]);

    const t2 = client.request({ ':method': 'CONNECT', ':authority': 'echo:443' });
    const code = new Promise<number | undefined>((resolve) => {
      t2.on('data', () => {});
      t2.once('error', () => {});
      t2.once('close', () => resolve(t2.rstCode));
    });
    t2.write('x');
    await waitFor(() => agent.streams === 1, 2_000, 'open');
    tunnels[1]?.cut('revoked');
    expect(await code).toBe(h2.NGHTTP2_CANCEL);
    await tunnels[1]?.done;
    await waitFor(() => agent.streams === 0, 2_000, 'agent closed the upstream');
    expect(audit[3]).toMatchObject({ type: 'connection.closed', data: { error: 'session ended (revoked)' } });
  });
});
