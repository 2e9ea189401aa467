// The JSON API of docs/protocol.md ("Session API"), over HTTP/2 or HTTP/1.1: session creation
// with an ID token, heartbeat and end with the session secret, list and revoke with an admin
// token, plus health, readiness and metrics.
import type { DenialLog } from '../audit/denials.js';
import { parseDuration } from '../config/duration.js';
import type { GatewayConfig, TargetConfig } from '../config/schema.js';
import { oneTimeCredential } from '../credentials/otp.js';
import type { SshCa } from '../credentials/ssh-ca.js';
import { asCiportError, CiportError, TokenRejectedError } from '../errors/index.js';
import type { ExitAdvertisement } from '../exits/contract.js';
import type { SsoRoleMap } from '../identity/operator-secret.js';
import type { TokenVerifier, VerifiedToken } from '../identity/verify.js';
import type { JobLiveness, JobRef } from '../jobs/index.js';
import type { Logger } from '../log/logger.js';
import { type DiscloseLevel, disclosedDecision, disclosedReason } from '../policy/disclose.js';
import type { Decision, Policy } from '../policy/engine.js';
import type { SessionManager } from '../session/manager.js';
import { principalSummary } from '../session/principal.js';
import { jobKey, projectKey, type RateDecision, type SessionRateLimit } from '../session/rate-limit.js';
import { bearer } from '../session/secret.js';
import { type SessionRecord, type Store, shownState } from '../store/types.js';
import { gatewayInfo } from '../transport/gateway-info.js';
import type { AgentHub } from './agents/hub.js';
import type { ApprovalNotifier } from './approval-notify.js';
import { approvalForJob, approvalStatus } from './approval-view.js';
import { approveSession, denySession, getApproval, listApprovals, waitApproval } from './approvals-api.js';
import type { GatewayDownloads } from './downloads.js';
import { parseJsonBody, type Req, type Res, readBody, readJsonBody, sendError, sendJson } from './http.js';
import type { GatewayMetrics } from './metrics.js';
import { currentSignIn, type OperatorLogin, operatorLoginOf, signOut } from './operator-login/api.js';
import { type AdminTokens, actorOf, authorizeOperator } from './operators.js';
import { getReview, postAttest } from './review-api.js';
import { postSshCertificate } from './ssh-api.js';

export interface ApiDeps {
  config: Readonly<GatewayConfig>;
  verifier: TokenVerifier;
  policy: Policy;
  manager: SessionManager;
  store: Store;
  limiter: SessionRateLimit;
  /** Writes `session.denied`, bounded (repeats are summarised). */
  denials: DenialLog;
  log: Logger;
  metrics: GatewayMetrics;
  targets: ReadonlyMap<string, TargetConfig>;
  /** The admin tokens in force (operators.ts); a reload swaps them. */
  adminTokens: AdminTokens;
  /** True when `sso:` is configured: people sign in (docs/sso.md) besides admin tokens. */
  ssoEnabled?: boolean;
  /** `sso:` in force: what a stored sign-in's groups grant now (operators.ts). */
  sso?: SsoRoleMap | undefined;
  /** `ciport login` (docs/login.md); absent without `sso.cli_client_id`. */
  operatorLogin?: OperatorLogin;
  /** True once SIGTERM (or drain()) was received. */
  draining: () => boolean;
  /** Job liveness (docs/job-liveness.md); absent: no issuer has `job_api`. */
  liveness?: JobLiveness;
  /** Agents: what they advertise describes targets the gateway's config does not. */
  agents?: AgentHub;
  /** The runner client and CA downloads (src/gateway/downloads.ts). */
  downloads: GatewayDownloads;
  /** This deployment's id: per-session MySQL user names carry it. */
  deploymentId?: string | undefined;
  /** `public_url`, else the bound URL: where approval links point (docs/approvals.md). */
  publicUrl: () => string;
  /** Announces pending approvals (`approvals.webhooks`); never awaited by session creation. */
  approvalNotifier?: ApprovalNotifier | undefined;
  /** The SSH user CA (docs/ssh.md), loaded on first use. */
  sshCa: () => SshCa;
}

