// Found by the issue-12 new-user review: the job's environment must not be able to turn off the
// client's verification of the gateway. A job that sets NODE_TLS_REJECT_UNAUTHORIZED=0 (a common
// workaround for its own self-signed services) would otherwise send its ID token to whatever
// answers at CIPORT_GATEWAY, even with CIPORT_CA_FILE pinning the gateway's CA — which is what
// docs/client.md, "Verifying what a job downloads", step 3 says cannot happen.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { baseEnv, ensureBuilt, runCli } from '../fixtures/cli.js';
import { FakeGateway } from '../fixtures/fake-gateway.js';

const TOKEN = 'eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJqb2IifQ.c2lnbmF0dXJl';
let impostor: FakeGateway;
let pinned: FakeGateway;

beforeAll(async () => {
  await ensureBuilt();
  // Each fake generates its own CA: `pinned` holds the CA the job trusts, `impostor` answers.
  impostor = await FakeGateway.start({ targets: [], tokens: { [TOKEN]: { allow: [] } } });
  pinned = await FakeGateway.start({ targets: [], tokens: {} });
});

afterAll(async () => {
  await impostor.close();
  await pinned.close();
});

describe('gateway TLS verification and the job environment', () => {
  it('without the override, a server the pinned CA did not certify is refused (the baseline)', async () => {
    const r = await runCli(['exec', '--', 'true'], {
      env: baseEnv({ CIPORT_GATEWAY: impostor.url, CIPORT_CA_FILE: pinned.caFile, CIPORT_ID_TOKEN: TOKEN }),
    });
    expect(r.code).toBe(5);
    expect(r.stderr).toMatch(/CIPORT_E_TLS/);
    expect(impostor.requests).toHaveLength(0);
  });

  it('NODE_TLS_REJECT_UNAUTHORIZED=0 in the job does not send the ID token to that server', async () => {
    const r = await runCli(['exec', '--', 'true'], {
      env: baseEnv({
        CIPORT_GATEWAY: impostor.url,
        CIPORT_CA_FILE: pinned.caFile,
        CIPORT_ID_TOKEN: TOKEN,
        NODE_TLS_REJECT_UNAUTHORIZED: '0',
      }),
    });
    expect(impostor.requests.map((q) => `${q.method} ${q.path}`)).toEqual([]);
    expect(r.code).toBe(5);
    expect(r.stderr).toMatch(/CIPORT_E_TLS/);
  });
});
