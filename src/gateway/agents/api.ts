// Admin and agent endpoints of docs/agent.md, written as functions the gateway's server.ts mounts:
//   POST   /v1/agents/enroll        admin token     {name, targets, ttl?, reason?} → 201 {token, name, targets, expires_at}
//   POST   /v1/agents/register      enrollment tok. {}            → 201 {id, name, credential, expires_at}
//   POST   /v1/agents/rotate        agent credential {}           → 200 {id, name, credential, expires_at}
//   GET    /v1/agents               admin token                   → 200 [agent summary + connected]
//   POST   /v1/agents/{id|name}/revoke  admin token {reason?}     → 200 {revoked: [summary]}
//   POST   /v1/agents/{id|name}/targets admin token {set} | {add?, remove?}, reason? → 200 {agents: [summary]}
//   GET    /v1/agents/connect  Upgrade: ciport-agent, agent credential → 101, reverse HTTP/2
// The registry writes agent.enrolled / agent.credential_rotated / agent.revoked with the state
// change (one transaction), with the operator (`by`) and their `reason` (`note`) for the admin
// endpoints. Credentials are never logged: only agent ids, names and expiries.
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { parseDuration } from '../../config/duration.js';
import { asCiportError, CiportError } from '../../errors/index.js';
import type { Operator, OperatorAction, OperatorActor } from '../../identity/operator.js';
import type { Logger } from '../../log/logger.js';
import { bearer } from '../../session/secret.js';
import { AGENT_CONNECT_PATH, AGENT_UPGRADE_PROTOCOL, refuseHttp1 } from '../../transport/wire.js';
import { type Req, type Res, readJsonBody, sendError, sendJson } from '../http.js';
import { actorOf } from '../operators.js';
import type { AgentHub, ConnectedAgentInfo } from './hub.js';
import { type AgentRegistry, type AgentSummary, bindingNames, type TargetEdit } from './registry.js';

export interface AgentApiDeps {
  registry: AgentRegistry;
  hub: AgentHub;
  /**
   * The operator behind the request if their roles allow `action`; throws 401
   * CIPORT_E_ADMIN_UNAUTHORIZED or 403 CIPORT_E_ADMIN_FORBIDDEN (gateway/operators.ts).
   */
  authorize: (req: Req, action: OperatorAction) => Promise<Operator>;
  maxBodyBytes: number;
  log?: Logger | undefined;
}

const ENROLL_TTL_DEFAULT = 3_600_000;
const ENROLL_TTL_MAX = 7 * 86_400_000;

/**
 * Serve `/v1/agents…` requests. Returns false when the path is not one of them (the caller goes
 * on routing), true when it answered.
 */
export async function handleAgentApi(deps: AgentApiDeps, req: Req, res: Res): Promise<boolean> {
  const url = new URL(req.url ?? '/', 'http://x');
  const path = url.pathname;
  if (path !== '/v1/agents' && !path.startsWith('/v1/agents/')) return false;
  try {
    if (path === '/v1/agents/enroll') {
      allow(req, 'POST');
      const operator = await deps.authorize(req, 'agents.manage');
      const body = (await readJsonBody(req, deps.maxBodyBytes)) as {
        name?: unknown;
        targets?: unknown;
        ttl?: unknown;
        reason?: unknown;
      };
      const actor = actorOf(operator, body);
      if (typeof body.name !== 'string') throw new CiportError('CIPORT_E_USAGE', 'body needs {"name": "…"}');
      // Required: an agent serves only the targets it is bound to, and there is no wildcard.
      if (!Array.isArray(body.targets) || body.targets.length === 0)
        throw new CiportError(
          'CIPORT_E_USAGE',
          'body needs {"targets": ["…"]}: the targets the agent may serve',
        );
      let ttl = ENROLL_TTL_DEFAULT;
      if (body.ttl !== undefined) {
        if (typeof body.ttl !== 'string')
          throw new CiportError('CIPORT_E_USAGE', 'ttl: a duration such as "1h"');
        ttl = parseDuration(body.ttl) ?? -1;
        if (ttl <= 0 || ttl > ENROLL_TTL_MAX)
          throw new CiportError('CIPORT_E_USAGE', 'ttl: between 1s and 7d');
      }
      const { token, expires_at, targets } = await deps.registry.createEnrollment(
        body.name,
        bindingNames(body.targets),
        ttl,
        actor,
      );
      deps.log?.info(
        { name: body.name, targets, expires_at, by: actor.by },
        'agent enrollment token created',
      );
      sendJson(res, 201, { token, name: body.name, targets, expires_at });
      return true;
    }
    if (path === '/v1/agents/register') {
      allow(req, 'POST');
      await readJsonBody(req, deps.maxBodyBytes);
      const token = bearer(req.headers.authorization);
      if (!token) throw new CiportError('CIPORT_E_ENROLLMENT_INVALID', 'an enrollment token is required');
      const agent = await deps.registry.register(token);
      deps.log?.info({ agent: agent.id, name: agent.name, expires_at: agent.expires_at }, 'agent registered');
      sendJson(res, 201, agent);
      return true;
    }
    if (path === '/v1/agents/rotate') {
      allow(req, 'POST');
      await readJsonBody(req, deps.maxBodyBytes);
      let rotated: Awaited<ReturnType<AgentRegistry['rotate']>>;
      try {
        rotated = await deps.registry.rotate(bearer(req.headers.authorization));
      } catch (thrown) {
        const err = asCiportError(thrown);
        deps.log?.warn(
          { remote: req.socket?.remoteAddress, code: err.code },
          'agent credential rotation refused',
        );
        throw err;
      }
      deps.log?.info(
        { agent: rotated.id, name: rotated.name, expires_at: rotated.expires_at },
        'agent credential rotated',
      );
      sendJson(res, 200, rotated);
      return true;
    }
    if (path === '/v1/agents') {
      allow(req, 'GET');
      await deps.authorize(req, 'agents.read');
      sendJson(res, 200, await listAgents(deps));
      return true;
    }
    const m = /^\/v1\/agents\/([^/]+)\/revoke$/.exec(path);
    if (m?.[1]) {
      allow(req, 'POST');
      const operator = await deps.authorize(req, 'agents.manage');
      const actor = actorOf(operator, await readJsonBody(req, deps.maxBodyBytes));
      const revoked = await revokeAgents(deps, decodeURIComponent(m[1]), actor);
      sendJson(res, 200, { revoked });
      return true;
    }
    const bind = /^\/v1\/agents\/([^/]+)\/targets$/.exec(path);
    if (bind?.[1]) {
      allow(req, 'POST');
      const operator = await deps.authorize(req, 'agents.manage');
      const body = (await readJsonBody(req, deps.maxBodyBytes)) as Record<string, unknown>;
      const actor = actorOf(operator, body);
      const edit: TargetEdit =
        body.set !== undefined
          ? { set: bindingNames(body.set, 'set') }
          : {
              ...(body.add !== undefined ? { add: bindingNames(body.add, 'add') } : {}),
              ...(body.remove !== undefined ? { remove: bindingNames(body.remove, 'remove') } : {}),
            };
      if ('set' in edit && (body.add !== undefined || body.remove !== undefined))
        throw new CiportError('CIPORT_E_USAGE', 'give either "set" or "add"/"remove"');
      const agents = await deps.registry.setTargets(decodeURIComponent(bind[1]), edit, actor);
      for (const a of agents)
        deps.log?.info({ agent: a.id, name: a.name, targets: a.targets, by: actor.by }, 'agent targets');
      sendJson(res, 200, { agents });
      return true;
    }
    throw new CiportError('CIPORT_E_NOT_FOUND', `no such path ${path}`);
  } catch (thrown) {
    sendError(res, asCiportError(thrown));
    return true;
  }
}

