// What every console page handler gets, and the dependencies the gateway hands the console. The
// console never reaches into the gateway's internals: the actions the admin API performs (revoke
// a session or an agent, list agents) come in as functions that the API handlers call too.
import type { GatewayConfig } from '../config/schema.js';
import type { SsoConfig } from '../config/sso.js';
import type { ConnectedAgentInfo } from '../gateway/agents/hub.js';
import type { AgentSummary } from '../gateway/agents/registry.js';
import type { Req, Res } from '../gateway/http.js';
import type { OperatorActor } from '../identity/operator.js';
import type { Logger } from '../log/logger.js';
import type { Policy } from '../policy/engine.js';
import type { SessionManager } from '../session/manager.js';
import type { Store } from '../store/types.js';
import type { Viewer } from './layout.js';

/** An agent as the console lists it: the admin API's `GET /v1/agents` entry. */
export type ConsoleAgent = AgentSummary & { connections: ConnectedAgentInfo[] };

export interface ConsoleDeps {
  /** `sso:`; absent: the console answers that sign-in is not configured. */
  sso: SsoConfig | undefined;
  /** The configuration in force (a reload swaps rules and issuers). */
  config: () => Readonly<GatewayConfig>;
  /** The compiled policy in force (the explain box decides with it). */
  policy: () => Policy;
  store: Store;
  sessions: Pick<
    SessionManager,
    'list' | 'revoke' | 'liveConnections' | 'pendingApprovals' | 'withVotes' | 'decide'
  >;
  agents: {
    list(): Promise<ConsoleAgent[]>;
    /** What `POST /v1/agents/{id}/revoke` does: revoke, cut its connections, audit with `actor`. */
    revoke(idOrName: string, actor: OperatorActor): Promise<unknown[]>;
  };
  log: Logger;
  /** `public_url`, else the bound URL: the redirect URI is `<its origin>/ui/callback`. */
  publicUrl: string;
  /** `server.max_body_bytes`: the largest form accepted. */
  maxBodyBytes: number;
  /** For the provider's discovery and token endpoint (tests may pass their own). */
  fetch?: typeof fetch | undefined;
  now?: () => number;
}

export interface PageCtx {
  deps: ConsoleDeps;
  req: Req;
  res: Res;
  url: URL;
  viewer: Viewer;
  /** The POST's form (already CSRF-checked); undefined for GET. */
  form: URLSearchParams | undefined;
  /** Path parameters of the route. */
  params: string[];
  now: number;
}
