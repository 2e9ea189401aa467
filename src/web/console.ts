// The console at /ui on the gateway (docs/console.md): server-rendered pages for people who
// watch and stop access, signed in through the organisation's identity provider (sign-in.ts).
//
// Every request: static assets need no sign-in; without `sso:` every other page says sign-in is
// not configured; the sign-in pages (login, callback, signed-out) need none; every other page
// needs a live browser sign-in (the session cookie's hash in the store) and names the operator
// action it performs, checked with `assertMayDo` exactly as the admin API checks it. Every POST
// reads a bounded form and must carry the sign-in's CSRF token from the same origin (csrf.ts)
// before anything acts on it. Every response carries the security headers (respond.ts).
//
// Imports from src/gateway only its leaf helpers (http.ts, operators.ts, approval-view.ts; and
// types of the agents' summaries), which never import this folder: the gateway mounts the console
// and hands it the actions it shares with the admin API (context.ts), never the other way round.
import { auditEvent } from '../audit/events.js';
import { asCiportError, CiportError } from '../errors/index.js';
import type { Req, Res } from '../gateway/http.js';
import { type OidcOperator, operatorRef } from '../identity/operator.js';
import {
  isOperatorSecret,
  newOperatorSecret,
  operatorSessionRecord,
  operatorUnder,
} from '../identity/operator-secret.js';
import { operatorFromClaims } from '../identity/sso-operator.js';
import { RateLimiter } from '../session/rate-limit.js';
import { hashSecret } from '../session/secret.js';
import { ASSETS } from './assets.js';
import type { ConsoleDeps, PageCtx } from './context.js';
import {
  COOKIE_KEY_META,
  clearCookie,
  LOGIN_COOKIE,
  newCookieKey,
  parseCookies,
  SESSION_COOKIE,
  seal,
  setCookie,
  unseal,
} from './cookies.js';
import { allowedOrigins, checkCsrf, csrfToken } from './csrf.js';
import { readForm } from './form.js';
import { html } from './html.js';
import { homePath, page, type Viewer } from './layout.js';
import { agentsPage, revokeAgent } from './pages/agents.js';
import { approvalDetailPage, approvalsPage, approveFromConsole, denyFromConsole } from './pages/approvals.js';
import { auditPage } from './pages/audit.js';
import { errorPage } from './pages/errors.js';
import { explainClaims, policyPage } from './pages/policy.js';
import { attestPage, reviewPage } from './pages/review.js';
import { revokeSession, sessionDetailPage } from './pages/session-detail.js';
import { sessionRowsFragment, sessionsPage } from './pages/sessions.js';
import { redirect, sendAsset, sendErrorPage, sendHtml } from './respond.js';
import { ConsoleSignIn, isLoginTransaction } from './sign-in.js';

type Handler = (ctx: PageCtx) => Promise<void>;

const SESSION_ID = '(ses_[A-Za-z0-9_-]{1,64})';
const AGENT_ID = '(agt_[A-Za-z0-9_-]{1,64})';

const ROUTES: ReadonlyArray<{ method: 'GET' | 'POST'; pattern: RegExp; handler: Handler }> = [
  { method: 'GET', pattern: /^\/ui\/sessions$/, handler: sessionsPage },
  { method: 'GET', pattern: /^\/ui\/sessions\/rows$/, handler: sessionRowsFragment },
  { method: 'GET', pattern: new RegExp(`^/ui/sessions/${SESSION_ID}$`), handler: sessionDetailPage },
  { method: 'POST', pattern: new RegExp(`^/ui/sessions/${SESSION_ID}/revoke$`), handler: revokeSession },
  { method: 'GET', pattern: /^\/ui\/approvals$/, handler: approvalsPage },
  { method: 'GET', pattern: new RegExp(`^/ui/approvals/${SESSION_ID}$`), handler: approvalDetailPage },
  {
    method: 'POST',
    pattern: new RegExp(`^/ui/approvals/${SESSION_ID}/approve$`),
    handler: approveFromConsole,
  },
  { method: 'POST', pattern: new RegExp(`^/ui/approvals/${SESSION_ID}/deny$`), handler: denyFromConsole },
  { method: 'GET', pattern: /^\/ui\/audit$/, handler: auditPage },
  { method: 'GET', pattern: /^\/ui\/agents$/, handler: agentsPage },
  { method: 'POST', pattern: new RegExp(`^/ui/agents/${AGENT_ID}/revoke$`), handler: revokeAgent },
  { method: 'GET', pattern: /^\/ui\/policy$/, handler: policyPage },
  { method: 'POST', pattern: /^\/ui\/policy\/explain$/, handler: explainClaims },
  { method: 'GET', pattern: /^\/ui\/review$/, handler: reviewPage },
  { method: 'POST', pattern: /^\/ui\/review\/attest$/, handler: attestPage },
];

