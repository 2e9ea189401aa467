// From a platform's job status word to the one question liveness asks: may this job's token
// still be in use? Tables, not logic, so docs/job-liveness.md can quote them.

/** What liveness knows about a job. `unknown`: the API could not tell (fail open, see docs). */
export type JobState = 'running' | 'finished' | 'unknown';

/**
 * GitLab job statuses (`GET /projects/:id/jobs/:job_id` → `status`, Job Hook → `build_status`).
 *
 * "running" means *not finished*: besides `running`, the states a job passes through before a
 * runner starts it count as alive. A runner only receives the job (and its ID token) when the
 * job turns `running`, so seeing an earlier state means a lagging API replica or a race at job
 * start, and refusing the token there would deny a legitimate job; none of them can follow a
 * finished state for the same job id (a retry is a new job).
 *
 * `manual` counts as finished: a manual job that has not been played has no runner executing
 * it. `canceling` (GitLab 17.x graceful cancel, while `after_script` runs) counts as finished:
 * someone stopped the job and its access ends with it.
 */
export const GITLAB_STATUS: Readonly<Record<string, Exclude<JobState, 'unknown'>>> = {
  created: 'running',
  waiting_for_resource: 'running',
  preparing: 'running',
  waiting_for_callback: 'running',
  pending: 'running',
  scheduled: 'running',
  running: 'running',
  success: 'finished',
  failed: 'finished',
  canceled: 'finished',
  canceling: 'finished',
  skipped: 'finished',
  manual: 'finished',
};

/**
 * GitHub workflow run and workflow job statuses (`status`). Only `completed` is final; its
 * `conclusion` (success, failure, cancelled, skipped, timed_out, neutral, action_required,
 * stale, startup_failure) says how, which liveness reports but does not need.
 */
export const GITHUB_STATUS: Readonly<Record<string, Exclude<JobState, 'unknown'>>> = {
  requested: 'running',
  queued: 'running',
  pending: 'running',
  waiting: 'running',
  in_progress: 'running',
  completed: 'finished',
};

/** `unknown` for a status word this version does not know (a newer platform): fail open, warn. */
export function gitlabState(status: string): JobState {
  return Object.hasOwn(GITLAB_STATUS, status) ? (GITLAB_STATUS[status] as JobState) : 'unknown';
}

export function githubState(status: string): JobState {
  return Object.hasOwn(GITHUB_STATUS, status) ? (GITHUB_STATUS[status] as JobState) : 'unknown';
}
