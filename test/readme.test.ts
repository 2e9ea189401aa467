// README's "Using it" block runs as written on a fresh checkout: the test runs its commands
// (all but the `npm` install/build line: the suite builds once) with bash in an empty directory
// holding only the repository's bin/ and examples/, as a new user's clone would after the build,
// and checks what each step prints. The configs README names must pass `config check`.
import { mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, ROOT, runBash } from './fixtures/cli.js';

/** The first ```sh block after `heading`. */
function shellBlock(markdown: string, heading: string): string {
  const from = markdown.indexOf(heading);
  if (from < 0) throw new Error(`README has no "${heading}"`);
  const m = /```sh\n([\s\S]*?)```/.exec(markdown.slice(from));
  if (!m) throw new Error(`no sh block after "${heading}"`);
  return m[1] as string;
}

const dir = mkdtempSync(join(ROOT, 'test', '.tmp', 'readme-'));

beforeAll(async () => {
  await ensureBuilt();
  symlinkSync(join(ROOT, 'bin'), join(dir, 'bin'));
  symlinkSync(join(ROOT, 'examples'), join(dir, 'examples'));
}, 180_000);

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('README', () => {
  it('"Using it" runs as written: dev issuer, local gateway, exec, sessions, policy, config', async () => {
    const block = shellBlock(readFileSync(join(ROOT, 'README.md'), 'utf8'), '## Using it');
    const lines = block.split('\n').filter((l) => !/^npm /.test(l));
    expect(lines.some((l) => l.startsWith('ciport gateway --config examples/gateway-local.yaml'))).toBe(true);
    const script = [
      'set -eu',
      'shopt -s expand_aliases',
      // Whatever fails, no background process outlives the script.
      "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT",
      ...lines,
      'wait',
    ].join('\n');
    const result = await runBash(script, dir);
    const log = `${result.stdout}\n--- stderr ---\n${result.stderr}`;
    expect(result.code, log).toBe(0);
    expect(result.stdout, log).toContain('PONG\n');
    expect(result.stdout).toMatch(/^ID\s+STATE\s+END\s+TARGETS\s+WHO/m);
    expect(result.stdout).toMatch(/ses_\S+\s+ended\s+client_end\s+cache\s+acme\/ledger@main/);
    expect(result.stdout).toContain('principal: issuer dev, project acme/ledger, ref main (protected)');
    expect(result.stdout).toMatch(/^allow/m);
    expect(result.stdout).toContain('policy OK: examples/gateway-local.yaml (2 rules, no findings)');
    expect(result.stdout).toContain('config OK: examples/gateway-local.yaml (1 issuer, 1 target, 2 rules)');
    expect(result.stdout).toContain(
      'config OK: examples/gateway.yaml (1 issuer, 1 target, 2 rules; secrets not checked)',
    );
    // The gateway ran on the generated CA and stopped cleanly on `kill`.
    const gatewayLog = readFileSync(join(dir, 'gateway.log'), 'utf8');
    expect(gatewayLog).toContain('ciport: gateway listening on https://127.0.0.1:8443');
    expect(gatewayLog).toContain('ciport: gateway stopped');
  }, 120_000);
});
