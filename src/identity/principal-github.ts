// GitHub Actions ID tokens (https://docs.github.com/en/actions/reference/security/oidc).
//
// All custom claims arrive as strings (`repository_id: "81213410"`, `run_attempt: "1"`,
// `ref_protected: "true"`); `ref` is fully qualified (`refs/heads/main`) and the principal
// shows the short name, while policy still sees the raw `ref`.
//
// `trusted_event` is false for the events an outsider (anyone with a GitHub account, no write
// access) can trigger and whose job runs with the base repository's privileges — its secrets, a
// writable GITHUB_TOKEN, an ID token — while acting on input that outsider controls:
// `pull_request_target` (checks out or reads a fork's pull request), `workflow_run` (triggered
// by, and often consuming artifacts of, a possibly-fork workflow), `issue_comment`, `issues`,
// `discussion`, `discussion_comment` (anyone can open or comment on a public repository's
// issues and discussions), `pull_request_review`, `pull_request_review_comment` (anyone can
// review a pull request of a public repository; on one from the repository's own branch the run
// is privileged), `fork`, `watch` (anyone can fork or star) and `gollum` (a public wiki anyone
// may edit). Events that need write access (`push`, `release`, `workflow_dispatch`, `label`,
// `schedule`, …) are trusted. Not a ciport decision about the job's code: the event's.
// `fork` is always false: the token carries no claim naming the head repository of a pull
// request, and GitHub does not issue ID tokens (`id-token: write` is withheld) to `pull_request`
// workflows from forks at all. The fork-shaped risk on GitHub is the privileged events above,
// which `trusted_event` covers.
import { type Claims, flag, idPath, issuerOrigin, text } from './claim-values.js';
import { type GitHubSubjectContext, parseGitHubSubject } from './github-subject.js';
import type { Principal } from './principal.js';

/** Events an outsider can trigger that run privileged (see above); exported for the docs test. */
export const UNTRUSTED_EVENTS: ReadonlySet<string> = new Set([
  'pull_request_target',
  'workflow_run',
  'issue_comment',
  'issues',
  'discussion',
  'discussion_comment',
  'pull_request_review',
  'pull_request_review_comment',
  'fork',
  'watch',
  'gollum',
]);

export function githubPrincipal(issuerName: string, c: Claims): Principal {
  const subject = text(c.sub);
  const parsed = subject === null ? null : parseGitHubSubject(subject);
  const repository = text(c.repository) ?? parsed?.repository ?? null;
  const event = text(c.event_name);
  return {
    issuer: issuerName,
    kind: 'github',
    subject,
    project: idPath(c.repository_id ?? parsed?.repositoryId, repository),
    namespace: idPath(c.repository_owner_id ?? parsed?.ownerId, c.repository_owner ?? parsed?.owner),
    ref: refOf(c),
    pipeline_id: text(c.run_id),
    job_id: text(c.check_run_id),
    job_url: runUrl(c, repository),
    environment: environmentOf(c, parsed?.context),
    actor: text(c.actor),
    event,
    fork: false,
    trusted_event: event === null || !UNTRUSTED_EVENTS.has(event.toLowerCase()),
    groups: [],
    roles: [],
  };
}

function refOf(c: Claims): Principal['ref'] {
  const ref = text(c.ref);
  const isProtected = flag(c.ref_protected);
  let type = text(c.ref_type);
  let name = ref;
  if (ref?.startsWith('refs/heads/')) {
    name = ref.slice('refs/heads/'.length);
    type ??= 'branch';
  } else if (ref?.startsWith('refs/tags/')) {
    name = ref.slice('refs/tags/'.length);
    type ??= 'tag';
  }
  return name === null && type === null && isProtected === null
    ? null
    : { name, type, protected: isProtected };
}

function environmentOf(c: Claims, context: GitHubSubjectContext | undefined): Principal['environment'] {
  const name = text(c.environment) ?? (context?.type === 'environment' ? context.name : null);
  // GitHub does not state whether the environment has protection rules.
  return name === null ? null : { name, protected: null };
}

/** Run page on the web host behind the issuer: github.com, `<tenant>.ghe.com`, or the GHES host. */
function runUrl(c: Claims, repository: string | null): string | null {
  const web = webOrigin(c.iss);
  const runId = text(c.run_id);
  if (web === null || repository === null || runId === null) return null;
  const attempt = text(c.run_attempt);
  const base = `${web}/${repository}/actions/runs/${encodeURIComponent(runId)}`;
  return attempt === null ? base : `${base}/attempts/${encodeURIComponent(attempt)}`;
}

function webOrigin(iss: unknown): string | null {
  const url = issuerOrigin(iss);
  if (url === null) return null;
  if (url.hostname === 'token.actions.githubusercontent.com') return 'https://github.com';
  // GHE.com data residency: https://token.actions.TENANT.ghe.com
  const tenant = /^token\.actions\.([a-z0-9-]+)\.ghe\.com$/i.exec(url.hostname);
  if (tenant) return `https://${tenant[1]}.ghe.com`;
  // GHES: https://HOSTNAME/_services/token
  return url.origin;
}
