// A job's Node script: the AWS SDK's default credential chain (no credentials in code or env),
// pointed at the loopback AWS fixture. Prints what it saw as one JSON line.
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { GetCallerIdentityCommand, STSClient } from '@aws-sdk/client-sts';

const endpoint = process.env.FIXTURE_URL;
const s3 = new S3Client({ endpoint, forcePathStyle: true });
const sts = new STSClient({ endpoint });
const who = await sts.send(new GetCallerIdentityCommand({}));
await s3.send(new PutObjectCommand({ Bucket: 'artifacts', Key: 'from-node.txt', Body: 'node was here' }));
const list = await s3.send(new ListObjectsV2Command({ Bucket: 'artifacts' }));
const got = await s3.send(new GetObjectCommand({ Bucket: 'artifacts', Key: 'hello.txt' }));
const creds = await s3.config.credentials();
console.log(
  JSON.stringify({
    arn: who.Arn,
    keys: (list.Contents ?? []).map((c) => c.Key),
    hello: await got.Body?.transformToString(),
    accessKeyId: creds.accessKeyId,
  }),
);
