// The exit's own AWS credentials, for what it signs itself (http targets with `aws_sigv4`, RDS IAM
// tokens of postgres and mysql targets). Found as every AWS SDK finds them
// (fromNodeProviderChain: env, web identity, ECS/EC2 metadata, profiles; endpoints from the SDK's
// env resolution, AWS_ENDPOINT_URL_STS included), or, with a `role`, the temporary credentials of
// that role assumed with them. Caching and refresh are the SDK's own (memoizeIdentityProvider,
// what an SDK client wraps its credential provider in): a new AssumeRole only near expiry.
//
// The SDK is loaded on first use: a gateway or CLI without such targets never loads it (nor
// prints its Node version warning).
import type { fromNodeProviderChain } from '@aws-sdk/credential-providers';
import { CiportError } from '../errors/index.js';
import { sdkErrorText } from '../errors/sdk-message.js';

/** What every credential provider of the SDK is (its types, without another package). */
type AwsCredentialIdentityProvider = ReturnType<typeof fromNodeProviderChain>;
type AwsCredentialIdentity = Awaited<ReturnType<AwsCredentialIdentityProvider>>;

export interface ExitAwsIdentity {
  /** The target, for messages and the role session name. */
  target: string;
  region: string;
  /** IAM role ARN assumed with the exit's credentials; absent: the exit's credentials as found. */
  role?: string | undefined;
}

let baseChain: Promise<AwsCredentialIdentityProvider> | undefined;

/**
 * The process's credentials, one memoized chain for every target (one metadata lookup); also
 * what the `aws` exit calls STS with (exits/aws/assume.ts).
 */
export function base(): Promise<AwsCredentialIdentityProvider> {
  baseChain ??= import('@aws-sdk/credential-providers').then((sdk) => sdk.fromNodeProviderChain());
  return baseChain;
}

async function assumed(identity: ExitAwsIdentity & { role: string }): Promise<AwsCredentialIdentityProvider> {
  const [sdk, core, masterCredentials] = await Promise.all([
    import('@aws-sdk/credential-providers'),
    import('@smithy/core'),
    base(),
  ]);
  return core.memoizeIdentityProvider(
    sdk.fromTemporaryCredentials({
      params: { RoleArn: identity.role, RoleSessionName: roleSessionName(identity.target) },
      masterCredentials,
      clientConfig: { region: identity.region },
    }),
    core.isIdentityExpired,
    core.doesIdentityRequireRefresh,
  ) as AwsCredentialIdentityProvider;
}

/** `ciport-<target>`: what CloudTrail shows for requests signed with a target's role. */
export function roleSessionName(target: string): string {
  return `ciport-${target.replace(/[^\w+=,.@-]/g, '-')}`.slice(0, 64);
}

/**
 * A credential provider for one target. Failures come out as CIPORT_E_AWS_CREDENTIALS_UNAVAILABLE
 * naming the target and the role; the SDK's message is kept (it says which provider or which
 * STS refusal), never any credential.
 */
export function exitAwsCredentials(identity: ExitAwsIdentity): AwsCredentialIdentityProvider {
  const role = identity.role;
  let provider: Promise<AwsCredentialIdentityProvider> | undefined;
  return async (properties) => {
    try {
      provider ??= role === undefined ? base() : assumed({ ...identity, role });
      return (await (
        await provider
      )(properties)) as AwsCredentialIdentity;
    } catch (err) {
      throw awsCredentialsError(identity, err);
    }
  };
}

export function awsCredentialsError(identity: ExitAwsIdentity, err: unknown): CiportError {
  if (err instanceof CiportError) return err;
  const e = err as { name?: string; message?: string };
  const why = sdkErrorText(err);
  const whose = identity.role === undefined ? "the exit's AWS credentials" : `role ${identity.role}`;
  return new CiportError(
    'CIPORT_E_AWS_CREDENTIALS_UNAVAILABLE',
    `target ${identity.target}: ${whose} could not be obtained (${why})`,
    { details: { target: identity.target, reason: e?.name ?? 'Error' } },
  );
}
