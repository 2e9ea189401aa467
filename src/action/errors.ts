// The failure the GitHub Action adds to the client's: a runner file it must write is unusable.
import { CiportError } from '../errors/errors.js';

/** GITHUB_ENV, GITHUB_STATE or GITHUB_OUTPUT is unset, missing, a symlink or not a regular file. */
export class RunnerFileError extends CiportError {
  constructor(message: string) {
    super('CIPORT_E_RUNNER_FILE', message);
  }
}
