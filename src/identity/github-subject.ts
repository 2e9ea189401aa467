// GitHub Actions `sub` claims (https://docs.github.com/en/actions/reference/security/oidc):
//
//   repo:OWNER/REPO:ref:refs/heads/main            branch or tag (refs/tags/…)
//   repo:OWNER/REPO:environment:NAME               job names an environment
//   repo:OWNER/REPO:pull_request                   pull_request event without environment
//   repo:OWNER@OWNER_ID/REPO@REPO_ID:…             immutable form (repositories created or
//                                                  renamed after 2026-07-15, or opted in)
//
// `:` inside values is sent as `%3A`. Organisations can customise the template, so anything
// else after the repository is returned as `other`.

export type GitHubSubjectContext =
  | { type: 'ref'; ref: string }
  | { type: 'environment'; name: string }
  | { type: 'pull_request' }
  | { type: 'other'; value: string };

export interface GitHubSubject {
  owner: string;
  /** Present in the immutable form only. */
  ownerId: string | null;
  repository: string;
  repositoryId: string | null;
  context: GitHubSubjectContext;
}

// Owner and repository names cannot contain `/`, `:` or `@`; that is what makes `@` a safe
// separator for the immutable ids.
const SUBJECT = /^repo:([^/:@]+)(?:@(\d+))?\/([^/:@]+)(?:@(\d+))?:(.+)$/;

export function parseGitHubSubject(sub: string): GitHubSubject | null {
  const m = SUBJECT.exec(sub);
  if (!m) return null;
  const [, owner = '', ownerId, repo = '', repoId, rest = ''] = m;
  return {
    owner,
    ownerId: ownerId ?? null,
    repository: `${owner}/${repo}`,
    repositoryId: repoId ?? null,
    context: contextOf(rest),
  };
}

function contextOf(rest: string): GitHubSubjectContext {
  if (rest === 'pull_request') return { type: 'pull_request' };
  const colon = rest.indexOf(':');
  const raw = colon < 0 ? '' : rest.slice(colon + 1);
  // A further raw `:` means a customised template with more parts: not one of the defaults.
  if (raw !== '' && !raw.includes(':')) {
    const head = rest.slice(0, colon);
    if (head === 'ref') return { type: 'ref', ref: unescapeColons(raw) };
    if (head === 'environment') return { type: 'environment', name: unescapeColons(raw) };
  }
  return { type: 'other', value: rest };
}

function unescapeColons(value: string): string {
  return value.replace(/%3A/gi, ':');
}
