// Attack: a person signed in (console cookie or `ciport login` token, both `cpo_…`) keeps the
// roles their groups mapped to *when they signed in*, whatever the gateway's `sso:` says now.
// Operators who find a compromised group or account change `sso.roles` (or point `sso.issuer`
// elsewhere, or remove `sso:`) and restart, as docs/sso.md says; every sign-in made under the
// old mapping must then stop granting what the new one does not, on the API and in the console,
// instead of staying admin until its session_ttl (up to 24 h) runs out.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CONSOLE_CLIENT, ConsoleClient, type ConsoleWorld, startConsoleWorld } from '../console/harness.js';

const dir = mkdtempSync(join(tmpdir(), 'ciport-attack-sso-'));
const worlds: ConsoleWorld[] = [];

afterAll(async () => {
  for (const w of worlds) await w.close().catch(() => {});
  rmSync(dir, { recursive: true, force: true });
});

async function world(options: Parameters<typeof startConsoleWorld>[0]): Promise<ConsoleWorld> {
  const w = await startConsoleWorld(options);
  worlds.push(w);
  return w;
}

/** GET `path` on `w`'s API with `token` as the bearer: the status and error code. */
async function api(w: ConsoleWorld, path: string, token: string) {
  const r = await new ConsoleClient(w).get(path, { authorization: `Bearer ${token}` });
  return { status: r.status, code: /"code":"(CIPORT_E_[A-Z_]+)"/.exec(r.body)?.[1] };
}

describe('a sign-in under an sso: that changed since', { timeout: 240_000 }, () => {
  it('loses the roles the new sso.roles no longer give, and everything once sso: is gone', async () => {
    const first = await world({ dir });
    const ana = new ConsoleClient(first);
    expect((await ana.signIn('ana')).status).toBe(303);
    const token = ana.cookies.get('__Host-ciport_session') as string;
    expect(token).toMatch(/^cpo_/);
    expect((await api(first, '/v1/sessions', token)).status).toBe(200);
    await first.gateway.close();

    // The `platform` group is compromised: admin now comes from another group only.
    const remapped = await world({
      dir,
      extra: {
        sso: {
          issuer: first.idp.issuer,
          client_id: CONSOLE_CLIENT,
          client_secret: { env: 'CONSOLE_SECRET' },
          scopes: ['openid', 'email', 'profile', 'groups'],
          roles: { admin: ['platform-admins'], approver: ['dba'], auditor: ['compliance'] },
          session_ttl: '1h',
        },
      },
    });
    const refused = await api(remapped, '/v1/sessions', token);
    expect(refused.status).toBeGreaterThanOrEqual(401);
    expect(refused.status).toBeLessThanOrEqual(403);
    const cookie = new ConsoleClient(remapped);
    cookie.cookies.set('__Host-ciport_session', token);
    expect((await cookie.get('/ui/sessions')).status).not.toBe(200);
    await remapped.gateway.close();

    // sso: removed altogether: no sign-in made under it is an operator any more.
    const none = await world({ dir, noSso: true });
    expect(await api(none, '/v1/sessions', token)).toMatchObject({
      status: 401,
      code: 'CIPORT_E_ADMIN_UNAUTHORIZED',
    });
  });
});
