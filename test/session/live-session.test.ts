// LiveSession's abort controller is made on first use; ending a session aborts the dials that
// asked for its signal, and a signal asked for after the end is already aborted.
import { describe, expect, it } from 'vitest';
import { LiveSession } from '../../src/session/manager.js';
import type { SessionRecord } from '../../src/store/types.js';

const record = {
  id: 'ses_live',
  secretHash: '0'.repeat(64),
  issuer: 'gitlab',
  subject: 'x',
  principal: {},
  targets: ['echo'],
  rule: 'r',
  state: 'active',
  endReason: null,
  createdAt: 0,
  expiresAt: 1,
  leaseExpiresAt: 1,
  endedAt: null,
  gatewayId: null,
} satisfies SessionRecord;

describe('LiveSession abort', () => {
  it('aborts a signal taken before the session ends', () => {
    const live = new LiveSession(record, 10);
    const signal = live.abort.signal;
    expect(signal.aborted).toBe(false);
    live.abortDials();
    expect(signal.aborted).toBe(true);
  });

  it('hands out an aborted signal once the session is ending', () => {
    const live = new LiveSession(record, 10);
    live.abortDials();
    expect(live.abort.signal.aborted).toBe(true);
  });
});
