// A GitLab runner, for what docs/gitlab-ci.md's jobs use (the shell executor's way: the job runs
// on this machine). From one pipeline context it derives both what the runner exports (the `CI_*`
// predefined variables) and what GitLab puts in the job's ID tokens (project, ref and its
// protection, pipeline source, environment and its protection, job and pipeline ids), so the two
// agree as they do in GitLab. The tokens are minted by the GitLab-shaped issuer fixture, whose
// URL is the instance URL (`CI_SERVER_URL`, the tokens' `iss`).
//
// A job runs as the runner runs it: variables (global, then job, `$VAR` expanded; project
// variables over them, file-type ones written to files whose paths are their values; one
// variable per `id_tokens` entry), then `before_script` + `script` in one bash (`set -eo
// pipefail`, each command echoed, all behind `: | eval`; or sh), then `after_script` in a second shell,
// also after a failure, with `CI_JOB_STATUS`. The job log is both streams of both shells.
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FixtureIssuer } from '../fixtures/oidc-issuer.js';
import { isMap, jobInPipeline, scriptLines, type Yaml, type YamlMap } from './ci-config.js';

export interface ProjectVariable {
  value: string;
  /** File type: the runner writes the value to a file and sets the variable to its path. */
  file?: boolean;
}

export interface PipelineContext {
  issuer: FixtureIssuer;
  project: { id: string; path: string };
  ref: string;
  refProtected: boolean;
  /** push, web, schedule, merge_request_event… */
  source: string;
  defaultBranch?: string;
  /** Environments the project protects (Settings > CI/CD > Protected environments). */
  protectedEnvironments?: string[];
  /** Variables from Settings > CI/CD > Variables. */
  projectVariables?: Record<string, ProjectVariable>;
  /** The runner's own environment (shell executor: PATH, HOME…). */
  hostEnv: Record<string, string>;
  /** Where the runner keeps builds: the job's checkout is `<buildsDir>/<project path>`. */
  buildsDir: string;
}

export interface JobRun {
  jobId: string;
  /** The job's checkout (its working directory). */
  projectDir: string;
  /** The ID tokens the job got, by variable name. */
  tokens: Record<string, string>;
  env: Record<string, string>;
  /** Exit code of before_script + script (0: the job succeeded). */
  code: number;
  afterCode: number;
  /** The job log: both shells, stdout and stderr as they came. */
  log: string;
}

/** Job keywords this model runs, or knows to have no effect on a shell executor's job run. */
const JOB_KEYS = new Set([
  'stage',
  'rules',
  'environment',
  'resource_group',
  'variables',
  'id_tokens',
  'before_script',
  'script',
  'after_script',
  'image',
  'retry',
  'tags',
]);

let nextId = 0;
function uniqueId(): string {
  // Unique across test files running at once: CIPORT_HOME is /tmp/ciport-$CI_JOB_ID.
  return String(8_000_000_000 + (Date.now() % 1_000_000) * 1000 + (process.pid % 1000) + nextId++);
}

function slug(text: string): string {
  return text
    .toLowerCase()
    .replace(/[^a-z0-9]/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 63);
}