type Handler = (deps: ApiDeps, req: Req, res: Res, params: string[]) => Promise<void>;

interface Route {
  method: string;
  pattern: RegExp;
  handler: Handler;
}

const ID = '(ses_[A-Za-z0-9_-]{1,64})';

const ROUTES: Route[] = [
  { method: 'GET', pattern: /^\/healthz$/, handler: healthz },
  { method: 'GET', pattern: /^\/readyz$/, handler: readyz },
  { method: 'GET', pattern: /^\/metrics$/, handler: metrics },
  { method: 'GET', pattern: /^\/v1\/info$/, handler: info },
  { method: 'POST', pattern: /^\/v1\/sessions$/, handler: createSession },
  { method: 'GET', pattern: /^\/v1\/sessions$/, handler: listSessions },
  { method: 'GET', pattern: /^\/v1\/whoami$/, handler: whoami },
  { method: 'POST', pattern: new RegExp(`^/v1/sessions/${ID}/heartbeat$`), handler: heartbeat },
  { method: 'DELETE', pattern: new RegExp(`^/v1/sessions/${ID}$`), handler: endSession },
  { method: 'GET', pattern: new RegExp(`^/v1/sessions/${ID}$`), handler: getSession },
  { method: 'POST', pattern: new RegExp(`^/v1/sessions/${ID}/revoke$`), handler: revokeSession },
  // SSH targets (docs/ssh.md): a certificate for the job's key, with the session secret.
  {
    method: 'POST',
    pattern: new RegExp(`^/v1/sessions/${ID}/ssh-certificate$`),
    handler: postSshCertificate,
  },
  // Approvals (docs/approvals.md): the job's wait, and the operators' list and decisions.
  { method: 'GET', pattern: new RegExp(`^/v1/sessions/${ID}/approval$`), handler: waitApproval },
  { method: 'GET', pattern: /^\/v1\/approvals$/, handler: listApprovals },
  { method: 'GET', pattern: new RegExp(`^/v1/approvals/${ID}$`), handler: getApproval },
  { method: 'POST', pattern: new RegExp(`^/v1/approvals/${ID}/approve$`), handler: approveSession },
  { method: 'POST', pattern: new RegExp(`^/v1/approvals/${ID}/deny$`), handler: denySession },
  { method: 'POST', pattern: /^\/v1\/hooks\/gitlab$/, handler: gitlabHook },
  // Operator sign-in for `ciport login` (docs/login.md): the gateway redeems the code itself.
  {
    method: 'POST',
    pattern: /^\/v1\/operator\/sessions$/,
    handler: (d, req, res) => operatorLoginOf(d).redeemCode(d, req, res),
  },
  {
    method: 'POST',
    pattern: /^\/v1\/operator\/device$/,
    handler: (d, req, res) => operatorLoginOf(d).startDevice(d, req, res),
  },
  {
    method: 'POST',
    pattern: /^\/v1\/operator\/device\/token$/,
    handler: (d, req, res) => operatorLoginOf(d).pollDevice(d, req, res),
  },
  { method: 'GET', pattern: /^\/v1\/operator\/sessions\/current$/, handler: currentSignIn },
  { method: 'DELETE', pattern: /^\/v1\/operator\/sessions\/current$/, handler: signOut },
  // Access reviews (docs/review.md), admin token required.
  { method: 'GET', pattern: /^\/v1\/review$/, handler: getReview },
  { method: 'POST', pattern: /^\/v1\/review\/attest$/, handler: postAttest },
  // Unauthenticated downloads for jobs (docs/gateway.md, "Serving the client and the CA").
  {
    method: 'GET',
    pattern: /^\/v1\/client\/linux-x64$/,
    handler: (d, req, res) => d.downloads.client(req, res),
  },
  {
    method: 'GET',
    pattern: /^\/v1\/client\/linux-x64\.sha256$/,
    handler: (d, req, res) => d.downloads.clientSha256(req, res),
  },
  { method: 'GET', pattern: /^\/v1\/ca\.crt$/, handler: (d, req, res) => d.downloads.ca(req, res) },
];

