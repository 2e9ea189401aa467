// Job API clients: one request shape per platform, one answer shape for the poller.
//
// GitLab: `GET {url}/projects/:id/jobs/:job_id` with `PRIVATE-TOKEN` (a token with
//   `read_api`, e.g. a project or group access token with the Reporter role).
// GitHub: when the token named its job (`check_run_id`),
//   `GET {url}/repos/{owner}/{repo}/actions/jobs/{job_id}`: the job's status decides, one
//   request per poll (a job cannot outlive its run). Otherwise, or when that job is unknown or
//   belongs to another run or attempt, the run attempt decides:
//   `GET {url}/repos/{owner}/{repo}/actions/runs/{run_id}/attempts/{run_attempt}`.
//   `Authorization: Bearer`, the GitHub media type and a pinned `X-GitHub-Api-Version`.
import type { Secret } from '../config/secret.js';
import { type ApiRequestOptions, apiGet, JobApiError } from './http.js';
import type { GithubJobRef, GitlabJobRef, JobRef } from './ref.js';
import { githubState, gitlabState, type JobState } from './status.js';

export const GITHUB_API_VERSION = '2022-11-28';
export const USER_AGENT = 'ciport-job-liveness';

/** One answer about one job. */
export interface JobStatusReport {
  /** `unknown` here means a status word this version does not know. */
  state: JobState;
  /** The platform's words, for logs and audit: `success`, `completed/cancelled`, … */
  status: string;
  /** Rate limit exhausted by this exchange: no request to this API before then (epoch ms). */
  resumeAt: number | undefined;
}

export interface JobApiClient {
  status(ref: JobRef, signal?: AbortSignal): Promise<JobStatusReport>;
}

export interface JobApiClientOptions extends Omit<ApiRequestOptions, 'signal'> {
  /** API base URL, e.g. `https://gitlab.example.com/api/v4` or `https://api.github.com`. */
  url: URL;
  token: Secret;
}

/** `base` + path segments, each percent-encoded; the base keeps its own path (`/api/v4`). */
export function apiUrl(base: URL, segments: readonly string[]): URL {
  const url = new URL(base.href);
  url.pathname = `${url.pathname.replace(/\/+$/, '')}/${segments.map(encodeURIComponent).join('/')}`;
  url.search = '';
  url.hash = '';
  return url;
}

function laterOf(a: number | undefined, b: number | undefined): number | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return Math.max(a, b);
}

function statusWord(body: Record<string, unknown>, where: string): string {
  const status = body.status;
  if (typeof status !== 'string' || status === '') {
    throw new JobApiError('malformed', `${where}: response has no "status"`);
  }
  return status;
}

export class GitlabJobClient implements JobApiClient {
  readonly #options: JobApiClientOptions;

  constructor(options: JobApiClientOptions) {
    this.#options = options;
  }

  async status(ref: JobRef, signal?: AbortSignal): Promise<JobStatusReport> {
    if (ref.platform !== 'gitlab') throw new TypeError('GitLab client asked about a GitHub job');
    const token = this.#options.token.reveal();
    const url = this.jobUrl(ref);
    const response = await apiGet(
      url,
      { 'PRIVATE-TOKEN': token, accept: 'application/json', 'user-agent': USER_AGENT },
      token,
      { ...this.#options, signal },
    );
    const status = statusWord(response.body, `GET ${url.href}`);
    return { state: gitlabState(status), status, resumeAt: response.resumeAt };
  }

  jobUrl(ref: GitlabJobRef): URL {
    return apiUrl(this.#options.url, ['projects', ref.project, 'jobs', ref.job]);
  }
}

export class GithubJobClient implements JobApiClient {
  readonly #options: JobApiClientOptions;

  constructor(options: JobApiClientOptions) {
    this.#options = options;
  }

  async status(ref: JobRef, signal?: AbortSignal): Promise<JobStatusReport> {
    if (ref.platform !== 'github') throw new TypeError('GitHub client asked about a GitLab job');
    const token = this.#options.token.reveal();
    const headers = {
      authorization: `Bearer ${token}`,
      accept: 'application/vnd.github+json',
      'x-github-api-version': GITHUB_API_VERSION,
      'user-agent': USER_AGENT,
    };
    const options = { ...this.#options, signal };
    let resumeAt: number | undefined;
    if (ref.job !== undefined) {
      const jobUrl = this.jobUrl(ref);
      let job: Awaited<ReturnType<typeof apiGet>> | undefined;
      try {
        job = await apiGet(jobUrl, headers, token, options);
      } catch (err) {
        // `check_run_id` not found as a job (an older GHES, a token from elsewhere): ask the
        // run. Anything else is a failure like any other.
        if (!(err instanceof JobApiError && err.kind === 'not_found')) throw err;
        resumeAt = err.resumeAt;
      }
      // Only this token's job counts: same run, same attempt.
      if (
        job !== undefined &&
        String(job.body.run_id) === ref.run_id &&
        String(job.body.run_attempt) === ref.run_attempt
      ) {
        const jobStatus = statusWord(job.body, `GET ${jobUrl.href}`);
        return {
          state: githubState(jobStatus),
          status: `job ${withConclusion(jobStatus, job.body.conclusion)}`,
          resumeAt: job.resumeAt,
        };
      }
      resumeAt = job?.resumeAt ?? resumeAt;
      // Rate limit exhausted by the first request: do not spend a second one now.
      if (resumeAt !== undefined)
        throw new JobApiError('rate_limited', `GET ${jobUrl.href}: rate limit exhausted`, { resumeAt });
    }
    const runUrl = this.runAttemptUrl(ref);
    const run = await apiGet(runUrl, headers, token, options);
    const runStatus = statusWord(run.body, `GET ${runUrl.href}`);
    return {
      state: githubState(runStatus),
      status: withConclusion(runStatus, run.body.conclusion),
      resumeAt: laterOf(resumeAt, run.resumeAt),
    };
  }

  runAttemptUrl(ref: GithubJobRef): URL {
    const [owner = '', repo = ''] = ref.repository.split('/');
    const url = apiUrl(this.#options.url, [
      'repos',
      owner,
      repo,
      'actions',
      'runs',
      ref.run_id,
      'attempts',
      ref.run_attempt,
    ]);
    // The run's pull request list is not needed and can be long.
    url.searchParams.set('exclude_pull_requests', 'true');
    return url;
  }

  jobUrl(ref: GithubJobRef): URL {
    const [owner = '', repo = ''] = ref.repository.split('/');
    return apiUrl(this.#options.url, ['repos', owner, repo, 'actions', 'jobs', ref.job ?? '']);
  }
}

function withConclusion(status: string, conclusion: unknown): string {
  return typeof conclusion === 'string' && conclusion !== '' ? `${status}/${conclusion}` : status;
}
