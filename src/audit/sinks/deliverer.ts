// One sink's delivery loop (docs/audit-sinks.md, "Delivery"): hold the sink's lease in the store,
// read the events after its cursor a page at a time, hand them to the receiver, and move the
// cursor only once the receiver acknowledged them. A failed delivery is retried — the same events
// again, re-read from the store — after a capped exponential backoff with jitter. So delivery is
// at least once and in chain order, memory holds one batch at most, and a restart resumes from
// the stored cursor.
//
// The cursor is also an anchor (continuity.ts): when the log no longer holds what the receiver
// acknowledged, the loop halts the sink in the store (no gateway delivers to it until an operator
// resumes it), logs an error, counts it, and audits `audit.sink_halted`.

import { asCiportError, type CiportError } from '../../errors/index.js';
import type { Logger } from '../../log/logger.js';
import type { AuditSinkStore } from '../../store/sink-cursors.js';
import type { AuditStore } from '../../store/types.js';
import { auditEvent } from '../events.js';
import { jsonlLine } from '../export.js';
import { breaksContinuity, endsBelowCursor, HALT_CODE, resumeEstimate } from './continuity.js';
import { type SinkEvent, type SinkTransport, withDeadline } from './transport.js';

export interface DeliveryTiming {
  /** How often the log is checked for new events while the sink is caught up (ms). */
  pollMs: number;
  /** Lease length (ms); renewed when half of it is left. */
  leaseMs: number;
  /** First retry delay and its cap (ms). */
  backoffMs: number;
  maxBackoffMs: number;
}

export const DEFAULT_TIMING: DeliveryTiming = {
  pollMs: 1000,
  leaseMs: 30_000,
  backoffMs: 500,
  maxBackoffMs: 60_000,
};

/** Most JSON bytes one batch carries (at least one event goes, whatever its size). */
export const MAX_BATCH_BYTES = 1024 * 1024;

export interface SinkMetrics {
  delivered(sink: string, events: number): void;
  failed(sink: string, code: string): void;
  failing(sink: string, failing: boolean): void;
}

export interface DelivererOptions {
  name: string;
  kind: string;
  batch: number;
  /** Most milliseconds one delivery may take (the sink's `timeout`). */
  timeout: number;
  transport: SinkTransport;
  store: AuditStore & AuditSinkStore;
  /** This gateway's id: the lease owner. */
  owner: string;
  log: Logger;
  metrics: SinkMetrics;
  timing: DeliveryTiming;
  random?: () => number;
}

type State = 'starting' | 'delivering' | 'failing' | 'standby' | 'halted';

/** What went wrong, by code: the start of the one warning logged when deliveries start failing. */
const FAILURES: Readonly<Record<string, string>> = {
  CIPORT_E_AUDIT_SINK_UNREACHABLE: 'audit sink unreachable',
  CIPORT_E_AUDIT_SINK_TLS: 'audit sink TLS failed',
  CIPORT_E_AUDIT_SINK_TIMEOUT: 'audit sink did not acknowledge in time',
  CIPORT_E_AUDIT_SINK_REJECTED: 'audit sink refused the batch',
  CIPORT_E_AUDIT_SINK_PROTOCOL: 'audit sink answered outside its protocol',
  CIPORT_E_AUDIT_SINK_WRITE: 'audit sink file not written',
};

/** The delay before retry `attempt` (1, 2, …): base·2^(attempt−1), capped, then 50–100 % of it. */
export function backoffDelay(
  attempt: number,
  timing: DeliveryTiming,
  random: () => number = Math.random,
): number {
  const capped = Math.min(timing.maxBackoffMs, timing.backoffMs * 2 ** Math.min(attempt - 1, 30));
  return Math.round(capped * (0.5 + random() / 2));
}

export class SinkDeliverer {
  readonly #o: DelivererOptions;
  readonly #abort = new AbortController();
  #stopping = false;
  #loop: Promise<void> | undefined;
  #wake: (() => void) | undefined;
  /** The cursor while this gateway holds the lease; undefined otherwise. */
  #cursor: number | undefined;
  /** The last event this loop saw acknowledged: the event at the cursor, while it holds. */
  #acknowledged: { seq: number; hash: string } | undefined;
  #renewAt = 0;
  #state: State = 'starting';
  #attempt = 0;
  #failingSince = 0;

