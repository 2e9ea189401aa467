// action.yml and its committed bundles: GitHub runs action/dist/*.cjs as they are, so they must be
// what `npm run build:action` makes from the sources of this commit, and action.yml must name
// them, a node runtime GitHub's runners still have, and exactly the inputs main reads.
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { INPUT_NAMES } from '../../src/action/inputs.js';
import { ROOT } from './harness.js';

const out = mkdtempSync(join(tmpdir(), 'ciport-action-build-'));
afterAll(() => rmSync(out, { recursive: true, force: true }));

describe('action.yml', () => {
  const action = parse(readFileSync(join(ROOT, 'action.yml'), 'utf8'));

  it('is a JavaScript action on node24 whose post step always runs', () => {
    // Node 20 left GitHub's runners in September 2026; node24 is what they run.
    expect(action.runs).toEqual({
      using: 'node24',
      main: 'action/dist/main.cjs',
      post: 'action/dist/post.cjs',
      'post-if': 'always()',
    });
    expect(typeof action.name).toBe('string');
    expect(typeof action.description).toBe('string');
  });

  it('declares exactly the inputs main reads, and the outputs it sets', () => {
    expect(Object.keys(action.inputs).sort()).toEqual([...INPUT_NAMES].sort());
    for (const spec of Object.values(action.inputs) as Array<{ description: string }>) {
      expect(spec.description.length).toBeGreaterThan(10);
    }
    expect(Object.keys(action.outputs).sort()).toEqual(['expires-at', 'session-id']);
  });
});

describe('action/dist', () => {
  it('holds what npm run build:action makes from these sources', async () => {
    await promisify(execFile)(process.execPath, [join(ROOT, 'scripts/build-action.mjs'), '--out', out], {
      cwd: tmpdir(),
    });
    for (const file of ['main.cjs', 'post.cjs', 'ciport.cjs']) {
      const committed = readFileSync(join(ROOT, 'action/dist', file), 'utf8');
      const fresh = readFileSync(join(out, file), 'utf8');
      // One assertion per file, without a megabyte diff: rebuild with `npm run build:action`.
      expect(committed === fresh, `action/dist/${file} is stale: run npm run build:action`).toBe(true);
    }
  }, 60_000);
});