/** The predefined variables of `job` in `ctx`. */
export function predefinedVariables(
  ctx: PipelineContext,
  jobName: string,
  job: YamlMap,
  ids: { jobId: string; pipelineId: string; sha: string },
): Record<string, string> {
  const server = new URL(ctx.issuer.url);
  const projectDir = join(ctx.buildsDir, ctx.project.path);
  const mr = ctx.source === 'merge_request_event';
  const env = environmentOf(job);
  const vars: Record<string, string> = {
    CI: 'true',
    GITLAB_CI: 'true',
    CI_SERVER: 'yes',
    CI_SERVER_URL: ctx.issuer.url,
    CI_SERVER_HOST: server.hostname,
    CI_SERVER_PORT: server.port,
    CI_SERVER_PROTOCOL: server.protocol.replace(':', ''),
    CI_SERVER_FQDN: server.host,
    CI_API_V4_URL: `${ctx.issuer.url}/api/v4`,
    CI_PROJECT_ID: ctx.project.id,
    CI_PROJECT_PATH: ctx.project.path,
    CI_PROJECT_NAMESPACE: ctx.project.path.split('/').slice(0, -1).join('/'),
    CI_PROJECT_NAME: ctx.project.path.split('/').at(-1) as string,
    CI_PROJECT_URL: `${ctx.issuer.url}/${ctx.project.path}`,
    CI_PROJECT_DIR: projectDir,
    CI_BUILDS_DIR: ctx.buildsDir,
    CI_DEFAULT_BRANCH: ctx.defaultBranch ?? 'main',
    CI_COMMIT_SHA: ids.sha,
    CI_COMMIT_SHORT_SHA: ids.sha.slice(0, 8),
    CI_COMMIT_REF_NAME: ctx.ref,
    CI_COMMIT_REF_SLUG: slug(ctx.ref),
    CI_COMMIT_REF_PROTECTED: String(ctx.refProtected),
    CI_PIPELINE_ID: ids.pipelineId,
    CI_PIPELINE_IID: '412',
    CI_PIPELINE_SOURCE: ctx.source,
    CI_PIPELINE_URL: `${ctx.issuer.url}/${ctx.project.path}/-/pipelines/${ids.pipelineId}`,
    CI_JOB_ID: ids.jobId,
    CI_JOB_NAME: jobName,
    CI_JOB_STAGE: typeof job.stage === 'string' ? job.stage : 'test',
    CI_JOB_URL: `${ctx.issuer.url}/${ctx.project.path}/-/jobs/${ids.jobId}`,
    CI_JOB_STARTED_AT: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    CI_RUNNER_ID: '12270835',
    CI_RUNNER_DESCRIPTION: 'shell runner (test/gitlab)',
    GITLAB_USER_ID: '1042',
    GITLAB_USER_LOGIN: 'ada',
    GITLAB_USER_EMAIL: 'ada@example.com',
  };
  // Branch pipelines set CI_COMMIT_BRANCH; merge request pipelines do not, they describe the MR.
  if (!mr) vars.CI_COMMIT_BRANCH = ctx.ref;
  else {
    Object.assign(vars, {
      CI_MERGE_REQUEST_IID: '77',
      CI_MERGE_REQUEST_SOURCE_BRANCH_NAME: ctx.ref,
      CI_MERGE_REQUEST_TARGET_BRANCH_NAME: ctx.defaultBranch ?? 'main',
    });
  }
  if (env) {
    vars.CI_ENVIRONMENT_NAME = env;
    vars.CI_ENVIRONMENT_SLUG = slug(env);
    vars.CI_ENVIRONMENT_TIER = tierOf(env);
  }
  return vars;
}

function environmentOf(job: YamlMap): string | undefined {
  const e = job.environment;
  if (e === undefined) return undefined;
  if (typeof e === 'string') return e;
  if (isMap(e) && typeof e.name === 'string') return e.name;
  throw new Error(`environment: ${JSON.stringify(e)} is not modelled`);
}

function tierOf(environment: string): string {
  if (/^prod/.test(environment)) return 'production';
  if (/^stag/.test(environment)) return 'staging';
  if (/^test|^qa/.test(environment)) return 'testing';
  return /^dev|^review/.test(environment) ? 'development' : 'other';
}

