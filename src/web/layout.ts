// The page shell every console page shares: header with the pages the operator's roles allow,
// who is signed in and a sign-out button (a POST with the CSRF token), then the page.
import { mayDo, type OidcOperator, type OperatorAction } from '../identity/operator.js';
import { CSRF_FIELD } from './csrf.js';
import { type Html, html } from './html.js';

/** The signed-in operator of a request, their session secret and CSRF token. */
export interface Viewer {
  operator: OidcOperator;
  /** hex SHA-256 of the session cookie (the store's key). */
  secretHash: string;
  csrf: string;
}

interface NavItem {
  path: string;
  label: string;
  action: OperatorAction;
}

const NAV: readonly NavItem[] = [
  { path: '/ui/sessions', label: 'Live sessions', action: 'sessions.read' },
  // Every role may read pending approvals (like GET /v1/approvals); deciding needs
  // `sessions.approve`, checked on the page's buttons and their POSTs.
  { path: '/ui/approvals', label: 'Pending approvals', action: 'sessions.read' },
  { path: '/ui/audit', label: 'Audit', action: 'audit.read' },
  { path: '/ui/agents', label: 'Agents', action: 'agents.read' },
  { path: '/ui/policy', label: 'Policy', action: 'policy.read' },
  { path: '/ui/review', label: 'Access reviews', action: 'review.read' },
];

/** The first page `operator` may see (where /ui and a sign-in without return path lead). */
export function homePath(operator: OidcOperator): string {
  return NAV.find((n) => mayDo(operator, n.action))?.path ?? '/ui/policy';
}

export interface PageOptions {
  title: string;
  /** The nav entry to mark as current. */
  current?: string;
  /** Extra elements of <head> (built with `html`). */
  head?: Html;
  /** Extra stylesheets under /ui/assets/ (before the console's own, which wins where both set a rule). */
  styles?: string[];
}

/** A whole page; `viewer` absent: the sign-in pages (no navigation). */
export function page(viewer: Viewer | undefined, options: PageOptions, body: Html): Html {
  const nav = viewer
    ? NAV.filter((n) => mayDo(viewer.operator, n.action)).map(
        (n) =>
          html`<a href="${n.path}"${n.path === options.current ? html` aria-current="page"` : ''}>${n.label}</a>`,
      )
    : [];
  const who = viewer
    ? html`<span class="who">${viewer.operator.name ?? viewer.operator.email ?? viewer.operator.subject}
  (${viewer.operator.roles.join(', ')})</span>
<form method="post" action="/ui/logout"><input type="hidden" name="${CSRF_FIELD}" value="${viewer.csrf}"><button type="submit">Sign out</button></form>`
    : '';
  const styles = (options.styles ?? []).map((s) => html`<link rel="stylesheet" href="/ui/assets/${s}">`);
  return html`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>${options.title} · ciport</title>
<link rel="icon" href="/ui/assets/favicon.svg" type="image/svg+xml">
${styles}<link rel="stylesheet" href="/ui/assets/console.css">
<script src="/ui/assets/console.js" defer></script>${options.head ?? ''}
</head><body>
<header class="top"><span class="brand">ciport</span>
<nav class="main">${nav}</nav>${who}</header>
<main>
${body}
</main></body></html>
`;
}

/** A hidden CSRF field for a form of `viewer`'s. */
export function csrfField(viewer: Viewer): Html {
  return html`<input type="hidden" name="${CSRF_FIELD}" value="${viewer.csrf}">`;
}
