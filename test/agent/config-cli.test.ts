import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { loadAgentConfig, parseAgentConfig, resolveEnrollmentToken } from '../../src/agent/config.js';
import { agentsEnroll, agentsList, agentsRevoke, formatAgents } from '../../src/cli/commands/agent.js';
import type { RunningGateway } from '../../src/gateway/server.js';
import { waitFor } from '../fixtures/wait-for.js';
import { ADMIN, echoServer, startAgentGateway, tempDir } from './harness.js';

const sink = () =>
  new Writable({
    write(_c, _e, cb) {
      cb();
    },
  });

describe('agent configuration', () => {
  const yaml = `
gateway: https://ciport.example.com:8443
ca_file: /etc/ciport/ca.crt
name: dc1
data_dir: /var/lib/ciport-agent
enrollment_token: {env: CIPORT_ENROLLMENT_TOKEN}
targets:
  - name: cache
    protocol: redis
    address: redis.internal:6379
    credentials:
      password: {env: REDIS_PASSWORD}
`;
  it('parses, resolves target secrets now and the enrollment token only when needed', () => {
    const cfg = parseAgentConfig(yaml, 'agent.yaml', { env: { REDIS_PASSWORD: 'pw' } });
    expect(cfg.name).toBe('dc1');
    expect(cfg.connect_timeout).toBe(10_000);
    const target = cfg.targets[0];
    expect(target?.protocol === 'redis' && target.credentials?.password?.reveal()).toBe('pw');
    expect(() => resolveEnrollmentToken(cfg, {})).toThrow(/CIPORT_ENROLLMENT_TOKEN/);
    expect(resolveEnrollmentToken(cfg, { CIPORT_ENROLLMENT_TOKEN: 'cpe_x' })).toBe('cpe_x');
    expect(JSON.stringify(cfg)).not.toContain('pw');
  });
  it('reports bad configs with file, line and path', () => {
    expect(() => parseAgentConfig('gateway: nope\nname: dc1\ntargets: []\n', 'a.yaml', {})).toThrow(
      /a\.yaml:1: gateway/,
    );
    expect(() =>
      parseAgentConfig(
        'gateway: https://x:1\nname: dc1\ntargets: [{name: a, protocol: tcp, address: "h:1"}]\nextra: 1\n',
        'a.yaml',
      ),
    ).toThrow(/unknown key "extra"/);
    expect(() => loadAgentConfig('/nonexistent/agent.yaml')).toThrow(/cannot read/);
  });
});

describe('ciport agents enroll|list|revoke (functions) and audit events', () => {
  let tmp: ReturnType<typeof tempDir>;
  let gw: RunningGateway;
  let echo: Awaited<ReturnType<typeof echoServer>>;
  let agent: Agent | undefined;
  beforeEach(async () => {
    tmp = tempDir();
    gw = await startAgentGateway({ dataDir: join(tmp.dir, 'gw') });
    echo = await echoServer();
  });
  afterEach(async () => {
    await agent?.close();
    await gw.close();
    await echo.close();
    tmp.cleanup();
  });

  it('enrolls, lists with live connections, revokes; hub events become audit events', async () => {
    const caFile = join(tmp.dir, 'ca.pem');
    writeFileSync(caFile, gw.caPem as string);
    const io = { stdout: sink(), stderr: sink(), env: { CIPORT_ADMIN_TOKEN: ADMIN, CIPORT_CA_FILE: caFile } };
    // What the gateway audited of the agent's link (its hub's events).
    const linkEvents = async () =>
      (await gw.store.auditEvents({ limit: 1_000 })).filter(
        (e) => e.type === 'agent.connected' || e.type === 'agent.disconnected',
      );
    const { token } = await agentsEnroll(io, { gateway: gw.url, name: 'dc1', targets: 'echo' });
    expect(token).toMatch(/^cpe_/);
    const cfgFile = join(tmp.dir, 'agent.yaml');
    writeFileSync(
      cfgFile,
      `gateway: ${gw.url}\nca_file: ${caFile}\nname: dc1\ndata_dir: ${join(tmp.dir, 'a')}\n` +
        `enrollment_token: {env: TOK}\ntargets:\n  - {name: echo, protocol: tcp, address: "${echo.address}"}\n`,
    );
    agent = new Agent(loadAgentConfig(cfgFile, { env: {} }), { env: { TOK: token } });
    await agent.start();
    await waitFor(() => gw.agents.hub.serves('echo'), 5_000, 'served');

    const list = await agentsList(io, { gateway: gw.url });
    expect(list).toHaveLength(1);
    expect(list[0]?.connections[0]?.targets).toEqual(['echo']);
    expect(list[0]?.targets).toEqual(['echo']);
    // LAST SEEN is written by the registry a moment after the link is up: a date or still `-`.
    expect(formatAgents(list)).toMatch(
      /dc1\s+connected\(1\)\s+echo\s+echo\s+-\s+(-|\d{4}-\d\d-\d\dT\S+)\s+\d{4}-\d\d-\d\dT/,
    );

    const res = await agentsRevoke(io, 'dc1', { gateway: gw.url });
    expect(res.revoked.map((a) => a.name)).toEqual(['dc1']);
    const audit = await waitFor(
      async () => {
        const events = await linkEvents();
        return events.length === 2 ? events : undefined;
      },
      2_000,
      'audit events',
    );
    expect(audit.map((e) => e.type)).toEqual(['agent.connected', 'agent.disconnected']);
    expect(audit[1]?.data).toMatchObject({ agent: 'dc1', reason: 'revoked' });
    expect(formatAgents(await agentsList(io, { gateway: gw.url }))).toMatch(/dc1\s+revoked/);
    await expect(
      agentsEnroll(
        { ...io, env: { CIPORT_CA_FILE: caFile } },
        { gateway: gw.url, name: 'x', targets: 'echo' },
      ),
    ).rejects.toMatchObject({
      code: 'CIPORT_E_USAGE',
    });
  });
});
