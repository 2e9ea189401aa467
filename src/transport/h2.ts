// HTTP/2 stream helpers shared by the client, the gateway and the agent.
import { type Http2Stream, constants as h2 } from 'node:http2';

function ignore(): void {}

/**
 * Reset `stream` with RST_STREAM `code` (NGHTTP2_CANCEL by default, NGHTTP2_CONNECT_ERROR, …):
 * the one way ciport cuts a tunnel stream, on the client, the gateway and the agent alike.
 *
 * Why not `stream.close(code)` alone: on Node 20, close() on a stream whose writable side is still
 * open first emits 'aborted', synchronously. An Http2Stream does not auto-destroy, so the
 * end-of-stream watcher under `stream.pipeline()` (and `finished()`) listens for 'aborted' and
 * takes it for a premature close: the pipeline destroys the stream inside that handler, before
 * close() has submitted the RST_STREAM. The stream's handle is gone by then, the frame is never
 * sent, and the peer keeps its end open (and the upstream or application socket behind it).
 * Ending the writable side first makes close() skip the 'aborted' detour and submit the reset at
 * once, without touching anyone's listeners.
 *
 * What the peer sees: END_STREAM, then RST_STREAM(code) — Node ends the writable side of any
 * stream it closes. A receiver that must tell a reset from a clean end of data looks at `rstCode`
 * once the frames that came with the END_STREAM are processed (src/client/local-connection.ts).
 *
 * A code other than NO_ERROR or CANCEL also makes Node emit ERR_HTTP2_STREAM_ERROR on this side;
 * a reset this side chose is not news, and unheard that 'error' would throw.
 */
export function resetStream(stream: Http2Stream, code: number = h2.NGHTTP2_CANCEL): void {
  if (stream.destroyed || stream.closed) return;
  stream.on('error', ignore);
  if (!stream.writableEnded) stream.end();
  stream.close(code);
}

/** The target a CONNECT names: `staging-db:443` → `staging-db` (gateway and agent alike). */
export function targetOfAuthority(authority: string | undefined): string | undefined {
  if (!authority) return undefined;
  const host = authority.startsWith('[')
    ? authority.slice(1, authority.indexOf(']'))
    : authority.split(':')[0];
  return host ? host.toLowerCase() : undefined;
}
