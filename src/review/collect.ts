// Build a review from a store: ONE pass over the chain from genesis to its newest event, each row
// both verified (src/audit/verify.ts) and fed to the report. Memory: one page of rows plus the
// report's own aggregates, whatever the size of the log.
import type { ChainRow } from '../audit/chain.js';
import { verifyRows } from '../audit/chain.js';
import { storedRows } from '../audit/verify.js';
import type { AuditStore } from '../store/types.js';
import type { ReviewPeriod } from './period.js';
import { ReviewBuilder, type ReviewReport } from './report.js';

/**
 * The review of `period`. The whole chain is verified (an edit after the period would make an
 * attestation chain onto a broken log too), and the result is part of the report.
 */
export async function buildReview(store: AuditStore, period: ReviewPeriod): Promise<ReviewReport> {
  const builder = new ReviewBuilder(period);
  const rows = storedRows(store);
  // verifyRows stops at the first bad row; the report still wants every row of the period. So
  // it reads through a view that does not close the generator, and we drain the rest after.
  const fed: AsyncIterable<ChainRow> = {
    [Symbol.asyncIterator]: () => ({
      next: async () => {
        const next = await rows.next();
        if (!next.done) builder.add(next.value);
        return next;
      },
    }),
  };
  const verified = await verifyRows(fed, { from: 'genesis' });
  if (!verified.ok) {
    for await (const row of rows) {
      if (row.time >= period.until) break;
      builder.add(row);
    }
  }
  return builder.finish(verified);
}
