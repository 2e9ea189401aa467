// agent.event_refused: at most one audit event per agent and window, with the window's count.
// The store is a real SQLite store in a temp dir.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { EventRefusals } from '../../../src/gateway/agents/event-refusals.js';
import { openStore } from '../../../src/store/open.js';
import type { Store } from '../../../src/store/types.js';
import { waitFor } from '../../fixtures/wait-for.js';

const rogue = { id: 'agt_rogue', name: 'dc-rogue' };
const other = { id: 'agt_other', name: 'dc-other' };
let refusals: EventRefusals | undefined;
const opened: Array<{ store: Store; dir: string }> = [];

afterEach(async () => {
  await refusals?.close();
  refusals = undefined;
  for (const { store, dir } of opened.splice(0)) {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

async function sqliteStore(): Promise<Store> {
  const dir = mkdtempSync(join(tmpdir(), 'ciport-refusals-'));
  const store = await openStore(undefined, { dataDir: dir });
  opened.push({ store, dir });
  return store;
}

async function refusedEvents(store: Store) {
  return (await store.auditEvents({ limit: 10_000 }))
    .filter((e) => e.type === 'agent.event_refused')
    .map((e) => e.data as Record<string, unknown>);
}

describe('EventRefusals', () => {
  it('audits the first refusal at once and the window count at its end, per agent', async () => {
    const store = await sqliteStore();
    refusals = new EventRefusals(store, undefined, 1_000);
    for (let i = 0; i < 500; i++) await refusals.refuse(rogue, 'http.request', `ses_${i}`, 'api');
    await refusals.refuse(other, 'credential.created', 'ses_x', `pg${'\u001b'}[2J`);
    expect(await refusedEvents(store)).toEqual([
      expect.objectContaining({
        agent_id: 'agt_rogue',
        count: 1,
        sample_session: 'ses_0',
        sample_target: 'api',
      }),
      expect.objectContaining({ agent_id: 'agt_other', count: 1, sample_target: 'pg\\x1b[2J' }),
    ]);
    // The interval closes windows past their end: the other 499 as one count.
    await waitFor(async () => (await refusedEvents(store)).length >= 3, 5_000, 'the third refusal event');
    const after = await refusedEvents(store);
    expect(after).toHaveLength(3);
    expect(after[2]).toMatchObject({ agent_id: 'agt_rogue', count: 499, window_ms: 1_000 });
    // A new window: its first refusal is audited at once again.
    await refusals.refuse(rogue, 'http.request', 'ses_y', 'api');
    expect(await refusedEvents(store)).toHaveLength(4);
  });

  it('close writes the counts of open windows', async () => {
    const store = await sqliteStore();
    refusals = new EventRefusals(store, undefined, 3_600_000);
    for (let i = 0; i < 10; i++) await refusals.refuse(rogue, 'credential.revoked', 'ses', 'pgdyn');
    expect(await refusedEvents(store)).toHaveLength(1);
    await refusals.close();
    refusals = undefined;
    const events = await refusedEvents(store);
    expect(events.map((e) => e.count)).toEqual([1, 9]);
  });
});
