// Agent credential expiry and rotation over real sockets (docs/agent.md, "Enrollment and the
// agent credential"): the gateway issues credentials living a few seconds, the
// agent rotates them by itself at half-life, keeps its live connection, reconnects with the new
// credential once the old one expired, keeps only the current credential on disk, survives a
// rotation attempt while the gateway is down, and never logs a secret.
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import type { ClientHttp2Stream } from 'node:http2';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Agent, type AgentOptions } from '../../src/agent/agent.js';
import { CREDENTIAL_FILE, type StoredCredential, writeCredential } from '../../src/agent/credential.js';
import type { CiportError } from '../../src/errors/index.js';
import type { RunningGateway, StartGatewayOptions } from '../../src/gateway/server.js';
import { createLogger, type Logger } from '../../src/log/logger.js';
import { waitFor } from '../fixtures/wait-for.js';
import { ADMIN, agentConfig, api, echoServer, sleep, startAgentGateway, tempDir } from './harness.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const secretOf = (credential: string) => credential.split('.')[1] as string;
const FILE_KEYS = new Set([
  'id',
  'name',
  'credential',
  'gateway',
  'registered_at',
  'expires_at',
  'rotated_at',
]);

function roundTrip(stream: ClientHttp2Stream, data: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.once('end', () => resolve(Buffer.concat(chunks)));
    stream.once('error', reject);
    stream.end(data);
  });
}

/** A logger whose lines (JSON text) the test can read. */
function capturingLogger(): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk, _enc, cb) {
      lines.push(String(chunk));
      cb();
    },
  });
  return { log: createLogger({ level: 'debug', destination: destination as never }), lines };
}

/**
 * Watch the credential file: every distinct credential it held, and a check of each content
 * seen (one credential only, known keys only, mode 0600).
 */
function watchCredentialFile(dir: string): { seen: string[]; problems: string[]; stop: () => void } {
  const file = join(dir, CREDENTIAL_FILE);
  const seen: string[] = [];
  const problems: string[] = [];
  const timer = setInterval(() => {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      return; // not written yet
    }
    const parsed = JSON.parse(text) as StoredCredential;
    const extra = Object.keys(parsed).filter((k) => !FILE_KEYS.has(k));
    if (extra.length > 0) problems.push(`unexpected keys ${extra.join(',')}`);
    if (text.split('cpa_').length !== 2) problems.push('not exactly one credential in the file');
    if ((statSync(file).mode & 0o777) !== 0o600) problems.push('mode is not 0600');
    if (!seen.includes(parsed.credential)) seen.push(parsed.credential);
  }, 10);
  return { seen, problems, stop: () => clearInterval(timer) };
}