/** Route one API request. Never throws: every failure becomes the error body. */
export async function handleApi(deps: ApiDeps, req: Req, res: Res): Promise<void> {
  const url = new URL(req.url ?? '/', 'https://gateway.invalid');
  const method = req.method ?? 'GET';
  try {
    const pathMatches = ROUTES.filter((r) => r.pattern.test(url.pathname));
    const route = pathMatches.find((r) => r.method === method || (method === 'HEAD' && r.method === 'GET'));
    if (!route) {
      if (pathMatches.length > 0) {
        throw new CiportError('CIPORT_E_METHOD_NOT_ALLOWED', `${method} is not allowed on ${url.pathname}`);
      }
      throw new CiportError('CIPORT_E_NOT_FOUND', `no such endpoint: ${method} ${url.pathname}`);
    }
    const params = route.pattern.exec(url.pathname)?.slice(1) ?? [];
    await route.handler(deps, req, res, params);
  } catch (thrown) {
    const err = asCiportError(thrown);
    if (err.code === 'CIPORT_E_INTERNAL') {
      deps.log.error({ err: err.message, path: url.pathname }, 'request failed');
    }
    const endReason = err.details?.end_reason;
    sendError(res, err, {
      ...(endReason ? { errorFields: { end_reason: endReason } } : {}),
      ...(err.details?.decision ? { body: { decision: err.details.decision } } : {}),
      ...(err.code === 'CIPORT_E_BODY_TOO_LARGE' && req.httpVersionMajor === 1
        ? { headers: { connection: 'close' } }
        : {}),
      ...(typeof err.details?.retry_after_s === 'number'
        ? { headers: { 'retry-after': String(err.details.retry_after_s) } }
        : {}),
    });
  }
}

// ---- health ---------------------------------------------------------------------------------

async function healthz(_deps: ApiDeps, _req: Req, res: Res): Promise<void> {
  sendJson(res, 200, { ok: true });
}

async function readyz(deps: ApiDeps, _req: Req, res: Res): Promise<void> {
  if (deps.draining()) {
    sendJson(res, 503, { ok: false, reason: 'draining' });
    return;
  }
  try {
    await deps.store.auditHead();
    // Readable is not enough: a gateway whose store cannot write refuses every session.
    await deps.store.checkWritable?.();
  } catch (err) {
    const code = asCiportError(err).code;
    sendJson(res, 503, { ok: false, reason: `store: ${code}`, code });
    return;
  }
  sendJson(res, 200, { ok: true });
}

/** Unauthenticated: version, accepted audiences, sign-in (src/transport/gateway-info.ts). */
async function info(deps: ApiDeps, _req: Req, res: Res): Promise<void> {
  sendJson(res, 200, gatewayInfo(deps.config.issuers, await deps.operatorLogin?.info()));
}

async function metrics(deps: ApiDeps, _req: Req, res: Res): Promise<void> {
  const text = await deps.metrics.registry.metrics();
  res.statusCode = 200;
  res.setHeader('content-type', deps.metrics.registry.contentType);
  res.setHeader('cache-control', 'no-store');
  res.end(text);
}

// ---- sessions -------------------------------------------------------------------------------

interface CreateBody {
  targets: string[];
  ttlMs: number | undefined;
}

function parseCreateBody(body: unknown): CreateBody {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new CiportError('CIPORT_E_USAGE', 'request body must be a JSON object');
  }
  const { targets, ttl, ...rest } = body as Record<string, unknown>;
  const unknown = Object.keys(rest);
  if (unknown.length > 0) throw new CiportError('CIPORT_E_USAGE', `unknown field(s): ${unknown.join(', ')}`);
  let list: string[] = [];
  if (targets !== undefined) {
    if (
      !Array.isArray(targets) ||
      !targets.every((t) => typeof t === 'string' && /^[a-z0-9][a-z0-9_-]{0,62}$/.test(t))
    ) {
      throw new CiportError('CIPORT_E_USAGE', '"targets" must be an array of target names');
    }
    if (targets.length > 64) throw new CiportError('CIPORT_E_USAGE', 'at most 64 targets per session');
    list = targets as string[];
  }
  let ttlMs: number | undefined;
  if (ttl !== undefined && ttl !== null) {
    const parsed = typeof ttl === 'string' ? parseDuration(ttl) : undefined;
    if (parsed === undefined || parsed <= 0) {
      throw new CiportError('CIPORT_E_USAGE', '"ttl" must be a duration such as "10m" or "1h"');
    }
    ttlMs = parsed;
  }
  return { targets: list, ttlMs };
}

