// Authentication and authorization of admin API requests (docs/operators.md). A request's bearer
// token is either an operator secret from `ciport login` (`cpo_…`, looked up by its hash among
// the store's sign-ins: docs/sso.md) or compared, in constant time, with every configured admin
// token; the match is the operator (`{kind: 'token', name, roles}` or `{kind: 'oidc', …}`). Each
// endpoint then names the action it performs and
// the operator's roles must allow it. A missing or wrong token is 401 CIPORT_E_ADMIN_UNAUTHORIZED,
// a known token whose roles do not allow the action is 403 CIPORT_E_ADMIN_FORBIDDEN; both are
// logged with the path (and, for 403, the operator's name), never with the token.
import { createHash, timingSafeEqual } from 'node:crypto';
import { type AdminTokenConfig, adminTokenEntries } from '../config/admin-tokens.js';
import type { OperatorRole } from '../config/roles.js';
import { CiportError, ConfigError } from '../errors/index.js';
import {
  mayDo,
  OPERATOR_REASON_MAX,
  type Operator,
  type OperatorAction,
  type OperatorActor,
  operatorRef,
  ROLE_ACTIONS,
  type TokenOperator,
} from '../identity/operator.js';
import { isOperatorSecret, operatorUnder, type SsoRoleMap } from '../identity/operator-secret.js';
import type { Logger } from '../log/logger.js';
import { bearer, hashSecret } from '../session/secret.js';
import type { OperatorSessionStore } from '../store/operator-sessions.js';
import { printable } from '../text/printable.js';
import type { Req } from './http.js';

/** A resolved admin token: the operator it stands for and the SHA-256 of its value. */
interface KnownToken {
  operator: TokenOperator;
  digest: Buffer;
}

/** The admin tokens in force; rebuilt on reload and swapped as a whole. */
export class AdminTokens {
  readonly #tokens: readonly KnownToken[];

  private constructor(tokens: KnownToken[]) {
    this.#tokens = tokens;
  }

  /**
   * From `admin_tokens:` (secrets already resolved). Two entries with the same value are refused:
   * the gateway could not tell which operator presented it.
   */
  static fromConfig(list: readonly AdminTokenConfig[]): AdminTokens {
    const tokens: KnownToken[] = [];
    for (const entry of adminTokenEntries(list)) {
      const value = entry.token.reveal();
      const digest = createHash('sha256').update(value, 'utf8').digest();
      const twin = tokens.find((t) => t.digest.equals(digest));
      if (value.length === 0 || twin) {
        throw new ConfigError(
          'CIPORT_E_CONFIG_INVALID',
          value.length === 0
            ? `admin_tokens: token "${entry.name}" is empty`
            : `admin_tokens: "${entry.name}" and "${twin?.operator.name}" have the same value (${entry.token.origin}); give each holder its own token`,
        );
      }
      const operator: TokenOperator = { kind: 'token', name: entry.name, roles: entry.roles };
      if (entry.groups.length > 0) operator.groups = entry.groups;
      tokens.push({ operator, digest });
    }
    return new AdminTokens(tokens);
  }

  get size(): number {
    return this.#tokens.length;
  }

