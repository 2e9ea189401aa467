// What the gateway and an agent say to each other on a tunnel stream beyond HTTP/2 itself
// (docs/agent.md, "Tunnels to an agent"): the request headers of a CONNECT towards an agent, and
// the refusal an exit answers with.
import type { OutgoingHttpHeaders, ServerHttp2Stream } from 'node:http2';
import type { Duplex } from 'node:stream';
import type { CiportError } from '../errors/index.js';

/** The response header that repeats an error body's code (for clients that read no body). */
export const ERROR_HEADER = 'ciport-error';

/** The error body every ciport endpoint answers with: `{"error": {"code", "message"}}`. */
export function errorBody(err: CiportError): string {
  return JSON.stringify({ error: err.toJSON() });
}

/** The agent's link: an HTTP/1.1 upgrade to this protocol on this path, then HTTP/2 reversed. */
export const AGENT_UPGRADE_PROTOCOL = 'ciport-agent';
export const AGENT_CONNECT_PATH = '/v1/agents/connect';
/** Path the hub GETs on the agent for `{name, version, targets: [{name, protocol}]}`. */
export const AGENT_TARGETS_PATH = '/v1/targets';
/**
 * Path the hub POSTs `{refused: [names], message}` to when the agent advertised targets it is
 * not bound to (the agent logs it; an older agent answers 404, which is fine).
 */
export const AGENT_REFUSED_PATH = '/v1/targets/refused';
/** Paths the gateway requests on the agent (besides CONNECT and the targets). */
export const AGENT_EVENTS_PATH = '/v1/events';
export const AGENT_SESSION_ENDED_PATH = '/v1/sessions/ended';
export const AGENT_SESSIONS_ACTIVE_PATH = '/v1/sessions/active';
/** `{self, gateways: [{id, url}]}`: the gateways sharing this one's store (agents link to each). */
export const AGENT_GATEWAYS_PATH = '/v1/gateways';

/** An audit event an agent produced (role created/dropped, http.request), as it sends it. */
export interface AgentEventLine {
  /** Per agent process: `<boot id>:<seq>`; acknowledged by seq. */
  id: string;
  seq: number;
  type: string;
  data: Record<string, unknown>;
}

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
  /**
   * aws targets: base64url JSON `{expires_at, principal, session_policy?}`, what the exit names,
   * tags and bounds the role session with (src/exits/contract.ts ExitSessionFacts).
   */
  facts: 'ciport-session-facts',
} as const;

/** Answer a stream with the error body and `ciport-error` (once, before any 200). */
export function refuseStream(
  stream: ServerHttp2Stream,
  err: CiportError,
  headers: OutgoingHttpHeaders = {},
): void {
  if (stream.destroyed || stream.closed || stream.headersSent) return;
  stream.respond({
    ':status': err.httpStatus,
    'content-type': 'application/json; charset=utf-8',
    [ERROR_HEADER]: err.code,
    ...headers,
  });
  stream.end(errorBody(err));
}

const REASONS: Record<number, string> = { 401: 'Unauthorized', 404: 'Not Found', 405: 'Method Not Allowed' };

/** Answer a raw HTTP/1.1 connection (an upgrade or a CONNECT) with the error, then close it. */
export function refuseHttp1(socket: Duplex, err: CiportError): void {
  const body = errorBody(err);
  socket.end(
    `HTTP/1.1 ${err.httpStatus} ${REASONS[err.httpStatus] ?? 'Error'}\r\ncontent-type: application/json\r\n` +
      `${ERROR_HEADER}: ${err.code}\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
  setTimeout(() => socket.destroy(), 1_000).unref();
}
