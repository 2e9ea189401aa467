// jose's failures, translated into ciport's stable token codes. Messages describe the failed
// check only: they never quote the token, and quote claim values only where they are public
// configuration facts (issuer, audience).
import { errors } from 'jose';
import { CiportError, TokenRejectedError } from '../errors/index.js';

export function reject(
  code: ConstructorParameters<typeof TokenRejectedError>[0],
  message: string,
  cause?: unknown,
): TokenRejectedError {
  return new TokenRejectedError(code, message, cause === undefined ? undefined : { cause });
}

/** Map whatever `jwtVerify` threw to a TokenRejectedError; our own errors pass through. */
export function fromJoseError(err: unknown, issuerName: string): CiportError {
  if (err instanceof CiportError) return err;
  const who = `issuer "${issuerName}"`;
  if (err instanceof errors.JWTExpired)
    return reject('CIPORT_E_TOKEN_EXPIRED', `token has expired (${who})`, err);
  if (err instanceof errors.JWTClaimValidationFailed) return fromClaimFailure(err, who);
  if (err instanceof errors.JOSEAlgNotAllowed) {
    return reject('CIPORT_E_TOKEN_ALG_NOT_ALLOWED', `token algorithm is not allowed for ${who}`, err);
  }
  if (err instanceof errors.JWSSignatureVerificationFailed) {
    return reject('CIPORT_E_TOKEN_BAD_SIGNATURE', `token signature does not verify with ${who}'s key`, err);
  }
  if (err instanceof errors.JOSEError) {
    return reject('CIPORT_E_TOKEN_MALFORMED', `token is malformed: ${err.message}`, err);
  }
  // jose raises TypeError for keys it refuses (e.g. RSA modulus under 2048 bits).
  if (err instanceof TypeError) {
    return reject(
      'CIPORT_E_TOKEN_BAD_SIGNATURE',
      `token cannot be verified with ${who}'s key: ${err.message}`,
      err,
    );
  }
  return new CiportError('CIPORT_E_INTERNAL', `unexpected error verifying a token: ${String(err)}`, {
    cause: err,
  });
}

function fromClaimFailure(
  err: InstanceType<typeof errors.JWTClaimValidationFailed>,
  who: string,
): TokenRejectedError {
  const claim = err.claim;
  if (err.reason === 'missing')
    return reject('CIPORT_E_TOKEN_MISSING_CLAIM', `token has no "${claim}" claim`, err);
  if (err.reason === 'invalid') {
    return reject('CIPORT_E_TOKEN_MALFORMED', `token's "${claim}" claim has the wrong type`, err);
  }
  switch (claim) {
    case 'aud':
      return reject('CIPORT_E_TOKEN_WRONG_AUDIENCE', `token audience is not one accepted by ${who}`, err);
    case 'iss':
      return reject('CIPORT_E_TOKEN_UNKNOWN_ISSUER', `token issuer does not match ${who}`, err);
    case 'nbf':
      return reject('CIPORT_E_TOKEN_NOT_YET_VALID', `token is not valid yet ("nbf" is in the future)`, err);
    case 'iat':
      return reject('CIPORT_E_TOKEN_NOT_YET_VALID', `token was issued in the future ("iat")`, err);
    default:
      return reject('CIPORT_E_TOKEN_MALFORMED', `token's "${claim}" claim failed validation`, err);
  }
}
