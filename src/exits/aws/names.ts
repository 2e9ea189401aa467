// How a role session names the job in IAM and CloudTrail: the RoleSessionName and the session
// tags, both from the session's principal, both cut to what STS accepts (docs/aws.md,
// "Session tags"). Claims are input: characters STS refuses are replaced, never passed on.
import type { PrincipalSummary } from '../../audit/events.js';

/** STS: RoleSessionName is 2..64 of [\w+=,.@-]. */
const NAME_UNSAFE = /[^\w+=,.@-]+/g;
const NAME_MAX = 64;
/** STS: tag keys and values take letters, spaces, digits and _.:/=+-@; values up to 256. */
const TAG_UNSAFE = /[^\p{L}\p{Z}\p{N}_.:/=+\-@]/gu;
const TAG_VALUE_MAX = 256;

/** `ciport-<project>-<job>` (the session id's tail when there is no job id), at most 64. */
export function roleSessionName(principal: PrincipalSummary, sessionId: string): string {
  const job = clean(principal.job ?? sessionId.replace(/^ses_/, '')).slice(0, 32) || 'session';
  const room = NAME_MAX - 'ciport--'.length - job.length;
  const project = clean(clean(principal.project ?? principal.project_id ?? '').slice(0, room));
  return project ? `ciport-${project}-${job}` : `ciport-${job}`;
}

function clean(text: string): string {
  return text.replace(NAME_UNSAFE, '-').replace(/^-+|-+$/g, '');
}

/** Tag value: unsafe characters replaced, at most 256 characters. */
export function tagValue(text: string): string {
  return [...text.replace(TAG_UNSAFE, '_')].slice(0, TAG_VALUE_MAX).join('');
}

/** The session tags: `ciport:<fact>` for each fact the principal has. */
export function sessionTags(principal: PrincipalSummary, sessionId: string): Record<string, string> {
  const facts: Record<string, string | null | undefined> = {
    'ciport:issuer': principal.issuer || null,
    'ciport:project': principal.project,
    'ciport:project_id': principal.project_id,
    'ciport:ref': principal.ref,
    'ciport:pipeline': principal.pipeline,
    'ciport:job': principal.job,
    'ciport:environment': principal.environment,
    'ciport:actor': principal.actor,
    'ciport:session': sessionId,
  };
  const tags: Record<string, string> = {};
  for (const [key, value] of Object.entries(facts)) if (value) tags[key] = tagValue(String(value));
  return tags;
}
