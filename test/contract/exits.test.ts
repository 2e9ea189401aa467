// The exit contract (docs/architecture.md, "Exits"; issue 13): every protocol behaves the same
// whichever host is its exit. One table of cases runs for each protocol × {the gateway, an agent}
// with the job's real client side (`ciport open`, then psql / redis-cli / curl / node sockets from
// the exported env) and the machine's real servers. A protocol is a driver (drivers/); a case is
// written once here.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { AuditEvent } from '../../src/audit/events.js';
import { waitFor } from '../fixtures/wait-for.js';
import type { Driver, Held } from './driver.js';
import { DRIVERS } from './drivers/index.js';
import { startUpstreams, type Upstreams } from './upstreams.js';
import { AGENT, startWorld, targetName, type World } from './world.js';

let up: Upstreams;
let world: World;
const holding = new Set<Held>();

beforeAll(async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ciport-contract-'));
  up = await startUpstreams(dir);
  world = await startWorld(dir, DRIVERS, up);
}, 180_000);

afterEach(async () => {
  for (const h of holding) h.release();
  holding.clear();
  await world?.endJobs();
});

afterAll(async () => {
  await world?.stop();
  await up?.stop();
});

const COMBOS = DRIVERS.flatMap((driver) =>
  (['gateway', 'agent'] as const).map((host) => ({
    name: `${driver.protocol} via ${host === 'gateway' ? 'the gateway' : 'an agent'}`,
    driver,
    target: targetName(driver.protocol, host),
    /** What `exit` the gateway's audit events name. */
    exit: host === 'gateway' ? 'gateway' : AGENT,
  })),
);

const typed = (events: readonly AuditEvent[], type: string) => events.filter((e) => e.type === type);

const MIB = 1024 * 1024;

/** The session's connection.closed events, once the session has ended (its end is audited last). */
async function closedOf(session: string): Promise<AuditEvent[]> {
  await waitFor(
    async () => typed(await world.eventsOf(session), 'session.ended').length === 1,
    10_000,
    'session.ended',
  );
  return typed(await world.eventsOf(session), 'connection.closed');
}

async function hold(driver: Driver, job: Parameters<Driver['hold']>[0]): Promise<Held> {
  const h = await driver.hold(job, up);
  holding.add(h);
  return h;
}

