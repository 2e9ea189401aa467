// Does the log still hold what an audit sink acknowledged? The sink's cursor is an anchor the
// hash chain cannot give itself (docs/audit.md, "Verifying": removing the newest events leaves a
// valid chain). When the log ends below the cursor, misses the seqs after it, or no longer chains
// onto the event the receiver got last, events were removed, and the events that reuse their seqs
// would never reach the receiver: the delivery loop halts the sink instead (deliverer.ts).
import type { ErrorCode } from '../../errors/index.js';

/** The code of a halt: the log lost events the sink had acknowledged. */
export const HALT_CODE = 'CIPORT_E_AUDIT_LOG_TRUNCATED' satisfies ErrorCode;

/** Why the log's newest seq `head` is not the sink's: below its cursor, the log's end was removed. */
export function endsBelowCursor(cursor: number, head: number): string | undefined {
  return head < cursor ? `the log ends at seq ${head}, below the cursor ${cursor}` : undefined;
}

/**
 * Why `next` (the first event after the sink's cursor) does not continue what the sink
 * acknowledged: a seq is missing after the cursor, or `next` does not chain onto the event at the
 * cursor as it was delivered (`acknowledged`, known to the loop that delivered it) — the log was
 * cut and has grown past the cursor again.
 */
export function breaksContinuity(
  cursor: number,
  acknowledged: { seq: number; hash: string } | undefined,
  next: { seq: number; prevHash: string },
): string | undefined {
  // A new sink (cursor 0) starts wherever the log starts; after that, seqs have no gaps.
  if (cursor > 0 && next.seq !== cursor + 1) {
    return `the log has no event ${cursor + 1}: after the cursor ${cursor} it goes on at seq ${next.seq}`;
  }
  if (acknowledged?.seq === cursor && next.prevHash !== acknowledged.hash) {
    return `event ${next.seq} does not chain onto event ${cursor} as the sink received it: the log was cut and written again`;
  }
  return undefined;
}

/**
 * Where an operator should resume a halted sink, estimated: after the last event the receiver
 * can have received as it is now. The events it never got are those written after its last
 * acknowledgement (`firstWrittenAfter`: the first event whose time is later, if any), and those
 * after the cursor; never above the head. An estimate from the gateways' clocks: with clocks
 * apart, resume lower (a repeat is deduplicated by hash, a skip loses events).
 */
export function resumeEstimate(cursor: number, head: number, firstWrittenAfter: number | undefined): number {
  return Math.min(cursor, head, firstWrittenAfter === undefined ? head : firstWrittenAfter - 1);
}
