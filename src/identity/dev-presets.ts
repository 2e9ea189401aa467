// Claim sets shaped like the real platforms' ID tokens, for the development issuer. Values
// follow the platforms' documented examples: GitLab and GitHub send ids and booleans as strings,
// GitLab sends `runner_id` as a number.
import { UsageError } from '../errors/index.js';

export const PRESETS = ['gitlab-main', 'gitlab-fork-mr', 'github-push', 'github-pr'] as const;
export type PresetName = (typeof PRESETS)[number];

export function isPreset(name: string): name is PresetName {
  return (PRESETS as readonly string[]).includes(name);
}

export function presetPlatform(name: PresetName): 'gitlab' | 'github' {
  return name.startsWith('gitlab') ? 'gitlab' : 'github';
}

const SHA_MAIN = '8fe1b322a576d59fe6257052a4107df7dc1b8c78';
const SHA_FORK = '3c1a9f0e5b7d4c2a8e6f1b0d9c7a5e3f2d1b0a98';

/** The project that owns the protected branch (matches the DESIGN example rule). */
const ACME = {
  namespace_id: '72',
  namespace_path: 'acme',
  project_id: '61577203',
  project_path: 'acme/ledger',
};

/**
 * Platform-specific claims of a preset. Standard claims (`iss`, `aud`, `iat`, `nbf`, `exp`,
 * `jti`) are added by the minting code.
 * @param issuer the issuer URL, used where the platform embeds its host (`ci_config_ref_uri`).
 */
export function presetClaims(name: PresetName, issuer: string): Record<string, unknown> {
  const host = new URL(issuer).host;
  switch (name) {
    case 'gitlab-main':
      // A push to the protected default branch; the job names no environment.
      return {
        ...ACME,
        job_namespace_id: ACME.namespace_id,
        job_namespace_path: ACME.namespace_path,
        job_project_id: ACME.project_id,
        job_project_path: ACME.project_path,
        user_id: '1042',
        user_login: 'ada',
        user_email: 'ada@example.com',
        user_access_level: 'maintainer',
        groups_direct: ['acme'],
        pipeline_id: '1519139981',
        pipeline_source: 'push',
        job_id: '8222997048',
        job_source: 'push',
        ref: 'main',
        ref_type: 'branch',
        ref_path: 'refs/heads/main',
        ref_protected: 'true',
        runner_id: 12270835,
        runner_environment: 'gitlab-hosted',
        sha: SHA_MAIN,
        project_visibility: 'private',
        ci_config_ref_uri: `${host}/acme/ledger//.gitlab-ci.yml@refs/heads/main`,
        ci_config_sha: SHA_MAIN,
        sub: 'project_path:acme/ledger:ref_type:branch:ref:main',
      };
    case 'gitlab-fork-mr':
      // A merge request from the fork mallory/ledger, run in acme/ledger by a maintainer:
      // project_* name the fork (the code's source), job_project_* the project running the job.
      return {
        namespace_id: '90210',
        namespace_path: 'mallory',
        project_id: '70011234',
        project_path: 'mallory/ledger',
        job_namespace_id: ACME.namespace_id,
        job_namespace_path: ACME.namespace_path,
        job_project_id: ACME.project_id,
        job_project_path: ACME.project_path,
        user_id: '1042',
        user_login: 'ada',
        user_email: 'ada@example.com',
        user_access_level: 'maintainer',
        groups_direct: ['acme'],
        pipeline_id: '1519140554',
        pipeline_source: 'merge_request_event',
        pipeline_source_event: 'merge_request',
        target_ref: 'main',
        target_ref_protected: 'true',
        job_id: '8222998113',
        job_source: 'merge_request_event',
        ref: 'fix-typo',
        ref_type: 'branch',
        ref_path: 'refs/heads/fix-typo',
        ref_protected: 'false',
        runner_id: 12270835,
        runner_environment: 'gitlab-hosted',
        sha: SHA_FORK,
        project_visibility: 'public',
        ci_config_ref_uri: `${host}/mallory/ledger//.gitlab-ci.yml@refs/heads/fix-typo`,
        ci_config_sha: SHA_FORK,
        sub: 'project_path:mallory/ledger:ref_type:branch:ref:fix-typo',
      };
    case 'github-push':
      return {
        ...githubCommon(SHA_MAIN),
        sub: 'repo:acme/ledger:ref:refs/heads/main',
        ref: 'refs/heads/main',
        ref_type: 'branch',
        ref_protected: 'true',
        event_name: 'push',
        head_ref: '',
        base_ref: '',
        workflow: 'deploy',
        workflow_ref: 'acme/ledger/.github/workflows/deploy.yml@refs/heads/main',
        job_workflow_ref: 'acme/ledger/.github/workflows/deploy.yml@refs/heads/main',
      };
    case 'github-pr':
      // A pull_request from a branch of the same repository (fork PRs get no ID token).
      return {
        ...githubCommon(SHA_FORK),
        sub: 'repo:acme/ledger:pull_request',
        ref: 'refs/pull/42/merge',
        ref_type: 'branch',
        ref_protected: 'false',
        event_name: 'pull_request',
        head_ref: 'fix-typo',
        base_ref: 'main',
        workflow: 'ci',
        workflow_ref: 'acme/ledger/.github/workflows/ci.yml@refs/pull/42/merge',
        job_workflow_ref: 'acme/ledger/.github/workflows/ci.yml@refs/pull/42/merge',
      };
  }
}

