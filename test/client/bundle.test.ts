// The bundle inside the self-contained client (dist/client/ciport.cjs, `npm run build:client`)
// holds the client commands and the pure-JS packages they use, and nothing that needs a native
// module or the gateway's side: a SEA cannot load a `.node` file, and a runner has no compiler.

import { readFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { beforeAll, describe, expect, it } from 'vitest';
import { CLIENT_BUNDLE, CLIENT_METAFILE, ensureClientBuilt } from '../fixtures/client-build.js';

interface Metafile {
  inputs: Record<string, { bytes: number }>;
  outputs: Record<string, { imports: { path: string; kind: string; external?: boolean }[] }>;
}

let meta: Metafile;
let bundle: string;

beforeAll(async () => {
  await ensureClientBuilt();
  meta = JSON.parse(readFileSync(CLIENT_METAFILE, 'utf8')) as Metafile;
  bundle = readFileSync(CLIENT_BUNDLE, 'utf8');
}, 300_000);

describe('dist/client/ciport.cjs', () => {
  it('is made of the client commands, not the gateway, agent or store', () => {
    const inputs = Object.keys(meta.inputs);
    expect(inputs).toContain('src/cli/client-bin.ts');
    expect(inputs).toContain('src/cli/commands/exec.ts');
    expect(inputs.filter((f) => /^src\/(gateway|store|agent)\//.test(f))).toEqual([]);
  });

  it('bundles no native module', () => {
    const inputs = Object.keys(meta.inputs);
    expect(inputs.filter((f) => f.endsWith('.node') || f.includes('better-sqlite3'))).toEqual([]);
    expect(bundle).not.toMatch(/better-sqlite3/);
    expect(bundle).not.toMatch(/require\(\s*["'`][^"'`]*\.node["'`]\s*\)/);
    expect(bundle).not.toMatch(/process\.dlopen/);
  });

  it('requires nothing outside itself but Node builtins', () => {
    const builtins = new Set(builtinModules);
    const outside = Object.values(meta.outputs)
      .flatMap((o) => o.imports)
      .filter((i) => i.external)
      .map((i) => i.path)
      .filter((p) => !p.startsWith('node:') && !builtins.has(p));
    expect(outside).toEqual([]);
  });
});
