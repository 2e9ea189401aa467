// The deadline every delivery runs under: a delivery that ignores its signal still ends at the
// timeout, a stop aborts it, and the sink's long-lived stop signal keeps no listener per delivery.
import { getEventListeners } from 'node:events';
import { describe, expect, it } from 'vitest';
import { withDeadline } from '../../src/audit/sinks/transport.js';

describe('withDeadline', () => {
  it('ends a delivery that never settles with CIPORT_E_AUDIT_SINK_TIMEOUT and aborts its signal', async () => {
    let inner: AbortSignal | undefined;
    const outcome = withDeadline(30, new AbortController().signal, 'webhook x', (signal) => {
      inner = signal;
      return new Promise<void>(() => {});
    });
    await expect(outcome).rejects.toMatchObject({ code: 'CIPORT_E_AUDIT_SINK_TIMEOUT' });
    expect(inner?.aborted).toBe(true);
  });

  it('a stop aborts the delivery in flight', async () => {
    const stop = new AbortController();
    const outcome = withDeadline(60_000, stop.signal, 'syslog y', () => new Promise<void>(() => {}));
    stop.abort();
    await expect(outcome).rejects.toThrow(/aborted \(the gateway is stopping\)/);
  });

  it('leaves no listener on the stop signal, however many deliveries ran', async () => {
    const stop = new AbortController();
    for (let i = 0; i < 50; i++) await withDeadline(1_000, stop.signal, 'file z', async () => {});
    for (let i = 0; i < 5; i++) {
      await withDeadline(5, stop.signal, 'file z', () => new Promise<void>(() => {})).catch(() => {});
    }
    expect(getEventListeners(stop.signal, 'abort')).toHaveLength(0);
  });
});