async function verifyBearer(deps: ApiDeps, req: Req): Promise<VerifiedToken> {
  const token = bearer(req.headers.authorization);
  if (!token) {
    throw new TokenRejectedError(
      'CIPORT_E_TOKEN_MALFORMED',
      'no ID token: send "Authorization: Bearer <token>"',
    );
  }
  return deps.verifier.verify(token);
}

/** The policy decision as the API shows it to the job, at the configured `policy.disclose`. */
export function decisionJson(deps: Pick<ApiDeps, 'config'>, decision: Decision): Record<string, unknown> {
  return disclosedDecision(decision, discloseLevel(deps));
}

/** Hand-built configs (tests, embedders) may lack the section: the schema's default then. */
function discloseLevel(deps: Pick<ApiDeps, 'config'>): DiscloseLevel {
  return (deps.config.policy as GatewayConfig['policy'] | undefined)?.disclose ?? 'condition';
}

async function createSession(deps: ApiDeps, req: Req, res: Res): Promise<void> {
  if (deps.draining()) {
    throw new CiportError(
      'CIPORT_E_GATEWAY_DRAINING',
      'the gateway is shutting down; retry on another instance',
    );
  }
  const raw = await readBody(req, deps.config.server.max_body_bytes);
  let verified: VerifiedToken;
  try {
    verified = await verifyBearer(deps, req);
  } catch (err) {
    const e = asCiportError(err);
    deps.metrics.sessionsDenied.inc({ reason: e.code });
    deps.log.info({ code: e.code, reason: e.message }, 'session refused: token rejected');
    throw e;
  }
  const body = parseCreateBody(parseJsonBody(raw));
  const issuer = verified.issuer.name;
  const subject = verified.principal.subject ?? '';

  const decision = deps.policy.decide({
    issuer,
    facts: verified.facts,
    targets: body.targets,
    ttlMs: body.ttlMs,
    defaultTtlMs: deps.config.sessions.default_ttl,
  });
  // Rate limits come after the (in-memory) policy decision, by its outcome: a denied token never
  // spends what allowed jobs need (docs/gateway.md, "Rate limits").
  if (decision.decision !== 'allow') {
    const limited = deps.limiter.takeDenied(issuer, projectKey(verified.principal));
    // Over its denial bucket: 429 without a log line or denial record (a flood must not grow them).
    if (!limited.ok) throw rateLimited(deps, issuer, limited);
    deps.metrics.sessionsDenied.inc({ reason: 'CIPORT_E_POLICY_DENIED' });
    const rule = decision.rule ?? decision.nearest?.rule ?? null;
    deps.log.info(
      { issuer, subject, targets: body.targets, rule, reason: decision.reason },
      'session denied',
    );
    await deps.denials.record(
      {
        principal: principalSummary(verified.principal),
        targets: body.targets,
        rule,
        reason: decision.reason,
        error_code: 'CIPORT_E_POLICY_DENIED',
        ...(decision.nearest ? { condition: decision.nearest.message } : {}),
      },
      decision.nearest?.claim,
    );
    // The operator's log and audit above keep the full reason; the job gets the disclosed one.
    throw new CiportError('CIPORT_E_POLICY_DENIED', disclosedReason(decision, discloseLevel(deps)), {
      details: { decision: decisionJson(deps, decision) },
    });
  }

  const rate = deps.limiter.take(issuer, jobKey(verified.principal, verified.claims));
  if (!rate.ok) {
    deps.log.warn({ issuer, subject, scope: rate.scope, key: rate.key }, 'session refused: rate limited');
    throw rateLimited(deps, issuer, rate);
  }

  // Job liveness: only after identity and policy (a denied token spends no API quota). A
  // finished job's token is refused even though it is unexpired; `unknown` passes (fail open).
  let jobRef: JobRef | null = null;
  const denied = async (err: CiportError) => {
    deps.metrics.sessionsDenied.inc({ reason: err.code });
    deps.log.info(
      { issuer, subject, targets: body.targets, code: err.code, reason: err.message },
      'session denied',
    );
    await deps.denials.record({
      principal: principalSummary(verified.principal),
      targets: body.targets,
      rule: decision.rule,
      reason: err.message,
      error_code: err.code,
    });
  };
  if (deps.liveness) {
    jobRef = deps.liveness.refFor(verified.issuer, verified.claims);
    if (jobRef) {
      try {
        await deps.liveness.assertRunning(jobRef, { job_url: verified.principal.job_url ?? null });
      } catch (err) {
        const e = asCiportError(err);
        if (e.code === 'CIPORT_E_JOB_NOT_RUNNING') await denied(e);
        throw e;
      }
    }
  }

  let opened: Awaited<ReturnType<SessionManager['open']>>;
  try {
    opened = await deps.manager.open(verified, decision, { jobRef });
  } catch (err) {
    const e = asCiportError(err);
    if (e.code === 'CIPORT_E_TOKEN_REPLAYED' || e.code === 'CIPORT_E_TOKEN_MISSING_CLAIM') await denied(e);
    throw e;
  }
  const record = opened.record;
  if (opened.pending) {
    // Announced off the request path: a slow or failing receiver never delays the job.
    deps.approvalNotifier?.pending(record);
  }
  sendJson(res, opened.pending ? 202 : 201, {
    id: record.id,
    secret: opened.secret,
    // 202: the session waits for approval; the client waits with GET …/approval (docs/approvals.md).
    ...(opened.pending
      ? { status: 'pending', approval: approvalForJob(deps, record) }
      : { status: 'active' }),
    expires_at: new Date(record.expiresAt).toISOString(),
    lease_expires_at: new Date(record.leaseExpiresAt).toISOString(),
    lease_timeout_ms: deps.manager.leaseTimeoutMs,
    heartbeat_interval_ms: deps.manager.heartbeatIntervalMs,
    rule: record.rule,
    principal: verified.principal,
    targets: decision.targets.map((t) => {
      const configured = deps.targets.get(t.target);
      const advertised = configured ? undefined : deps.agents?.targetInfo(t.target);
      const target = configured
        ? grantedTarget(configured)
        : advertised
          ? advertisedTarget(advertised)
          : undefined;
      return {
        name: t.target,
        protocol: target?.protocol ?? 'tcp',
        ...(target?.database !== undefined ? { database: target.database } : {}),
        ...(target?.user ? { user: target.user } : {}),
        // aws: what the client exports as AWS_REGION.
        ...(target?.region ? { region: target.region } : {}),
        // A one-time password for the client's local listener (kept nowhere).
        ...(target?.login
          ? {
              credentials: oneTimeCredential(
                { name: t.target, protocol: target.protocol, credentials: target.login },
                record.id,
                deps.deploymentId,
              ),
            }
          : {}),
        rule: t.rule,
        ttl_ms: Math.min(t.ttlMs, opened.ttlMs),
      };
    }),
  });
}

