// protocol aws: the exit assumes an IAM role for each session and serves the temporary
// credentials to the job through the container-credentials endpoint its client runs on loopback
// (src/exits/aws, docs/aws.md). No address: STS is reached through the AWS SDK's own endpoint
// resolution (AWS_ENDPOINT_URL_STS, AWS_REGION…) with the provider chain's credentials.
import { z } from 'zod';
import { durationSchema } from '../fields.js';
import { addresslessMember } from './member.js';

/** An IAM role ARN in any partition (aws, aws-cn, aws-us-gov, …), path included. */
export const ROLE_ARN_RE = /^arn:aws[a-z-]*:iam::\d{12}:role\/[\w+=,.@/-]{1,512}$/;

/** STS AssumeRole bounds on DurationSeconds (the role's MaxSessionDuration may be lower). */
export const STS_MIN_DURATION_MS = 900_000;
export const STS_MAX_DURATION_MS = 12 * 3_600_000;

export const awsTargetSchema = addresslessMember(
  'aws',
  'AWS: the exit assumes an IAM role per session and serves its temporary credentials to the job (docs/aws.md).',
  {
    role_arn: z
      .string()
      .regex(ROLE_ARN_RE, 'an IAM role ARN such as arn:aws:iam::123456789012:role/deploy')
      .meta({
        description: 'The role the exit assumes for each session (its trust policy must allow the gateway).',
      }),
    region: z
      .string()
      .regex(/^[a-z]{2}(-[a-z]+)+-\d{1,2}$/, 'an AWS region such as eu-west-1')
      .optional()
      .meta({
        description:
          'Exported to the job as AWS_REGION and AWS_DEFAULT_REGION, and the region of the STS call (default: AWS_REGION).',
      }),
    duration: durationSchema
      .prefault('1h')
      .refine((ms) => ms >= STS_MIN_DURATION_MS, 'at least 15m (the STS minimum)')
      .transform((ms) => Math.min(ms, STS_MAX_DURATION_MS))
      .meta({
        description:
          "Longest lifetime of one set of credentials (default 1h, capped at STS's 12h); always cut to the session's remaining lifetime.",
      }),
    external_id: z
      .string()
      .regex(/^[\w+=,.@:/-]{2,1224}$/, "STS's ExternalId: 2 to 1224 of [\\w+=,.@:/-]")
      .optional()
      .meta({ description: "Sent as AssumeRole's ExternalId, when the role's trust policy demands one." }),
  },
);

export type AwsTarget = z.output<typeof awsTargetSchema>;