/** The claims GitLab puts in a job's ID token (docs: "ID token payload"), for this context. */
export function gitlabClaims(
  ctx: PipelineContext,
  job: YamlMap,
  ids: { jobId: string; pipelineId: string; sha: string },
): Record<string, unknown> {
  const namespace = ctx.project.path.split('/').slice(0, -1).join('/');
  const host = new URL(ctx.issuer.url).host;
  const env = environmentOf(job);
  return {
    sub: `project_path:${ctx.project.path}:ref_type:branch:ref:${ctx.ref}`,
    namespace_id: '72',
    namespace_path: namespace,
    project_id: ctx.project.id,
    project_path: ctx.project.path,
    job_namespace_id: '72',
    job_namespace_path: namespace,
    job_project_id: ctx.project.id,
    job_project_path: ctx.project.path,
    user_id: '1042',
    user_login: 'ada',
    user_email: 'ada@example.com',
    user_access_level: 'maintainer',
    pipeline_id: ids.pipelineId,
    pipeline_source: ctx.source,
    job_id: ids.jobId,
    ref: ctx.ref,
    ref_type: 'branch',
    ref_path: `refs/heads/${ctx.ref}`,
    ref_protected: String(ctx.refProtected),
    runner_id: 12270835,
    runner_environment: 'self-hosted',
    sha: ids.sha,
    project_visibility: 'private',
    ci_config_ref_uri: `${host}/${ctx.project.path}//.gitlab-ci.yml@refs/heads/${ctx.ref}`,
    ci_config_sha: ids.sha,
    ...(env
      ? {
          environment: env,
          environment_protected: String((ctx.protectedEnvironments ?? []).includes(env)),
          deployment_tier: tierOf(env),
          environment_action: 'start',
        }
      : {}),
  };
}

/** The runner's expansion of `$NAME` / `${NAME}` in a variable's value (`$$` is a `$`). */
export function expandVariables(value: string, vars: Record<string, string>): string {
  return value.replace(/\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)/g, (m, a, b) =>
    m === '$$' ? '$' : (vars[(a ?? b) as string] ?? ''),
  );
}

function yamlVariables(value: Yaml | undefined, what: string): Record<string, string> {
  if (value === undefined) return {};
  if (!isMap(value)) throw new Error(`${what}: variables must be a mapping`);
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(value)) {
    if (isMap(v)) {
      if (v.expand === false) throw new Error(`${what}: variables: expand: false is not modelled`);
      out[k] = String(v.value ?? '');
    } else out[k] = v === null ? '' : String(v);
  }
  return out;
}

/** The environment of the job's shells, and the ID tokens it got. */
export async function jobEnvironment(
  ctx: PipelineContext,
  jobName: string,
  job: YamlMap,
  globals: YamlMap,
  ids: { jobId: string; pipelineId: string; sha: string },
): Promise<{ env: Record<string, string>; tokens: Record<string, string> }> {
  for (const key of Object.keys(job)) {
    if (!JOB_KEYS.has(key))
      throw new Error(`job ${jobName}: keyword ${key} is not modelled by test/gitlab/runner.ts`);
  }
  const env: Record<string, string> = { ...ctx.hostEnv, ...predefinedVariables(ctx, jobName, job, ids) };
  for (const [k, v] of Object.entries({
    ...yamlVariables(globals.variables, 'global'),
    ...yamlVariables(job.variables, jobName),
  })) {
    env[k] = expandVariables(v, env);
  }
  const projectDir = env.CI_PROJECT_DIR as string;
  const fileDir = `${projectDir}.tmp`;
  mkdirSync(fileDir, { recursive: true });
  for (const [k, v] of Object.entries(ctx.projectVariables ?? {})) {
    if (v.file) {
      const path = join(fileDir, k);
      writeFileSync(path, v.value, { mode: 0o600 });
      env[k] = path;
    } else env[k] = v.value;
  }
  const tokens: Record<string, string> = {};
  const idTokens = job.id_tokens ?? {};
  if (!isMap(idTokens)) throw new Error(`job ${jobName}: id_tokens must be a mapping`);
  for (const [name, spec] of Object.entries(idTokens)) {
    if (!isMap(spec) || spec.aud === undefined)
      throw new Error(`job ${jobName}: id_tokens.${name} needs aud`);
    // aud may name CI/CD variables (GitLab 16.1+).
    const aud = Array.isArray(spec.aud)
      ? spec.aud.map((a) => expandVariables(String(a), env))
      : expandVariables(String(spec.aud), env);
    tokens[name] = await ctx.issuer.mint(gitlabClaims(ctx, job, ids), { audience: aud, ttlMs: 3600_000 });
    env[name] = tokens[name] as string;
  }
  return { env, tokens };
}