  constructor(options: DelivererOptions) {
    this.#o = options;
  }

  start(): void {
    this.#loop ??= this.#run();
  }

  /**
   * Stop. `graceful`: let a delivery in flight finish (bounded by the sink's timeout) and record
   * it; otherwise abort it (it is delivered again later: at least once). Then give up the lease.
   */
  async stop(graceful: boolean): Promise<void> {
    this.#stopping = true;
    if (!graceful) this.#abort.abort();
    this.#wake?.();
    await this.#loop;
    if (this.#cursor !== undefined) {
      await this.#o.store.releaseAuditSink(this.#o.name, this.#o.owner).catch(() => {});
      this.#cursor = undefined;
    }
  }

  async #run(): Promise<void> {
    while (!this.#stopping) {
      let wait: number;
      try {
        wait = await this.#step();
      } catch (err) {
        // The store failed (not the receiver): same backoff, same once-per-state log.
        wait = this.#failed(asCiportError(err), 'store');
      }
      if (wait > 0 && !this.#stopping) await this.#sleep(wait);
    }
  }

  /** One round; resolves to how long to wait before the next (0: go on at once). */
  async #step(): Promise<number> {
    const { store, name, owner, timing } = this.#o;
    const now = Date.now();
    const fresh = this.#cursor === undefined;
    if (this.#cursor === undefined || now >= this.#renewAt) {
      const cursor = await store.claimAuditSink(name, owner, now, now + timing.leaseMs);
      if (cursor === undefined) {
        this.#cursor = undefined;
        const row = (await store.auditSinkCursors()).find((c) => c.sink === name);
        if (row?.halted) this.#enter('halted', { code: HALT_CODE, cursor: row.seq });
        else this.#enter('standby', {});
        return this.#standbyMs();
      }
      this.#cursor = cursor;
      this.#renewAt = now + Math.floor(timing.leaseMs / 2);
    }
    const from = this.#cursor;
    // A cursor just claimed is checked before anything is read: the sooner, the fewer events can
    // have been appended over a cut, where only the chain (not the seqs) would tell.
    const early = fresh ? await this.#endsBelow(from) : undefined;
    if (early) return this.#halt(from, early);
    const page = await store.auditEvents({ afterSeq: from, limit: this.#o.batch });
    const lost = page[0] ? breaksContinuity(from, this.#acknowledged, page[0]) : await this.#endsBelow(from);
    if (lost) return this.#halt(from, lost);
    if (page.length === 0) {
      if (this.#state === 'starting' || this.#state === 'standby' || this.#state === 'halted')
        this.#enter('delivering', { cursor: from });
      return timing.pollMs;
    }
    const batch: SinkEvent[] = [];
    let bytes = 0;
    for (const e of page) {
      const json = jsonlLine(e).slice(0, -1);
      bytes += Buffer.byteLength(json);
      if (batch.length > 0 && bytes > MAX_BATCH_BYTES) break;
      batch.push({ seq: e.seq, time: e.time, type: e.type, hash: e.hash, prevHash: e.prevHash, json });
    }
    try {
      await withDeadline(this.#o.timeout, this.#abort.signal, `${this.#o.kind} ${name}`, (signal) =>
        this.#o.transport.deliver(batch, signal),
      );
    } catch (err) {
      if (this.#abort.signal.aborted) return 0;
      return this.#failed(asCiportError(err), 'receiver');
    }
    const last = batch.at(-1) as SinkEvent;
    if (!(await store.advanceAuditSink(name, owner, from, last.seq, Date.now()))) {
      // Another gateway took the lease (ours lapsed while we delivered): it delivers from its
      // cursor; what we just sent may arrive twice (at least once).
      return this.#lostLease();
    }
    this.#cursor = last.seq;
    this.#acknowledged = { seq: last.seq, hash: last.hash };
    this.#o.metrics.delivered(name, batch.length);
    if (this.#state !== 'delivering') this.#enter('delivering', { cursor: last.seq });
    return batch.length < page.length || page.length === this.#o.batch ? 0 : timing.pollMs;
  }

  async #endsBelow(cursor: number): Promise<string | undefined> {
    return endsBelowCursor(cursor, (await this.#o.store.auditHead())?.seq ?? 0);
  }

  /** Halt the sink (see the file comment); resolves to how long to wait before looking again. */
  async #halt(cursor: number, reason: string): Promise<number> {
    const { store, name, owner } = this.#o;
    const head = (await store.auditHead())?.seq ?? 0;
    const acknowledgedAt = (await store.auditSinkCursors()).find((c) => c.sink === name)?.updatedAt ?? 0;
    const [firstWrittenAfter] = await store.auditEvents({ since: acknowledgedAt + 1, limit: 1 });
    const resumeAfter = resumeEstimate(cursor, head, firstWrittenAfter?.seq);
    const event = auditEvent('audit.sink_halted', {
      sink: name,
      cursor,
      head,
      reason,
      resume_after: resumeAfter,
      gateway: owner,
    });
    const written = await store.haltAuditSink(name, owner, cursor, Date.now(), event);
    this.#acknowledged = undefined;
    // The lease or the cursor moved meanwhile: whoever holds it now checks the same.
    if (!written) return this.#lostLease();
    this.#cursor = undefined;
    this.#o.metrics.failed(name, HALT_CODE);
    this.#enter('halted', {
      code: HALT_CODE,
      cursor,
      head,
      reason,
      resume_after: resumeAfter,
      audit_seq: written.seq,
    });
    return this.#standbyMs();
  }

  #lostLease(): number {
    this.#cursor = undefined;
    this.#enter('standby', { lost_lease: true });
    return this.#o.timing.pollMs;
  }

  /** How often a sink that another gateway delivers, or that is halted, looks again. */
  #standbyMs(): number {
    return Math.max(this.#o.timing.pollMs, Math.floor(this.#o.timing.leaseMs / 3));
  }

  #failed({ code, message }: CiportError, where: 'receiver' | 'store'): number {
    this.#o.metrics.failed(this.#o.name, code);
    this.#attempt++;
    if (this.#state !== 'failing') {
      this.#failingSince = Date.now();
      this.#enter('failing', { code, err: message, where });
    } else {
      this.#o.log.debug(
        { sink: this.#o.name, code, attempt: this.#attempt },
        'audit sink delivery failed again',
      );
    }
    return backoffDelay(this.#attempt, this.#o.timing, this.#o.random);
  }

  /** Change state, logging once per change (never once per attempt: a dead receiver must not flood the log). */
  #enter(state: State, fields: Record<string, unknown>): void {
    const previous = this.#state;
    if (previous === state) return;
    this.#state = state;
    const sink = { sink: this.#o.name, kind: this.#o.kind };
    this.#o.metrics.failing(this.#o.name, state === 'failing');
    if (state === 'failing') {
      const what =
        fields.where === 'store'
          ? 'audit sink cannot use the store'
          : (FAILURES[String(fields.code)] ?? 'audit sink delivery failed');
      this.#o.log.warn({ ...sink, ...fields }, `${what}: delivery paused, retrying with backoff`);
    } else if (state === 'halted') {
      this.#o.log.error(
        { ...sink, ...fields },
        'audit sink halted: the audit log lost events the sink had acknowledged; nothing is delivered to it until an operator runs "ciport audit sinks resume"',
      );
    } else if (state === 'standby') {
      this.#o.log.info(
        { ...sink, ...fields },
        'audit sink delivered by another gateway (lease held elsewhere)',
      );
    } else if (previous === 'halted') {
      this.#o.log.info({ ...sink, ...fields }, 'audit sink resumed: delivering again');
    } else if (previous === 'failing') {
      this.#o.log.info(
        { ...sink, ...fields, failed_attempts: this.#attempt, down_ms: Date.now() - this.#failingSince },
        'audit sink delivering again',
      );
    } else {
      this.#o.log.info({ ...sink, ...fields }, 'audit sink delivering');
    }
    if (state !== 'failing') this.#attempt = 0;
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.#wake = done;
    });
  }
}
