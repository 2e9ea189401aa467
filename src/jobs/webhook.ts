// GitLab Job Hook: GitLab POSTs it on every status change of a job when the project (or group)
// webhook has "Job events" on. The request carries `X-Gitlab-Event: Job Hook` and the secret
// token configured on the webhook in `X-Gitlab-Token`; the JSON body has `object_kind: "build"`,
// `build_id`, `build_status` and `project_id` (the project that runs the job).
//
// Verification is the secret token, compared in constant time; nothing in the body is looked at
// before it matches. A verified hook can only *end* sessions, never open or extend one.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { Secret } from '../config/secret.js';
import { gitlabState, type JobState } from './status.js';

/** A job's new status, from a verified hook. */
export interface GitlabJobEvent {
  /** `project_id`: the project the job runs in. */
  project: string;
  /** `build_id`. */
  job: string;
  /** `build_status`, as GitLab sent it. */
  status: string;
}

export type GitlabHookCheck =
  | { ok: true; event: GitlabJobEvent; state: JobState }
  | {
      ok: false;
      /**
       * `unauthorized`: token missing or wrong (answer 401). The others come from a sender
       * that knows the secret: answer 2xx so GitLab does not disable the webhook, and ignore.
       */
      reason: 'unauthorized' | 'wrong_event' | 'malformed' | 'too_large';
    };

/** Headers as fetch (`Headers`) or node:http (`IncomingHttpHeaders`) give them. */
export type HeaderBag = Headers | Readonly<Record<string, string | readonly string[] | undefined>>;

/** Job Hook bodies are a few KiB; anything far larger is not one. */
export const MAX_HOOK_BODY_BYTES = 1024 * 1024;

const NUMERIC_ID = /^[1-9][0-9]{0,19}$/;

/**
 * One header value, case-insensitively. From a plain object, a repeated header counts as absent
 * (ambiguous); `Headers` has already joined repeats with ", ", which then fails to match.
 */
export function headerValue(headers: HeaderBag, name: string): string | undefined {
  if (headers instanceof Headers) {
    return headers.get(name) ?? undefined;
  }
  const wanted = name.toLowerCase();
  let found: string | undefined;
  let count = 0;
  for (const [key, value] of Object.entries(headers)) {
    if (key.toLowerCase() !== wanted || value === undefined) continue;
    if (typeof value !== 'string') {
      if (value.length !== 1) return undefined;
      found = value[0];
    } else {
      found = value;
    }
    count++;
  }
  return count === 1 ? found : undefined;
}

/** Constant-time equality of two strings of any lengths (compares their SHA-256). */
export function secretEquals(given: string, expected: string): boolean {
  if (expected === '') return false;
  const a = createHash('sha256').update(given, 'utf8').digest();
  const b = createHash('sha256').update(expected, 'utf8').digest();
  return timingSafeEqual(a, b);
}

function idText(value: unknown): string | null {
  const t = typeof value === 'number' && Number.isSafeInteger(value) ? String(value) : value;
  return typeof t === 'string' && NUMERIC_ID.test(t) ? t : null;
}

/** Verify and parse a Job Hook request, saying why when it is not one. */
export function checkGitlabHook(
  headers: HeaderBag,
  body: string | Uint8Array,
  secret: Secret | string,
): GitlabHookCheck {
  const expected = typeof secret === 'string' ? secret : secret.reveal();
  const token = headerValue(headers, 'x-gitlab-token');
  if (token === undefined || !secretEquals(token, expected)) return { ok: false, reason: 'unauthorized' };
  if (headerValue(headers, 'x-gitlab-event') !== 'Job Hook') return { ok: false, reason: 'wrong_event' };
  const size = typeof body === 'string' ? Buffer.byteLength(body, 'utf8') : body.byteLength;
  if (size > MAX_HOOK_BODY_BYTES) return { ok: false, reason: 'too_large' };
  let payload: unknown;
  try {
    payload = JSON.parse(typeof body === 'string' ? body : Buffer.from(body).toString('utf8'));
  } catch {
    return { ok: false, reason: 'malformed' };
  }
  if (payload === null || typeof payload !== 'object' || Array.isArray(payload)) {
    return { ok: false, reason: 'malformed' };
  }
  const p = payload as Record<string, unknown>;
  if (p.object_kind !== 'build') return { ok: false, reason: 'wrong_event' };
  const job = idText(p.build_id);
  const project = idText(p.project_id);
  const status = p.build_status;
  if (job === null || project === null || typeof status !== 'string' || status === '') {
    return { ok: false, reason: 'malformed' };
  }
  return { ok: true, event: { project, job, status }, state: gitlabState(status) };
}

/**
 * The job event of a verified GitLab Job Hook, or null: wrong or missing `X-Gitlab-Token`
 * (constant-time compare), another `X-Gitlab-Event`, or a body that is not a job event.
 */
export function verifyGitlabHook(
  headers: HeaderBag,
  body: string | Uint8Array,
  secret: Secret | string,
): GitlabJobEvent | null {
  const check = checkGitlabHook(headers, body, secret);
  return check.ok ? check.event : null;
}
