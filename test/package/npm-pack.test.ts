// The npm package installs from its tarball with the JavaScript built at pack time: `npm pack`
// (prepack builds), `npm install <tarball>` into an empty project, then `npx ciport --version`
// and `npx ciport demo` there (as `npx -- ciport …`: without `--`, npx takes `--version` for its
// own). No TypeScript compiler is installed or run on the user's side.
//
// The pack runs in a copy of the checkout (node_modules linked): prepack rebuilds dist/, and
// rebuilding the checkout's own dist/ would pull it from under other test files that run it.
//
// better-sqlite3 installs as users get it: its install script downloads a prebuilt binary. The
// test stands in for the release host (`npm_config_better_sqlite3_binary_host`, prebuild-install's
// mirror setting) with a local server offering the binary this checkout built for this Node, so
// the install compiles nothing and needs no network; the server must have been asked for it.
import { execFile, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
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
import { createServer, type Server } from 'node:http';
import { homedir, tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { baseEnv, ROOT } from '../fixtures/cli.js';

const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { name: string; version: string };
const work = mkdtempSync(join(tmpdir(), 'ciport-pack-'));
let mirror: Server | undefined;
let cached: string | undefined;
afterAll(async () => {
  await new Promise<void>((resolve) => (mirror ? mirror.close(() => resolve()) : resolve()));
  if (cached) rmSync(cached, { force: true });
  rmSync(work, { recursive: true, force: true });
});

/**
 * A prebuilt-binary host for better-sqlite3 (prebuild-install's URL layout) offering the binary
 * the checkout's npm ci built for the running Node. Resolves to its URL, the version it offers
 * and a count of the downloads it served.
 */
async function startBinaryMirror(): Promise<{ url: string; version: string; served: () => number }> {
  const module = join(ROOT, 'node_modules/better-sqlite3');
  const { version } = JSON.parse(readFileSync(join(module, 'package.json'), 'utf8')) as { version: string };
  const asset = `better-sqlite3-v${version}-node-v${process.versions.modules}-${process.platform}-${process.arch}.tar.gz`;
  const file = join(work, asset);
  execFileSync('tar', ['-czf', file, '-C', module, 'build/Release/better_sqlite3.node']);
  let served = 0;
  const server = createServer((req, res) => {
    if (req.url !== `/v${version}/${asset}`) {
      res.writeHead(404).end();
      return;
    }
    served++;
    res.writeHead(200, { 'content-type': 'application/gzip' }).end(readFileSync(file));
  });
  mirror = server;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  const url = `http://127.0.0.1:${port}`;
  // prebuild-install keeps what it downloads in <npm cache>/_prebuilds under a hash of the URL,
  // which names this run's port: remove it afterwards, it will never be asked for again.
  const digest = createHash('sha512').update(`${url}/v${version}/${asset}`).digest('hex').slice(0, 6);
  cached = join(process.env.npm_config_cache ?? join(homedir(), '.npm'), '_prebuilds', `${digest}-${asset}`);
  return { url, version, served: () => served };
}

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
      const killed = err?.killed ? `\n(${cmd} ${args[0]} killed after ${timeout / 1000} s)` : '';
      resolve({ code, stdout, stderr: stderr + killed });
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
    const pack = await sh('npm', ['pack', '--pack-destination', out], src, env, 240_000);
    expect(pack.code, pack.stderr).toBe(0);
    const tarball = join(out, pack.stdout.trim().split('\n').at(-1) as string);
    expect(tarball.endsWith(`${pkg.name}-${pkg.version}.tgz`)).toBe(true);

    const list = (await sh('tar', ['-tzf', tarball], out, env, 30_000)).stdout.split('\n').filter(Boolean);
    expect(list).toContain('package/bin/ciport.js');
    expect(list).toContain('package/dist/src/cli/main.js');
    expect(list).toContain('package/dist/src/demo/run.js');
    // the console's stylesheet and script ship as built JavaScript (src/web/assets.ts)
    expect(list).toContain('package/dist/src/web/assets.js');
    expect(list).toContain('package/package.json');
    // no sources, tests, benchmarks, source maps or the runner client's binary
    const stray = list.filter(
      (f) =>
        /\.ts$|\.map$/.test(f) ||
        /^package\/(src|test|bench|scripts|deploy|dist\/(bench|client|test))\//.test(f),
    );
    expect(stray).toEqual([]);

    // An empty project; better-sqlite3 pinned to the version whose binary the mirror offers.
    const binaries = await startBinaryMirror();
    const project = join(work, 'project');
    mkdirSync(project);
    const manifest = { name: 'empty', private: true, overrides: { 'better-sqlite3': binaries.version } };
    writeFileSync(join(project, 'package.json'), `${JSON.stringify(manifest)}\n`);
    const install = await sh(
      'npm',
      ['install', '--prefer-offline', '--no-save', '--foreground-scripts', tarball],
      project,
      { ...env, npm_config_better_sqlite3_binary_host: binaries.url },
      180_000,
    );
    const installLog = `${install.stdout}\n${install.stderr}`;
    expect(install.code, installLog).toBe(0);
    expect(binaries.served(), installLog).toBe(1);
    const installed = join(project, 'node_modules');
    expect(existsSync(join(installed, 'ciport/dist/src/cli/main.js'))).toBe(true);
    // no TypeScript on the user's side: not installed, so nothing could have compiled at install
    expect(existsSync(join(installed, 'typescript'))).toBe(false);
    expect(existsSync(join(installed, '.bin/tsc'))).toBe(false);
    expect(existsSync(join(installed, 'ciport/src'))).toBe(false);

    const version = await sh('npx', ['--no', '--', 'ciport', '--version'], project, env, 60_000);
    expect(version.code, version.stderr).toBe(0);
    expect(version.stdout.trim()).toBe(pkg.version);

    const demo = await sh('npx', ['--no', '--', 'ciport', 'demo'], project, env, 90_000);
    expect(demo.code, `${demo.stdout}\n${demo.stderr}`).toBe(0);
    expect(demo.stdout).toContain('decision: allow by rule "ledger-main"');
    expect(demo.stdout).toContain('decision: deny (CIPORT_E_POLICY_DENIED)');
    expect(demo.stdout).toContain('chain: intact (6 events)');
  }, 540_000);
});
