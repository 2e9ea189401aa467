// The gateway's stderr logger writes lines in batches: every line must still come out, in order,
// within the flush interval, and when the process exits (normally, by process.exit, or on an
// uncaught exception). Runs the logger in a child process and reads its stderr.

import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, ROOT } from '../fixtures/cli.js';

const LOGGER = join(ROOT, 'dist/src/gateway/logger.js');

function run(body: string): Promise<{ stdout: string; stderr: string; code: number | null }> {
  const script = `import { createLogger } from ${JSON.stringify(LOGGER)};\nconst log = createLogger();\n${body}`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => {
    stdout += d;
  });
  child.stderr.on('data', (d) => {
    stderr += d;
  });
  return new Promise((resolve) => child.on('close', (code) => resolve({ stdout, stderr, code })));
}

const messages = (stderr: string) =>
  stderr
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => (JSON.parse(l) as { msg: string }).msg);

describe('gateway logger (batched stderr)', () => {
  beforeAll(() => ensureBuilt(), 200_000);

  it('writes a lone line within the flush interval, while the process keeps running', async () => {
    // A marker written to stderr directly after the interval must come after the line.
    const r = await run(`
      log.info('first');
      await new Promise((r) => setTimeout(r, 200));
      process.stderr.write('MARKER\\n');
      await new Promise((r) => setTimeout(r, 50));
      process.exit(0);
    `);
    expect(r.code).toBe(0);
    const first = r.stderr.indexOf('"msg":"first"');
    expect(first).toBeGreaterThanOrEqual(0);
    expect(first).toBeLessThan(r.stderr.indexOf('MARKER'));
  });

  it('keeps every line, in order, through process.exit and an uncaught exception', async () => {
    const many = await run(`
      for (let i = 0; i < 500; i++) log.info('line ' + i);
      process.exit(3);
    `);
    expect(many.code).toBe(3);
    expect(messages(many.stderr)).toEqual(Array.from({ length: 500 }, (_, i) => `line ${i}`));

    const crash = await run(`
      log.info('before the crash');
      setTimeout(() => { throw new Error('boom'); }, 5);
      setInterval(() => {}, 1000);
    `);
    expect(crash.code).not.toBe(0);
    expect(messages(crash.stderr)).toEqual(['before the crash']);
  });
});
