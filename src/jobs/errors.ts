// The refusal this module gives the gateway to send.
import { CiportError } from '../errors/index.js';

/**
 * The token is valid but its CI job is over: refused at session creation (exit 3 from
 * `ciport exec`, HTTP 403). `details` carries ids and the platform's status, never a secret.
 */
export class JobNotRunningError extends CiportError {
  constructor(message: string, details: Record<string, unknown>) {
    super('CIPORT_E_JOB_NOT_RUNNING', message, { details });
  }
}