function rateLimited(deps: ApiDeps, issuer: string, rate: Exclude<RateDecision, { ok: true }>): CiportError {
  const retryAfterS = Math.max(1, Math.ceil(rate.waitMs / 1000));
  deps.metrics.sessionsDenied.inc({ reason: 'CIPORT_E_RATE_LIMITED' });
  const why = {
    job: `too many sessions for ${rate.key} of ${issuer}`,
    issuer: `issuer ${issuer} is at its session ceiling (sessions.rate_limit.per_issuer)`,
    project: `too many denied session requests from ${rate.key} of ${issuer}`,
    denials: `issuer ${issuer} is at its ceiling of denied session requests (sessions.rate_limit.denied.per_issuer)`,
  }[rate.scope];
  return new CiportError('CIPORT_E_RATE_LIMITED', `${why}; retry in ${retryAfterS} s`, {
    details: { retry_after_s: retryAfterS },
  });
}

/** What the session response says of a granted target: never a credential of the target's own. */
interface GrantedTarget {
  protocol: string;
  database?: string | undefined;
  /** The user the target's config (or its agent) names. */
  user?: string | undefined;
  /**
   * postgres, mysql with injected credentials: the client's listener logs the app in with a
   * one-time password (as this user, or the session's own account), the exit logs in upstream.
   */
  login?: { user?: string | undefined; dynamic: boolean } | undefined;
  /** aws: the target's region. */
  region?: string | undefined;
}

