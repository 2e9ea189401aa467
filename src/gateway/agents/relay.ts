// The gateway half of a tunnel whose target an agent serves: the client's CONNECT stream is
// answered by relaying it onto a CONNECT stream towards an agent (AgentHub.connect). Bytes flow
// with `pipe` both ways (HTTP/2 flow control on both hops is the only buffer bound; not
// `pipeline`, whose teardown would destroy the client stream before its RST_STREAM is out);
// resets cross over: the agent's reset or loss becomes CONNECT_ERROR towards the client, the
// client's reset, the idle timeout or `signal` (session ended) become CANCEL towards the agent.
import type { ClientHttp2Stream, OutgoingHttpHeaders, ServerHttp2Stream } from 'node:http2';
import { constants as h2 } from 'node:http2';
import { pauseWhileFull } from '../../audit/backlog.js';
import type { ConnectionClosedBy } from '../../audit/events.js';
import { asCiportError, type CiportError } from '../../errors/index.js';
import { resetStream } from '../../transport/h2.js';
import { refuseStream, TUNNEL_HEADERS } from '../../transport/wire.js';
import { clientResetCause } from '../close-cause.js';
import type { AgentHub, AgentIdentity } from './hub.js';

export interface AgentRoutes {
  hub: AgentHub;
  /** `${session}\0${target}` → the agent that carries that session's connections to it. */
  sticky: Map<string, string>;
}

export interface AgentRelayOptions {
  /** The tunnel's connection id, sent to the agent in `ciport-connection` (its logs name it). */
  connectionId?: string | undefined;
  /** More request headers for the agent (session id, expiry, grants). */
  headers?: OutgoingHttpHeaders | undefined;
  /** Agent id to use when it serves the target (a session's connections stick to one agent). */
  prefer?: string | undefined;
  /** Sees every chunk the client sends towards the target (the gateway's query audit). */
  onClientData?: ((chunk: Buffer) => void) | undefined;
  /** Sees every chunk coming back from the target (protocols whose audit needs the answers). */
  onTargetData?: ((chunk: Buffer) => void) | undefined;
  /** Audit backpressure: reading from the client pauses while this returns a promise. */
  room?: (() => Promise<void> | undefined) | undefined;
  /** No bytes either way for this long: both streams are reset with CANCEL. */
  idleTimeoutMs?: number | undefined;
  /** Aborted when the session ends: both streams are reset with CANCEL at once. */
  signal?: AbortSignal | undefined;
  /** Called once the agent answered 200 and the client got its 200 (audit connection.opened). */
  onOpen?: ((agent: AgentIdentity) => void) | undefined;
}

export interface AgentRelayResult {
  /** The agent that carried it (undefined when none could be reached). */
  agent: AgentIdentity | undefined;
  opened: boolean;
  bytesToTarget: number;
  bytesFromTarget: number;
  /** Why it did not end normally. */
  error: string | undefined;
  /** Ended on purpose, nothing failed: the client reset it, the session ended, idle timeout. */
  closedBy?: ConnectionClosedBy | undefined;
  /** The refusal sent to the client when no agent stream could be opened. */
  refused: CiportError | undefined;
}

/**
 * Serve `client` (a CONNECT stream the gateway accepted, not yet answered) through an agent
 * serving `target`. Resolves when both streams have closed. Never throws.
 */
