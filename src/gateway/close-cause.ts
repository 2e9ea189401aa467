// How a tunnel connection ended, for its `connection.closed` event: `closed_by` for ends that
// someone chose (the client, the session's end, the idle timeout), `error` only for failures.
// Normal closes audited as errors made every finished job look like an incident.
import { constants as h2 } from 'node:http2';
import type { ConnectionClosedBy } from '../audit/events.js';

export type CloseCause = { closedBy: ConnectionClosedBy } | { error: string };

/**
 * The client reset its stream: with CANCEL (what the ciport client sends when the app closes a
 * connection or the port closes) or NO_ERROR it closed on purpose; another code is a failure.
 */
export function clientResetCause(rstCode: number | undefined): CloseCause {
  if (rstCode === undefined || rstCode === h2.NGHTTP2_NO_ERROR || rstCode === h2.NGHTTP2_CANCEL) {
    return { closedBy: 'client' };
  }
  return { error: `client reset the stream (HTTP/2 error ${rstCode})` };
}