/** Longest return path kept through a sign-in. */
const MAX_RETURN = 1024;
/** Paths a sign-in never returns to (they would start it again or do nothing). */
const NO_RETURN = /^\/ui\/(login|callback|logout|signed-out|assets\/)/;

/**
 * `text` as a path under /ui of this gateway, or undefined: no other host, scheme, `//`, `\`,
 * dot segments or control characters (the return path of a sign-in is input).
 */
export function safeReturn(text: string | null | undefined): string | undefined {
  if (!text || text.length > MAX_RETURN || !text.startsWith('/') || /[\\\s\p{Cc}]/u.test(text))
    return undefined;
  let url: URL;
  try {
    url = new URL(text, 'https://gateway.invalid');
  } catch {
    return undefined;
  }
  if (url.origin !== 'https://gateway.invalid') return undefined;
  const path = url.pathname;
  if (path !== '/ui' && !path.startsWith('/ui/')) return undefined;
  // What the browser asked for must be what it gets: no dot segments or doubled slashes.
  if (!text.startsWith(path) || path.includes('//') || NO_RETURN.test(path)) return undefined;
  return `${path}${url.search}`;
}

/** The console, mounted by the gateway at /ui. */
export class WebConsole {
  readonly #deps: ConsoleDeps;
  readonly #key: Buffer;
  readonly #signIn: ConsoleSignIn | undefined;
  readonly #publicOrigin: string;
  /** Sign-in failures audited (the rest are logged): a flood must not grow the audit log. */
  readonly #failures = new RateLimiter({ perMinute: 30, burst: 30 });

  private constructor(deps: ConsoleDeps, key: Buffer) {
    this.#deps = deps;
    this.#key = key;
    this.#publicOrigin = new URL(deps.publicUrl).origin;
    this.#signIn = deps.sso
      ? new ConsoleSignIn({
          sso: deps.sso,
          redirectUri: `${this.#publicOrigin}/ui/callback`,
          log: deps.log,
          fetch: deps.fetch,
          ...(deps.now ? { now: deps.now } : {}),
        })
      : undefined;
  }

