// Workflow commands the action writes to its log (stdout), as GitHub's runner reads them:
// `::add-mask::VALUE`, `::error::MESSAGE`, `::warning::MESSAGE`, and `::stop-commands::TOKEN`
// … `::TOKEN::` around text the action did not write itself (the client's stderr carries claim
// values a job controls, such as a branch name), so none of it is taken for a command.
import { randomUUID } from 'node:crypto';
import { printableLines } from '../text/printable.js';

/** Where the action's log goes: process.stdout in the bundles, a buffer in tests. */
export interface Log {
  write(text: string): unknown;
}

/** A command's data, escaped as the runner unescapes it (`%`, CR, LF). */
export function escapeData(text: string): string {
  return text.replaceAll('%', '%25').replaceAll('\r', '%0D').replaceAll('\n', '%0A');
}

/**
 * Mask a secret in every later line of the job log. The runner matches masks within one line,
 * so a value that spans lines is also masked line by line.
 */
export function addMask(log: Log, secret: string): void {
  const parts = new Set([secret, ...secret.split(/\r?\n/)]);
  for (const part of parts) if (part.trim() !== '') log.write(`::add-mask::${escapeData(part)}\n`);
}

export function error(log: Log, message: string): void {
  log.write(`::error::${escapeData(message)}\n`);
}

export function warning(log: Log, message: string): void {
  log.write(`::warning::${escapeData(message)}\n`);
}

/** Plain lines, never read as commands, control characters shown as escapes. */
export function verbatim(log: Log, text: string): void {
  if (text === '') return;
  const token = randomUUID();
  log.write(`::stop-commands::${token}\n`);
  log.write(`${printableLines(text.replace(/\n$/, ''))}\n`);
  log.write(`::${token}::\n`);
}
