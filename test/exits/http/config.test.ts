// The injection spec of an `http` target: inference from today's credential fields, the proposed
// `kind` / `header` fields, and the checks that keep malformed or unresolved secrets out.
import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { Secret } from '../../../src/config/secret.js';
import { httpCredentialsSchema } from '../../../src/config/targets/http.js';
import { CiportError } from '../../../src/errors/index.js';
import {
  clientResponseHeaders,
  connectionTokens,
  upstreamRequestHeaders,
} from '../../../src/exits/http/headers.js';
import {
  checkHttpInjection,
  type HttpInjection,
  httpInjectionFrom,
  httpListenerUrl,
  injectedHeader,
  replacedHeaders,
} from '../../../src/exits/http/index.js';

const s = (value: string, env = 'X') => new Secret({ env }, value);

function configError(fn: () => unknown): CiportError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(CiportError);
    return err as CiportError;
  }
  throw new Error('expected a ConfigError');
}

describe('httpInjectionFrom', () => {
  it('infers the kind from the fields present', () => {
    expect(httpInjectionFrom({ name: 'a', credentials: { token: s('t') } }).kind).toBe('bearer');
    expect(httpInjectionFrom({ name: 'a', credentials: { user: 'u', password: s('p') } }).kind).toBe('basic');
    expect(
      httpInjectionFrom({ name: 'a', credentials: { header: 'X-API-Key', token: s('k') } }),
    ).toMatchObject({
      kind: 'header',
      header: 'X-API-Key',
    });
    expect(httpInjectionFrom({ name: 'a' })).toEqual({ kind: 'none' });
    expect(httpInjectionFrom({ name: 'a', credentials: {} })).toEqual({ kind: 'none' });
  });

  it('honours an explicit kind', () => {
    const i = httpInjectionFrom({
      name: 'a',
      credentials: { kind: 'header', header: 'Authorization', token: s('Token abc') },
    });
    expect(injectedHeader(i)).toEqual({ name: 'authorization', value: 'Token abc' });
  });

  it.each([
    [{ token: s('t'), user: 'u', password: s('p') }, /say which one to inject/],
    [{ user: 'u' }, /basic authentication needs both/],
    [{ kind: 'bearer' as const, user: 'u', password: s('p') }, /kind bearer needs token/],
    [{ kind: 'bearer' as const, token: s('t'), header: 'X-K' }, /kind bearer does not use header/],
    [{ kind: 'basic' as const, user: 'u' }, /kind basic needs user and password/],
    [{ kind: 'basic' as const, user: 'a:b', password: s('p') }, /cannot contain ":"/],
    [{ kind: 'header' as const, token: s('t') }, /kind header needs header and token/],
    [{ header: 'Host', token: s('t') }, /header Host cannot be injected/],
    [{ header: 'Transfer-Encoding', token: s('t') }, /cannot be injected/],
    [{ header: 'Bad Header', token: s('t') }, /not a valid header name/],
    [{ header: 'X-K', token: s('t'), user: 'u' }, /kind header does not use user/],
  ])('refuses %o', (credentials, message) => {
    const err = configError(() => httpInjectionFrom({ name: 'api', credentials }));
    expect(err.code).toBe('CIPORT_E_CONFIG_INVALID');
    expect(err.message).toMatch(/^targets\.api\.credentials: /);
    expect(err.message).toMatch(message);
  });
});

describe('injectedHeader and replacedHeaders', () => {
  it('builds bearer, basic and custom headers', () => {
    expect(injectedHeader({ kind: 'bearer', token: s('abc') })).toEqual({
      name: 'authorization',
      value: 'Bearer abc',
    });
    expect(injectedHeader({ kind: 'basic', user: 'bot', password: s('pä:ss') })).toEqual({
      name: 'authorization',
      value: `Basic ${Buffer.from('bot:pä:ss', 'utf8').toString('base64')}`,
    });
    expect(injectedHeader({ kind: 'header', header: 'X-API-Key', value: s('k') })).toEqual({
      name: 'x-api-key',
      value: 'k',
    });
    expect(injectedHeader({ kind: 'none' })).toBeUndefined();
  });

  it('always replaces Authorization, plus the custom header', () => {
    expect([...replacedHeaders({ kind: 'none' })]).toEqual(['authorization']);
    expect([...replacedHeaders({ kind: 'header', header: 'X-API-Key', value: s('k') })]).toEqual([
      'authorization',
      'x-api-key',
    ]);
  });
});

