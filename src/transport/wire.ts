// What the gateway and an agent say to each other on a tunnel stream beyond HTTP/2 itself
// (docs/agent.md, "Tunnels to an agent"): the request headers of a CONNECT towards an agent, and
// the refusal an exit answers with.
import type { ServerHttp2Stream } from 'node:http2';
import type { CiportError } from '../errors/index.js';

/** Headers the gateway puts on a CONNECT towards an agent. */
export const TUNNEL_HEADERS = {
  connection: 'ciport-connection',
  session: 'ciport-session',
  /** Epoch ms of the session's expiry (a per-session role is VALID UNTIL then). */
  expires: 'ciport-session-expires',
  /** JSON array: the roles the granting rule allows on this target (dynamic credentials). */
  grants: 'ciport-grants',
  /** The gateway's deployment id: the tag of the per-session roles the agent creates. */
  deployment: 'ciport-deployment',
} as const;

/** Answer a stream with the usual JSON error body and `ciport-error` (once, before any 200). */
export function refuseStream(stream: ServerHttp2Stream, err: CiportError): void {
  if (stream.destroyed || stream.closed || stream.headersSent) return;
  const body = JSON.stringify({ error: err.toJSON() });
  stream.respond({ ':status': err.httpStatus, 'content-type': 'application/json', 'ciport-error': err.code });
  stream.end(body);
}
