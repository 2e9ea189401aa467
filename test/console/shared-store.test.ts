// Two gateways behind one public URL sharing a PostgreSQL store (docs/console.md, "Cookies"): a
// sign-in started on one completes on the other (the login cookie is sealed under a key both
// read from the store), the session cookie works on both, and signing out on one is final on
// the other.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../fixtures/free-port.js';
import { createTestDatabase, type TestDatabase } from '../fixtures/pg-database.js';
import { type SsoIdp, signInWithoutBrowser, startSsoIdp } from '../fixtures/sso-idp.js';
import {
  CONSOLE_CLIENT,
  CONSOLE_SECRET,
  ConsoleClient,
  type ConsoleWorld,
  startConsoleWorld,
} from './harness.js';

const dir = mkdtempSync(join(tmpdir(), 'ciport-console-shared-'));
let db: TestDatabase;
let idp: SsoIdp;
let a: ConsoleWorld;
let b: ConsoleWorld;

beforeAll(async () => {
  db = await createTestDatabase('ciport_console');
  const portA = await freePort();
  const publicUrl = `https://127.0.0.1:${portA}`;
  idp = await startSsoIdp({
    clients: [
      {
        client_id: CONSOLE_CLIENT,
        client_secret: CONSOLE_SECRET,
        redirect_uris: [`${publicUrl}/ui/callback`],
      },
    ],
  });
  const store = { store: { postgres: { url: db.url } } };
  a = await startConsoleWorld({ dir: join(dir, 'a'), idp, port: portA, publicUrl, extra: store });
  b = await startConsoleWorld({ dir: join(dir, 'b'), idp, issuer: a.issuer, publicUrl, extra: store });
}, 120_000);

afterAll(async () => {
  await b?.close();
  await a?.close();
  await idp?.close();
  await db?.drop();
  rmSync(dir, { recursive: true, force: true });
});

describe('two gateways, one store', () => {
  it('a sign-in started on one completes on the other; sign-out on either is final on both', async () => {
    const onA = new ConsoleClient(a);
    const onB = new ConsoleClient(b);
    // one browser: cookies belong to the host, whatever the port
    const share = () => {
      for (const [k, v] of onA.cookies) onB.cookies.set(k, v);
    };
    const authorization = await onA.startSignIn('/ui/agents');
    const callback = new URL(await signInWithoutBrowser(idp, authorization, 'ana'));
    share();
    // the load balancer sends the callback to gateway B
    const done = await onB.get(`${callback.pathname}${callback.search}`);
    expect(done.status, done.body).toBe(303);
    expect(done.location).toBe('/ui/agents');
    for (const [k, v] of onB.cookies) onA.cookies.set(k, v);
    expect((await onA.get('/ui/sessions')).status).toBe(200);
    expect((await onB.get('/ui/sessions')).status).toBe(200);
    const out = await onB.post('/ui/logout');
    expect(out.status).toBe(303);
    // A still holds the cookie; the store says it ended
    expect((await onA.get('/ui/sessions')).status).toBe(303);
  });
});
