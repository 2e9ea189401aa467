// After the handshake: bytes flow both ways through `pipeline` (backpressure end to end). The
// application → server direction passes a guard that follows the packet framing (observe.ts):
// it stops the connection, before forwarding it, at a refused command (COM_CHANGE_USER, a
// character set the audit cannot read, …). The server → application direction is followed too
// (given the capabilities): statements are reported as their replies begin, and what is still
// unanswered when the connection ends is reported then. While too many commands wait for their
// reply, the guard stops reading from the application.
import type { Duplex } from 'node:stream';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { pauseWhileFull } from '../../audit/backlog.js';
import type { RelayResult } from '../postgres/relay.js';
import { MysqlError, mysqlErrPayload } from './errors.js';
import { type MysqlQueryEvent, MysqlQueryObserver } from './observe.js';
import { Command, encodePacket } from './packets.js';

export type { RelayResult } from '../postgres/relay.js';

export interface MysqlRelayOptions {
  /**
   * The capabilities the connection negotiated: given, the server's replies are followed (the
   * exit); absent, only the application's side is guarded (the local listener).
   */
  capabilities?: number | undefined;
  /** The handshake's collation (a single-byte set: non-ASCII statements are recorded in hex). */
  collation?: number | undefined;
  /** Per-target switch: false → no statement parsing (default true when onQuery is set). */
  queryEvents?: boolean | undefined;
  onQuery?: ((event: MysqlQueryEvent) => void) | undefined;
  maxQueryLength?: number | undefined;
  signal?: AbortSignal | undefined;
  /** Maps a listener connection id in `KILL <id>` to the upstream thread id (observe.ts). */
  killTarget?: ((localId: number) => number | undefined) | undefined;
  /** Audit backpressure: while this returns a promise, reading from the app pauses. */
  room?: (() => Promise<void> | undefined) | undefined;
  /**
   * Called once when a statement may be left running upstream: before both sides are torn down
   * by an error, an abort or a premature close, or when the application's side ended cleanly
   * but without COM_QUIT (a client killed mid-query). `appQuit`: the application's last command
   * was COM_QUIT.
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
    killTarget: options.killTarget,
    capabilities: options.capabilities,
    collation: options.collation,
    // With an honest server this never happens; the audit must not go on guessing.
    onLost: (why) =>
      fail(
        new MysqlError(
          'CIPORT_E_MYSQL_PROTOCOL',
          1043,
          '08S01',
          `the server's replies could not be followed: ${why}`,
        ),
      ),
  });
  let refusing = false;
  const guard = new Transform({
    transform(chunk: Buffer, _enc, callback) {
      if (refusing) {
        callback();
        return;
      }
      observer.app.push(chunk);
      if (observer.violation) {
        // The commands before the refused packet were reported: they go on, so the audit says
        // what ran; nothing from the refused packet on is forwarded. Tell the application why,
        // as the reply to its command (sequence id 1), then close; destroying the app tears down
        // both pipelines (failing one here would destroy the app before the ERR is out).
        const before = Buffer.from(chunk.subarray(0, observer.violationAt));
        for (const r of observer.rewrites)
          if (r.offset + r.bytes.length <= before.length) r.bytes.copy(before, r.offset);
        observer.rewrites.length = 0;
        result.bytesFromApp += before.length;
        refusing = true;
        const err =
          observer.violationError ??
          new MysqlError('CIPORT_E_MYSQL_PROTOCOL', 1043, '08S01', observer.violation);
        result.error = err;
        hook(err);
        app.on('error', () => {});
        app.end(encodePacket(mysqlErrPayload(err), 1), () => app.destroy());
        setTimeout(() => app.destroy(), 1000).unref();
        callback(null, before.length > 0 ? before : undefined);
        return;
      }
      result.bytesFromApp += chunk.length;
      let out = chunk;
      if (observer.rewrites.length > 0) {
        out = Buffer.from(chunk);
        for (const r of observer.rewrites) r.bytes.copy(out, r.offset);
        observer.rewrites.length = 0;
      }
      // Forward now (the server answers only what it got); read on once the replies caught up.
      const wait = observer.room();
      if (!wait) {
        callback(null, out);
        return;
      }
      this.push(out);
      void wait.then(() => callback());
    },
  });
  if (events && options.room) pauseWhileFull(app, options.room);
  upstream.on('data', (chunk: Buffer) => {
    result.bytesFromUpstream += chunk.length;
    observer.server.push(chunk);
  });
  let cleanEnds = 0;
  let hooked = false;
  const hook = (err: Error) => {
    if (hooked) return;
    hooked = true;
    try {
      options.onTeardown?.(err, { appQuit: observer.lastCommand === Command.QUIT });
    } catch {
      // A hook must never break the teardown.
    }
  };
  const done = () => {
    cleanEnds++;
  };
  const appEnded = () => {
    done();
    if (observer.lastCommand !== Command.QUIT && !upstreamEnded) {
      hook(new Error('the application closed its connection without COM_QUIT'));
    }
  };
  let upstreamEnded = false;
  upstream.once('end', () => {
    upstreamEnded = true;
  });
  function fail(err: Error) {
    const normal = cleanEnds > 0 && (err as NodeJS.ErrnoException).code === 'ERR_STREAM_PREMATURE_CLOSE';
    if (!normal) result.error ??= err;
    hook(err);
    upstream.destroy();
    app.destroy();
  }
  const opts = options.signal ? { signal: options.signal } : {};
  await Promise.all([
    pipeline(app, guard, upstream, opts).then(appEnded, fail),
    pipeline(upstream, app, opts).then(done, fail),
  ]);
  // What the server never answered goes into the audit before the connection's end.
  observer.finish();
  return result;
}
