// Who runs an offline command that records something (`ciport review attest --config`,
// `ciport audit sinks resume`): the OS account, as the audit event names them.
import { userInfo } from 'node:os';
import { UsageError } from '../errors/index.js';
import type { Io } from './output.js';

/** The OS user name running the command; a usage error when it cannot be told. */
export function osUser(io: Io): string {
  let name: string;
  try {
    name = userInfo().username;
  } catch {
    name = io.env.USER ?? io.env.USERNAME ?? '';
  }
  if (!name) throw new UsageError('cannot tell the OS user name of who runs this command');
  return name;
}