/** A target of this gateway's config. */
function grantedTarget(target: TargetConfig): GrantedTarget {
  const c = 'credentials' in target ? target.credentials : undefined;
  // RDS IAM: the exit logs in as aws_rds_iam.user with a token it makes per connection.
  const rdsIam = c && 'aws_rds_iam' in c ? (c.aws_rds_iam as { user: string } | undefined) : undefined;
  const user = c?.user ?? rdsIam?.user;
  const database =
    'database' in target && target.database !== undefined ? String(target.database) : undefined;
  // postgres, mysql: the exit logs in upstream, as the target's user or the session's own account.
  const logsIn = target.protocol === 'postgres' || target.protocol === 'mysql';
  const dynamic =
    logsIn && (target.credentials?.dynamic !== undefined || target.credentials?.vault_database !== undefined);
  const login = logsIn && (user || dynamic) ? { user, dynamic } : undefined;
  const region = target.protocol === 'aws' ? target.region : undefined;
  return { protocol: target.protocol, database, user, login, region };
}

/** A target only an agent serves, from what it advertised; the credentials stay on the agent. */
function advertisedTarget(info: ExitAdvertisement): GrantedTarget {
  const login =
    info.protocol === 'postgres'
      ? info.dynamic
        ? { dynamic: true }
        : { user: info.user ?? 'ciport', dynamic: false }
      : info.protocol === 'mysql' && (info.user || info.dynamic)
        ? info.dynamic
          ? { dynamic: true }
          : { user: info.user, dynamic: false }
        : undefined;
  return { protocol: info.protocol, database: info.database, user: login?.user, login, region: info.region };
}

async function whoami(deps: ApiDeps, req: Req, res: Res): Promise<void> {
  const verified = await verifyBearer(deps, req);
  const url = new URL(req.url ?? '/', 'https://gateway.invalid');
  const targets = url.searchParams.getAll('target');
  const decision = deps.policy.decide({
    issuer: verified.issuer.name,
    facts: verified.facts,
    targets,
    defaultTtlMs: deps.config.sessions.default_ttl,
  });
  sendJson(res, 200, { principal: verified.principal, decision: decisionJson(deps, decision) });
}

function sessionSecret(req: Req): string {
  const secret = bearer(req.headers.authorization);
  if (!secret)
    throw new CiportError('CIPORT_E_SESSION_UNAUTHORIZED', 'send "Authorization: Bearer <session secret>"');
  return secret;
}

async function heartbeat(deps: ApiDeps, req: Req, res: Res, [id]: string[]): Promise<void> {
  await readJsonBody(req, deps.config.server.max_body_bytes);
  const record = await deps.manager.heartbeat(id as string, sessionSecret(req));
  sendJson(res, 200, {
    state: record.approval?.state === 'pending' ? 'pending' : 'active',
    expires_at: new Date(record.expiresAt).toISOString(),
    lease_expires_at: new Date(record.leaseExpiresAt).toISOString(),
  });
}

async function endSession(deps: ApiDeps, req: Req, res: Res, [id]: string[]): Promise<void> {
  const record = await deps.manager.clientEnd(id as string, sessionSecret(req));
  sendJson(res, 200, { state: 'ended', end_reason: record.endReason });
}

// ---- admin ----------------------------------------------------------------------------------
// Each handler names the action it performs; authorizeOperator (operators.ts) checks the token
// and the role (401 / 403) and returns the operator the handler audits as `by`.

