import { describe, expect, it } from 'vitest';
import { isLoopbackHost, keyUrlProblem, requireKeyUrl } from '../../src/identity/url-policy.js';

describe('loopback hosts', () => {
  it.each(['localhost', 'LOCALHOST', 'localhost.', '127.0.0.1', '127.255.0.9', '[::1]'])(
    '%s is loopback',
    (host) => {
      expect(isLoopbackHost(host)).toBe(true);
    },
  );
  it.each([
    'localhost.example.com',
    '128.0.0.1',
    '10.0.0.1',
    '[::2]',
    '[::ffff:8.8.8.8]',
    'example.com',
    '0.0.0.0',
  ])('%s is not', (host) => {
    expect(isLoopbackHost(host)).toBe(false);
  });
});

describe('key URLs', () => {
  it('allows https anywhere and http on loopback only', () => {
    expect(keyUrlProblem(new URL('https://gitlab.com'))).toBeUndefined();
    expect(keyUrlProblem(new URL('http://127.0.0.1:8473'))).toBeUndefined();
    expect(keyUrlProblem(new URL('http://gitlab.com'))).toMatch(/loopback/);
    expect(keyUrlProblem(new URL('file:///etc/jwks.json'))).toMatch(/unsupported scheme file/);
  });

  it('reports configuration errors with where they are', () => {
    expect(() => requireKeyUrl('http://gitlab.internal', 'issuers[gitlab].issuer')).toThrow(
      expect.objectContaining({
        code: 'CIPORT_E_CONFIG_INVALID',
        message: expect.stringContaining('issuers[gitlab].issuer'),
      }),
    );
    expect(() => requireKeyUrl('not a url', 'x')).toThrow(
      expect.objectContaining({ code: 'CIPORT_E_CONFIG_INVALID' }),
    );
    expect(() => requireKeyUrl('https://user:pw@gitlab.com', 'x')).toThrow(
      expect.objectContaining({ code: 'CIPORT_E_CONFIG_INVALID' }),
    );
  });
});
