// The development issuer and its CLI: presets shaped like the platforms, keys that survive a
// restart, `--set` typing, and tokens the verifier accepts end to end.
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { Command } from 'commander';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { CliContext } from '../../src/cli/command.js';
import { registerDev, runDevIssuer } from '../../src/cli/commands/dev.js';
import type { Io } from '../../src/cli/output.js';
import { issuerSchema } from '../../src/config/schema.js';
import { DevIssuer } from '../../src/identity/dev-issuer.js';
import { PRESETS, parseSetPairs } from '../../src/identity/dev-presets.js';
import { DevSigner } from '../../src/identity/dev-signer.js';
import { TokenVerifier } from '../../src/identity/verify.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'ciport-dev-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

function captureIo(): Io & { out: () => string; err: () => string } {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (c: Buffer) => {
    out += c.toString();
  });
  stderr.on('data', (c: Buffer) => {
    err += c.toString();
  });
  return { stdout, stderr, env: {}, out: () => out, err: () => err };
}

async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const io = captureIo();
  const ctx: CliContext = { io, exitCode: 0 };
  const program = new Command('ciport').exitOverride();
  program.configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s) });
  registerDev(program, ctx);
  await program.parseAsync(['node', 'ciport', ...args]);
  return { code: ctx.exitCode, out: io.out(), err: io.err() };
}

const verifierFor = (issuer: DevIssuer | string, kind: 'gitlab' | 'github' = 'gitlab') =>
  new TokenVerifier([
    issuerSchema.parse({
      name: 'dev',
      kind,
      issuer: typeof issuer === 'string' ? issuer : issuer.url,
      audience: 'ciport',
      dev: true,
    }),
  ]);

describe('presets', () => {
  it('gitlab-main is a protected main-branch push pipeline without environment', async () => {
    const issuer = await DevIssuer.start({ port: 0, signer: await DevSigner.ephemeral() });
    try {
      const token = await issuer.mint({}, { preset: 'gitlab-main' });
      const { principal, claims, facts } = await verifierFor(issuer).verify(token);
      expect(claims).toMatchObject({ ref_protected: 'true', runner_id: 12270835, project_id: '61577203' });
      expect(claims.nbf).toBe((claims.iat as number) - 5);
      expect(principal).toMatchObject({
        event: 'push',
        fork: false,
        environment: null,
        ref: { protected: true },
      });
      expect(facts.trusted_event).toBe(true);
      expect(decodeProtectedHeader(token)).toMatchObject({ alg: 'RS256', typ: 'JWT' });
    } finally {
      await issuer.close();
    }
  });

  it('gitlab-fork-mr is a fork merge request (job_project_id ≠ project_id)', async () => {
    const issuer = await DevIssuer.start({ port: 0, signer: await DevSigner.ephemeral({ alg: 'ES256' }) });
    try {
      const { principal, claims } = await verifierFor(issuer).verify(
        await issuer.mint({}, { preset: 'gitlab-fork-mr' }),
      );
      expect(claims.job_project_id).not.toBe(claims.project_id);
      expect(principal).toMatchObject({ fork: true, trusted_event: false, event: 'merge_request_event' });
    } finally {
      await issuer.close();
    }
  });

  it('github-push and github-pr look like GitHub Actions tokens', async () => {
    const issuer = await DevIssuer.start({
      port: 0,
      kind: 'github',
      signer: await DevSigner.ephemeral({ alg: 'ES256' }),
    });
    try {
      const verifier = verifierFor(issuer, 'github');
      const push = await verifier.verify(await issuer.mint({}, { preset: 'github-push' }));
      expect(push.claims).toMatchObject({
        sub: 'repo:acme/ledger:ref:refs/heads/main',
        repository_id: '81213410',
      });
      expect(push.principal).toMatchObject({
        event: 'push',
        ref: { name: 'main', protected: true },
        trusted_event: true,
      });
      expect(push.principal.job_url).toBe(`${issuer.url}/acme/ledger/actions/runs/9876543210/attempts/1`);
      const pr = await verifier.verify(await issuer.mint({}, { preset: 'github-pr' }));
      expect(pr.claims).toMatchObject({ sub: 'repo:acme/ledger:pull_request', event_name: 'pull_request' });
      expect(pr.principal.ref?.protected).toBe(false);
    } finally {
      await issuer.close();
    }
  });

  it('serves discovery and the JWKS at GitLab and GitHub paths', async () => {
    const issuer = await DevIssuer.start({ port: 0, signer: await DevSigner.ephemeral({ alg: 'ES256' }) });
    try {
      const discovery = (await (
        await fetch(`${issuer.url}/.well-known/openid-configuration`)
      ).json()) as Record<string, unknown>;
      expect(discovery).toMatchObject({ issuer: issuer.url, jwks_uri: `${issuer.url}/oauth/discovery/keys` });
      const jwks = (await (await fetch(`${issuer.url}/.well-known/jwks`)).json()) as {
        keys: Record<string, unknown>[];
      };
      expect(jwks.keys).toHaveLength(1);
      expect(jwks.keys[0]).not.toHaveProperty('d');
      expect((await fetch(`${issuer.url}/nope`)).status).toBe(404);
    } finally {
      await issuer.close();
    }
  });
});