describe.each(COMBOS)('exit contract: $name', ({ driver, target, exit }) => {
  it('connect: a real client reaches the target through the port', async () => {
    const job = await world.open(target);
    const attempt = await driver.attempt(job, up);
    expect(attempt.ok, attempt.detail).toBe(true);
    await job.end();
  });

  it('data both ways: 1 MiB each way arrives intact (SHA-256 at the client and the upstream)', async () => {
    const job = await world.open(target);
    await driver.dataBothWays(job, up);
    await job.end();
    // And the connections' accounting saw that traffic, whichever host was the exit.
    const closed = await closedOf(job.session);
    const sum = (field: string) =>
      closed.reduce((n, e) => n + Number((e.data as Record<string, unknown>)[field]), 0);
    expect(sum('bytes_to_target')).toBeGreaterThanOrEqual(MIB);
    expect(sum('bytes_from_target')).toBeGreaterThanOrEqual(MIB);
  });

  it("injected credential: the upstream got the target's credential, which the job never had", async () => {
    const job = await world.open(target);
    await driver.injectedCredential(job, up);
    const seenByJob = JSON.stringify({ env: job.env, ciportOpen: world.jobEnv });
    await job.end();
    await closedOf(job.session);
    const audited = JSON.stringify(await world.eventsOf(job.session));
    for (const secret of Object.values(up.secrets)) {
      expect(seenByJob).not.toContain(secret);
      expect(audited).not.toContain(secret);
    }
  });

  it(`audit: connection.opened and connection.closed (exit ${exit}) and the protocol's events`, async () => {
    const job = await world.open(target);
    const attempt = await driver.attempt(job, up);
    expect(attempt.ok, attempt.detail).toBe(true);
    await job.end();
    await closedOf(job.session);
    const events = await world.eventsOf(job.session);
    const opened = typed(events, 'connection.opened');
    const closed = typed(events, 'connection.closed');
    expect(opened.length).toBeGreaterThan(0);
    expect(closed.length).toBe(opened.length);
    for (const o of opened) {
      expect(o.data).toMatchObject({ exit, target, session: job.session });
      const id = (o.data as { connection: string }).connection;
      const c = closed.find((e) => (e.data as { connection: string }).connection === id);
      expect(c?.data).toMatchObject({ exit, target, session: job.session });
      const bytes = c?.data as { bytes_to_target: number; bytes_from_target: number };
      // The app sent a request and got an answer: bytes both ways, whichever host was the exit.
      expect(bytes.bytes_to_target, 'connection.closed bytes_to_target').toBeGreaterThan(0);
      expect(bytes.bytes_from_target, 'connection.closed bytes_from_target').toBeGreaterThan(0);
      expect(c?.seq).toBeGreaterThan(o.seq);
    }
    driver.auditTraffic(events, exit);
  });

  it('revoke: `ciport sessions revoke` cuts an open connection within 2 s; new ones are refused', async () => {
    const job = await world.open(target);
    const held = await hold(driver, job);
    // The job's client is stopped: the cut has to come from the gateway and the exit, as it must
    // for a client that does not cooperate (a compromised runner).
    job.freeze();
    const revoked = await world.revoke(job.session);
    expect(revoked.stderr).toBe('');
    expect(revoked.stdout).toMatch(/ended \(revoked\)/);
    // The gateway revoked before answering: 2 s from here.
    await waitFor(
      async () => (await driver.upstreamOpen(up)) === 0,
      2_000,
      'the upstream connection to close',
    );
    const knocked = await world.tunnel(job.session, target);
    expect(knocked).toMatchObject({ status: 410, body: expect.stringContaining('CIPORT_E_SESSION_ENDED') });
    job.thaw();
    await waitFor(() => held.closed(), 2_000, "the job's connection to close");

    const openedBefore = typed(await world.eventsOf(job.session), 'connection.opened').length;
    const acceptedBefore = await driver.upstreamAccepted?.(up);
    const again = await driver.attempt(job, up);
    expect(again.ok, again.detail).toBe(false);
    expect(typed(await world.eventsOf(job.session), 'connection.opened').length).toBe(openedBefore);
    if (driver.upstreamAccepted) expect(await driver.upstreamAccepted(up)).toBe(acceptedBefore);
    await job.end();
    // Audited as what it was: cut by the session's end (revoked), not a failure.
    await waitFor(
      async () => typed(await world.eventsOf(job.session), 'connection.closed').length === openedBefore,
      5_000,
      'connection.closed',
    );
    for (const c of typed(await world.eventsOf(job.session), 'connection.closed')) {
      expect(c.data).toMatchObject({ exit, closed_by: 'session', end_reason: 'revoked' });
      expect(c.data).not.toHaveProperty('error');
    }
  });

  it('session end: nothing of the session stays open upstream', async () => {
    const job = await world.open(target);
    const held = await hold(driver, job);
    expect(await driver.upstreamOpen(up)).toBeGreaterThan(0);
    await job.end();
    const record = (await world.gateway.manager.list()).find((s) => s.id === job.session);
    expect(record?.endedAt).toEqual(expect.any(Number));
    await waitFor(
      async () => (await driver.upstreamOpen(up)) === 0,
      5_000,
      'the upstream connections to close',
    );
    await waitFor(() => held.closed(), 5_000, "the job's connection to close");
    if (driver.auditHeld) {
      await closedOf(job.session);
      driver.auditHeld(await world.eventsOf(job.session));
    }
  });
});
