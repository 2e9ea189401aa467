// When the log no longer continues what a sink acknowledged (src/audit/sinks/continuity.ts): the
// three ways it can fail, the normal cases that must not halt a sink, and where to resume.
import { describe, expect, it } from 'vitest';
import { breaksContinuity, endsBelowCursor, resumeEstimate } from '../../src/audit/sinks/index.js';

const H = (c: string) => c.repeat(64);

describe('the sink cursor as an anchor', () => {
  it('a log that ends below the cursor lost its end', () => {
    expect(endsBelowCursor(44, 40)).toBe('the log ends at seq 40, below the cursor 44');
    expect(endsBelowCursor(44, 44)).toBeUndefined();
    expect(endsBelowCursor(0, 0)).toBeUndefined();
  });

  it('a missing seq right after the cursor', () => {
    expect(breaksContinuity(44, undefined, { seq: 47, prevHash: H('a') })).toBe(
      'the log has no event 45: after the cursor 44 it goes on at seq 47',
    );
    // A new sink starts wherever the log starts.
    expect(breaksContinuity(0, undefined, { seq: 7, prevHash: H('a') })).toBeUndefined();
  });

  it('a next event that does not chain onto the one delivered at the cursor: cut and written again', () => {
    const acknowledged = { seq: 44, hash: H('a') };
    expect(breaksContinuity(44, acknowledged, { seq: 45, prevHash: H('a') })).toBeUndefined();
    expect(breaksContinuity(44, acknowledged, { seq: 45, prevHash: H('b') })).toBe(
      'event 45 does not chain onto event 44 as the sink received it: the log was cut and written again',
    );
    // Known only for the event at the cursor: a restart (nothing acknowledged here yet) cannot tell.
    expect(breaksContinuity(44, { seq: 40, hash: H('c') }, { seq: 45, prevHash: H('b') })).toBeUndefined();
    expect(breaksContinuity(44, undefined, { seq: 45, prevHash: H('b') })).toBeUndefined();
  });

  it('resume after the last event written before the last acknowledgement, never above the cursor or head', () => {
    // Cut at 40, nothing written since: after the head.
    expect(resumeEstimate(44, 40, undefined)).toBe(40);
    // Cut at 40, then 41 and 42 written (reusing seqs the receiver holds with other contents).
    expect(resumeEstimate(44, 42, 41)).toBe(40);
    // Cut at 40 and grown past the cursor.
    expect(resumeEstimate(44, 50, 41)).toBe(40);
    // Seqs missing after the cursor: the receiver holds everything up to it.
    expect(resumeEstimate(44, 50, 49)).toBe(44);
  });
});
