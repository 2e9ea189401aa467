// `audit.sinks` at run time: one delivery loop per configured sink, their metrics, and their
// stop. Started by the gateway after the store opened; stopped before the store closes.
import { Counter, Gauge, type Registry } from 'prom-client';
import type { AuditSinkConfig } from '../../config/audit-sinks.js';
import type { Logger } from '../../log/logger.js';
import type { AuditSinkCursor, AuditSinkStore } from '../../store/sink-cursors.js';
import type { AuditStore } from '../../store/types.js';
import { DEFAULT_TIMING, type DeliveryTiming, SinkDeliverer, type SinkMetrics } from './deliverer.js';
import { FileTransport } from './file.js';
import { SyslogTransport } from './syslog.js';
import type { SinkTransport } from './transport.js';
import { WebhookTransport } from './webhook.js';

export { breaksContinuity, endsBelowCursor, HALT_CODE, resumeEstimate } from './continuity.js';
export { backoffDelay, DEFAULT_TIMING, type DeliveryTiming } from './deliverer.js';

export interface AuditSinks {
  /** Stop every loop (graceful: let deliveries in flight finish) and release the leases. */
  stop(graceful: boolean): Promise<void>;
}

function transportFor(sink: AuditSinkConfig): SinkTransport {
  switch (sink.kind) {
    case 'webhook':
      return new WebhookTransport(sink);
    case 'syslog':
      return new SyslogTransport(sink);
    case 'file':
      return new FileTransport(sink);
  }
}

export function startAuditSinks(options: {
  sinks: readonly AuditSinkConfig[];
  store: AuditStore & AuditSinkStore;
  owner: string;
  log: Logger;
  registry: Registry;
  timing?: Partial<DeliveryTiming>;
}): AuditSinks {
  const { sinks, store } = options;
  if (sinks.length === 0) return { stop: async () => {} };
  const metrics = createSinkMetrics(
    options.registry,
    store,
    sinks.map((s) => s.name),
  );
  const timing = { ...DEFAULT_TIMING, ...options.timing };
  const loops = sinks.map(
    (sink) =>
      new SinkDeliverer({
        name: sink.name,
        kind: sink.kind,
        batch: sink.batch,
        timeout: sink.timeout,
        transport: transportFor(sink),
        store,
        owner: options.owner,
        log: options.log,
        metrics,
        // A lease outlives any one delivery, so it cannot lapse while a batch is in flight.
        timing: { ...timing, leaseMs: Math.max(timing.leaseMs, 3 * sink.timeout) },
      }),
  );
  for (const loop of loops) loop.start();
  return {
    async stop(graceful) {
      await Promise.all(loops.map((l) => l.stop(graceful)));
    },
  };
}

/**
 * `ciport_audit_sink_delivered_total{sink}`, `ciport_audit_sink_failures_total{sink,code}`,
 * `ciport_audit_sink_failing{sink}` (1 while deliveries fail), and from the store at scrape time
 * (so every gateway sharing it reports them, whichever holds the lease):
 * `ciport_audit_sink_lag_events{sink}` (events in the log after the sink's cursor) and
 * `ciport_audit_sink_halted{sink}` (1 while the sink is halted).
 */
function createSinkMetrics(
  registry: Registry,
  store: AuditStore & AuditSinkStore,
  names: string[],
): SinkMetrics {
  const registers = [registry];
  const delivered = new Counter({
    name: 'ciport_audit_sink_delivered_total',
    help: 'Audit events an audit sink acknowledged, by sink.',
    labelNames: ['sink'],
    registers,
  });
  const failures = new Counter({
    name: 'ciport_audit_sink_failures_total',
    help: 'Failed audit sink deliveries (each retried), and halts, by sink and error code.',
    labelNames: ['sink', 'code'],
    registers,
  });
  const failing = new Gauge({
    name: 'ciport_audit_sink_failing',
    help: '1 while deliveries to the audit sink fail (retrying with backoff).',
    labelNames: ['sink'],
    registers,
  });
  /** A gauge set per configured sink from the store's cursors when scraped. */
  const fromStore = (
    name: string,
    help: string,
    value: (cursor: AuditSinkCursor | undefined, head: number) => number,
  ) =>
    new Gauge({
      name,
      help,
      labelNames: ['sink'],
      registers,
      async collect() {
        try {
          // The cursors first: read before the head, a cursor is never above it unless events were removed.
          const cursors = await store.auditSinkCursors();
          const head = (await store.auditHead())?.seq ?? 0;
          for (const sink of names)
            this.set(
              { sink },
              value(
                cursors.find((c) => c.sink === sink),
                head,
              ),
            );
        } catch {
          // store unavailable: keep the last values (readyz reports the store)
        }
      },
    });
  fromStore(
    'ciport_audit_sink_lag_events',
    'Audit events not yet acknowledged by the sink (log head seq minus the stored cursor).',
    (cursor, head) => Math.max(0, head - (cursor?.seq ?? 0)),
  );
  fromStore(
    'ciport_audit_sink_halted',
    '1 while the audit sink is halted: the log lost events it had acknowledged (docs/audit-sinks.md).',
    (cursor) => (cursor?.halted ? 1 : 0),
  );
  for (const sink of names) {
    delivered.inc({ sink }, 0);
    failing.set({ sink }, 0);
  }
  return {
    delivered: (sink, n) => delivered.inc({ sink }, n),
    failed: (sink, code) => failures.inc({ sink, code }),
    failing: (sink, on) => failing.set({ sink }, on ? 1 : 0),
  };
}
