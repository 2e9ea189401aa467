// The page of a refused or failed console request: what happened in words, its stable code,
// and where to go next. The message never carries a secret (CiportError's contract).
import type { CiportError } from '../../errors/index.js';
import { type Html, html } from '../html.js';
import { page, type Viewer } from '../layout.js';

const TITLES: Partial<Record<string, string>> = {
  CIPORT_E_SSO_NOT_CONFIGURED: 'Sign-in is not configured',
  CIPORT_E_SSO_UNAVAILABLE: 'The identity provider cannot be reached',
  CIPORT_E_SSO_FAILED: 'Sign-in failed',
  CIPORT_E_SSO_NO_ROLE: 'No ciport role',
  CIPORT_E_ADMIN_FORBIDDEN: 'Not allowed',
  CIPORT_E_ADMIN_UNAUTHORIZED: 'Not signed in',
  CIPORT_E_CSRF_REFUSED: 'Refused',
  CIPORT_E_NOT_FOUND: 'Not found',
  CIPORT_E_APPROVAL_SELF: 'You cannot decide on your own request',
  CIPORT_E_APPROVAL_NOT_IN_GROUP: 'Not an approver of this request',
  CIPORT_E_APPROVAL_DECIDED: 'Already decided',
  CIPORT_E_APPROVAL_TIMEOUT: 'The approval timed out',
  CIPORT_E_APPROVAL_NOT_PENDING: 'No approval needed',
  CIPORT_E_SESSION_ENDED: 'The session ended',
};

/** Refused decisions: the way back is the approvals list, where the request stands now. */
const APPROVAL_CODES = new Set([
  'CIPORT_E_APPROVAL_SELF',
  'CIPORT_E_APPROVAL_NOT_IN_GROUP',
  'CIPORT_E_APPROVAL_DECIDED',
  'CIPORT_E_APPROVAL_TIMEOUT',
  'CIPORT_E_APPROVAL_NOT_PENDING',
]);

function next(viewer: Viewer | undefined, err: CiportError): Html {
  switch (err.code) {
    case 'CIPORT_E_SSO_NOT_CONFIGURED':
      return html`<p>An administrator adds an <code>sso:</code> section to the gateway's configuration
(the identity provider, the console client and which groups give which role) and restarts it:
see <code>docs/sso.md</code> and <code>docs/console.md</code> in the ciport package.</p>`;
    case 'CIPORT_E_SSO_UNAVAILABLE':
      return html`<p>The gateway keeps running. <a href="/ui/login">Try again</a> in a few seconds.</p>`;
    case 'CIPORT_E_SSO_FAILED':
    case 'CIPORT_E_ADMIN_UNAUTHORIZED':
      return html`<p><a href="/ui/login">Sign in</a></p>`;
    case 'CIPORT_E_SSO_NO_ROLE':
      return html`<p>Ask an administrator for one of the groups that give a ciport role.</p>`;
    default:
      if (viewer && APPROVAL_CODES.has(err.code))
        return html`<p><a href="/ui/approvals">Back to pending approvals</a></p>`;
      return viewer
        ? html`<p><a href="/ui">Back to the console</a></p>`
        : html`<p><a href="/ui/login">Sign in</a></p>`;
  }
}

export function errorPage(viewer: Viewer | undefined, err: CiportError): Html {
  const title = TITLES[err.code] ?? (err.httpStatus >= 500 ? 'Something went wrong' : 'Request refused');
  return page(
    viewer,
    { title },
    html`<h1>${title}</h1>
<div class="error"><p>${err.message}</p><p class="muted">Code <code>${err.code}</code> (HTTP ${err.httpStatus})</p></div>
${next(viewer, err)}`,
  );
}
