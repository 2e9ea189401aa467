// `credentials: {aws_rds_iam: {user, region, role?}}` on postgres and mysql targets: the exit logs
// in with an RDS/Aurora IAM authentication token, made per upstream connection by
// @aws-sdk/rds-signer (a SigV4-presigned `rds-db:connect` URL, good for 15 minutes) with the
// exit's AWS credentials (aws-credentials.ts). The token is the password, sent in cleartext:
// the schema admits aws_rds_iam only with verified TLS (config/targets/member.ts).
import type { Signer } from '@aws-sdk/rds-signer';
import { awsCredentialsError, exitAwsCredentials } from './aws-credentials.js';
import { splitHostPort } from './tcp/exit.js';

export interface RdsIamSpec {
  user: string;
  region: string;
  role?: string | undefined;
}

/**
 * A function that makes a fresh token for the target. The host signed is the name TLS verifies
 * (`tls.servername`, else the address's host): the database's endpoint name, which RDS checks.
 */
export function rdsAuthTokens(
  target: { name: string; address: string; tls?: unknown },
  spec: RdsIamSpec,
): () => Promise<string> {
  const { host, port } = splitHostPort(target.address);
  const servername =
    target.tls && typeof target.tls === 'object'
      ? (target.tls as { servername?: string }).servername
      : undefined;
  const identity = { target: target.name, region: spec.region, role: spec.role };
  // Loaded on first use, like the credential providers (aws-credentials.ts).
  let signer: Promise<Signer> | undefined;
  return async () => {
    try {
      signer ??= import('@aws-sdk/rds-signer').then(
        (sdk) =>
          new sdk.Signer({
            hostname: servername ?? host,
            port,
            username: spec.user,
            region: spec.region,
            credentials: exitAwsCredentials(identity),
          }),
      );
      return await (await signer).getAuthToken();
    } catch (err) {
      throw awsCredentialsError(identity, err);
    }
  };
}
