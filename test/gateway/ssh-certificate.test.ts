// POST /v1/sessions/{id}/ssh-certificate against the real gateway: what it signs (checked with
// ssh-keygen -L) and everything it refuses — a wrong secret, a target the session lacks, a target
// that is not ssh, a body that is not a public key, a pending session, a rule whose principals
// the target does not have, a session past its certificate budget, an ended session.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { generateEd25519 } from '../../src/credentials/ssh-keys.js';
import type { RunningGateway } from '../../src/gateway/server.js';
import { MAX_CERTIFICATES_PER_SESSION } from '../../src/gateway/ssh-api.js';
import { api } from '../agent/harness.js';
import { gatewayConfig, startTestGateway } from '../fixtures/gateway.js';
import { e2eGatewayDoc } from '../fixtures/gateway-doc.js';
import { FixtureIssuer } from '../fixtures/oidc-issuer.js';

const dir = mkdtempSync(join(tmpdir(), 'ciport-ssh-api-'));
const HOST_KEY = generateEd25519('host').publicLine;
let gateway: RunningGateway;
let config: ReturnType<typeof gatewayConfig>;
let issuer: FixtureIssuer;
let token: string;

const ssh = (name: string, principals: string[]) => ({
  name,
  protocol: 'ssh',
  address: 'web.internal:22',
  principals,
  host_keys: [HOST_KEY],
});

/** The gateway's document; `web2Principals`: what rule main narrows web2 to. */
const document = (web2Principals: string[]) => ({
  listen: '127.0.0.1:0',
  ...e2eGatewayDoc(join(dir, 'gw'), issuer.url),
  targets: [
    ssh('web1', ['deploy', 'git']),
    ssh('web2', ['git']),
    ssh('gated', ['deploy']),
    { name: 'raw', protocol: 'tcp', address: '127.0.0.1:9' },
  ],
  rules: [
    {
      name: 'main',
      issuer: 'gitlab',
      when: { project_id: '61577203' },
      allow: ['web1', 'web2', 'raw'],
      ssh: { web1: { permit: ['pty', 'agent-forwarding'] }, web2: { principals: web2Principals } },
    },
    {
      name: 'gated',
      issuer: 'gitlab',
      when: { project_id: '61577203' },
      allow: ['gated'],
      approval: { groups: ['ops'], count: 1, timeout: '1m' },
    },
  ],
});

beforeAll(async () => {
  issuer = await FixtureIssuer.start({ kind: 'gitlab' });
  config = gatewayConfig(document(['git']));
  gateway = await startTestGateway(config);
  token = await issuer.mint({}, { preset: 'gitlab-main', audience: 'ciport' });
}, 60_000);

