// How a role session names the job in IAM and CloudTrail: the RoleSessionName and the session
// tags, both from the session's principal, both cut to what STS accepts (docs/aws.md,
// "Session tags"). Claims are input: characters STS refuses are never passed on.
//
// Tag values feed IAM conditions (`aws:PrincipalTag/ciport:ref` = `prod_deploy`), so two claims
// must never give the same value: characters outside STS's set are escaped as `=XX` (their UTF-8
// bytes, `=` itself included), not replaced, so a branch `prod#deploy` cannot pass for the
// protected `prod_deploy`; and a value too long for STS is left out rather than cut, so two long
// project paths sharing their first 256 characters do not share a prefix (an absent tag fails
// every condition that tests it, deny-unless ones included).
import type { PrincipalSummary } from '../../audit/events.js';

/** STS: RoleSessionName is 2..64 of [\w+=,.@-]. */
const NAME_UNSAFE = /[^\w+=,.@-]+/g;
const NAME_MAX = 64;
/** STS: tag keys and values take letters, spaces, digits and _.:/=+-@; values up to 256. */
const TAG_ESCAPED = /[^\p{L}\p{Z}\p{N}_.:/+\-@]/gu;
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

/**
 * Tag value: characters STS refuses, and `=`, escaped as `=XX` per UTF-8 byte (one value per
 * claim, no two alike); undefined when that is over 256 characters (never cut).
 */
export function tagValue(text: string): string | undefined {
  const escaped = text.replace(TAG_ESCAPED, (c) =>
    [...Buffer.from(c, 'utf8')].map((b) => `=${b.toString(16).toUpperCase().padStart(2, '0')}`).join(''),
  );
  // STS counts UTF-16 units for some limits: the stricter count.
  return escaped.length <= TAG_VALUE_MAX ? escaped : undefined;
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
  for (const [key, value] of Object.entries(facts)) {
    const tag = value ? tagValue(String(value)) : undefined;
    if (tag) tags[key] = tag;
  }
  return tags;
}
