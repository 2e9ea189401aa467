// Public surface of job liveness: sessions end when their CI job does (docs/job-liveness.md).
export {
  apiUrl,
  GITHUB_API_VERSION,
  GithubJobClient,
  GitlabJobClient,
  type JobApiClient,
  type JobApiClientOptions,
  type JobStatusReport,
} from './clients.js';
export { JobNotRunningError } from './errors.js';
export { JobApiError, type JobApiFailure } from './http.js';
export {
  type FinishSource,
  type GitlabHookOutcome,
  type JobFinishedEvent,
  JobLiveness,
  type JobLivenessMetrics,
  type JobLivenessOptions,
  type JobLivenessStats,
  type JobLog,
  type LivenessClock,
  type OnJobFinished,
  systemClock,
  type WatchedJobInfo,
} from './liveness.js';
export { parseReset, parseRetryAfter, rateLimitResumeAt } from './rate-limit.js';
export {
  describeJob,
  type GithubJobRef,
  type GitlabJobRef,
  type JobRef,
  jobKey,
  jobRefFromClaims,
} from './ref.js';
export { GITHUB_STATUS, GITLAB_STATUS, githubState, gitlabState, type JobState } from './status.js';
export {
  checkGitlabHook,
  type GitlabHookCheck,
  type GitlabJobEvent,
  type HeaderBag,
  verifyGitlabHook,
} from './webhook.js';
