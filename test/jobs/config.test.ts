// The `job_api` issuer key: its schema defaults and the checks the service makes at start.
import { describe, expect, it } from 'vitest';
import { gatewayJsonSchema, issuerSchema } from '../../src/config/schema.js';
import { ConfigError } from '../../src/errors/index.js';
import { JobLiveness } from '../../src/jobs/index.js';
import { issuerWithApi } from './helpers.js';

const base = {
  name: 'gitlab',
  kind: 'gitlab',
  issuer: 'https://gitlab.example.com',
  audience: 'https://ciport.example.com',
};

function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error('expected a ConfigError');
}

describe('issuers[].job_api schema', () => {
  it('is optional', () => {
    expect(issuerSchema.parse(base).job_api).toBeUndefined();
  });

  it('defaults poll_interval to 10 s and reads secrets as {env}/{file}', () => {
    const parsed = issuerSchema.parse({
      ...base,
      job_api: {
        url: 'https://gitlab.example.com/api/v4',
        token: { env: 'GITLAB_READ_API_TOKEN' },
        webhook_secret: { file: '/run/secrets/hook' },
      },
    });
    expect(parsed.job_api?.poll_interval).toBe(10_000);
    expect(parsed.job_api?.token.origin).toBe('env:GITLAB_READ_API_TOKEN');
    expect(parsed.job_api?.webhook_secret?.origin).toBe('file:/run/secrets/hook');
    expect(
      issuerSchema.parse({
        ...base,
        job_api: { url: 'https://x.example/api/v4', token: { env: 'T' }, poll_interval: '30s' },
      }).job_api?.poll_interval,
    ).toBe(30_000);
  });

  it('refuses unknown keys, a token written inline, and a non-URL', () => {
    const bad = [
      { url: 'https://x.example', token: { env: 'T' }, poll: '5s' },
      { url: 'https://x.example', token: 'glpat-inline' },
      { url: 'not a url', token: { env: 'T' } },
      { url: 'https://x.example', token: { env: 'T' }, poll_interval: 'often' },
    ];
    for (const job_api of bad) expect(issuerSchema.safeParse({ ...base, job_api }).success).toBe(false);
  });

  it('appears in the JSON Schema for editors', () => {
    expect(JSON.stringify(gatewayJsonSchema())).toContain('job_api');
  });
});

describe('JobLiveness start-up checks', () => {
  it('refuses job_api on a generic OIDC issuer', () => {
    const err = configError(
      () => new JobLiveness({ issuers: [issuerWithApi('oidc', 'https://kc.example.com', 't0ken')] }),
    );
    expect(err.code).toBe('CIPORT_E_CONFIG_INVALID');
    expect(err.message).toContain('issuers[oidc].job_api');
  });

  it('refuses plain http off loopback (the token travels with every request) and credentials in the URL', () => {
    for (const url of ['http://gitlab.example.com/api/v4', 'https://user:pw@gitlab.example.com/api/v4']) {
      expect(
        configError(() => new JobLiveness({ issuers: [issuerWithApi('gitlab', url, 't0ken')] })).code,
      ).toBe('CIPORT_E_CONFIG_INVALID');
    }
    expect(
      () => new JobLiveness({ issuers: [issuerWithApi('gitlab', 'http://127.0.0.1:1/api/v4', 't0ken')] }),
    ).not.toThrow();
  });

  it('refuses a webhook_secret on a GitHub issuer, and a poll_interval under 100 ms', () => {
    expect(
      configError(
        () =>
          new JobLiveness({
            issuers: [
              issuerWithApi('github', 'https://api.github.com', 't0ken', { webhookSecret: 's3cret' }),
            ],
          }),
      ).message,
    ).toContain('webhook_secret');
    expect(
      configError(
        () =>
          new JobLiveness({
            issuers: [
              issuerWithApi('gitlab', 'https://gitlab.example.com/api/v4', 't0ken', { pollInterval: '50ms' }),
            ],
          }),
      ).message,
    ).toContain('poll_interval');
  });

  it('refuses an unresolved token', () => {
    const issuer = issuerSchema.parse({
      ...base,
      job_api: { url: 'https://gitlab.example.com/api/v4', token: { env: 'NOT_RESOLVED' } },
    });
    expect(configError(() => new JobLiveness({ issuers: [issuer] })).code).toBe(
      'CIPORT_E_SECRET_UNAVAILABLE',
    );
  });

  it('issuers without job_api are simply not covered', () => {
    const liveness = new JobLiveness({ issuers: [issuerSchema.parse(base)] });
    expect(liveness.stats().apiUnreachable).toEqual({});
    expect(liveness.covers({ platform: 'gitlab', issuer: 'gitlab', project: '1', job: '2' })).toBe(false);
  });
});
