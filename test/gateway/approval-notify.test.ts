// Approval notifications (docs/approvals.md, "Notifications") against receivers that misbehave:
// down, hanging, failing then recovering. Session creation answers at once whatever they do;
// failures are retried, then logged and counted; a URL given as a secret (a Slack URL holds a
// token) and the signing secret never reach the logs.

import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningGateway } from '../../src/gateway/server.js';
import { approvalsGatewayDoc, HOOK_SECRET, operatorEnv, verifySignature } from '../fixtures/approvals.js';
import { freePort } from '../fixtures/free-port.js';
import { gatewayConfig, startTestGateway } from '../fixtures/gateway.js';
import { FixtureIssuer } from '../fixtures/oidc-issuer.js';
import { waitFor } from '../fixtures/wait-for.js';
import { api, connectClient } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'ciport-approval-notify-'));
let issuer: FixtureIssuer;
let jobs = 0;

beforeAll(async () => {
  issuer = await FixtureIssuer.start({ kind: 'gitlab' });
});
afterAll(async () => {
  await issuer?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** A receiver: `answer` decides per request (status code, or 'hang'). Counts requests. */
async function receiver(answer: (n: number) => number | 'hang') {
  let n = 0;
  const verified: boolean[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      verified.push(verifySignature(req.headers, Buffer.concat(chunks).toString('utf8'), HOOK_SECRET));
      const a = answer(++n);
      if (a === 'hang') return;
      res.writeHead(a).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    port: (server.address() as AddressInfo).port,
    requests: () => n,
    verified,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

async function gatewayWith(hookUrl: string, name: string, logLines: string[]): Promise<RunningGateway> {
  const doc = approvalsGatewayDoc({ stateDir: join(dir, name), issuerUrl: issuer.url });
  // The URL as a secret, with a token in its path (a Slack incoming webhook's shape).
  return startTestGateway(
    gatewayConfig(
      {
        ...doc,
        approvals: {
          webhooks: [
            { name: 'chat', url: { env: 'HOOK_URL' }, secret: { env: 'HOOK_SECRET' }, timeout: '1s' },
          ],
        },
      },
      { ...operatorEnv(), HOOK_URL: hookUrl },
    ),
    { logLines },
  );
}

async function createPending(gw: RunningGateway): Promise<{ ms: number; id: string }> {
  const c = await connectClient(gw.url, gw.caPem);
  try {
    const started = Date.now();
    const token = await issuer.mint(
      { job_id: String(5_000_000 + ++jobs) },
      { preset: 'gitlab-main', audience: 'ciport' },
    );
    const res = await api(c, 'POST', '/v1/sessions', { bearer: token, body: { targets: ['pg'] } });
    expect(res.status).toBe(202);
    return { ms: Date.now() - started, id: res.body.id };
  } finally {
    c.destroy();
  }
}

const metric = async (gw: RunningGateway, outcome: string) => {
  const text = await gw.metrics.registry.metrics();
  return Number(
    new RegExp(`ciport_approval_notifications_total\\{webhook="chat",outcome="${outcome}"\\} (\\d+)`).exec(
      text,
    )?.[1] ?? 0,
  );
};

describe('approval notifications', () => {
  it('a receiver that is down or hangs never delays session creation; failures are retried, logged, counted', async () => {
    const hanging = await receiver(() => 'hang');
    const down = await freePort();
    for (const [name, url] of [
      ['hang', `http://127.0.0.1:${hanging.port}/services/T000/B000/SLACKTOKENXYZ`],
      ['down', `http://127.0.0.1:${down}/services/T000/B000/SLACKTOKENXYZ`],
    ] as const) {
      const logLines: string[] = [];
      const gw = await gatewayWith(url, name, logLines);
      try {
        const created = await createPending(gw);
        expect(created.ms).toBeLessThan(1_500);
        // Three attempts (1 s timeout each, 1 s and 4 s apart), then one failure.
        await waitFor(async () => (await metric(gw, 'failed')) === 1, 20_000, `${name}: a counted failure`);
        expect(await metric(gw, 'sent')).toBe(0);
        const failures = logLines.filter((l) => l.includes('approval notification failed'));
        expect(failures).toHaveLength(1);
        expect(JSON.parse(failures[0] as string)).toMatchObject({
          webhook: 'chat',
          session: created.id,
          attempts: 3,
        });
        const all = logLines.join('\n');
        expect(all).not.toContain('SLACKTOKENXYZ');
        expect(all).not.toContain(HOOK_SECRET);
      } finally {
        await gw.close();
      }
    }
    expect(hanging.requests()).toBe(3);
    await hanging.close();
  }, 60_000);

  it('a receiver failing twice then answering gets the same signed message, counted as sent', async () => {
    const flaky = await receiver((n) => (n <= 2 ? 503 : 200));
    const gw = await gatewayWith(`http://127.0.0.1:${flaky.port}/hook`, 'flaky', []);
    try {
      await createPending(gw);
      await waitFor(async () => (await metric(gw, 'sent')) === 1, 15_000, 'sent after retries');
      expect(flaky.requests()).toBe(3);
      expect(flaky.verified).toEqual([true, true, true]);
      expect(await metric(gw, 'failed')).toBe(0);
    } finally {
      await gw.close();
      await flaky.close();
    }
  }, 30_000);

  it('refuses at start a webhook URL that is plain http off loopback, without printing a secret URL', async () => {
    const doc = approvalsGatewayDoc({ stateDir: join(dir, 'bad'), issuerUrl: issuer.url });
    await expect(
      startTestGateway(
        gatewayConfig(
          {
            ...doc,
            approvals: {
              webhooks: [{ name: 'chat', url: { env: 'HOOK_URL' }, secret: { env: 'HOOK_SECRET' } }],
            },
          },
          { ...operatorEnv(), HOOK_URL: 'http://hooks.example.com/services/SLACKTOKENXYZ' },
        ),
      ),
    ).rejects.toSatisfy(
      (err: Error & { code?: string }) =>
        err.code === 'CIPORT_E_CONFIG_INVALID' &&
        err.message.includes('env:HOOK_URL') &&
        !err.message.includes('SLACKTOKENXYZ'),
    );
    expect(() =>
      gatewayConfig(
        {
          ...doc,
          approvals: {
            webhooks: [{ name: 'chat', url: 'http://hooks.example.com/x', secret: { env: 'HOOK_SECRET' } }],
          },
        },
        operatorEnv(),
      ),
    ).toThrow(/approvals\.webhooks\[0\]\.url: plain http is only allowed on a loopback address/);
  });
});
