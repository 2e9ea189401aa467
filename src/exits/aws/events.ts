// What the aws exit reports to its host: one event per AssumeRole it made (or that failed). The
// host writes `aws.credentials_issued` / `aws.credentials_failed` with the connection's fields.
// Never the secret access key or the session token.

export type AwsCredentialsEvent =
  | {
      type: 'aws.credentials_issued';
      role_arn: string;
      role_session_name: string;
      access_key_id: string;
      /** ISO 8601, STS's. */
      expiration: string;
      duration_s: number;
      /** ISO 8601: the session policy denies everything after this (the session's expiry). */
      deny_after: string;
      tags: Record<string, string>;
    }
  | {
      type: 'aws.credentials_failed';
      role_arn: string;
      code: string;
      sts_code?: string | undefined;
    };