  /** The console; its cookie-sealing key is read from (or first written to) the store. */
  static async start(deps: ConsoleDeps): Promise<WebConsole> {
    const hex = await deps.store.initMeta(COOKIE_KEY_META, newCookieKey());
    const web = new WebConsole(deps, Buffer.from(hex, 'hex'));
    // Discover the provider in the background: the first sign-in need not wait for it.
    if (web.#signIn) void web.#signIn.configuration().catch(() => {});
    return web;
  }

  /** The redirect URI to register at the identity provider. */
  get redirectUri(): string | undefined {
    return this.#signIn?.redirectUri;
  }

  #now(): number {
    return (this.#deps.now ?? Date.now)();
  }

  /** Serve `req` if its path is /ui or under it; false otherwise. Never throws. */
  async handle(req: Req, res: Res): Promise<boolean> {
    const url = new URL(req.url ?? '/', 'https://gateway.invalid');
    const path = url.pathname;
    if (path !== '/ui' && !path.startsWith('/ui/')) return false;
    const method = req.method === 'HEAD' ? 'GET' : (req.method ?? 'GET');
    let viewer: Viewer | undefined;
    try {
      if (path.startsWith('/ui/assets/')) {
        this.#asset(req, res, path.slice('/ui/assets/'.length), method);
        return true;
      }
      const signIn = this.#signIn;
      if (!signIn) {
        throw new CiportError(
          'CIPORT_E_SSO_NOT_CONFIGURED',
          'sign-in is not configured on this gateway: the console needs an sso: section (docs/sso.md)',
        );
      }
      if (path === '/ui/login' || path === '/ui/callback' || path === '/ui/signed-out') {
        if (method !== 'GET') throw new CiportError('CIPORT_E_METHOD_NOT_ALLOWED', `use GET on ${path}`);
        if (path === '/ui/login') await this.#login(req, res, url, signIn);
        else if (path === '/ui/callback') await this.#callback(req, res, url, signIn);
        else sendHtml(res, 200, signedOutPage());
        return true;
      }
      const secret = this.#cookieSecret(req);
      viewer = await this.#viewer(secret);
      if (!viewer || !secret) {
        if (method === 'GET') {
          const back = safeReturn(`${path}${url.search}`);
          redirect(res, back ? `/ui/login?return=${encodeURIComponent(back)}` : '/ui/login');
          return true;
        }
        throw new CiportError(
          'CIPORT_E_ADMIN_UNAUTHORIZED',
          'not signed in (or the sign-in expired or was signed out): sign in again',
        );
      }
      let form: URLSearchParams | undefined;
      if (method === 'POST') {
        form = await readForm(req, this.#deps.maxBodyBytes);
        checkCsrf(req, form, secret, allowedOrigins(req, this.#publicOrigin));
      }
      if (path === '/ui' || path === '/ui/') {
        if (method !== 'GET') throw new CiportError('CIPORT_E_METHOD_NOT_ALLOWED', `use GET on ${path}`);
        redirect(res, homePath(viewer.operator));
        return true;
      }
      if (path === '/ui/logout') {
        if (method !== 'POST') throw new CiportError('CIPORT_E_METHOD_NOT_ALLOWED', 'sign out with POST');
        await this.#logout(res, viewer);
        return true;
      }
      const matching = ROUTES.filter((r) => r.pattern.test(path));
      const route = matching.find((r) => r.method === method);
      if (!route) {
        throw matching.length > 0
          ? new CiportError('CIPORT_E_METHOD_NOT_ALLOWED', `${method} is not allowed on ${path}`)
          : new CiportError('CIPORT_E_NOT_FOUND', `no such page: ${path}`);
      }
      const params = route.pattern.exec(path)?.slice(1) ?? [];
      await route.handler({ deps: this.#deps, req, res, url, viewer, form, params, now: this.#now() });
    } catch (thrown) {
      const err = asCiportError(thrown);
      if (err.code === 'CIPORT_E_INTERNAL')
        this.#deps.log.error({ err: err.message, path }, 'console request failed');
      else if (err.code === 'CIPORT_E_CSRF_REFUSED')
        this.#deps.log.warn({ path, reason: err.message }, 'console: CSRF refused');
      sendErrorPage(res, err, errorPage(viewer, err));
    }
    return true;
  }

  #asset(req: Req, res: Res, name: string, method: string): void {
    const asset = ASSETS.get(name);
    if (!asset || method !== 'GET') throw new CiportError('CIPORT_E_NOT_FOUND', `no such asset: ${name}`);
    sendAsset(res, asset.type, asset.body, asset.etag, req.headers['if-none-match'] === asset.etag);
  }

  #cookieSecret(req: Req): string | undefined {
    const value = parseCookies(req.headers.cookie).get(SESSION_COOKIE);
    return value && isOperatorSecret(value) ? value : undefined;
  }

  /** The browser sign-in behind the session cookie, if it is live. */
  async #viewer(secret: string | undefined): Promise<Viewer | undefined> {
    if (!secret) return undefined;
    const secretHash = hashSecret(secret);
    const record = await this.#deps.store.operatorSession(secretHash, this.#now());
    // A `ciport login` token is a bearer credential for the CLI, not a console cookie.
    if (record?.kind !== 'browser') return undefined;
    const operator = operatorUnder(this.#deps.sso, record);
    return operator ? { operator, secretHash, csrf: csrfToken(secret) } : undefined;
  }

  async #login(req: Req, res: Res, url: URL, signIn: ConsoleSignIn): Promise<void> {
    const returnTo = safeReturn(url.searchParams.get('return')) ?? '/ui';
    const viewer = await this.#viewer(this.#cookieSecret(req));
    if (viewer) {
      redirect(res, returnTo === '/ui' ? homePath(viewer.operator) : returnTo);
      return;
    }
    const { url: authorization, transaction } = await signIn.start(returnTo);
    const cookie = setCookie(LOGIN_COOKIE, seal(this.#key, LOGIN_COOKIE, transaction), 600);
    redirect(res, authorization, { cookies: [cookie] }, 302);
  }

  async #callback(req: Req, res: Res, url: URL, signIn: ConsoleSignIn): Promise<void> {
    const sealed = parseCookies(req.headers.cookie).get(LOGIN_COOKIE);
    const transaction = unseal(this.#key, LOGIN_COOKIE, sealed);
    // The sign-in is used up whatever happens next: a replayed callback finds no transaction.
    const clear = clearCookie(LOGIN_COOKIE);
    if (!isLoginTransaction(transaction)) {
      this.#deps.log.info(
        { cookie: sealed ? 'invalid' : 'absent' },
        'console: callback without a sign-in in progress',
      );
      const err = new CiportError(
        'CIPORT_E_SSO_FAILED',
        'no sign-in is in progress in this browser (it expired, was completed already, or was started elsewhere): start again',
      );
      sendErrorPage(res, err, errorPage(undefined, err), { cookies: [clear] });
      return;
    }
    const sso = this.#deps.sso;
    if (!sso)
      throw new CiportError('CIPORT_E_SSO_NOT_CONFIGURED', 'sign-in is not configured on this gateway');
    // The redirect URI as registered, with what the provider appended (code, state, iss).
    const callback = new URL(signIn.redirectUri);
    callback.search = url.search;
    let operator: OidcOperator;
    try {
      const claims = await signIn.finish(callback, transaction);
      try {
        operator = operatorFromClaims(sso, claims);
      } catch (thrown) {
        const err = asCiportError(thrown);
        await this.#failed(req, err, claims);
        throw err;
      }
    } catch (thrown) {
      const err = asCiportError(thrown);
      if (err.code !== 'CIPORT_E_SSO_NO_ROLE') await this.#failed(req, err);
      sendErrorPage(res, err, errorPage(undefined, err), { cookies: [clear] });
      return;
    }
    const secret = newOperatorSecret();
    const now = this.#now();
    const expiresAt = now + sso.session_ttl;
    await this.#deps.store.createOperatorSession(
      operatorSessionRecord(operator, 'browser', secret, now, expiresAt),
    );
    await this.#deps.store.appendAudit(
      auditEvent('operator.signed_in', {
        ...signInData(operator),
        expires_at: new Date(expiresAt).toISOString(),
      }),
    );
    this.#deps.log.info({ by: operatorRef(operator), roles: operator.roles }, 'console: signed in');
    const back = safeReturn(transaction.returnTo);
    redirect(res, back && back !== '/ui' ? back : homePath(operator), {
      cookies: [clear, setCookie(SESSION_COOKIE, secret, sso.session_ttl / 1000)],
    });
  }

  /** Audit a sign-in that failed after the provider was involved (bounded: see #failures). */
  async #failed(req: Req, err: CiportError, claims?: Record<string, unknown>): Promise<void> {
    const text = (v: unknown) => (typeof v === 'string' && v ? v.slice(0, 256) : undefined);
    const who = claims
      ? { issuer: text(claims.iss), subject: text(claims.sub), email: text(claims.email) }
      : {};
    this.#deps.log.warn({ code: err.code, reason: err.message, ...who }, 'console: sign-in failed');
    if (this.#failures.take('all') > 0) {
      this.#deps.log.warn(
        { remote: req.socket?.remoteAddress },
        'console: sign-in failure not audited (too many)',
      );
      return;
    }
    await this.#deps.store.appendAudit(
      auditEvent('operator.sign_in_failed', {
        code: err.code,
        reason: err.message.slice(0, 500),
        via: 'browser',
        ...Object.fromEntries(Object.entries(who).filter(([, v]) => v !== undefined)),
      }),
    );
  }

  async #logout(res: Res, viewer: Viewer): Promise<void> {
    const ended = await this.#deps.store.endOperatorSession(viewer.secretHash, this.#now());
    if (ended) {
      await this.#deps.store.appendAudit(auditEvent('operator.signed_out', signInData(viewer.operator)));
      this.#deps.log.info({ by: operatorRef(viewer.operator) }, 'console: signed out');
    }
    redirect(res, '/ui/signed-out', { cookies: [clearCookie(SESSION_COOKIE)] });
  }
}

function signInData(operator: OidcOperator) {
  return {
    by: operatorRef(operator),
    issuer: operator.issuer,
    subject: operator.subject,
    ...(operator.email ? { email: operator.email } : {}),
    ...(operator.name ? { name: operator.name } : {}),
    roles: [...operator.roles],
    via: 'browser' as const,
  };
}

function signedOutPage() {
  return page(
    undefined,
    { title: 'Signed out' },
    html`<h1>Signed out</h1>
<p>You are signed out of the ciport console on this gateway. Your identity provider may still
have you signed in; sign out there too on a shared computer.</p>
<p><a href="/ui/login">Sign in again</a></p>`,
  );
}
