// Attack: a live session keeps asking for SSH certificates after a reload removed (or renamed)
// the rule that granted it. The rule's `ssh.<target>.principals` narrowed what its certificates
// carry; with the rule gone from the config, src/gateway/ssh-api.ts found no `ssh:` for it and
// signed every principal the target allows (`root` included) — a reload meant to take access
// away widened it. A session whose granting rule is no longer in force gets no certificate.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateEd25519 } from '../../src/credentials/ssh-keys.js';
import type { RunningGateway } from '../../src/gateway/server.js';
import { api } from '../agent/harness.js';
import { gatewayConfig, startTestGateway } from '../fixtures/gateway.js';
import { e2eGatewayDoc } from '../fixtures/gateway-doc.js';
import { FixtureIssuer } from '../fixtures/oidc-issuer.js';

const dir = mkdtempSync(join(tmpdir(), 'ciport-ssh-reload-'));
const HOST_KEY = generateEd25519('host').publicLine;
let gateway: RunningGateway;
let issuer: FixtureIssuer;

const doc = (ruleName: string) => ({
  listen: '127.0.0.1:0',
  ...e2eGatewayDoc(join(dir, 'gw'), issuer.url),
  targets: [
    {
      name: 'web1',
      protocol: 'ssh',
      address: 'web.internal:22',
      principals: ['deploy', 'root'],
      host_keys: [HOST_KEY],
    },
  ],
  rules: [
    {
      name: ruleName,
      issuer: 'gitlab',
      when: { project_id: '61577203' },
      allow: ['web1'],
      ssh: { web1: { principals: ['deploy'] } },
    },
  ],
});

beforeAll(async () => {
  issuer = await FixtureIssuer.start({ kind: 'gitlab' });
  gateway = await startTestGateway(gatewayConfig(doc('deploy-web')));
}, 60_000);

afterAll(async () => {
  await gateway?.close();
  await issuer?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('ssh certificate for a session whose rule a reload removed', () => {
  it('is refused, not signed with every principal of the target', async () => {
    const token = await issuer.mint({}, { preset: 'gitlab-main', audience: 'ciport' });
    const opened = await api(gateway, 'POST', '/v1/sessions', token, { targets: ['web1'] });
    expect(opened.status).toBe(201);
    const s = opened.body as { id: string; secret: string };
    const certify = () =>
      api(gateway, 'POST', `/v1/sessions/${s.id}/ssh-certificate`, s.secret, {
        target: 'web1',
        public_key: generateEd25519('job').publicLine,
      });
    const before = await certify();
    expect(before.status).toBe(201);
    expect(before.body.principals).toEqual(['deploy']);

    // The same grant under a new name: the session's rule `deploy-web` is gone.
    await gateway.reload(gatewayConfig(doc('deploy-web-v2')));
    const after = await certify();
    expect(after.body.principals).toBeUndefined();
    expect(after.status).toBe(403);
    expect(after.body.error.code).toBe('CIPORT_E_SSH_CERTIFICATE_REFUSED');
  });
});
