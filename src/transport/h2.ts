// HTTP/2 stream helpers shared by the gateway and the agent.
import type { Http2Stream } from 'node:http2';

/**
 * Reset `stream` with RST_STREAM `code` (NGHTTP2_CANCEL, NGHTTP2_CONNECT_ERROR, …).
 *
 * Works around a Node 20 behaviour: `Http2Stream.close()` on a stream whose writable side is
 * still open first emits 'aborted', on which `stream.pipeline()`'s end-of-stream handler
 * destroys the stream synchronously — before close() submits the RST_STREAM — and the peer
 * never learns that the stream ended. Ending the writable side first makes close() submit the
 * reset at once, without the 'aborted' detour (the pending END_STREAM is superseded by it).
 */
export function resetStream(stream: Http2Stream, code: number): void {
  if (stream.destroyed || stream.closed) return;
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