export async function relayViaAgent(
  hub: AgentHub,
  client: ServerHttp2Stream,
  target: string,
  options: AgentRelayOptions = {},
): Promise<AgentRelayResult> {
  const result: AgentRelayResult = {
    agent: undefined,
    opened: false,
    bytesToTarget: 0,
    bytesFromTarget: 0,
    error: undefined,
    refused: undefined,
  };
  client.on('error', () => {});
  let agentStream: ClientHttp2Stream;
  try {
    const opened = await hub.connect(
      target,
      {
        ...options.headers,
        ...(options.connectionId ? { [TUNNEL_HEADERS.connection]: options.connectionId } : {}),
      },
      options.prefer,
    );
    agentStream = opened.stream;
    result.agent = opened.agent;
  } catch (thrown) {
    const err = asCiportError(thrown);
    result.refused = err;
    result.error = `${err.code}: ${err.message}`;
    refuseClient(client, err);
    return result;
  }
  agentStream.on('error', () => {});
  if (client.destroyed || client.closed || options.signal?.aborted) {
    resetStream(agentStream, h2.NGHTTP2_CANCEL);
    result.error = options.signal?.aborted ? 'session ended' : 'client went away';
    return result;
  }
  result.opened = true;
  client.setMaxListeners(32);
  agentStream.setMaxListeners(32);
  client.respond({ ':status': 200 });
  options.onOpen?.(result.agent as AgentIdentity);

  const cancelBoth = (why: ConnectionClosedBy) => {
    if (result.error === undefined) result.closedBy ??= why;
    resetStream(agentStream, h2.NGHTTP2_CANCEL);
    resetStream(client, h2.NGHTTP2_CANCEL);
  };
  const onAbort = () => cancelBoth('session');
  options.signal?.addEventListener('abort', onAbort, { once: true });
  if (options.idleTimeoutMs) client.setTimeout(options.idleTimeoutMs, () => cancelBoth('idle_timeout'));

  const observe = options.onClientData;
  client.on('data', (c: Buffer) => {
    result.bytesToTarget += c.length;
    observe?.(c);
  });
  if (observe && options.room) pauseWhileFull(client, options.room);
  const observeTarget = options.onTargetData;
  agentStream.on('data', (c: Buffer) => {
    result.bytesFromTarget += c.length;
    observeTarget?.(c);
  });
  const agentFailed = (why: string) => {
    result.error ??= why;
    resetStream(client, h2.NGHTTP2_CONNECT_ERROR);
  };
  // The agent's link went away: reset the client's stream by destroying it, which sends
  // RST_STREAM(INTERNAL_ERROR) and nothing else; close() would send END_STREAM first, and the
  // app could take that for the target closing the connection.
  const agentLost = (why: string) => {
    result.error ??= why;
    if (!client.destroyed) client.destroy(new Error(why));
  };
  agentStream.on('error', (err: Error) => {
    if (agentStream.rstCode === h2.NGHTTP2_CONNECT_ERROR) agentFailed(`agent stream failed (${err.message})`);
    else agentLost(`agent stream failed (${err.message})`);
  });
  // Ends are passed on by hand: a dead agent's session tears its streams down with an end of
  // data, which must reach the app as a reset (a lost agent), not as a target that closed.
  agentStream.once('end', () => {
    const session = agentStream.session;
    if (!session || session.destroyed || session.closed) agentLost('agent connection lost');
    else if (!client.writableEnded) client.end();
  });
  client.once('end', () => {
    if (!agentStream.writableEnded && !agentStream.destroyed) agentStream.end();
  });
  // The agent resets a stream with CONNECT_ERROR when its target fails; any other abort is the
  // link going away (its session's teardown shows as CANCEL).
  agentStream.once('aborted', () => {
    if (agentStream.rstCode === h2.NGHTTP2_CONNECT_ERROR) agentFailed('the target failed at the agent');
    else agentLost('agent connection lost');
  });
  agentStream.once('close', () => {
    if (agentStream.rstCode !== undefined && agentStream.rstCode !== h2.NGHTTP2_NO_ERROR) {
      result.error ??= `agent reset the stream (${agentStream.rstCode})`;
      resetStream(client, h2.NGHTTP2_CONNECT_ERROR);
    } else if (!agentStream.readableEnded) {
      agentLost('agent connection lost');
    }
  });
  client.once('aborted', () => {
    const cause = clientResetCause(client.rstCode);
    if ('error' in cause) result.error ??= cause.error;
    else if (result.error === undefined) result.closedBy ??= cause.closedBy;
    resetStream(agentStream, h2.NGHTTP2_CANCEL);
  });

  await new Promise<void>((resolve) => {
    let pending = 2;
    const settle = () => {
      if (--pending === 0) resolve();
    };
    client.pipe(agentStream, { end: false });
    agentStream.pipe(client, { end: false });
    client.once('close', () => {
      if (!agentStream.closed) resetStream(agentStream, h2.NGHTTP2_CANCEL);
      settle();
    });
    agentStream.once('close', () => settle());
  });
  options.signal?.removeEventListener('abort', onAbort);
  return result;
}

function refuseClient(client: ServerHttp2Stream, err: CiportError): void {
  // No agent right now is a passing condition (a restart, a partition): say when to retry.
  refuseStream(client, err, err.code === 'CIPORT_E_NO_AGENT' ? { 'retry-after': '5' } : {});
}
