// What happens to sessions and their tunnel connections, published on `node:diagnostics_channel`
// (the pattern undici uses): the session manager and the gateway's tunnels publish, and whoever
// wants to know subscribes (the gateway's metrics; a test; an embedding application) instead of
// being threaded through constructors. Channels are process-wide, so every message names the
// gateway instance it comes from (several gateways can run in one process, as in the tests).
import { channel } from 'node:diagnostics_channel';
import type { EndReason } from './reasons.js';

export interface SessionOpenedMessage {
  gateway: string;
  session: string;
  issuer: string;
}
export interface SessionEndedMessage {
  gateway: string;
  session: string;
  reason: EndReason;
}
/** The number of sessions this gateway serves changed. */
export interface SessionsLiveMessage {
  gateway: string;
  count: number;
}
/** A session was created pending approval (docs/approvals.md). */
export interface ApprovalRequestedMessage {
  gateway: string;
  session: string;
}
/** A pending session's approval was decided on this gateway. */
export interface ApprovalDecidedMessage {
  gateway: string;
  session: string;
  outcome: 'approved' | 'denied' | 'timed_out';
}
export interface TunnelOpenedMessage {
  gateway: string;
  session: string;
  connection: string;
  target: string;
}
export interface TunnelClosedMessage extends TunnelOpenedMessage {
  /** Bytes from the client towards the target, and back. */
  up: number;
  down: number;
}
export interface TunnelRefusedMessage {
  gateway: string;
  code: string;
}

/** The channels, by name (`ciport:<subject>:<event>`). */
export const events = {
  sessionOpened: channel('ciport:session:opened'),
  sessionEnded: channel('ciport:session:ended'),
  sessionsLive: channel('ciport:session:live'),
  approvalRequested: channel('ciport:approval:requested'),
  approvalDecided: channel('ciport:approval:decided'),
  tunnelOpened: channel('ciport:tunnel:opened'),
  tunnelClosed: channel('ciport:tunnel:closed'),
  tunnelRefused: channel('ciport:tunnel:refused'),
} as const;

interface Messages {
  sessionOpened: SessionOpenedMessage;
  sessionEnded: SessionEndedMessage;
  sessionsLive: SessionsLiveMessage;
  approvalRequested: ApprovalRequestedMessage;
  approvalDecided: ApprovalDecidedMessage;
  tunnelOpened: TunnelOpenedMessage;
  tunnelClosed: TunnelClosedMessage;
  tunnelRefused: TunnelRefusedMessage;
}

/** Publish, at the cost of one check when nobody listens. */
export function publish<K extends keyof Messages>(name: K, message: Messages[K]): void {
  const ch = events[name];
  if (ch.hasSubscribers) ch.publish(message);
}

/**
 * Subscribe to the messages of one gateway instance; returns the unsubscribe function.
 */
export function subscribe(
  gateway: string,
  handlers: { [K in keyof Messages]?: (message: Messages[K]) => void },
): () => void {
  const undo: Array<() => void> = [];
  for (const name of Object.keys(handlers) as Array<keyof Messages>) {
    const handler = handlers[name] as ((message: unknown) => void) | undefined;
    if (!handler) continue;
    const listener = (message: unknown) => {
      if ((message as { gateway?: string }).gateway === gateway) handler(message);
    };
    events[name].subscribe(listener);
    undo.push(() => events[name].unsubscribe(listener));
  }
  return () => {
    for (const u of undo) u();
  };
}
