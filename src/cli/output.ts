import type { Writable } from 'node:stream';
import type { CiportError } from '../errors/index.js';
import { escapeJsonControls, printable, printableLines } from '../text/printable.js';

export { count } from '../text/count.js';
// Everything a command prints for people goes through `printable` (src/text/printable.ts):
// values from tokens, the gateway or a config file never reach the terminal as control bytes.
export { printable, printableLines };

/** Where commands write. Tests and the demo pass their own streams. */
export interface Io {
  stdout: Writable;
  stderr: Writable;
  env: NodeJS.ProcessEnv;
}

export const processIo: Io = { stdout: process.stdout, stderr: process.stderr, env: process.env };

export function useColor(io: Io, stream: Writable): boolean {
  // https://no-color.org: any non-empty NO_COLOR disables colour.
  if (io.env.NO_COLOR) return false;
  if (io.env.FORCE_COLOR && io.env.FORCE_COLOR !== '0') return true;
  return Boolean((stream as { isTTY?: boolean }).isTTY);
}

const CODES = { red: 31, yellow: 33, green: 32, dim: 2, bold: 1 } as const;
export type Style = keyof typeof CODES;

export function paint(io: Io, stream: Writable, style: Style, text: string): string {
  return useColor(io, stream) ? `\u001b[${CODES[style]}m${text}\u001b[0m` : text;
}

export function writeJson(io: Io, value: unknown): void {
  // Values carry job claims (branch names may hold C1 controls and bidi overrides): escaped, so
  // `--json` output piped to a terminal cannot drive it; the parsed value is the same.
  io.stdout.write(`${escapeJsonControls(JSON.stringify(value, null, 2))}\n`);
}

/** The one way errors reach a terminal: `ciport: CODE: message`. */
export function reportError(io: Io, err: CiportError): void {
  const head = paint(io, io.stderr, 'red', `ciport: ${err.code}`);
  io.stderr.write(`${head}: ${printableLines(err.message)}\n`);
}
