// Attack: a provider answer the AWS SDK cannot parse (a broken or intercepting proxy in front of
// Secrets Manager, a metadata endpoint answering plain text) makes V8 throw a SyntaxError that
// quotes the start of the text: the secret value, or the credentials. That message went into
// CIPORT_E_SECRET_UNAVAILABLE at start, the warn line of a failed refresh, and
// CIPORT_E_AWS_CREDENTIALS_UNAVAILABLE answers. It must not.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseGatewayConfig } from '../../src/config/load.js';
import { SecretProviders } from '../../src/credentials/secret-providers.js';
import { awsCredentialsError } from '../../src/exits/aws-credentials.js';

const VALUE = 'sup3rs3cretpw';
let server: Server;
const saved = { ...process.env };

beforeAll(async () => {
  // Secrets Manager answering the raw value, not its JSON.
  server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/x-amz-json-1.1' });
    res.end(`${VALUE} and more`);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  Object.assign(process.env, {
    AWS_ACCESS_KEY_ID: 'AKIAEXAMPLE',
    AWS_SECRET_ACCESS_KEY: 'x',
    AWS_REGION: 'eu-west-1',
    AWS_ENDPOINT_URL: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    AWS_EC2_METADATA_DISABLED: 'true',
  });
});
afterAll(async () => {
  process.env = saved;
  await new Promise<void>((r) => server.close(() => r()));
});

describe('provider answers that do not parse', () => {
  it('never quote the answer in a Secrets Manager error', async () => {
    const cfg = parseGatewayConfig(
      JSON.stringify({
        targets: [
          {
            name: 'db',
            protocol: 'postgres',
            address: '127.0.0.1:5432',
            credentials: { user: 'app', password: { aws_secretsmanager: { secret_id: 'ci/db' } } },
          },
        ],
      }),
      'gateway.yaml',
      { env: {} },
    );
    const err = await SecretProviders.start(cfg, { log: { info() {}, warn() {} } }).catch((e: Error) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toContain('ci/db');
    expect((err as Error).message).not.toContain(VALUE.slice(0, 6));
  });

  it('never quote it in CIPORT_E_AWS_CREDENTIALS_UNAVAILABLE', () => {
    let thrown: unknown;
    try {
      JSON.parse(`${VALUE}-secret-access-key`);
    } catch (e) {
      thrown = e;
    }
    const err = awsCredentialsError({ target: 'api', region: 'eu-west-1' }, thrown);
    expect(err.code).toBe('CIPORT_E_AWS_CREDENTIALS_UNAVAILABLE');
    expect(err.message).not.toContain(VALUE.slice(0, 6));
    expect(err.message).toContain('SyntaxError');
  });
});
