// Issue 15: `aws_sigv4` on http targets and `aws_rds_iam` on postgres/mysql targets are refused
// at load, with their path, when combined with another credential or (RDS) without verified TLS.
import { describe, expect, it } from 'vitest';
import { parseGatewayConfig } from '../../src/config/load.js';
import { CiportError } from '../../src/errors/index.js';

function load(targets: string): void {
  parseGatewayConfig(`targets:\n${targets}`, 'gw.yaml', { resolveSecrets: false });
}

function loadError(targets: string): string {
  try {
    load(targets);
  } catch (err) {
    expect(err).toBeInstanceOf(CiportError);
    expect((err as CiportError).code).toBe('CIPORT_E_CONFIG_INVALID');
    return (err as CiportError).message;
  }
  throw new Error('expected the configuration to be refused');
}

const target = (protocol: string, lines: string) =>
  `  - name: t\n    protocol: ${protocol}\n    address: db.example.internal:5432\n${lines}`;

describe('aws_sigv4 on an http target', () => {
  it('loads with service and region, and with a role', () => {
    load(
      target(
        'http',
        '    tls: true\n    credentials: {aws_sigv4: {service: execute-api, region: eu-west-1}}\n',
      ),
    );
    load(
      target(
        'http',
        '    credentials:\n      aws_sigv4: {service: es, region: eu-west-1, role: "arn:aws:iam::123456789012:role/search"}\n',
      ),
    );
  });

  it.each([
    [
      'token',
      '{aws_sigv4: {service: es, region: eu-west-1}, token: {env: T}}',
      /cannot be combined with token/,
    ],
    [
      'user/password',
      '{aws_sigv4: {service: es, region: eu-west-1}, user: u, password: {env: P}}',
      /cannot be combined with user, password/,
    ],
    [
      'header',
      '{aws_sigv4: {service: es, region: eu-west-1}, header: X-Key}',
      /cannot be combined with header/,
    ],
    ['kind', '{aws_sigv4: {service: es, region: eu-west-1}, kind: bearer}', /cannot be combined with kind/],
  ])('is refused together with %s', (_what, credentials, message) => {
    const err = loadError(target('http', `    credentials: ${credentials}\n`));
    expect(err).toMatch(/targets\[0\]\.credentials/);
    expect(err).toMatch(message);
  });

  it('refuses a missing region, a bad region, a bad role ARN and unknown keys, with their path', () => {
    expect(loadError(target('http', '    credentials: {aws_sigv4: {service: es}}\n'))).toMatch(
      /targets\[0\]\.credentials\.aws_sigv4\.region/,
    );
    expect(
      loadError(target('http', '    credentials: {aws_sigv4: {service: es, region: Europe}}\n')),
    ).toMatch(/an AWS region/);
    expect(
      loadError(
        target('http', '    credentials: {aws_sigv4: {service: es, region: eu-west-1, role: deploy}}\n'),
      ),
    ).toMatch(/targets\[0\]\.credentials\.aws_sigv4\.role.*IAM role ARN/s);
    expect(
      loadError(
        target('http', '    credentials: {aws_sigv4: {service: es, region: eu-west-1, profile: x}}\n'),
      ),
    ).toMatch(/unknown key "profile"/);
  });
});

describe('aws_rds_iam on postgres and mysql targets', () => {
  const rds = 'aws_rds_iam: {user: app_iam, region: eu-west-1}';

  it('loads with verified TLS (postgres verify-full, the default with tls; mysql tls)', () => {
    load(target('postgres', `    tls: true\n    credentials: {${rds}}\n`));
    load(
      target(
        'postgres',
        `    tls: {servername: db.example.internal}\n    sslmode: verify-full\n    credentials: {${rds}}\n`,
      ),
    );
    load(target('mysql', `    tls: true\n    credentials: {${rds}}\n`));
  });

  it.each([
    ['postgres', '', /needs verified TLS/],
    ['postgres', '    tls: true\n    sslmode: require\n', /needs verified TLS/],
    ['postgres', '    tls: true\n    sslmode: verify-ca\n', /needs verified TLS/],
    ['postgres', '    sslmode: verify-full\n', /needs verified TLS/],
    ['mysql', '', /needs verified TLS/],
    ['mysql', '    tls: false\n', /needs verified TLS/],
  ])('%s without verified TLS is refused', (protocol, tls, message) => {
    const err = loadError(target(protocol, `${tls}    credentials: {${rds}}\n`));
    expect(err).toMatch(/targets\[0\]\.credentials\.aws_rds_iam/);
    expect(err).toMatch(message);
  });

  it.each([
    ['postgres', `{${rds}, password: {env: P}}`, /cannot be combined with password/],
    ['mysql', `{${rds}, password: {env: P}}`, /cannot be combined with password/],
    ['postgres', `{${rds}, user: app}`, /cannot be combined with user/],
    [
      'postgres',
      `{${rds}, dynamic: {admin: {user: a, password: {env: A}}, owner: o}}`,
      /cannot be combined with dynamic/,
    ],
    ['mysql', `{${rds}, dynamic: {admin: {user: a, password: {env: A}}}}`, /cannot be combined with dynamic/],
  ])('%s: aws_rds_iam with another credential is refused (%s)', (protocol, credentials, message) => {
    const err = loadError(target(protocol, `    tls: true\n    credentials: ${credentials}\n`));
    expect(err).toMatch(/targets\[0\]\.credentials\.aws_rds_iam/);
    expect(err).toMatch(message);
  });

  it('is not a key of redis or http targets', () => {
    expect(loadError(target('redis', `    credentials: {${rds}}\n`))).toMatch(/unknown key "aws_rds_iam"/);
    expect(loadError(target('http', `    credentials: {${rds}}\n`))).toMatch(/unknown key "aws_rds_iam"/);
  });
});
