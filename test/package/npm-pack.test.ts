// The npm package installs from its tarball with the JavaScript built at pack time: `npm pack`
// (prepack builds), `npm install <tarball>` into an empty project, then `npx ciport --version`
// and `npx ciport demo` there. No TypeScript compiler is installed or run on the user's side.
//
// The pack runs in a copy of the checkout (node_modules linked): prepack rebuilds dist/, and
// rebuilding the checkout's own dist/ would pull it from under other test files that run it.
import { execFile } from 'node:child_process';
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  realpathSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { baseEnv, ROOT } from '../fixtures/cli.js';

const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { name: string; version: string };
const work = mkdtempSync(join(tmpdir(), 'ciport-pack-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** Not copied: installed or generated things, and what never goes into the package anyway. */
const SKIP = new Set([
  'node_modules',
  'dist',
  '.git',
  'coverage',
  'ciport-data',
  'test/.tmp',
  'bench/results',
]);

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function sh(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv, timeout: number): Promise<Run> {
  return new Promise((resolve) => {
    execFile(cmd, args, { cwd, env, timeout, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/**
 * npm's environment: the machine's HOME (its npm cache) and PATH; no registry chatter. When
 * this Node's headers are on disk, node-gyp uses them (better-sqlite3 falls back to compiling
 * when no prebuilt binary can be fetched; .ci/run does the same) instead of downloading them.
 */
function npmEnv(): NodeJS.ProcessEnv {
  const env = baseEnv({
    npm_config_fund: 'false',
    npm_config_audit: 'false',
    npm_config_update_notifier: 'false',
  });
  const prefix = dirname(dirname(realpathSync(process.execPath)));
  const header = join(prefix, 'include/node/node_version.h');
  if (existsSync(header)) {
    const h = readFileSync(header, 'utf8');
    const v = ['MAJOR', 'MINOR', 'PATCH'].map(
      (p) => new RegExp(`#define NODE_${p}_VERSION (\\d+)`).exec(h)?.[1],
    );
    if (`v${v.join('.')}` === process.version) env.npm_config_nodedir = prefix;
  }
  for (const k of ['npm_config_globalconfig', 'npm_config_cache', 'JOBS'])
    if (process.env[k]) env[k] = process.env[k];
  return env;
}

describe('npm package', () => {
  it('packs prebuilt JavaScript, installs into an empty project, runs --version and demo', async () => {
    const src = join(work, 'src');
    cpSync(ROOT, src, {
      recursive: true,
      filter: (p) => !SKIP.has(relative(ROOT, p).split('\\').join('/')),
    });
    symlinkSync(join(ROOT, 'node_modules'), join(src, 'node_modules'));
    const out = join(work, 'out');
    mkdirSync(out);

    const env = npmEnv();
    const pack = await sh('npm', ['pack', '--pack-destination', out], src, env, 180_000);
    expect(pack.code, pack.stderr).toBe(0);
    const tarball = join(out, pack.stdout.trim().split('\n').at(-1) as string);
    expect(tarball.endsWith(`${pkg.name}-${pkg.version}.tgz`)).toBe(true);

    const list = (await sh('tar', ['-tzf', tarball], out, env, 30_000)).stdout.split('\n').filter(Boolean);
    expect(list).toContain('package/bin/ciport.js');
    expect(list).toContain('package/dist/src/cli/main.js');
    expect(list).toContain('package/dist/src/demo/run.js');
    expect(list).toContain('package/package.json');
    // no sources, tests, benchmarks, source maps or the runner client's binary
    const stray = list.filter(
      (f) =>
        /\.ts$|\.map$/.test(f) ||
        /^package\/(src|test|bench|scripts|deploy|dist\/(bench|client|test))\//.test(f),
    );
    expect(stray).toEqual([]);

    const project = join(work, 'project');
    mkdirSync(project);
    writeFileSync(join(project, 'package.json'), `${JSON.stringify({ name: 'empty', private: true })}\n`);
    const install = await sh(
      'npm',
      ['install', '--prefer-offline', '--no-save', tarball],
      project,
      env,
      240_000,
    );
    expect(install.code, `${install.stdout}\n${install.stderr}`).toBe(0);
    const installed = join(project, 'node_modules');
    expect(existsSync(join(installed, 'ciport/dist/src/cli/main.js'))).toBe(true);
    // no TypeScript on the user's side: not installed, so nothing could have compiled at install
    expect(existsSync(join(installed, 'typescript'))).toBe(false);
    expect(existsSync(join(installed, '.bin/tsc'))).toBe(false);
    expect(existsSync(join(installed, 'ciport/src'))).toBe(false);

    const version = await sh('npx', ['--no', 'ciport', '--version'], project, env, 60_000);
    expect(version.code, version.stderr).toBe(0);
    expect(version.stdout.trim()).toBe(pkg.version);

    const demo = await sh('npx', ['--no', 'ciport', 'demo'], project, env, 90_000);
    expect(demo.code, `${demo.stdout}\n${demo.stderr}`).toBe(0);
    expect(demo.stdout).toContain('decision: allow by rule "ledger-main"');
    expect(demo.stdout).toContain('decision: deny (CIPORT_E_POLICY_DENIED)');
    expect(demo.stdout).toContain('chain: intact (6 events)');
  }, 540_000);
});