  /** The operator whose token `presented` is, or undefined. Compares with every token. */
  match(presented: string): TokenOperator | undefined {
    const a = createHash('sha256').update(presented, 'utf8').digest();
    let found: TokenOperator | undefined;
    for (const t of this.#tokens) if (timingSafeEqual(a, t.digest) && !found) found = t.operator;
    return found;
  }
}

/**
 * Who may use the admin API, for `config.loaded`: each token's name, roles and approval groups
 * (never its value or where it comes from), so an access review can tell which operators a
 * configuration allowed and who could approve.
 */
export function operatorRoster(
  list: readonly AdminTokenConfig[],
): Array<{ name: string; roles: OperatorRole[]; groups?: string[] }> {
  return adminTokenEntries(list).map((e) => ({
    name: e.name,
    roles: e.roles,
    ...(e.groups.length > 0 ? { groups: e.groups } : {}),
  }));
}

/**
 * The operator behind `req`, if their roles allow `action`; throws 401 or 403 otherwise (see the
 * file comment). The returned operator is what the handler audits as `by`.
 */
export async function authorizeOperator(
  deps: OperatorAuthDeps,
  req: Req,
  action: OperatorAction,
): Promise<Operator> {
  const path = (req.url ?? '').split('?')[0];
  const presented = bearer(req.headers.authorization);
  let operator: Operator | undefined;
  let why: string | undefined;
  if (presented && isOperatorSecret(presented)) {
    const signedIn = await deps.store.operatorSession(hashSecret(presented), Date.now());
    if (signedIn) operator = operatorUnder(deps.sso, signedIn);
    why = signedIn
      ? "this sign-in grants no role under the gateway's sso: as configured now (its provider or role mapping changed): run `ciport login` again"
      : 'sign-in expired or signed out: run `ciport login` again';
  } else {
    operator = presented ? deps.adminTokens.match(presented) : undefined;
  }
  if (!operator) {
    why ??=
      deps.adminTokens.size === 0 && !deps.ssoEnabled
        ? 'no admin tokens are configured (admin_tokens:), and sign-in is off (sso:)'
        : presented
          ? 'admin token not recognised'
          : 'admin token required: send "Authorization: Bearer <admin token>", or sign in with `ciport login`';
    deps.log.warn({ path, action, reason: why }, 'admin request refused');
    throw new CiportError('CIPORT_E_ADMIN_UNAUTHORIZED', why);
  }
  assertMayDo(deps.log, operator, action, path);
  return operator;
}

/** What authorizeOperator reads: the admin tokens in force and the store's sign-ins. */
export interface OperatorAuthDeps {
  adminTokens: AdminTokens;
  store: Pick<OperatorSessionStore, 'operatorSession'>;
  /** True when `sso:` is configured (only changes the refusal's wording). */
  ssoEnabled?: boolean;
  /** `sso:` in force: a sign-in's roles are its groups mapped by it now (operatorUnder). */
  sso?: SsoRoleMap | undefined;
  log: Logger;
}

/**
 * Throw 403 CIPORT_E_ADMIN_FORBIDDEN (logged) unless `operator`'s roles allow `action`. Shared
 * by the API and the console, so both refuse alike.
 */
export function assertMayDo(log: Logger, operator: Operator, action: OperatorAction, path?: string): void {
  if (mayDo(operator, action)) return;
  const by = operatorRef(operator);
  log.warn({ path, action, by, roles: operator.roles }, 'admin request forbidden');
  const roles = operator.roles.length === 1 ? 'role' : 'roles';
  throw new CiportError(
    'CIPORT_E_ADMIN_FORBIDDEN',
    `${by} (${roles} ${operator.roles.join(', ')}) may not ${action}: it needs role ${ROLE_ACTIONS[action].join(' or ')}`,
  );
}

/**
 * The optional `reason` of an operator's request body (`--reason`): trimmed, control characters
 * escaped (it reaches terminals, logs and CSV exports), at most OPERATOR_REASON_MAX characters
 * once escaped; a longer one is refused, not cut, so the audit log never holds half a reason.
 */
export function operatorReason(body: unknown): string | undefined {
  const reason = (body as { reason?: unknown } | null)?.reason;
  if (reason === undefined || reason === null) return undefined;
  if (typeof reason !== 'string') throw new CiportError('CIPORT_E_USAGE', 'reason must be a string');
  const text = printable(reason.trim());
  if (text.length > OPERATOR_REASON_MAX) {
    throw new CiportError('CIPORT_E_USAGE', `reason is longer than ${OPERATOR_REASON_MAX} characters`);
  }
  return text || undefined;
}

/** The operator and the request body's `reason`, as the audit events of the change carry them. */
export function actorOf(operator: Operator, body?: unknown): OperatorActor {
  const note = operatorReason(body);
  return { by: operatorRef(operator), ...(note ? { note } : {}) };
}