function githubCommon(sha: string): Record<string, unknown> {
  return {
    repository: 'acme/ledger',
    repository_id: '81213410',
    repository_owner: 'acme',
    repository_owner_id: '9919',
    repository_visibility: 'private',
    actor: 'ada',
    actor_id: '583231',
    run_id: '9876543210',
    run_number: '412',
    run_attempt: '1',
    check_run_id: '30366254157',
    runner_environment: 'github-hosted',
    sha,
    workflow_sha: sha,
    job_workflow_sha: sha,
  };
}

/** Seconds between `nbf` and `iat` as each platform sets them. */
export function presetNotBeforeSkew(name: PresetName | undefined): number {
  if (name === undefined) return 0;
  return presetPlatform(name) === 'gitlab' ? 5 : 600;
}

const TIME_CLAIMS = new Set(['iat', 'nbf', 'exp']);
/** Claims a platform sends as JSON numbers, not strings. */
const NUMERIC_BY_PLATFORM = { gitlab: new Set(['runner_id']), github: new Set<string>() } as const;

/**
 * Parse `--set key=value` pairs into claims.
 *
 * Rule, in order:
 * 1. `key=value` splits at the first `=`; an empty key is an error, an empty value is "".
 * 2. A value starting with `{`, `[` or `"` is JSON (objects, arrays, a quoted string).
 * 3. `iat`, `nbf`, `exp` with an integer value become numbers.
 * 4. With a GitLab or GitHub preset every other value stays a string — `true`, `false` and
 *    `42` included — because that is how those platforms send claims; except the claims a
 *    platform sends as numbers (GitLab `runner_id`), which become numbers.
 * 5. Without a preset (generic OIDC), `true`/`false`/`null` and decimal numbers are typed.
 */
export function parseSetPairs(pairs: readonly string[], preset?: PresetName): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const numeric = preset === undefined ? undefined : NUMERIC_BY_PLATFORM[presetPlatform(preset)];
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new UsageError(`--set ${JSON.stringify(pair)}: expected key=value`);
    const key = pair.slice(0, eq);
    const raw = pair.slice(eq + 1);
    out[key] = parseValue(key, raw, numeric);
  }
  return out;
}

function parseValue(key: string, raw: string, numeric: ReadonlySet<string> | undefined): unknown {
  if (/^[[{"]/.test(raw)) {
    try {
      return JSON.parse(raw) as unknown;
    } catch {
      throw new UsageError(`--set ${key}: value starts like JSON but does not parse`);
    }
  }
  const isInteger = /^-?\d+$/.test(raw);
  if (TIME_CLAIMS.has(key) && isInteger) return Number(raw);
  if (numeric !== undefined) return numeric.has(key) && isInteger ? Number(raw) : raw;
  if (raw === 'true') return true;
  if (raw === 'false') return false;
  if (raw === 'null') return null;
  if (/^-?\d+(\.\d+)?$/.test(raw)) return Number(raw);
  return raw;
}
