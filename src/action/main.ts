// The action's main step (action.yml `runs.main`): open the port in the background for the rest
// of the job.
//
// 1. Check the runner files and the inputs: nothing starts when either is wrong.
// 2. Work directory in RUNNER_TEMP (0700): the CA from the `ca` input, the client's env file,
//    state file and logs.
// 3. `ciport open … --dotenv F --state S --json` detached, with this node; wait until it is
//    ready or has exited (then: its stderr, an error annotation, its exit code).
// 4. `::add-mask::` every credential before anything else is written anywhere, then GITHUB_STATE
//    (what the post step closes), GITHUB_ENV (the variables), GITHUB_OUTPUT, and a summary that
//    names variables, never their values.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { CiportError, UsageError } from '../errors/index.js';
import { printable } from '../text/printable.js';
import { addMask, error, type Log, verbatim } from './commands.js';
import { type ActionInputs, readInputs, withoutInputs } from './inputs.js';
import { openPort, stopPort, workFiles } from './open-port.js';
import { appendRunnerFile, checkRunnerFiles } from './runner-files.js';
import { secretValues } from './secrets.js';

export async function runMain(env: NodeJS.ProcessEnv, log: Log, clientPath: string): Promise<number> {
  let inputs: ActionInputs;
  try {
    checkRunnerFiles(env);
    inputs = readInputs(env);
  } catch (err) {
    return fail(log, err);
  }
  const files = workFiles(mkdtempSync(join(env.RUNNER_TEMP || tmpdir(), 'ciport-')));
  let childEnv: NodeJS.ProcessEnv;
  try {
    childEnv = clientEnv(env, inputs, files.dir);
  } catch (err) {
    return fail(log, err);
  }
  const outcome = await openPort(clientPath, inputs, files, childEnv, (line) => verbatim(log, `${line}\n`));
  if (!outcome.ok) {
    const message = outcome.error ?? `ciport: the client exited with code ${outcome.exitCode}`;
    verbatim(log, `${outcome.stderr}${message}\n`);
    error(log, message);
    return outcome.exitCode;
  }
  const { opened, env: exported } = outcome;
  for (const secret of secretValues(exported, opened.env)) addMask(log, secret);
  // What the client said while opening (a TTL capped by policy, a rate-limit wait).
  verbatim(log, outcome.stderr);
  try {
    appendRunnerFile(env, 'GITHUB_STATE', {
      state_file: files.stateFile,
      work_dir: files.dir,
      session_id: opened.session.id,
      // Post shows the client's log from here on.
      log_offset: String(Buffer.byteLength(outcome.stderr)),
    });
    appendRunnerFile(env, 'GITHUB_ENV', exported);
    appendRunnerFile(env, 'GITHUB_OUTPUT', {
      'session-id': opened.session.id,
      'expires-at': opened.session.expires_at,
    });
  } catch (err) {
    // Later steps would not find the port: end the session now rather than at the post step.
    await stopPort(outcome.child);
    return fail(log, err);
  }
  const rule = opened.session.rule ? `, rule ${printable(opened.session.rule)}` : '';
  log.write(`ciport: port open: session ${opened.session.id}${rule}, until ${opened.session.expires_at}\n`);
  for (const t of opened.targets) {
    log.write(`ciport: ${printable(t.name)} (${t.protocol}) on ${t.host}:${t.port}\n`);
  }
  const hidden = Object.keys(exported).filter((k) => !Object.hasOwn(opened.env, k));
  log.write(`ciport: exported to the next steps: ${Object.keys(exported).join(', ')}\n`);
  if (hidden.length > 0) log.write(`ciport: masked in the log: ${hidden.join(', ')}\n`);
  return 0;
}

/** The client's environment: the job's, minus the action inputs, plus gateway and CA. */
function clientEnv(env: NodeJS.ProcessEnv, inputs: ActionInputs, dir: string): NodeJS.ProcessEnv {
  const out = withoutInputs(env);
  if (inputs.gateway) out.CIPORT_GATEWAY = inputs.gateway;
  if (inputs.ca) out.CIPORT_CA_FILE = caFile(inputs.ca, dir, env.GITHUB_WORKSPACE);
  return out;
}

/** PEM text goes to a file; anything else is a path (relative to the workspace), which must be readable. */
function caFile(ca: string, dir: string, workspace: string | undefined): string {
  if (ca.includes('-----BEGIN ')) {
    const file = join(dir, 'ca.pem');
    writeFileSync(file, `${ca.trim()}\n`, { mode: 0o600 });
    return file;
  }
  const file = resolve(workspace ?? process.cwd(), ca);
  try {
    readFileSync(file);
  } catch (err) {
    throw new UsageError(
      `input "ca": neither a PEM certificate nor a readable file (${file}: ${(err as NodeJS.ErrnoException).code})`,
    );
  }
  return file;
}

function fail(log: Log, err: unknown): number {
  if (!(err instanceof CiportError)) throw err;
  const line = `ciport: ${err.code}: ${printable(err.message)}`;
  log.write(`${line}\n`);
  error(log, line);
  return err.exitCode;
}
