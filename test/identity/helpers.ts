// Shared assertions for identity tests: a rejection must carry the expected code, and its
// message must never echo the token.
import { expect } from 'vitest';
import type { ErrorCode } from '../../src/errors/index.js';
import { CiportError, TokenRejectedError } from '../../src/errors/index.js';

export async function rejectionOf(promise: Promise<unknown>): Promise<CiportError> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof CiportError) return err;
    throw err;
  }
  throw new Error('expected a rejection, but the promise resolved');
}

/** Await `promise`, expect a TokenRejectedError with `code`, and that no part of `token` leaks. */
export async function expectRejected(
  promise: Promise<unknown>,
  code: ErrorCode,
  token?: string,
): Promise<CiportError> {
  const err = await rejectionOf(promise);
  expect({ code: err.code, message: err.message }).toMatchObject({ code });
  expect(err).toBeInstanceOf(TokenRejectedError);
  if (token) {
    expect(err.message).not.toContain(token);
    for (const part of token.split('.')) if (part.length > 16) expect(err.message).not.toContain(part);
  }
  return err;
}