describe('--set parsing', () => {
  it('keeps platform values as strings, except numeric platform claims and times', () => {
    expect(
      parseSetPairs(
        ['ref_protected=true', 'project_id=42', 'runner_id=7', 'exp=1700000000', 'ref=a=b', 'x='],
        'gitlab-main',
      ),
    ).toEqual({
      ref_protected: 'true',
      project_id: '42',
      runner_id: 7,
      exp: 1_700_000_000,
      ref: 'a=b',
      x: '',
    });
    expect(parseSetPairs(['ref_protected=false', 'run_attempt=2'], 'github-push')).toEqual({
      ref_protected: 'false',
      run_attempt: '2',
    });
  });

  it('types values without a preset, and takes JSON for structures', () => {
    expect(
      parseSetPairs([
        'a=true',
        'b=false',
        'c=null',
        'd=3.5',
        'e=text',
        'groups=["x","y"]',
        'o={"k":1}',
        's="42"',
      ]),
    ).toEqual({
      a: true,
      b: false,
      c: null,
      d: 3.5,
      e: 'text',
      groups: ['x', 'y'],
      o: { k: 1 },
      s: '42',
    });
  });

  it('refuses malformed pairs', () => {
    expect(() => parseSetPairs(['novalue'])).toThrow(expect.objectContaining({ code: 'CIPORT_E_USAGE' }));
    expect(() => parseSetPairs(['=x'])).toThrow(expect.objectContaining({ code: 'CIPORT_E_USAGE' }));
    expect(() => parseSetPairs(['a={broken'])).toThrow(expect.objectContaining({ code: 'CIPORT_E_USAGE' }));
  });
});

describe('key file', () => {
  it('is created with mode 0600 and keeps tokens valid across restarts', async () => {
    const keyFile = join(dir, 'keys', 'dev.json');
    const first = await DevIssuer.start({ port: 0, keyFile, alg: 'ES256' });
    const token = await first.mint({}, { preset: 'gitlab-main' });
    const kid = first.signer.current.kid;
    const port = new URL(first.url).port;
    await first.close();
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);

    const second = await DevIssuer.start({ port: Number(port), keyFile });
    try {
      expect(second.signer.current.kid).toBe(kid);
      await expect(verifierFor(second).verify(token)).resolves.toBeDefined();
    } finally {
      await second.close();
    }
  });

  it('rejects a corrupt key file with a config error', async () => {
    const keyFile = join(dir, 'bad.json');
    writeFileSync(keyFile, '{"version": 1, "keys": []}');
    await expect(DevSigner.open(keyFile)).rejects.toMatchObject({ code: 'CIPORT_E_CONFIG_INVALID' });
  });
});

