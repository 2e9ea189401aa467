import { describe, expect, it } from 'vitest';
import {
  type BoundTarget,
  childEnv,
  credentialKeys,
  envName,
  exportedEnv,
  parseTargetSpec,
  parseTargetSpecs,
  targetUrl,
} from '../../src/client/env.js';
import { CiportError } from '../../src/errors/index.js';

const bound = (over: Partial<BoundTarget> & { name: string }): BoundTarget => ({
  protocol: 'tcp',
  host: '127.0.0.1',
  port: 40000,
  ...over,
});

describe('target specs', () => {
  it('parses NAME and NAME:LOCALPORT', () => {
    expect(parseTargetSpec('staging-db')).toEqual({ name: 'staging-db', port: 0 });
    expect(parseTargetSpec('cache_1:6380')).toEqual({ name: 'cache_1', port: 6380 });
  });

  it.each(['', 'Staging', 'db:', 'db:99999', 'db:5432:1', '-db', 'a b', 'db:-1'])(
    'rejects %j as usage',
    (text) => {
      let err: unknown;
      try {
        parseTargetSpec(text);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(CiportError);
      expect((err as CiportError).code).toBe('CIPORT_E_USAGE');
      expect((err as CiportError).exitCode).toBe(2);
    },
  );

  it('refuses a target named twice', () => {
    expect(() => parseTargetSpecs(['db', 'db:5433'])).toThrow(/named twice/);
  });
});

describe('exported variables', () => {
  it('names variables after the target, upper-cased with - as _', () => {
    expect(envName('staging-db')).toBe('STAGING_DB');
    expect(envName('cache_2')).toBe('CACHE_2');
  });

  it('picks the URL scheme by protocol and puts the database in the path', () => {
    expect(targetUrl(bound({ name: 'a', protocol: 'postgres', database: 'app' }))).toBe(
      'postgres://127.0.0.1:40000/app',
    );
    expect(targetUrl(bound({ name: 'a', protocol: 'mysql', database: 'shop' }))).toBe(
      'mysql://127.0.0.1:40000/shop',
    );
    expect(targetUrl(bound({ name: 'a', protocol: 'redis' }))).toBe('redis://127.0.0.1:40000');
    expect(targetUrl(bound({ name: 'a', protocol: 'http' }))).toBe('http://127.0.0.1:40000');
    expect(targetUrl(bound({ name: 'a', protocol: 'tcp' }))).toBe('tcp://127.0.0.1:40000');
  });

  it('percent-encodes a one-time credential and odd database names in the URL', () => {
    const url = targetUrl(
      bound({
        name: 'a',
        protocol: 'postgres',
        database: 'my db',
        credentials: { user: 'job@1', password: "p@ss:/w'rd" },
      }),
    );
    expect(url).toBe('postgres://job%401:p%40ss%3A%2Fw%27rd@127.0.0.1:40000/my%20db');
    const parsed = new URL(url);
    expect(decodeURIComponent(parsed.password)).toBe("p@ss:/w'rd");
    expect(decodeURIComponent(parsed.username)).toBe('job@1');
  });

  it('exports URL/HOST/PORT per target, and DATABASE_URL + PG* for a single postgres target', () => {
    const env = exportedEnv([
      bound({ name: 'staging-db', protocol: 'postgres', database: 'app', port: 5433 }),
      bound({ name: 'cache', protocol: 'redis', port: 6380 }),
    ]);
    expect(env).toEqual({
      CIPORT_STAGING_DB_URL: 'postgres://127.0.0.1:5433/app',
      CIPORT_STAGING_DB_HOST: '127.0.0.1',
      CIPORT_STAGING_DB_PORT: '5433',
      CIPORT_CACHE_URL: 'redis://127.0.0.1:6380',
      CIPORT_CACHE_HOST: '127.0.0.1',
      CIPORT_CACHE_PORT: '6380',
      DATABASE_URL: 'postgres://127.0.0.1:5433/app',
      PGHOST: '127.0.0.1',
      PGPORT: '5433',
      PGDATABASE: 'app',
      REDIS_URL: 'redis://127.0.0.1:6380',
    });
    expect(env).not.toHaveProperty('PGUSER');
    expect(env).not.toHaveProperty('PGPASSWORD');
  });

  it('sets PGUSER/PGPASSWORD only from a one-time credential', () => {
    const env = exportedEnv([
      bound({ name: 'db', protocol: 'postgres', credentials: { user: 'ciport_ses_1', password: 'otp-123' } }),
    ]);
    expect(env.PGUSER).toBe('ciport_ses_1');
    expect(env.PGPASSWORD).toBe('otp-123');
    expect(env.DATABASE_URL).toBe('postgres://ciport_ses_1:otp-123@127.0.0.1:40000');
    expect(env).not.toHaveProperty('PGDATABASE');
  });

  it("redis: the port's one-time password as REDISCLI_AUTH and in the URLs, all kept off stdout", () => {
    const cred = { user: '', password: 'otp-Redis_1' };
    const one = [
      bound({ name: 'cache', protocol: 'redis', database: '3', credentials: cred }),
      bound({ name: 'api', protocol: 'http', port: 40001 }),
    ];
    const env = exportedEnv(one);
    expect(env.CIPORT_CACHE_URL).toBe('redis://:otp-Redis_1@127.0.0.1:40000/3');
    expect(env.REDIS_URL).toBe(env.CIPORT_CACHE_URL);
    expect(env.REDISCLI_AUTH).toBe('otp-Redis_1');
    expect(env.CIPORT_API_URL).toBe('http://127.0.0.1:40001');
    expect(credentialKeys(one).sort()).toEqual(['CIPORT_CACHE_URL', 'REDISCLI_AUTH', 'REDIS_URL']);
    // Two redis targets share the port's password: REDISCLI_AUTH fits both, REDIS_URL neither.
    const two = [...one, bound({ name: 'queue', protocol: 'redis', port: 40002, credentials: cred })];
    const env2 = exportedEnv(two);
    expect(env2.REDISCLI_AUTH).toBe('otp-Redis_1');
    expect(env2).not.toHaveProperty('REDIS_URL');
    expect(credentialKeys(two).sort()).toEqual(['CIPORT_CACHE_URL', 'CIPORT_QUEUE_URL', 'REDISCLI_AUTH']);
  });

  it('does not pick one of several postgres targets for DATABASE_URL', () => {
    const env = exportedEnv([
      bound({ name: 'a', protocol: 'postgres' }),
      bound({ name: 'b', protocol: 'postgres', port: 40001 }),
    ]);
    expect(Object.keys(env).filter((k) => k === 'DATABASE_URL' || k.startsWith('PG'))).toEqual([]);
  });

  it('ssh: CIPORT_<T>_SSH_CONFIG per target, GIT_SSH_COMMAND only for a single one', () => {
    const one = exportedEnv([
      bound({ name: 'web1', protocol: 'ssh', sshConfig: "/tmp/ciport-ssh-x/it's.config" }),
    ]);
    expect(one.CIPORT_WEB1_SSH_CONFIG).toBe("/tmp/ciport-ssh-x/it's.config");
    expect(one.CIPORT_WEB1_URL).toBe('ssh://127.0.0.1:40000');
    // Quoted for the shell git runs it with.
    expect(one.GIT_SSH_COMMAND).toBe("ssh -F '/tmp/ciport-ssh-x/it'\\''s.config'");
    const two = exportedEnv([
      bound({ name: 'web1', protocol: 'ssh', sshConfig: '/t/web1.config' }),
      bound({ name: 'web2', protocol: 'ssh', sshConfig: '/t/web2.config', port: 40001 }),
    ]);
    expect(two.CIPORT_WEB2_SSH_CONFIG).toBe('/t/web2.config');
    expect(two.GIT_SSH_COMMAND).toBeUndefined();
    expect(credentialKeys([bound({ name: 'web1', protocol: 'ssh', sshConfig: '/t/web1.config' })])).toEqual(
      [],
    );
  });

  it('aws: the region under both names (botocore/boto3 and the AWS CLI v1 read only AWS_DEFAULT_REGION)', () => {
    const aws = { path: '/aws/credentials', token: 'tok', region: 'eu-west-1' };
    const one = exportedEnv([bound({ name: 'deploy', protocol: 'aws', aws })]);
    expect(one.AWS_REGION).toBe('eu-west-1');
    expect(one.AWS_DEFAULT_REGION).toBe('eu-west-1');
    // Without a region, neither is set: the job's own (or the SDK's default) applies.
    const none = exportedEnv([
      bound({ name: 'deploy', protocol: 'aws', aws: { ...aws, region: undefined } }),
    ]);
    expect(none).not.toHaveProperty('AWS_REGION');
    expect(none).not.toHaveProperty('AWS_DEFAULT_REGION');
  });

  it('treats a tcp target as tcp even when it fronts PostgreSQL', () => {
    const env = exportedEnv([bound({ name: 'pg', protocol: 'tcp' })]);
    expect(env.CIPORT_PG_URL).toBe('tcp://127.0.0.1:40000');
    expect(env).not.toHaveProperty('DATABASE_URL');
  });

  it("removes the token's variable from the command's environment", () => {
    const env = childEnv(
      { PATH: '/bin', CIPORT_ID_TOKEN: 'eyJ.x.y', MY_TOKEN: 'eyJ.a.b', KEEP: '1' },
      { CIPORT_DB_PORT: '1' },
      ['CIPORT_ID_TOKEN', 'MY_TOKEN', undefined],
    );
    expect(env).toEqual({ PATH: '/bin', KEEP: '1', CIPORT_DB_PORT: '1' });
  });
});
