// Attack: a compromised agent re-advertises its bound ssh target with a wider principal (`root`)
// and another host key. The gateway signs certificates with the principals the agent advertises
// and hands the host key to jobs as the one to trust: taking the new facts on reconnect would let
// the agent widen every later certificate and impersonate the host. The first advertisement pins
// them (like the protocol): a change is refused for that target, logged and audited
// (`ssh_changed`), and the old facts stay in force until an admin rebinds the target.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { generateEd25519 } from '../../src/credentials/ssh-keys.js';
import type { RunningGateway } from '../../src/gateway/server.js';
import { ADMIN, agentConfig, api, startAgentGateway, tempDir } from '../agent/harness.js';
import { waitFor } from '../fixtures/wait-for.js';

const KEY = generateEd25519('web1-host').publicLine;
const OTHER_KEY = generateEd25519('attacker-host').publicLine;
const tmp = tempDir('ciport-agent-ssh-pin-');
let gw: RunningGateway;
let agent: Agent | undefined;

const ssh = (principals: string[], hostKey: string) => ({
  name: 'web1',
  protocol: 'ssh',
  address: '127.0.0.1:9',
  principals,
  host_keys: [hostKey],
  host_key_alias: 'web1.internal',
});

async function startAgent(target: ReturnType<typeof ssh>, token = 'used'): Promise<Agent> {
  const config = { gateway: gw.url, dataDir: join(tmp.dir, 'agent'), name: 'dc1', targets: [target] };
  const a = new Agent(agentConfig(config), { ca: gw.caPem, env: { CIPORT_TEST_ENROLLMENT_TOKEN: token } });
  await a.start();
  await a.waitConnected(5_000);
  await waitFor(() => gw.agents.hub.list().some((c) => c.agent === a.agentId), 5_000, 'hub saw the agent');
  return a;
}

const refusals = async () =>
  (await gw.store.auditEvents({ limit: 1_000 })).filter((e) => e.type === 'agent.target_refused');

beforeAll(async () => {
  gw = await startAgentGateway({ dataDir: join(tmp.dir, 'gw') });
  const enrolled = await api(gw, 'POST', '/v1/agents/enroll', ADMIN, { name: 'dc1', targets: ['web1'] });
  expect(enrolled.status).toBe(201);
  agent = await startAgent(ssh(['deploy', 'git'], KEY), enrolled.body.token);
}, 30_000);

afterAll(async () => {
  await agent?.close();
  await gw?.close();
  tmp.cleanup();
});

describe("an agent's ssh facts are pinned at the first advertisement", () => {
  it('a reconnect with a wider principal and another host key is refused for the target', async () => {
    expect(gw.agents.hub.serves('web1')).toBe(true);
    expect(gw.agents.hub.targetInfo('web1')?.ssh?.principals).toEqual(['deploy', 'git']);
    await agent?.close();
    agent = await startAgent(ssh(['deploy', 'git', 'root'], OTHER_KEY));

    expect(gw.agents.hub.list().find((c) => c.agent === agent?.agentId)).toMatchObject({
      targets: [],
      refused: ['web1'],
    });
    expect(gw.agents.hub.serves('web1')).toBe(false);
    // What certificates and known_hosts are built from is still the pinned advertisement.
    expect(gw.agents.hub.targetInfo('web1')?.ssh).toMatchObject({
      principals: ['deploy', 'git'],
      host_keys: [KEY],
    });
    await waitFor(async () => (await refusals()).length > 0, 5_000, 'the refusal event');
    expect((await refusals())[0]?.data).toMatchObject({
      agent: 'dc1',
      target: 'web1',
      reason: 'ssh_changed',
      changed: ['principals', 'host_keys'],
      pinned: expect.stringMatching(/^sha256:[0-9a-f]{16}$/),
      advertised: expect.stringMatching(/^sha256:[0-9a-f]{16}$/),
    });
  });

  it('the same facts re-ordered are the same facts', async () => {
    const before = (await refusals()).length;
    await agent?.close();
    agent = await startAgent(ssh(['git', 'deploy'], KEY));
    expect(gw.agents.hub.serves('web1')).toBe(true);
    expect((await refusals()).length).toBe(before);
  });

  it('an admin removing and adding the target again accepts the new facts', async () => {
    await agent?.close();
    agent = await startAgent(ssh(['deploy', 'root'], OTHER_KEY));
    expect(gw.agents.hub.serves('web1')).toBe(false);
    const targets = (body: unknown) => api(gw, 'POST', '/v1/agents/dc1/targets', ADMIN, body);
    expect((await targets({ remove: ['web1'] })).status).toBe(200);
    expect((await targets({ add: ['web1'] })).status).toBe(200);
    await waitFor(() => gw.agents.hub.serves('web1'), 5_000, 'web1 served again');
    expect(gw.agents.hub.targetInfo('web1')?.ssh).toMatchObject({
      principals: ['deploy', 'root'],
      host_keys: [OTHER_KEY],
    });
  });
});
