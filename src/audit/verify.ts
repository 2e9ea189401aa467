import type { AuditStore } from '../store/types.js';
import { type ChainRow, type VerifyOptions, type VerifyResult, verifyRows } from './chain.js';

const PAGE = 1000;

/** Stream the store's stored rows in seq order, one page at a time. */
export async function* storedRows(
  store: AuditStore,
  afterSeq = 0,
  pageSize = PAGE,
): AsyncGenerator<ChainRow> {
  let after = afterSeq;
  for (;;) {
    const page = await store.auditRows({ afterSeq: after, limit: pageSize });
    for (const row of page) yield row;
    const last = page.at(-1);
    if (!last) return;
    after = last.seq;
  }
}

/**
 * Verify the whole audit chain from genesis. `{ok: true, count, head}` or, for the FIRST event
 * that does not verify, `{ok: false, seq, reason}`. Memory use is one page, whatever the size.
 * Pass `anchor` (a head recorded earlier, outside the database) to also catch truncation.
 */
export function verifyChain(
  store: AuditStore,
  options: Pick<VerifyOptions, 'anchor'> & { pageSize?: number } = {},
): Promise<VerifyResult> {
  const { pageSize, ...verify } = options;
  return verifyRows(storedRows(store, 0, pageSize), { from: 'genesis', ...verify });
}