describe('agent credential rotation', () => {
  let tmp: ReturnType<typeof tempDir>;
  let gw: RunningGateway;
  let gwLogs: ReturnType<typeof capturingLogger>;
  let echo: Awaited<ReturnType<typeof echoServer>>;
  const cleanups: Array<() => unknown> = [];

  /** The gateway, its credentials short-lived; started again on `port`, it knows the same agents. */
  async function gateway(
    credentials: StartGatewayOptions['agentCredentials'],
    options: { port?: number; now?: () => number } = {},
  ): Promise<RunningGateway> {
    return startAgentGateway(
      { dataDir: join(tmp.dir, 'gw'), ...(options.port ? { port: options.port } : {}) },
      { logger: gwLogs.log, agentCredentials: credentials, ...(options.now ? { now: options.now } : {}) },
    );
  }

  function newAgent(name: string, env: NodeJS.ProcessEnv, options: AgentOptions = {}): Agent {
    const agent = new Agent(
      agentConfig({
        gateway: gw.url,
        dataDir: join(tmp.dir, name),
        name,
        targets: [{ name: 'echo', protocol: 'tcp', address: echo.address }],
      }),
      { ca: gw.caPem, env, ...options },
    );
    cleanups.push(() => agent.close());
    return agent;
  }

  async function enroll(name: string): Promise<string> {
    const res = await api(gw, 'POST', '/v1/agents/enroll', ADMIN, { name, targets: ['echo'] });
    expect(res.status).toBe(201);
    return res.body.token as string;
  }

  async function echoWorks(): Promise<void> {
    const p = randomBytes(4096);
    expect(sha(await roundTrip(await gw.agents.hub.open('echo'), p))).toBe(sha(p));
  }

  beforeEach(async () => {
    tmp = tempDir();
    gwLogs = capturingLogger();
    echo = await echoServer();
  });

  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
    await gw?.close();
    await echo.close();
    tmp.cleanup();
  });

  it('API: register answers expires_at; rotate swaps the credential; wrong, previous or expired ones get 401', async () => {
    gw = await gateway({ credentialLifetimeMs: 3_000, rotationGraceMs: 60_000 });
    const before = Date.now();
    const reg = await api(gw, 'POST', '/v1/agents/register', await enroll('dc1'), {});
    expect(reg.status).toBe(201);
    expect(Object.keys(reg.body).sort()).toEqual(['credential', 'expires_at', 'id', 'name']);
    const exp = Date.parse(reg.body.expires_at);
    expect(exp).toBeGreaterThanOrEqual(before + 3_000);
    expect(exp).toBeLessThanOrEqual(Date.now() + 3_000);

    const rot = await api(gw, 'POST', '/v1/agents/rotate', reg.body.credential, {});
    expect(rot.status).toBe(200);
    expect(rot.body).toEqual({
      id: reg.body.id,
      name: 'dc1',
      credential: expect.stringMatching(new RegExp(`^cpa_${reg.body.id}\\.`)),
      expires_at: expect.any(String),
    });
    expect(rot.body.credential).not.toBe(reg.body.credential);

    // The previous secret still connects during the grace period, but cannot rotate.
    await expect(gw.agents.registry.authenticate(reg.body.credential)).resolves.toMatchObject({
      id: reg.body.id,
    });
    const again = await api(gw, 'POST', '/v1/agents/rotate', reg.body.credential, {});
    expect(again.status).toBe(401);
    expect(again.body.error.code).toBe('CIPORT_E_AGENT_UNAUTHORIZED');
    for (const bad of [undefined, 'cpa_nope.nope', `${rot.body.credential}x`]) {
      const res = await api(gw, 'POST', '/v1/agents/rotate', bad, {});
      expect(res.status).toBe(401);
      expect(res.body.error.code).toBe('CIPORT_E_AGENT_UNAUTHORIZED');
    }
    expect((await api(gw, 'GET', '/v1/agents/rotate', rot.body.credential)).status).toBe(405);

    await sleep(Date.parse(rot.body.expires_at) - Date.now() + 50);
    const expired = await api(gw, 'POST', '/v1/agents/rotate', rot.body.credential, {});
    expect(expired.status).toBe(401);
    expect(expired.body.error).toMatchObject({ code: 'CIPORT_E_AGENT_UNAUTHORIZED' });
    expect(expired.body.error.message).toMatch(/expired/);

    const logs = gwLogs.lines.join('');
    expect(logs).toContain('agent credential rotated');
    for (const c of [reg.body.credential, rot.body.credential]) expect(logs).not.toContain(secretOf(c));
  });

  it('rotates by itself before expiry, keeps its connection, and reconnects with the new credential', async () => {
    gw = await gateway({ credentialLifetimeMs: 4_000, rotationGraceMs: 1_000 });
    const agentLogs = capturingLogger();
    const dir = join(tmp.dir, 'dc1');
    const file = watchCredentialFile(dir);
    cleanups.push(file.stop);
    const connections: string[] = [];
    gw.agents.hub.on('agent.connected', (c) => connections.push(c.connection));
    const rotations: Array<{ at: number; expires_at: string }> = [];

    const agent = newAgent(
      'dc1',
      { CIPORT_TEST_ENROLLMENT_TOKEN: await enroll('dc1') },
      { log: agentLogs.log, rotation: { retry: { baseMs: 100, maxMs: 500 } } },
    );
    agent.on('rotated', (r) => rotations.push({ at: Date.now(), expires_at: r.expires_at }));
    const started = Date.now();
    await agent.start();
    const first = await waitFor(() => file.seen.length === 1, 2_000, 'credential file').then(
      () => file.seen[0] as string,
    );
    await agent.waitConnected(5_000);
    await waitFor(() => gw.agents.hub.serves('echo'), 5_000, 'advertised');
    const firstExpiry = Date.parse(agent.credentialExpiresAt as string);

    // At half-life (~2 s) the agent rotates; the live connection is not touched.
    await waitFor(() => rotations.length >= 1, 4_000, 'first rotation');
    expect(rotations[0]?.at).toBeLessThan(firstExpiry);
    expect(rotations[0]?.at).toBeGreaterThanOrEqual(started + 1_500);
    await waitFor(() => file.seen.length >= 2, 1_000, 'file rewritten');
    expect(connections).toHaveLength(1);
    await echoWorks();

    // Past the first credential's expiry (and its grace): it is refused, the agent is still in.
    await sleep(Math.max(0, firstExpiry - Date.now()) + 100);
    await expect(gw.agents.registry.authenticate(first)).rejects.toMatchObject({
      code: 'CIPORT_E_AGENT_UNAUTHORIZED',
    });
    expect(connections).toHaveLength(1);
    expect(agent.connected).toBe(true);
    await echoWorks();

    // Cut: it reconnects with the credential it rotated to.
    const failures: CiportError[] = [];
    agent.on('failed', (e) => failures.push(e));
    expect(gw.agents.hub.disconnect(agent.agentId as string, 'test')).toBe(1);
    await waitFor(() => connections.length === 2 && gw.agents.hub.serves('echo'), 5_000, 'reconnected');
    expect(failures.filter((f) => f.code === 'CIPORT_E_AGENT_UNAUTHORIZED')).toEqual([]);
    await echoWorks();

    // It keeps rotating every ~2 s; every credential is accepted until its expiry.
    await waitFor(() => rotations.length >= 3, 6_000, 'more rotations');
    // Each rotation waits for the half-life of the credential before it (~2 s), never back to back.
    for (let i = 1; i < rotations.length; i++) {
      expect((rotations[i]?.at ?? 0) - (rotations[i - 1]?.at ?? 0)).toBeGreaterThanOrEqual(1_000);
    }
    const current = JSON.parse(readFileSync(join(dir, CREDENTIAL_FILE), 'utf8')) as StoredCredential;
    expect(current.expires_at).toBe(agent.credentialExpiresAt);
    expect(current.rotated_at).toBeDefined();
    await expect(gw.agents.registry.authenticate(current.credential)).resolves.toMatchObject({
      id: agent.agentId,
    });
    await agent.close();
    file.stop();

    expect(file.problems).toEqual([]);
    expect(file.seen.length).toBeGreaterThanOrEqual(3);
    const logs = [...agentLogs.lines, ...gwLogs.lines].join('');
    expect(
      agentLogs.lines.filter((l) => l.includes('agent credential rotated')).length,
    ).toBeGreaterThanOrEqual(3);
    for (const c of file.seen) expect(logs).not.toContain(secretOf(c));
    expect(logs).not.toContain('cpa_');
    // Audit: one agent.credential_rotated per rotation.
    const events = await gw.store.auditEvents();
    expect(events.filter((e) => e.type === 'agent.credential_rotated').length).toBe(rotations.length);
  });

  it('a rotation attempt while the gateway is down is retried; the agent rotates once it is back', async () => {
    gw = await gateway({ credentialLifetimeMs: 6_000, rotationGraceMs: 1_000 });
    const agentLogs = capturingLogger();
    const agent = newAgent(
      'dc1',
      { CIPORT_TEST_ENROLLMENT_TOKEN: await enroll('dc1') },
      {
        log: agentLogs.log,
        backoff: { baseMs: 50, maxMs: 300 },
        rotation: { retry: { baseMs: 200, maxMs: 400 } },
      },
    );
    const rotated: number[] = [];
    const rotationFailures: CiportError[] = [];
    agent.on('rotated', () => rotated.push(Date.now()));
    agent.on('rotationFailed', (e) => rotationFailures.push(e));
    await agent.start();
    await agent.waitConnected(5_000);
    const expiry = Date.parse(agent.credentialExpiresAt as string);
    const port = gw.port;

    // Down from before the half-life (~3 s) until ~4 s.
    await gw.close();
    await sleep(Math.max(0, expiry - 2_000 - Date.now()));
    expect(rotated).toEqual([]);
    expect(rotationFailures.length).toBeGreaterThanOrEqual(1);
    expect(rotationFailures[0]?.code).toBe('CIPORT_E_GATEWAY_UNREACHABLE');
    gw = await gateway({ credentialLifetimeMs: 6_000, rotationGraceMs: 1_000 }, { port });

    await waitFor(() => rotated.length >= 1, 2_000, 'rotated after the gateway came back');
    expect(rotated[0]).toBeLessThan(expiry);
    await waitFor(() => gw.agents.hub.serves('echo'), 3_000, 'reconnected');
    // Past the old expiry: a reconnect still works.
    await sleep(Math.max(0, expiry - Date.now()) + 100);
    const before = gw.agents.hub.list().length;
    expect(before).toBe(1);
    gw.agents.hub.disconnect(agent.agentId as string, 'test');
    await waitFor(
      () => gw.agents.hub.list().length === 1 && gw.agents.hub.serves('echo'),
      5_000,
      'reconnected after expiry',
    );
    await echoWorks();
    const warned = agentLogs.lines.filter((l) => l.includes('credential rotation failed; retrying later'));
    expect(warned.length).toBeGreaterThanOrEqual(1);
    expect(agentLogs.lines.join('')).not.toContain('cpa_');
  });

  it('a credential file without expires_at (written before expiry existed) is rotated at start', async () => {
    gw = await gateway({});
    const reg = await api(gw, 'POST', '/v1/agents/register', await enroll('dc1'), {});
    const dir = join(tmp.dir, 'dc1');
    writeCredential(dir, {
      id: reg.body.id,
      name: 'dc1',
      credential: reg.body.credential,
      gateway: gw.url,
      registered_at: new Date().toISOString(),
    });
    const agent = newAgent('dc1', {});
    const rotated = new Promise<{ expires_at: string }>((resolve) => agent.once('rotated', resolve));
    await agent.start();
    const r = await rotated;
    expect(Date.parse(r.expires_at)).toBeGreaterThan(Date.now() + 29 * 86_400_000);
    const stored = JSON.parse(readFileSync(join(dir, CREDENTIAL_FILE), 'utf8')) as StoredCredential;
    expect(stored.credential).not.toBe(reg.body.credential);
    expect(stored.expires_at).toBe(r.expires_at);
    await agent.waitConnected(5_000);
    await waitFor(() => gw.agents.hub.serves('echo'), 5_000, 'advertised');
    // Rotated once; the fresh credential is not due again for ~15 days.
    await sleep(300);
    expect((await gw.store.auditEvents()).filter((e) => e.type === 'agent.credential_rotated')).toHaveLength(
      1,
    );
  });

  it("a host clock far ahead of the gateway's does not make the agent rotate in a loop", async () => {
    // The gateway's clock is 10 s behind: every fresh 4 s credential looks past its half-life.
    gw = await gateway({ credentialLifetimeMs: 4_000 }, { now: () => Date.now() - 10_000 });
    const agentLogs = capturingLogger();
    const agent = newAgent(
      'dc1',
      { CIPORT_TEST_ENROLLMENT_TOKEN: await enroll('dc1') },
      { log: agentLogs.log, rotation: { retry: { baseMs: 400, factor: 2, maxMs: 5_000 } } },
    );
    let rotations = 0;
    agent.on('rotated', () => rotations++);
    await agent.start();
    await agent.waitConnected(5_000);
    await sleep(2_000);
    expect(rotations).toBeGreaterThanOrEqual(1);
    expect(rotations).toBeLessThanOrEqual(5);
    expect(agentLogs.lines.join('')).toContain("is this host's clock off?");
    expect(agent.connected).toBe(true);
  });

  it('an expired credential: the connect is refused saying so, rotation fails, nothing crashes', async () => {
    gw = await gateway({ credentialLifetimeMs: 500 });
    const reg = await api(gw, 'POST', '/v1/agents/register', await enroll('dc1'), {});
    const dir = join(tmp.dir, 'dc1');
    writeCredential(dir, {
      id: reg.body.id,
      name: 'dc1',
      credential: reg.body.credential,
      gateway: gw.url,
      registered_at: new Date().toISOString(),
      expires_at: reg.body.expires_at,
    });
    await sleep(Date.parse(reg.body.expires_at) - Date.now() + 50);
    const agentLogs = capturingLogger();
    const agent = newAgent('dc1', {}, { log: agentLogs.log });
    const failed = new Promise<CiportError>((resolve) => agent.once('failed', resolve));
    const rotationFailed = new Promise<CiportError>((resolve) => agent.once('rotationFailed', resolve));
    await agent.start();
    const err = await failed;
    expect(err.code).toBe('CIPORT_E_AGENT_UNAUTHORIZED');
    expect(err.message).toMatch(/refused agent dc1's credential \(agent credential expired at /);
    expect((await rotationFailed).code).toBe('CIPORT_E_AGENT_UNAUTHORIZED');
    expect(agent.connected).toBe(false);
    expect(agentLogs.lines.join('')).toMatch(/credential rotation failed and the credential expired/);
    expect(agentLogs.lines.join('')).not.toContain(secretOf(reg.body.credential));
  });
});
