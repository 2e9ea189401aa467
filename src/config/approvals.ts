// Approvals (docs/approvals.md): a rule's `approval:` (who must approve a session it grants, how
// many, how long the job waits) and the gateway's `approvals:` section (where pending approvals
// are announced). Zod and the field types of this folder only.
import { z } from 'zod';
import { keyUrlProblem } from '../identity/url-policy.js';
import { durationSchema, groupNameSchema, nameSchema, secretSchema } from './fields.js';

/** Shortest and longest `approval.timeout`: a job waits at least this long, and at most a day. */
export const APPROVAL_TIMEOUT_MIN_MS = 5_000;
export const APPROVAL_TIMEOUT_MAX_MS = 86_400_000;
/** Most distinct approvers a rule may require. */
export const APPROVAL_COUNT_MAX = 10;

export const ruleApprovalSchema = z
  .strictObject({
    groups: z.array(groupNameSchema).min(1).meta({
      description:
        'Approval groups: an approver (role approver or admin) must belong to one of them (admin token `groups:`, or the SSO group claim).',
    }),
    count: z
      .int()
      .min(1)
      .max(APPROVAL_COUNT_MAX)
      .default(1)
      .meta({
        description: `Distinct approvers needed (1 to ${APPROVAL_COUNT_MAX}); one denial ends the request.`,
      }),
    timeout: durationSchema
      .prefault('15m')
      .refine((ms) => ms >= APPROVAL_TIMEOUT_MIN_MS && ms <= APPROVAL_TIMEOUT_MAX_MS, {
        message: 'between 5s and 24h',
      })
      .meta({
        description:
          'How long the job waits for the approvals (5s to 24h); then its session ends (approval_timeout). The session TTL starts at approval.',
      }),
  })
  .meta({
    description:
      'Sessions this rule grants start pending: the job waits until `count` approvers of `groups` approve (docs/approvals.md).',
  });

export type RuleApprovalConfig = z.output<typeof ruleApprovalSchema>;

const webhookSchema = z
  .strictObject({
    name: nameSchema.meta({ description: 'Names the webhook in logs and metrics.' }),
    url: z.union([z.url(), secretSchema]).meta({
      description:
        'Receiver (a Slack-compatible incoming webhook): https, or http on a loopback address only. ' +
        'A URL that carries a token (Slack) can be given as {env}/{file}: it is then never logged.',
    }),
    secret: secretSchema.meta({
      description: 'HMAC-SHA-256 key of the X-Ciport-Signature header (the audit webhook sink signs alike).',
    }),
    timeout: durationSchema.prefault('5s').meta({ description: 'One delivery (connect, send, answer).' }),
    ca: z
      .strictObject({ file: z.string().min(1).meta({ description: 'PEM file of the CA certificate(s).' }) })
      .optional()
      .meta({ description: 'Trust this CA (instead of the system trust store) for the receiver.' }),
  })
  .superRefine((hook, ctx) => {
    if (typeof hook.url !== 'string') return; // checked once resolved (src/gateway/approvals/notify.ts)
    const problem = urlProblem(hook.url);
    if (problem) ctx.addIssue({ code: 'custom', path: ['url'], message: problem });
  })
  .meta({ description: 'A POST of a Slack-compatible message for each pending approval, signed.' });

/** Why `text` may not be a webhook URL (https, or http on loopback; no credentials), if it may not. */
export function urlProblem(text: string): string | undefined {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return 'not a URL';
  }
  if (url.username || url.password) return 'credentials in the URL are not supported; the secret signs';
  return keyUrlProblem(url);
}

export const approvalsSectionSchema = z
  .strictObject({
    webhooks: z.array(webhookSchema).default([]).meta({
      description: 'Announce each pending approval to these receivers (docs/approvals.md, "Notifications").',
    }),
  })
  .prefault({})
  .meta({ description: 'Approvals of sessions whose rule has `approval:` (docs/approvals.md).' });

export type ApprovalWebhookConfig = z.output<typeof webhookSchema>;
