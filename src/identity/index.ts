// Public surface of the identity layer: verify job tokens, normalise their claims, and (for
// development) run an issuer that mints platform-shaped tokens.
export type { Claims } from './claim-values.js';
export {
  DEV_DEFAULT_AUDIENCE,
  DEV_DEFAULT_KEY_FILE,
  DEV_DEFAULT_TTL_MS,
  DEV_ISSUER_DEFAULT_PORT,
  DevIssuer,
  type DevIssuerKind,
  type DevIssuerOptions,
  type MintOptions,
  mintToken,
} from './dev-issuer.js';
export { isPreset, PRESETS, type PresetName, parseSetPairs, presetClaims } from './dev-presets.js';
export { type DevAlg, DevSigner } from './dev-signer.js';
export { type GitHubSubject, parseGitHubSubject } from './github-subject.js';
export type { KeySourceStatus } from './key-source.js';
export { DEFAULT_MAX_TOKEN_LIFETIME_MS, maxTokenLifetimeMs } from './lifetime.js';
export { type ClaimFacts, type IssuerKind, normalize, type Principal } from './principal.js';
export { isDevelopmentIssuer, isLoopbackHost } from './url-policy.js';
export {
  MAX_TOKEN_BYTES,
  REQUIRED_CLAIMS,
  TokenVerifier,
  type TokenVerifierOptions,
  type VerifiedToken,
} from './verify.js';
