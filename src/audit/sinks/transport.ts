// What every sink kind implements, and the deadline the delivery loop runs each of them under: a
// delivery of one batch either settles within the sink's `timeout` or fails with
// CIPORT_E_AUDIT_SINK_TIMEOUT, whatever the receiver does (slowloris answers, never-ending bodies,
// a hung disk), so the loop never hangs and never holds more than one batch.
import type { Readable } from 'node:stream';
import { AuditSinkError } from '../../errors/index.js';

/** One event of a batch: its envelope (for headers and structured data) and its JSON line. */
export interface SinkEvent {
  seq: number;
  time: number;
  type: string;
  hash: string;
  prevHash: string;
  /** The event as `ciport audit export --format jsonl` writes it, without the newline. */
  json: string;
}

export interface SinkTransport {
  /**
   * Hand `events` (in seq order) to the receiver; resolve once it acknowledged them, reject with
   * an AuditSinkError otherwise. `signal` aborts at the sink's `timeout` or when the gateway stops
   * at once; the loop stops waiting then, whether or not the transport heeds it (`withDeadline`).
   */
  deliver(events: readonly SinkEvent[], signal: AbortSignal): Promise<void>;
}

/** Most bytes of a receiver's answer read (and discarded); more is CIPORT_E_AUDIT_SINK_PROTOCOL. */
export const MAX_RESPONSE_BYTES = 64 * 1024;

/**
 * Read and drop what a receiver sends back, counting it; past MAX_RESPONSE_BYTES, `fail` gets
 * CIPORT_E_AUDIT_SINK_PROTOCOL (and should destroy the stream).
 */
export function dropAnswer(stream: Readable, what: string, fail: (err: AuditSinkError) => void): void {
  let read = 0;
  stream.on('data', (chunk: Buffer) => {
    read += chunk.length;
    if (read > MAX_RESPONSE_BYTES) {
      fail(
        new AuditSinkError(
          'CIPORT_E_AUDIT_SINK_PROTOCOL',
          `${what}: answer larger than ${MAX_RESPONSE_BYTES} bytes`,
        ),
      );
    }
  });
}

/**
 * Run `fn` with a signal that aborts after `timeoutMs` or when `outer` aborts; a timeout rejects
 * with CIPORT_E_AUDIT_SINK_TIMEOUT even if `fn` ignores the signal.
 */
export async function withDeadline<T>(
  timeoutMs: number,
  outer: AbortSignal,
  what: string,
  fn: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  let onOuter: (() => void) | undefined;
  // `outer` lives as long as the sink: every listener added here is removed when this settles.
  const stopped = new Promise<never>((_, reject) => {
    onOuter = () => {
      controller.abort(outer.reason);
      reject(abortedError(what));
    };
    if (outer.aborted) onOuter();
    else outer.addEventListener('abort', onOuter, { once: true });
    timer = setTimeout(() => {
      const err = new AuditSinkError(
        'CIPORT_E_AUDIT_SINK_TIMEOUT',
        `${what}: no answer within ${timeoutMs} ms`,
      );
      controller.abort(err);
      reject(err);
    }, timeoutMs);
  });
  try {
    return await Promise.race([fn(controller.signal), stopped]);
  } finally {
    clearTimeout(timer);
    if (onOuter) outer.removeEventListener('abort', onOuter);
    stopped.catch(() => {});
  }
}

function abortedError(what: string): AuditSinkError {
  return new AuditSinkError('CIPORT_E_AUDIT_SINK_TIMEOUT', `${what}: aborted (the gateway is stopping)`);
}

/** Socket-level failures (connect refused, reset, DNS) as a sink error naming the errno, never data. */
export function networkError(what: string, err: unknown): AuditSinkError {
  if (err instanceof AuditSinkError) return err;
  const e = err as NodeJS.ErrnoException;
  const code = typeof e?.code === 'string' ? e.code : undefined;
  if (code && isTlsErrorCode(code)) {
    return new AuditSinkError('CIPORT_E_AUDIT_SINK_TLS', `${what}: TLS failed (${code})`, { cause: err });
  }
  return new AuditSinkError(
    'CIPORT_E_AUDIT_SINK_UNREACHABLE',
    `${what}: ${code ?? (e instanceof Error ? e.message : 'connection failed')}`,
    { cause: err },
  );
}

function isTlsErrorCode(code: string): boolean {
  return /CERT|SSL|TLS|SELF_SIGNED|VERIFY|ALTNAME|HANDSHAKE|EPROTO/.test(code);
}