describe('checkHttpInjection', () => {
  it('accepts a usable secret', () => {
    expect(() => checkHttpInjection('api', { kind: 'bearer', token: s('ok-token') })).not.toThrow();
    expect(() => checkHttpInjection('api', { kind: 'none' })).not.toThrow();
  });

  it('refuses header-breaking values without printing them', () => {
    const bad: HttpInjection[] = [
      { kind: 'bearer', token: s('abc\r\nX-Evil: 1', 'TOKEN_ENV') },
      { kind: 'header', header: 'X-K', value: s('a\u0000b', 'TOKEN_ENV') },
      { kind: 'header', header: 'X-K', value: s('snow ☃', 'TOKEN_ENV') },
    ];
    for (const injection of bad) {
      const err = configError(() => checkHttpInjection('api', injection));
      expect(err.code).toBe('CIPORT_E_CONFIG_INVALID');
      expect(err.message).toContain('env:TOKEN_ENV');
      expect(err.message).not.toMatch(/abc|X-Evil|snow/);
    }
  });

  it('refuses an empty secret and an unresolved one', () => {
    expect(configError(() => checkHttpInjection('api', { kind: 'bearer', token: s('  ') })).message).toMatch(
      /empty/,
    );
    const unresolved = new Secret({ env: 'NOT_RESOLVED' });
    expect(configError(() => checkHttpInjection('api', { kind: 'bearer', token: unresolved })).code).toBe(
      'CIPORT_E_SECRET_UNAVAILABLE',
    );
  });

  it('an injection spec prints no secret', () => {
    const i = httpInjectionFrom({ name: 'a', credentials: { token: s('super-secret-value') } });
    expect(inspect(i, { depth: 5 })).not.toContain('super-secret-value');
    expect(JSON.stringify(i)).not.toContain('super-secret-value');
  });
});

describe('schema fields for HTTP credentials', () => {
  const proposed = httpCredentialsSchema;
  const env = { env: 'X' };

  it('parses kind and header next to the existing fields', () => {
    const parsed = proposed.parse({ kind: 'header', header: 'X-API-Key', token: { env: 'API_KEY' } });
    expect(parsed.kind).toBe('header');
    expect(parsed.token).toBeInstanceOf(Secret);
    expect(httpInjectionFrom({ name: 'api', credentials: parsed }).kind).toBe('header');
    expect(proposed.parse({ token: { env: 'T' } }).kind).toBeUndefined();
  });

  it('refuses unknown kinds and unusable header names', () => {
    expect(proposed.safeParse({ kind: 'digest', token: { env: 'T' } }).success).toBe(false);
    expect(proposed.safeParse({ header: 'Host', token: { env: 'T' } }).success).toBe(false);
    expect(proposed.safeParse({ header: 'x api key', token: { env: 'T' } }).success).toBe(false);
  });

  it.each([
    [{ token: env, user: 'u', password: env }, /say which one to inject/],
    [{ user: 'u' }, /basic authentication needs both/],
    [{ password: env }, /basic authentication needs both/],
    [{ kind: 'bearer', user: 'u', password: env }, /kind bearer needs token/],
    [{ kind: 'basic', user: 'a:b', password: env }, /cannot contain ":"/],
    [{ kind: 'header', token: env }, /kind header needs header and token/],
    [{ header: 'X-K', token: env, user: 'u' }, /kind header does not use user/],
  ])('refuses at load what the exit would refuse: %o', (credentials, message) => {
    const issues = proposed.safeParse(credentials).error?.issues ?? [];
    expect(issues).toHaveLength(1);
    expect(issues[0]?.path).toEqual([]);
    expect(issues[0]?.message).toMatch(message);
  });
});

describe('header rewriting', () => {
  it('reads Connection tokens across repeated fields', () => {
    expect([...connectionTokens(['Connection', 'keep-alive, X-A', 'connection', ' x-b '])]).toEqual([
      'keep-alive',
      'x-a',
      'x-b',
    ]);
  });

  it('builds the upstream request head', () => {
    const out = upstreamRequestHeaders(
      [
        'Host',
        'app',
        'Accept',
        '*/*',
        'authorization',
        'Bearer evil',
        'Expect',
        '100-continue',
        'Upgrade',
        'x',
      ],
      {
        host: 'api.internal:8443',
        replaced: new Set(['authorization']),
        injected: { name: 'Authorization', value: 'Bearer good' },
        upgrade: undefined,
        keepExpect: false,
      },
    );
    expect(out).toEqual(['Host', 'api.internal:8443', 'Accept', '*/*', 'Authorization', 'Bearer good']);
  });

  it('keeps the upgrade handshake only when asked', () => {
    const raw = ['Connection', 'Upgrade', 'Upgrade', 'websocket', 'Sec-WebSocket-Accept', 'abc'];
    expect(clientResponseHeaders(raw)).toEqual(['Sec-WebSocket-Accept', 'abc']);
    expect(clientResponseHeaders(raw, { upgrade: true })).toEqual([
      'Sec-WebSocket-Accept',
      'abc',
      'Connection',
      'Upgrade',
      'Upgrade',
      'websocket',
    ]);
  });
});

describe('httpListenerUrl', () => {
  it('is plain http on the listener, IPv6 bracketed', () => {
    expect(httpListenerUrl('127.0.0.1', 15432)).toBe('http://127.0.0.1:15432');
    expect(httpListenerUrl('::1', 80)).toBe('http://[::1]:80');
  });
});
