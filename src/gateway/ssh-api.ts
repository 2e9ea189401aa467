// POST /v1/sessions/{id}/ssh-certificate (docs/ssh.md, docs/protocol.md): the job's client sends
// the public half of a key pair it made in memory; the gateway signs an OpenSSH user certificate
// for it — key id naming the job, the principals the target allows and the granting rule keeps,
// valid until the session's expiry, `permit-pty` plus what the rule permits, `source-address`
// when the target names the exit's egress — and audits `ssh.certificate_issued`. Authenticated
// with the session secret; a pending (unapproved) or ended session gets nothing.
import type sshpk from 'sshpk';
import { auditEvent } from '../audit/events.js';
import type { SshCa } from '../credentials/ssh-ca.js';
import {
  certificatePrincipal,
  parsePublicKeyLine,
  type SshExtension,
  type SshPermit,
  signUserCertificate,
  fingerprint as sshFingerprint,
} from '../credentials/ssh-keys.js';
import { CiportError } from '../errors/index.js';
import type { SshTargetInfo } from '../exits/contract.js';
import { sshTargetInfo } from '../exits/ssh/definition.js';
import type { Principal } from '../identity/principal.js';
import { principalSummary } from '../session/principal.js';
import { bearer } from '../session/secret.js';
import type { SessionRecord } from '../store/types.js';
import type { ApiDeps } from './api.js';
import { grantingRule, noLongerGranted } from './granting-rule.js';
import { type Req, type Res, readJsonBody, sendJson } from './http.js';

/**
 * Certificates one session may get (each is audited: a job cannot flood the log). Counted in the
 * store, from the session's `ssh.certificate_issued` events (the audit search's session index):
 * the same count after a restart and on every gateway sharing the store.
 */
export const MAX_CERTIFICATES_PER_SESSION = 16;

async function checkBudget(deps: ApiDeps, session: string): Promise<void> {
  const { events } = await deps.store.searchAudit({
    types: ['ssh.certificate_issued'],
    session,
    limit: MAX_CERTIFICATES_PER_SESSION,
  });
  if (events.length >= MAX_CERTIFICATES_PER_SESSION)
    throw refused(
      `session ${session} already got ${MAX_CERTIFICATES_PER_SESSION} SSH certificates (the most one session may have)`,
    );
}

/**
 * Per session, one certificate at a time on this gateway: the count and the event that adds to
 * it are not one transaction, so concurrent requests of one session would all see the same count.
 * (Gateways sharing a store may each let one concurrent request past the bound.)
 */
const pending = new Map<string, Promise<unknown>>();
function oneAtATime<T>(session: string, run: () => Promise<T>): Promise<T> {
  const result = (pending.get(session) ?? Promise.resolve()).then(run, run);
  const tail = result.catch(() => undefined);
  pending.set(session, tail);
  void tail.then(() => {
    if (pending.get(session) === tail) pending.delete(session);
  });
  return result;
}

/** Certificates start this far back, so a runner clock a little behind the host's still works. */
const BACKDATE_MS = 60_000;

function refused(message: string): CiportError {
  return new CiportError('CIPORT_E_SSH_CERTIFICATE_REFUSED', message);
}

function parseBody(body: unknown): { target: string; publicKey: string } {
  const b = (body ?? {}) as Record<string, unknown>;
  const { target, public_key: publicKey, ...rest } = b;
  if (Object.keys(rest).length > 0)
    throw new CiportError('CIPORT_E_USAGE', `unknown field(s): ${Object.keys(rest).join(', ')}`);
  if (typeof target !== 'string' || !/^[a-z0-9][a-z0-9_-]{0,62}$/.test(target))
    throw new CiportError('CIPORT_E_USAGE', '"target" must be a target name');
  if (typeof publicKey !== 'string' || publicKey.length > 16_384)
    throw new CiportError('CIPORT_E_USAGE', '"public_key" must be an OpenSSH public key line');
  return { target, publicKey };
}

/** The ssh facts of a target: the gateway's own, else what its agent advertised. */
function targetInfo(deps: ApiDeps, name: string): SshTargetInfo | undefined {
  const configured = deps.targets.get(name);
  if (configured) return configured.protocol === 'ssh' ? sshTargetInfo(configured) : undefined;
  const advertised = deps.agents?.targetInfo(name);
  return advertised?.protocol === 'ssh' ? advertised.ssh : undefined;
}