/** The session summary of docs/protocol.md (admin list, `ciport sessions list --json`). */
export function sessionSummary(s: SessionRecord): Record<string, unknown> {
  return {
    id: s.id,
    state: shownState(s),
    end_reason: s.endReason,
    targets: s.targets,
    principal: s.principal,
    rule: s.rule,
    created_at: new Date(s.createdAt).toISOString(),
    expires_at: new Date(s.expiresAt).toISOString(),
    lease_expires_at: new Date(s.leaseExpiresAt).toISOString(),
    ended_at: s.endedAt === null ? null : new Date(s.endedAt).toISOString(),
    // Who ended it and why (docs/operators.md): an operator's `token:<name>` and --reason.
    ended_by: s.endedBy ?? null,
    end_note: s.endNote ?? null,
    // Sessions whose rule has `approval:`: pending, approved, denied, timed_out or withdrawn.
    approval: s.approval ? approvalStatus(s) : null,
  };
}

async function listSessions(deps: ApiDeps, req: Req, res: Res): Promise<void> {
  await authorizeOperator(deps, req, 'sessions.read');
  const url = new URL(req.url ?? '/', 'https://gateway.invalid');
  const active = ['1', 'true', 'yes'].includes(url.searchParams.get('active') ?? '');
  const sessions = await deps.manager.list({ activeOnly: active });
  sendJson(res, 200, sessions.map(sessionSummary));
}

async function getSession(deps: ApiDeps, req: Req, res: Res, [id]: string[]): Promise<void> {
  await authorizeOperator(deps, req, 'sessions.read');
  const record = await deps.store.getSession(id as string);
  if (!record) throw new CiportError('CIPORT_E_SESSION_NOT_FOUND', `no session ${id}`);
  sendJson(res, 200, sessionSummary(record));
}

async function revokeSession(deps: ApiDeps, req: Req, res: Res, [id]: string[]): Promise<void> {
  const operator = await authorizeOperator(deps, req, 'sessions.revoke');
  const body = await readJsonBody(req, deps.config.server.max_body_bytes);
  // `by` is the operator (`token:<name>`), `note` their reason: both go into session.ended.
  const actor = actorOf(operator, body);
  const { record, revoked } = await deps.manager.revoke(id as string, actor.by, actor.note);
  // `revoked: false`: it had ended before (its own end_reason); nothing changed, nothing audited.
  sendJson(res, 200, {
    state: 'ended',
    end_reason: record.endReason,
    revoked,
    ended_at: record.endedAt === null ? null : new Date(record.endedAt).toISOString(),
  });
}

// ---- CI webhooks ----------------------------------------------------------------------------

/**
 * GitLab Job Hook (docs/job-liveness.md): verified by its secret token before the body is read
 * as JSON; a finished job ends its sessions at once, on this gateway through the liveness
 * watches and, for sessions held by other gateways sharing the store, through the store (their
 * holders are notified). 401 on a wrong secret, 204 otherwise (GitLab disables failing hooks).
 */
async function gitlabHook(deps: ApiDeps, req: Req, res: Res): Promise<void> {
  const raw = await readBody(req, deps.config.server.max_body_bytes);
  const result = deps.liveness?.handleGitlabHook(req.headers, raw) ?? { outcome: 'unauthorized' as const };
  if (result.outcome === 'unauthorized') {
    deps.log.warn({ path: req.url }, 'GitLab hook refused: wrong or missing X-Gitlab-Token');
    throw new CiportError('CIPORT_E_WEBHOOK_UNAUTHORIZED', 'wrong or missing X-Gitlab-Token');
  }
  if (result.outcome === 'applied' && result.state === 'finished') {
    const job = result.event.job;
    const by = `job_api ${result.issuer}: ${result.event.status} (webhook)`;
    const active = await deps.store.listSessions({ activeOnly: true, limit: 10_000 });
    const mine = active.filter((s) => {
      const ref = s.jobRef as Partial<JobRef> | null | undefined;
      return (
        ref?.platform === 'gitlab' && ref.issuer === result.issuer && (ref as { job?: string }).job === job
      );
    });
    await Promise.allSettled(mine.map((s) => deps.manager.end(s.id, 'job_finished', by)));
    deps.log.info(
      { issuer: result.issuer, job, status: result.event.status, sessions: mine.length },
      'GitLab job hook: job finished',
    );
  }
  res.statusCode = 204;
  res.setHeader('cache-control', 'no-store');
  res.end();
}
