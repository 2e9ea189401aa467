// GitLab CI ID tokens (https://docs.gitlab.com/ci/secrets/id_token_authentication/).
//
// GitLab sends ids as strings ("61577203"), booleans as strings ("true"/"false") and
// `runner_id` as a number; the principal reads them leniently (see claim-values.ts) while the
// raw claims reach policy unchanged.
//
// Forks. Since GitLab 18.2.2, in a merge request pipeline from a fork that runs in the parent
// project, `project_id`/`project_path`/`namespace_*` (and `sub`) name the *source* project — the
// fork the code came from — while `job_project_*`/`job_namespace_*` (GitLab 18.4+) name the
// project the job runs in. `fork` is therefore "`job_project_id` present and different from
// `project_id`". On GitLab without `job_project_id` a fork cannot be recognised from the token;
// rules there should also pin `ref_protected: true` or exclude `merge_request_event`.
//
// `trusted_event` is `!fork`: on GitLab every other pipeline source (push, web, schedule,
// merge requests within the project, …) runs code that someone with at least Developer access to
// the project put there, which is the trust boundary GitLab itself draws for CI/CD variables.
import { type Claims, flag, idPath, issuerOrigin, text, textList } from './claim-values.js';
import type { Principal } from './principal.js';

export function gitlabPrincipal(issuerName: string, c: Claims): Principal {
  const projectId = text(c.project_id);
  const jobProjectId = text(c.job_project_id);
  // Absent `project_id` with a present `job_project_id` counts as a fork: unknown means untrusted.
  const fork = jobProjectId !== null && jobProjectId !== projectId;
  return {
    issuer: issuerName,
    kind: 'gitlab',
    subject: text(c.sub),
    project: idPath(c.project_id, c.project_path),
    namespace: idPath(c.namespace_id, c.namespace_path),
    ref: refOf(c),
    pipeline_id: text(c.pipeline_id),
    job_id: text(c.job_id),
    job_url: jobUrl(c),
    environment: environmentOf(c),
    actor: text(c.user_login),
    event: text(c.pipeline_source),
    fork,
    trusted_event: !fork,
    groups: textList(c.groups_direct),
    roles: [],
  };
}

function refOf(c: Claims): Principal['ref'] {
  const name = text(c.ref);
  const type = text(c.ref_type);
  const isProtected = flag(c.ref_protected);
  return name === null && type === null && isProtected === null
    ? null
    : { name, type, protected: isProtected };
}

function environmentOf(c: Claims): Principal['environment'] {
  const name = text(c.environment);
  return name === null ? null : { name, protected: flag(c.environment_protected) };
}

/** The job page lives in the project that runs the job, which for fork MRs is `job_project_path`. */
function jobUrl(c: Claims): string | null {
  const base = issuerOrigin(c.iss);
  const path = text(c.job_project_path) ?? text(c.project_path);
  const jobId = text(c.job_id);
  if (base === null || path === null || jobId === null) return null;
  return `${base.href.replace(/\/$/, '')}/${path}/-/jobs/${encodeURIComponent(jobId)}`;
}