afterAll(async () => {
  await gateway?.close();
  await issuer?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function open(targets: string[]): Promise<{ id: string; secret: string; expires_at: string }> {
  const res = await api(gateway, 'POST', '/v1/sessions', token, { targets });
  expect([201, 202]).toContain(res.status);
  return res.body;
}

const certify = (s: { id: string; secret: string }, body: unknown) =>
  api(gateway, 'POST', `/v1/sessions/${s.id}/ssh-certificate`, s.secret, body);

describe('POST /v1/sessions/{id}/ssh-certificate', () => {
  it('signs the public key for the session: principals, extensions the rule permits, validity', async () => {
    const s = await open(['web1', 'raw']);
    const job = generateEd25519('job');
    const res = await certify(s, { target: 'web1', public_key: job.publicLine });
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({
      principals: ['deploy', 'git'],
      certificate_principals: ['ciport:web1:deploy', 'ciport:web1:git'],
      valid_before: new Date(s.expires_at).toISOString(),
      host_key_alias: 'web.internal',
      host_keys: [HOST_KEY],
    });
    expect(res.body.host_ca).toBeUndefined();
    writeFileSync(join(dir, 'cert.pub'), `${res.body.certificate}\n`);
    const shown = execFileSync('ssh-keygen', ['-L', '-f', join(dir, 'cert.pub')], { encoding: 'utf8' });
    expect(shown).toMatch(/Extensions: \n\s+permit-agent-forwarding\n\s+permit-pty\n/);
    expect(shown).toMatch(/Critical Options: \(none\)/);
    // Target-scoped principals only: a bare login would match web2's (or any host's) files too.
    expect(shown).toMatch(/Principals: \n\s+ciport:web1:deploy\n\s+ciport:web1:git\n\s+Critical/);
    expect(shown).toContain(`Key ID: "${res.body.key_id}"`);
  });

  it.each([
    ['a wrong secret', 'wrong', { target: 'web1' }, 401, 'CIPORT_E_SESSION_UNAUTHORIZED'],
    ['a target the session lacks', undefined, { target: 'web2' }, 403, 'CIPORT_E_TARGET_NOT_GRANTED'],
    ['a target that is not ssh', undefined, { target: 'raw' }, 403, 'CIPORT_E_SSH_CERTIFICATE_REFUSED'],
    [
      'a public key that is none',
      undefined,
      { target: 'web1', public_key: 'ssh-ed25519 AAAAnope' },
      400,
      'CIPORT_E_USAGE',
    ],
    ['an unknown field', undefined, { target: 'web1', principals: ['root'] }, 400, 'CIPORT_E_USAGE'],
  ])('refuses %s', async (_what, secret, body, status, code) => {
    const s = await open(['web1', 'raw']);
    const res = await certify(
      { id: s.id, secret: secret ?? s.secret },
      { public_key: generateEd25519('job').publicLine, ...body },
    );
    expect(res.status).toBe(status);
    expect(res.body.error.code).toBe(code);
  });

  it("refuses, at load, a rule whose principals and the target's have none in common", () => {
    // The gateway's own target: the load says so (an agent's target is refused per request).
    expect(() => gatewayConfig(document(['deploy']))).toThrow(
      "rules[0].ssh.web2.principals: none of these is among web2's principals (git)",
    );
  });

  it('refuses a session that waits for approval, and one that ended', async () => {
    const pending = await open(['gated']);
    const waiting = await certify(pending, {
      target: 'gated',
      public_key: generateEd25519('job').publicLine,
    });
    expect(waiting.status).toBe(409);
    expect(waiting.body.error.code).toBe('CIPORT_E_APPROVAL_PENDING');
    const s = await open(['web1']);
    expect((await api(gateway, 'DELETE', `/v1/sessions/${s.id}`, s.secret)).status).toBe(200);
    const ended = await certify(s, { target: 'web1', public_key: generateEd25519('job').publicLine });
    expect(ended.status).toBe(410);
  });

  it(`gives one session at most ${MAX_CERTIFICATES_PER_SESSION} certificates, each audited`, async () => {
    const s = await open(['web1']);
    const key = generateEd25519('job').publicLine;
    for (let i = 0; i < MAX_CERTIFICATES_PER_SESSION; i++) {
      expect((await certify(s, { target: 'web1', public_key: key })).status).toBe(201);
    }
    const over = await certify(s, { target: 'web1', public_key: key });
    expect(over.status).toBe(403);
    expect(over.body.error.code).toBe('CIPORT_E_SSH_CERTIFICATE_REFUSED');
    const events = (await gateway.store.auditEvents({ limit: 10_000 })).filter(
      (e) => e.type === 'ssh.certificate_issued' && (e.data as { session?: string }).session === s.id,
    );
    expect(events).toHaveLength(MAX_CERTIFICATES_PER_SESSION);

    // The count is the store's (the session's audit events), not this process's memory: a
    // restarted gateway (or another one sharing the store) refuses the 17th all the same.
    await gateway.close();
    // A fresh module graph: nothing this process's gateway code held in memory survives.
    vi.resetModules();
    const fresh = await import('../fixtures/gateway.js');
    gateway = await fresh.startTestGateway(config);
    const afterRestart = await certify(s, { target: 'web1', public_key: key });
    expect(afterRestart.body.error?.code).toBe('CIPORT_E_SSH_CERTIFICATE_REFUSED');
    expect(afterRestart.status).toBe(403);
  });

  it('counts concurrent requests of one session against the same budget', async () => {
    const s = await open(['web1']);
    const key = generateEd25519('job').publicLine;
    const all = await Promise.all(
      Array.from({ length: MAX_CERTIFICATES_PER_SESSION + 4 }, () =>
        certify(s, { target: 'web1', public_key: key }),
      ),
    );
    expect(all.filter((r) => r.status === 201)).toHaveLength(MAX_CERTIFICATES_PER_SESSION);
    expect(all.filter((r) => r.status === 403)).toHaveLength(4);
  });
});
