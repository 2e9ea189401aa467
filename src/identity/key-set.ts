// A verified-shape JSON Web Key Set, ready for lookups. Built only from keys we fetched or read
// ourselves: never from anything a token carries (`jku`, `x5u`, `jwk` headers are ignored).
import { type CryptoKey, createLocalJWKSet, errors, type JWK, type LocalJWKSet } from 'jose';

/** What a token's protected header tells us about the key it wants. */
export interface KeyLookup {
  alg: string;
  kid?: string | undefined;
}

export interface KeySet {
  readonly lookup: LocalJWKSet;
  /** Key ids present, for messages and tests. Keys without a kid are listed as `(no kid)`. */
  readonly kids: readonly string[];
}

const ASYMMETRIC = new Set(['RSA', 'EC', 'OKP']);
// Private members are dropped: a JWKS that leaks a private key must still only verify.
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k', 'priv'];

/**
 * Validate and prepare a JWKS document. Symmetric (`oct`) keys are dropped: an HMAC key in a
 * public key set could only ever serve an algorithm-confusion attack.
 * @throws Error with a reason when the document is not a key set or holds no usable key.
 */
export function prepareKeySet(document: unknown): KeySet {
  if (
    typeof document !== 'object' ||
    document === null ||
    !Array.isArray((document as { keys?: unknown }).keys)
  ) {
    throw new Error('not a JSON Web Key Set (no "keys" array)');
  }
  const keys: JWK[] = [];
  for (const raw of (document as { keys: unknown[] }).keys) {
    if (typeof raw !== 'object' || raw === null) continue;
    const jwk = { ...(raw as Record<string, unknown>) };
    if (typeof jwk.kty !== 'string' || !ASYMMETRIC.has(jwk.kty)) continue;
    for (const member of PRIVATE_MEMBERS) delete jwk[member];
    keys.push(jwk as JWK);
  }
  if (keys.length === 0) throw new Error('the key set holds no public signing key');
  let lookup: LocalJWKSet;
  try {
    lookup = createLocalJWKSet({ keys });
  } catch (cause) {
    throw new Error(`malformed key set: ${(cause as Error).message}`, { cause });
  }
  return { lookup, kids: keys.map((k) => k.kid ?? '(no kid)') };
}

export type KeyMatch =
  | { kind: 'found'; keys: CryptoKey[] }
  | { kind: 'none' }
  | { kind: 'unusable'; reason: string };

/**
 * Keys of `set` that fit the header. Usually one; several when the issuer publishes no `kid`
 * or repeats one (jose then leaves the choice to us and we try each).
 */
export async function matchKeys(set: KeySet, want: KeyLookup): Promise<KeyMatch> {
  try {
    const header = want.kid === undefined ? { alg: want.alg } : { alg: want.alg, kid: want.kid };
    return { kind: 'found', keys: [await set.lookup(header)] };
  } catch (err) {
    if (err instanceof errors.JWKSNoMatchingKey) return { kind: 'none' };
    if (err instanceof errors.JWKSMultipleMatchingKeys) {
      const keys: CryptoKey[] = [];
      for await (const key of err) keys.push(key);
      return keys.length > 0
        ? { kind: 'found', keys }
        : { kind: 'unusable', reason: 'no candidate key imports' };
    }
    return { kind: 'unusable', reason: (err as Error).message };
  }
}
