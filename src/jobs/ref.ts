// Which CI job a verified token belongs to, as the platform's job API names it. Pure: derived
// from the issuer's kind and the raw (already verified) claims, no I/O.
//
// GitLab: `job_project_id` (GitLab 18.4+) is the project the job runs in, which for a fork merge
// request pipeline differs from `project_id` (the source project); the jobs API lives under the
// project that runs the job, so it wins, and `project_id` is the fallback for older tokens.
// GitHub: the run and its attempt (`run_id`, `run_attempt`); `check_run_id` (sent since
// November 2025) is the id of the workflow job, which the jobs API accepts as `job_id`.
// Generic OIDC issuers name no job: liveness does not apply to them.
import type { IssuerConfig } from '../config/schema.js';
import { type Claims, text } from '../identity/claim-values.js';

export interface GitlabJobRef {
  readonly platform: 'gitlab';
  /** Name of the configured issuer that verified the token. */
  readonly issuer: string;
  /** Numeric project id (`job_project_id`, else `project_id`). */
  readonly project: string;
  /** Numeric job id (`job_id`). */
  readonly job: string;
}

export interface GithubJobRef {
  readonly platform: 'github';
  readonly issuer: string;
  /** `owner/name`. */
  readonly repository: string;
  readonly run_id: string;
  readonly run_attempt: string;
  /** The workflow job id (`check_run_id`), when the token carries it. */
  readonly job?: string | undefined;
}

export type JobRef = GitlabJobRef | GithubJobRef;

// Ids go into URL paths: only plain decimal numbers, so a claim can never steer the request.
const NUMERIC_ID = /^[1-9][0-9]{0,19}$/;
// GitHub owner and repository names: letters, digits, `-`, `_`, `.` (never `..` alone).
const REPOSITORY = /^[A-Za-z0-9_.-]{1,100}\/[A-Za-z0-9_.-]{1,100}$/;

function numericId(value: unknown): string | null {
  const t = text(value);
  return t !== null && NUMERIC_ID.test(t) ? t : null;
}

/**
 * The job a token belongs to, or null when the issuer kind names none (`oidc`) or the claims
 * lack (or malform) what the job API needs.
 */
export function jobRefFromClaims(issuer: Pick<IssuerConfig, 'name' | 'kind'>, claims: Claims): JobRef | null {
  if (issuer.kind === 'gitlab') {
    const project = numericId(claims.job_project_id) ?? numericId(claims.project_id);
    const job = numericId(claims.job_id);
    if (project === null || job === null) return null;
    return { platform: 'gitlab', issuer: issuer.name, project, job };
  }
  if (issuer.kind === 'github') {
    const repository = text(claims.repository);
    const runId = numericId(claims.run_id);
    const attempt = numericId(claims.run_attempt);
    if (repository === null || !validRepository(repository) || runId === null || attempt === null)
      return null;
    const job = numericId(claims.check_run_id);
    return {
      platform: 'github',
      issuer: issuer.name,
      repository,
      run_id: runId,
      run_attempt: attempt,
      ...(job === null ? {} : { job }),
    };
  }
  return null;
}

function validRepository(repository: string): boolean {
  if (!REPOSITORY.test(repository)) return false;
  return repository.split('/').every((part) => part !== '.' && part !== '..');
}

/**
 * One string per job: sessions of the same job share it, so the job is polled once. GitLab job
 * ids are unique across a GitLab instance, so the project is not part of the key (a Job Hook
 * and a token then agree on it even when they name the project differently). GitHub repository
 * names are case-insensitive, hence lowercased.
 */
export function jobKey(ref: JobRef): string {
  return ref.platform === 'gitlab'
    ? `gitlab:${ref.issuer}:${ref.job}`
    : `github:${ref.issuer}:${ref.repository.toLowerCase()}:${ref.run_id}:${ref.run_attempt}:${ref.job ?? ''}`;
}

/** Human description for logs and error messages (ids only, never a secret). */
export function describeJob(ref: JobRef): string {
  return ref.platform === 'gitlab'
    ? `GitLab job ${ref.job} of project ${ref.project}`
    : `GitHub run ${ref.run_id} attempt ${ref.run_attempt}${ref.job ? ` job ${ref.job}` : ''} of ${ref.repository}`;
}