/** The script of one runner stage: each command echoed, then run; all behind `: | eval`. */
function stageScript(lines: string[]): string {
  const body = lines
    .map((line) => {
      const first = line.split('\n')[0] as string;
      const shown = line.includes('\n') ? `$ ${first} # collapsed multi-line command` : `$ ${first}`;
      return `echo ${shellQuote(shown)}\n${line}\n`;
    })
    .join('');
  // What the runner writes for bash and sh alike: pipefail where the shell has it (dash has not).
  const prelude =
    'if set -o | grep pipefail >/dev/null; then set -o pipefail; fi\nset -o errexit\nset +o noclobber\n';
  return `${prelude}: | eval ${shellQuote(body)}\nexit 0\n`;
}

export function shellQuote(text: string): string {
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

async function runStage(
  shell: 'bash' | 'sh',
  script: string,
  env: Record<string, string>,
  cwd: string,
  append: (chunk: string) => void,
  timeoutMs: number,
): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(shell, ['-e', '-c', script], {
      cwd,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    child.stdout.on('data', (c: Buffer) => append(c.toString()));
    child.stderr.on('data', (c: Buffer) => append(c.toString()));
    // 'close' waits for the log pipes: a background process that keeps them open hangs the job,
    // as it does on a real runner, and the timeout says so.
    const timer = setTimeout(() => {
      append(
        `\nERROR: Job failed: execution took longer than ${timeoutMs} ms (a process kept the job log open?)\n`,
      );
      try {
        process.kill(-(child.pid as number), 'SIGKILL');
      } catch {}
    }, timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve(code ?? (signal ? 128 : 1));
    });
  });
}

export interface RunOptions {
  globals?: YamlMap;
  timeoutMs?: number;
  /** The image's shell: bash (the runner's choice when the image has it) or sh. */
  shell?: 'bash' | 'sh';
  /** Called when the script's shell has ended, before after_script starts. */
  betweenStages?: (run: { jobId: string; code: number }) => Promise<void>;
  /** Files of the repository's checkout, relative to the project dir. */
  checkout?: Record<string, string>;
}

/** Run `job` as a runner would; undefined when its rules keep it out of this pipeline. */
export async function runJob(
  ctx: PipelineContext,
  jobName: string,
  job: YamlMap,
  options: RunOptions = {},
): Promise<JobRun> {
  const ids = {
    jobId: uniqueId(),
    pipelineId: uniqueId(),
    sha: 'a8f0c5d2e4b6a8f0c5d2e4b6a8f0c5d2e4b6a8f0',
  };
  const { env, tokens } = await jobEnvironment(ctx, jobName, job, options.globals ?? {}, ids);
  const projectDir = env.CI_PROJECT_DIR as string;
  mkdirSync(projectDir, { recursive: true });
  for (const [path, text] of Object.entries(options.checkout ?? {})) {
    mkdirSync(join(projectDir, path, '..'), { recursive: true });
    writeFileSync(join(projectDir, path), text);
  }
  let log = '';
  const append = (chunk: string) => {
    log += chunk;
  };
  const timeoutMs = options.timeoutMs ?? 120_000;
  const main = [...scriptLines(job.before_script), ...scriptLines(job.script)];
  if (main.length === 0) throw new Error(`job ${jobName} has no script`);
  const shell = options.shell ?? 'bash';
  const code = await runStage(shell, stageScript(main), env, projectDir, append, timeoutMs);
  await options.betweenStages?.({ jobId: ids.jobId, code });
  append(`\n[after_script] CI_JOB_STATUS=${code === 0 ? 'success' : 'failed'}\n`);
  const after = scriptLines(job.after_script);
  const afterCode =
    after.length === 0
      ? 0
      : await runStage(
          shell,
          stageScript(after),
          { ...env, CI_JOB_STATUS: code === 0 ? 'success' : 'failed' },
          projectDir,
          append,
          timeoutMs,
        );
  return { jobId: ids.jobId, projectDir, tokens, env, code, afterCode, log };
}

/** Whether the job is in a pipeline of `ctx` (its `rules:`), judged on the predefined variables. */
export function inPipeline(ctx: PipelineContext, jobName: string, job: YamlMap): boolean {
  return jobInPipeline(
    job,
    predefinedVariables(ctx, jobName, job, { jobId: '1', pipelineId: '1', sha: '0'.repeat(40) }),
  );
}
