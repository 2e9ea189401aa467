// After the handshake: bytes flow both ways through `pipeline` (backpressure end to end). The
// application → server direction passes a guard that follows the packet framing (observe.ts):
// it reports statements and stops the connection, before forwarding it, at a COM_CHANGE_USER.
import type { Duplex } from 'node:stream';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { pauseWhileFull } from '../../audit/backlog.js';
import type { RelayResult } from '../postgres/relay.js';
import { MysqlError } from './errors.js';
import { type MysqlQueryEvent, MysqlQueryObserver } from './observe.js';
import { Command } from './packets.js';

export type { RelayResult } from '../postgres/relay.js';

export interface MysqlRelayOptions {
  /** Per-target switch: false → no statement parsing (default true when onQuery is set). */
  queryEvents?: boolean | undefined;
  onQuery?: ((event: MysqlQueryEvent) => void) | undefined;
  maxQueryLength?: number | undefined;
  signal?: AbortSignal | undefined;
  /** Audit backpressure: while this returns a promise, reading from the app pauses. */
  room?: (() => Promise<void> | undefined) | undefined;
  /**
   * Called once, before both sides are torn down, when the relay ends by an error, an abort or a
   * premature close. `appQuit`: the application's last command was COM_QUIT.
   */
  onTeardown?: ((err: Error, info: { appQuit: boolean }) => void) | undefined;
}

/** Relay `app` ⇄ `upstream` until both directions are done. Never rejects. */
export async function relayMysql(
  app: Duplex,
  upstream: Duplex,
  options: MysqlRelayOptions = {},
): Promise<RelayResult> {
  const result: RelayResult = { bytesFromApp: 0, bytesFromUpstream: 0, error: undefined };
  const events = options.onQuery !== undefined && options.queryEvents !== false;
  const observer = new MysqlQueryObserver({
    onQuery: events ? options.onQuery : undefined,
    maxQueryLength: options.maxQueryLength,
  });
  const guard = new Transform({
    transform(chunk: Buffer, _enc, callback) {
      observer.app.push(chunk);
      if (observer.violation) {
        callback(new MysqlError('CIPORT_E_MYSQL_PROTOCOL', 1043, '08S01', observer.violation));
        return;
      }
      result.bytesFromApp += chunk.length;
      callback(null, chunk);
    },
  });
  if (events && options.room) pauseWhileFull(app, options.room);
  upstream.on('data', (chunk: Buffer) => {
    result.bytesFromUpstream += chunk.length;
    if (events) observer.server.push(chunk);
  });
  let cleanEnds = 0;
  let tornDown = false;
  const done = () => {
    cleanEnds++;
  };
  const fail = (err: Error) => {
    const normal = cleanEnds > 0 && (err as NodeJS.ErrnoException).code === 'ERR_STREAM_PREMATURE_CLOSE';
    if (!normal) result.error ??= err;
    if (!tornDown) {
      tornDown = true;
      try {
        options.onTeardown?.(err, { appQuit: observer.lastCommand === Command.QUIT });
      } catch {
        // A hook must never break the teardown.
      }
    }
    app.destroy();
    upstream.destroy();
  };
  const opts = options.signal ? { signal: options.signal } : {};
  await Promise.all([
    pipeline(app, guard, upstream, opts).then(done, fail),
    pipeline(upstream, app, opts).then(done, fail),
  ]);
  return result;
}