/** Every agent with its live connections to this gateway (`GET /v1/agents`, the console). */
export async function listAgents(
  deps: Pick<AgentApiDeps, 'registry' | 'hub'>,
): Promise<Array<AgentSummary & { connections: ConnectedAgentInfo[] }>> {
  const live = deps.hub.list();
  return (await deps.registry.list()).map((a) => ({
    ...a,
    connections: live.filter((c) => c.agent === a.id),
  }));
}

/**
 * Revoke the agents with this id or name as `actor` and cut their connections at once
 * (`POST /v1/agents/{id|name}/revoke`, the console). The revoked agents; empty: revoked already.
 */
export async function revokeAgents(
  deps: Pick<AgentApiDeps, 'registry' | 'hub' | 'log'>,
  idOrName: string,
  actor: OperatorActor,
): Promise<AgentSummary[]> {
  const revoked = await deps.registry.revoke(idOrName, actor);
  for (const a of revoked) {
    const cut = deps.hub.disconnect(a.id, 'revoked');
    deps.log?.info({ agent: a.id, name: a.name, connections: cut, by: actor.by }, 'agent revoked');
  }
  return revoked;
}

function allow(req: Req, method: string): void {
  if (req.method !== method) throw new CiportError('CIPORT_E_METHOD_NOT_ALLOWED', `use ${method}`);
}

/**
 * The server's HTTP/1.1 'upgrade' event. Agent connects (`Upgrade: ciport-agent` on
 * `/v1/agents/connect`) are authenticated and handed to the hub; anything else is refused.
 * Never throws.
 */
export async function handleAgentUpgrade(
  deps: Pick<AgentApiDeps, 'registry' | 'hub' | 'log'>,
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
): Promise<void> {
  socket.on('error', () => {});
  const path = (req.url ?? '').split('?')[0];
  const proto = String(req.headers.upgrade ?? '').toLowerCase();
  if (path !== AGENT_CONNECT_PATH || proto !== AGENT_UPGRADE_PROTOCOL || req.method !== 'GET') {
    refuseHttp1(socket, new CiportError('CIPORT_E_NOT_FOUND', 'unsupported upgrade'));
    return;
  }
  let agent: Awaited<ReturnType<AgentRegistry['authenticate']>>;
  try {
    agent = await deps.registry.authenticate(bearer(req.headers.authorization));
  } catch (thrown) {
    const err = asCiportError(thrown);
    deps.log?.warn({ remote: req.socket.remoteAddress, code: err.code }, 'agent connect refused');
    refuseHttp1(socket, err);
    return;
  }
  try {
    await deps.hub.accept(socket, head, { id: agent.id, name: agent.name }, agent.targets);
    void deps.registry.touch(agent.id).catch(() => {});
  } catch (thrown) {
    deps.log?.warn({ agent: agent.id, err: asCiportError(thrown).message }, 'agent connect failed');
  }
}

/**
 * Wire registry changes to the hub: revoked agents are cut at once; a changed binding applies to
 * the agent's live connections at once.
 */
export function linkRevocations(registry: AgentRegistry, hub: AgentHub): void {
  registry.on('revoked', (a) => hub.disconnect(a.id, 'revoked'));
  registry.on('targets', (a) => hub.rebind(a.id, a.targets));
}