describe('ciport dev token', () => {
  it('prints only the token, minted with the preset and --set values', async () => {
    const keyFile = join(dir, 'dev.json');
    const issuer = await DevIssuer.start({ port: 0, keyFile, alg: 'ES256' });
    try {
      const claimsFile = join(dir, 'claims.json');
      writeFileSync(claimsFile, JSON.stringify({ environment: 'staging/eu', environment_protected: 'true' }));
      const { code, out, err } = await cli([
        'dev',
        'token',
        '--preset',
        'gitlab-main',
        '--key-file',
        keyFile,
        '--claims',
        claimsFile,
        '--set',
        'ref=release',
        '--set',
        'ref_protected=false',
        '--unset',
        'user_email',
        '--ttl',
        '2m',
      ]);
      expect({ code, err }).toEqual({ code: 0, err: '' });
      expect(out).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+\n$/);
      const token = out.trim();
      // No --issuer: the URL the running dev issuer recorded in the key file.
      const { claims, principal } = await verifierFor(issuer).verify(token);
      expect(claims).toMatchObject({
        iss: issuer.url,
        ref: 'release',
        ref_protected: 'false',
        environment: 'staging/eu',
      });
      expect(claims).not.toHaveProperty('user_email');
      expect((claims.exp as number) - (claims.iat as number)).toBe(120);
      expect(principal.environment).toEqual({ name: 'staging/eu', protected: true });
    } finally {
      await issuer.close();
    }
  });

  it('honours --issuer and repeated --audience', async () => {
    const keyFile = join(dir, 'dev.json');
    const { code, out } = await cli([
      'dev',
      'token',
      '--preset',
      'github-pr',
      '--key-file',
      keyFile,
      '--issuer',
      'http://127.0.0.1:9999',
      '--audience',
      'a',
      '--audience',
      'b',
    ]);
    expect(code).toBe(0);
    expect(decodeJwt(out.trim())).toMatchObject({
      iss: 'http://127.0.0.1:9999',
      aud: ['a', 'b'],
      event_name: 'pull_request',
    });
  });

  it.each([
    [['--preset', 'bitbucket'], 'CIPORT_E_USAGE', 2],
    [['--ttl', 'forever'], 'CIPORT_E_USAGE', 2],
    [['--set', 'oops'], 'CIPORT_E_USAGE', 2],
  ])('refuses %j', async (extra, code, exit) => {
    const result = await cli(['dev', 'token', '--key-file', join(dir, 'k.json'), ...extra]);
    expect(result.code).toBe(exit);
    expect(result.err).toContain(code);
    expect(result.out).toBe('');
  });

  it('refuses a claims file that is not an object', async () => {
    const claimsFile = join(dir, 'claims.json');
    writeFileSync(claimsFile, '[1, 2]');
    const result = await cli(['dev', 'token', '--key-file', join(dir, 'k.json'), '--claims', claimsFile]);
    expect(result.err).toContain('CIPORT_E_CLAIMS_INVALID');
    expect(result.code).toBe(2);
  });

  it('lists every preset in its help', async () => {
    const io = captureIo();
    const program = new Command('ciport').exitOverride();
    program.configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s) });
    registerDev(program, { io, exitCode: 0 });
    await expect(program.parseAsync(['node', 'ciport', 'dev', 'token', '--help'])).rejects.toThrow();
    for (const preset of PRESETS) expect(io.out()).toContain(preset);
  });
});

describe('ciport dev issuer', () => {
  it('prints its URL, serves until stopped, and remembers the URL in the key file', async () => {
    const io = captureIo();
    const keyFile = join(dir, 'dev.json');
    let stop!: () => void;
    const stopped = new Promise<void>((resolve) => {
      stop = resolve;
    });
    const running = runDevIssuer({ port: '0', keyFile, kind: 'github', alg: 'ES256' }, io, () => stopped);
    await expect.poll(() => io.out(), { timeout: 5000 }).toMatch(/^http:\/\/127\.0\.0\.1:\d+\n$/);
    const url = io.out().trim();
    const discovery = (await (await fetch(`${url}/.well-known/openid-configuration`)).json()) as {
      jwks_uri: string;
    };
    expect(discovery.jwks_uri).toBe(`${url}/.well-known/jwks`);
    expect(io.err()).toContain('kind: github');
    expect(JSON.parse(readFileSync(keyFile, 'utf8')).issuer).toBe(url);
    stop();
    await expect(running).resolves.toBe(0);
    await expect(fetch(`${url}/.well-known/jwks`)).rejects.toThrow();
  });

  it('refuses a bad port as a usage error', async () => {
    await expect(
      runDevIssuer(
        { port: 'x', keyFile: join(dir, 'k.json'), kind: 'gitlab', alg: 'RS256' },
        captureIo(),
        () => Promise.resolve(),
      ),
    ).rejects.toMatchObject({ code: 'CIPORT_E_USAGE' });
  });
});