/** `ciport session=… project=… ref=… pipeline=… job=…`: what sshd logs as the key id. */
function keyIdOf(record: SessionRecord): string {
  const p = principalSummary(record.principal);
  const part = (k: string, v: string | null | undefined) =>
    v ? ` ${k}=${String(v).replace(/[^\x21-\x7e]/g, '_')}` : '';
  return (
    `ciport session=${record.id}${part('project', p.project)}${part('ref', p.ref)}` +
    `${part('pipeline', p.pipeline)}${part('job', p.job)}`
  );
}

export async function postSshCertificate(deps: ApiDeps, req: Req, res: Res, [id]: string[]): Promise<void> {
  const body = parseBody(await readJsonBody(req, deps.config.server.max_body_bytes));
  const secret = bearer(req.headers.authorization);
  if (!secret)
    throw new CiportError('CIPORT_E_SESSION_UNAUTHORIZED', 'send "Authorization: Bearer <session secret>"');
  const { record } = await deps.manager.authenticate(id as string, secret);
  if (!record.targets.includes(body.target))
    throw new CiportError(
      'CIPORT_E_TARGET_NOT_GRANTED',
      `session ${record.id} was not granted ${body.target}`,
    );
  const principal = record.principal as unknown as Partial<Principal>;
  // Forks and untrusted events: even a rule that lets them in gets no login to a host.
  if (principal.fork === true || principal.trusted_event === false)
    throw refused(`no SSH certificate for a job from a fork or an untrusted event (session ${record.id})`);
  const info = targetInfo(deps, body.target);
  if (!info) throw refused(`${body.target} is not an ssh target (or its agent advertised no ssh settings)`);
  const subject = parsePublicKeyLine(body.publicKey);
  if (typeof subject === 'string') throw new CiportError('CIPORT_E_USAGE', `"public_key": ${subject}`);

  await oneAtATime(record.id, () => issue(deps, res, record, body.target, subject, info));
}

async function issue(
  deps: ApiDeps,
  res: Res,
  record: SessionRecord,
  target: string,
  subject: sshpk.Key,
  info: SshTargetInfo,
): Promise<void> {
  await checkBudget(deps, record.id);
  // The rule as the config in force has it. A reload that removed the rule, or took the target
  // from it, must not leave its live sessions with no `ssh:` narrowing (every principal of the
  // target): no rule granting the target now, no certificate.
  const granting = grantingRule(deps.config.rules, record, target);
  const { rule, name: ruleName } = granting;
  if (!rule) throw refused(noLongerGranted(granting, record.id, target));
  const ruleSsh = rule.ssh?.[target];
  const logins = ruleSsh?.principals
    ? info.principals.filter((p) => ruleSsh.principals?.includes(p))
    : info.principals;
  if (logins.length === 0) throw refused(`rule ${ruleName ?? '?'} grants no principal that ${target} allows`);
  // Target-scoped (certificatePrincipal): a certificate for this target is no login elsewhere.
  const certificatePrincipals = logins.map((login) => certificatePrincipal(target, login));
  const permits: readonly SshPermit[] = ruleSsh?.permit ?? ['pty'];
  const extensions = permits.map((p) => `permit-${p}` as SshExtension);
  const now = Date.now();
  const validAfter = new Date(now - BACKDATE_MS);
  const validBefore = new Date(record.expiresAt);
  const keyId = keyIdOf(record);
  const ca: SshCa = deps.sshCa();
  const signed = signUserCertificate(ca.key, {
    subject,
    keyId,
    principals: certificatePrincipals,
    validAfter,
    validBefore,
    extensions,
    sourceAddress: info.source_address,
  });
  await deps.store.appendAudit(
    auditEvent('ssh.certificate_issued', {
      session: record.id,
      principal: principalSummary(record.principal),
      rule: ruleName,
      target: target,
      key_id: keyId,
      principals: logins,
      certificate_principals: certificatePrincipals,
      valid_after: validAfter.toISOString(),
      valid_before: validBefore.toISOString(),
      serial: signed.serial,
      extensions: [...extensions].sort(),
      ...(info.source_address ? { source_address: info.source_address } : {}),
      key_fingerprint: sshFingerprint(subject),
      ca_fingerprint: ca.fingerprint,
    }),
  );
  deps.log.info(
    { session: record.id, target: target, principals: certificatePrincipals, serial: signed.serial },
    'ssh certificate issued',
  );
  sendJson(res, 201, {
    certificate: signed.line,
    key_id: keyId,
    serial: signed.serial,
    principals: logins,
    certificate_principals: certificatePrincipals,
    valid_after: validAfter.toISOString(),
    valid_before: validBefore.toISOString(),
    host_key_alias: info.host_key_alias,
    ...(info.host_keys ? { host_keys: info.host_keys } : {}),
    ...(info.host_ca ? { host_ca: info.host_ca } : {}),
  });
}
