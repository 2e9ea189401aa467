#!/usr/bin/env node
// Performs deploy/Dockerfile's steps outside a container, so the image recipe is exercised by
// CI on a machine with no container engine (.ci/run, step "Image recipe"). It READS the
// Dockerfile instead of repeating its commands, so the two cannot drift apart: an instruction
// it does not understand fails the run.
//
// 1. Build stage: every WORKDIR, ENV, COPY and RUN, in order, in <work>/build (the stage's
//    filesystem root; COPY sources from the repository, honouring .dockerignore).
// 2. Runtime stage: its COPY lines into <work>/image; its RUN lines need root inside the image
//    (useradd, a symlink in /usr/local/bin) and are listed, not run; the ENTRYPOINT must be
//    a name one of them links onto PATH.
// 3. Smoke test of the result: `<entrypoint> --version`, then the gateway started with CMD's
//    arguments (paths under the image's root) and a config at <image>/etc/ciport/gateway.yaml,
//    then the HEALTHCHECK command until it passes (GET /readyz), then SIGTERM: exit 0.
//
// Usage: node scripts/image-build-steps.mjs [--plan] [--keep] [--work DIR] [--dockerfile FILE]
//   --plan   print the parsed Dockerfile as JSON and run nothing (test/deploy reads it)
//   --keep   keep the work directory (default: a temp dir, removed at the end)
// Machine-level npm settings pass through the environment (e.g. .ci/run's npm_config_nodedir
// for building better-sqlite3 offline): they change where npm finds things, not the recipe.
// CIPORT_IMAGE_PG_URL, when set, makes the smoke test use that PostgreSQL store.
import { spawn, spawnSync } from 'node:child_process';
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const DOCKERFILE = join(ROOT, 'deploy/Dockerfile');
const SUPPORTED = new Set([
  'FROM',
  'ARG',
  'ENV',
  'WORKDIR',
  'COPY',
  'RUN',
  'USER',
  'VOLUME',
  'EXPOSE',
  'HEALTHCHECK',
  'ENTRYPOINT',
  'CMD',
  'LABEL',
]);

// Thrown, not process.exit: the `finally` below stops the gateway and removes the work dir.
function fail(message) {
  throw new Error(message);
}

/** Instructions of a Dockerfile: comments dropped, continuation lines joined. */
function parseDockerfile(text) {
  const out = [];
  let pending = '';
  for (const raw of text.split('\n')) {
    const line = raw.trimEnd();
    if (!pending && (line.trim() === '' || line.trim().startsWith('#'))) continue;
    if (pending && line.trim().startsWith('#')) continue;
    if (line.endsWith('\\')) {
      pending += `${line.slice(0, -1)} `;
      continue;
    }
    const full = (pending + line).trim();
    pending = '';
    const m = /^([A-Za-z]+)\s+([\s\S]*)$/.exec(full);
    if (!m) fail(`cannot parse: ${full}`);
    out.push({ op: m[1].toUpperCase(), args: m[2].replace(/\s+/g, ' ').trim() });
  }
  return out;
}

/** `a=b c="d e"` → {a: 'b', c: 'd e'}. */
function parsePairs(text) {
  const env = {};
  for (const m of text.matchAll(/([A-Za-z_][A-Za-z0-9_.-]*)=("([^"]*)"|\S*)/g)) env[m[1]] = m[3] ?? m[2];
  return env;
}

const execForm = (args) => (args.startsWith('[') ? JSON.parse(args) : null);

/** The Dockerfile as stages: {name, from, steps}. ARG defaults substituted into FROM. */
function plan(text) {
  const args = {};
  const stages = [];
  for (const ins of parseDockerfile(text)) {
    if (!SUPPORTED.has(ins.op))
      fail(`unsupported instruction ${ins.op} (teach scripts/image-build-steps.mjs)`);
    if (ins.op === 'ARG' && stages.length === 0) {
      const [name, value = ''] = ins.args.split('=');
      args[name] = value;
      continue;
    }
    if (ins.op === 'FROM') {
      const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(ins.args);
      if (!m) fail(`FROM: cannot parse ${ins.args}`);
      const from = m[1].replace(/\$\{(\w+)\}/g, (_, n) => args[n] ?? fail(`FROM names undefined ARG ${n}`));
      stages.push({ name: m[2] ?? `stage${stages.length}`, from, steps: [] });
      continue;
    }
    if (stages.length === 0) fail(`${ins.op} before FROM`);
    stages.at(-1).steps.push(ins);
  }
  if (stages.length !== 2) fail(`expected two stages (build, runtime), found ${stages.length}`);
  return stages;
}

/** .dockerignore: plain paths (and everything under them) and `*.ext` basename globs. */
function ignoreFilter() {
  const file = join(ROOT, '.dockerignore');
  const patterns = existsSync(file)
    ? readFileSync(file, 'utf8')
        .split('\n')
        .map((l) => l.trim())
        .filter((l) => l && !l.startsWith('#'))
    : [];
  for (const p of patterns)
    if (/[*?[]/.test(p.replace(/^\*\./, ''))) fail(`.dockerignore: unsupported pattern ${p}`);
  return (abs) => {
    const rel = relative(ROOT, abs).split('\\').join('/');
    return !patterns.some((p) =>
      p.startsWith('*.') ? rel.endsWith(p.slice(1)) : rel === p || rel.startsWith(`${p}/`),
    );
  };
}

/** COPY [--from=stage] SRC... DEST with Docker's rules for files and directories. */
function copy(args, { root, cwd, stageRoots, keep }) {
  const words = args.split(' ');
  let fromRoot = null;
  if (words[0].startsWith('--from=')) {
    const name = words.shift().slice('--from='.length);
    fromRoot = stageRoots[name] ?? fail(`COPY --from=${name}: no such stage`);
  }
  if (words.some((w) => w.startsWith('--'))) fail(`COPY: unsupported flag in ${args}`);
  const dest = words.pop();
  const destAbs = dest.startsWith('/') ? join(root, dest) : join(cwd, dest);
  const intoDir = dest.endsWith('/') || words.length > 1;
  for (const src of words) {
    const from = fromRoot ? join(fromRoot, src) : join(ROOT, src);
    if (!existsSync(from)) fail(`COPY: ${src} does not exist${fromRoot ? ' in the build stage' : ''}`);
    const isDir = statSync(from).isDirectory();
    const to = isDir || !intoDir ? destAbs : join(destAbs, basename(src));
    mkdirSync(isDir ? to : dirname(to), { recursive: true });
    cpSync(from, to, { recursive: true, filter: fromRoot ? () => true : keep, verbatimSymlinks: true });
  }
}

function freePort() {
  return new Promise((done, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => done(port));
    });
  });
}

function run(argv, { cwd, env }) {
  const r = spawnSync(argv[0], argv.slice(1), { cwd, env, stdio: 'inherit' });
  if (r.status !== 0) fail(`${argv.join(' ')}: exit ${r.status ?? r.signal}`);
}

async function main() {
  const argv = process.argv.slice(2);
  const fileArg = argv.indexOf('--dockerfile');
  const dockerfile = fileArg >= 0 ? resolve(argv[fileArg + 1]) : DOCKERFILE;
  const stages = plan(readFileSync(dockerfile, 'utf8'));
  if (argv.includes('--plan')) {
    process.stdout.write(`${JSON.stringify(stages, null, 2)}\n`);
    return;
  }
  const workArg = argv.indexOf('--work');
  const work = workArg >= 0 ? resolve(argv[workArg + 1]) : mkdtempSync(join(tmpdir(), 'ciport-image-'));
  const keepWork = argv.includes('--keep') || workArg >= 0;
  const keep = ignoreFilter();
  const [build, runtime] = stages;
  const stageRoots = { [build.name]: join(work, 'build') };
  let gateway;
  try {
    // ---- build stage: everything, in order
    console.log(`== build stage (FROM ${build.from}) in ${stageRoots[build.name]}`);
    let cwd = stageRoots[build.name];
    let env = { ...process.env };
    for (const { op, args } of build.steps) {
      console.log(`-- ${op} ${args}`);
      if (op === 'WORKDIR') {
        cwd = join(stageRoots[build.name], args);
        mkdirSync(cwd, { recursive: true });
      } else if (op === 'ENV') env = { ...env, ...parsePairs(args) };
      else if (op === 'COPY') copy(args, { root: stageRoots[build.name], cwd, stageRoots, keep });
      else if (op === 'RUN') run(execForm(args) ?? ['sh', '-c', args], { cwd, env });
      else if (op !== 'LABEL' && op !== 'ARG') fail(`${op} in the build stage: not expected`);
    }

    // ---- runtime stage: files only; RUN needs root inside the image
    const image = join(work, 'image');
    console.log(`== runtime stage (FROM ${runtime.from}) in ${image}`);
    cwd = image;
    const rt = {
      env: {},
      skipped: [],
      healthcheck: null,
      entrypoint: null,
      cmd: [],
      workdir: '/',
      exposed: [],
    };
    for (const { op, args } of runtime.steps) {
      console.log(`-- ${op} ${args}`);
      if (op === 'WORKDIR') {
        rt.workdir = args;
        cwd = join(image, args);
        mkdirSync(cwd, { recursive: true });
      } else if (op === 'ENV') Object.assign(rt.env, parsePairs(args));
      else if (op === 'COPY') copy(args, { root: image, cwd, stageRoots, keep });
      else if (op === 'RUN') rt.skipped.push(args);
      else if (op === 'HEALTHCHECK') rt.healthcheck = execForm(args.replace(/^.*?CMD\s+/, ''));
      else if (op === 'ENTRYPOINT') rt.entrypoint = execForm(args);
      else if (op === 'CMD') rt.cmd = execForm(args);
      else if (op === 'EXPOSE') rt.exposed.push(...args.split(' '));
    }
    for (const r of rt.skipped) console.log(`   (not run outside a container: RUN ${r})`);
    if (!rt.entrypoint || !rt.healthcheck || !rt.cmd)
      fail('runtime stage needs exec-form ENTRYPOINT, CMD and HEALTHCHECK CMD');

    // ENTRYPOINT ["ciport"]: the runtime RUN must link that name onto PATH.
    const name = rt.entrypoint[0];
    const link = rt.skipped
      .map((r) => new RegExp(`ln -s (\\S+) /usr/(?:local/)?bin/${name}(?:\\s|$)`).exec(r))
      .find(Boolean);
    if (!link) fail(`ENTRYPOINT ${name}: no runtime RUN line links it into /usr/local/bin`);
    const entry = join(image, link[1]);
    if (!existsSync(entry)) fail(`ENTRYPOINT ${name} -> ${link[1]}: not in the image`);
    const inImage = (arg) => (arg.startsWith('/') && arg !== '/' ? join(image, arg) : arg);
    const node = (args) =>
      args[0] === 'node' ? [process.execPath, ...args.slice(1).map(inImage)] : args.map(inImage);

    // ---- what the image must and must not hold
    const modules = join(image, '/opt/ciport/node_modules');
    for (const devOnly of ['typescript', 'vitest', '@biomejs/biome', 'esbuild']) {
      if (existsSync(join(modules, devOnly))) fail(`runtime image holds the dev dependency ${devOnly}`);
    }
    if (!existsSync(join(modules, 'better-sqlite3/build/Release/better_sqlite3.node'))) {
      fail('runtime image has no compiled better-sqlite3 (the build stage must install it)');
    }

    // ---- smoke test: version, gateway, health check, drain
    const runEnv = { PATH: process.env.PATH, HOME: image, NO_COLOR: '1', ...rt.env };
    const version = spawnSync(process.execPath, ['--', entry, '--version'], {
      env: runEnv,
      encoding: 'utf8',
    });
    const expected = JSON.parse(readFileSync(join(image, '/opt/ciport/package.json'), 'utf8')).version;
    if (version.status !== 0 || version.stdout.trim() !== expected) {
      fail(
        `${name} --version: exit ${version.status}, "${version.stdout.trim()}" (expected ${expected}) ${version.stderr}`,
      );
    }
    console.log(`== ${name} --version: ${expected}`);

    const port = await freePort();
    const dataDir = join(image, rt.workdir);
    const pgUrl = process.env.CIPORT_IMAGE_PG_URL;
    const config = [
      '# written by scripts/image-build-steps.mjs: the shape of deploy/kubernetes/configmap.yaml',
      `listen: 127.0.0.1:${port}`,
      `data_dir: ${JSON.stringify(dataDir)}`,
      ...(pgUrl ? ['store:', '  postgres: {url: {env: CIPORT_IMAGE_PG_URL}}'] : []),
      'admin_tokens:',
      '  - {env: CIPORT_ADMIN_TOKEN}',
      'issuers: []',
      'rules: []',
      '',
    ].join('\n');
    const configPath = join(image, '/etc/ciport/gateway.yaml');
    mkdirSync(dirname(configPath), { recursive: true });
    writeFileSync(configPath, config);
    const cmd = rt.cmd.map(inImage);
    console.log(`== ${name} ${rt.cmd.join(' ')}  (cwd ${rt.workdir}, port ${port})`);
    const admin = Array.from({ length: 32 }, () => Math.floor(Math.random() * 16).toString(16)).join('');
    gateway = spawn(process.execPath, ['--', entry, ...cmd], {
      cwd: dataDir,
      env: { ...runEnv, CIPORT_ADMIN_TOKEN: admin, ...(pgUrl ? { CIPORT_IMAGE_PG_URL: pgUrl } : {}) },
      stdio: ['ignore', 'inherit', 'pipe'],
    });
    let stderr = '';
    gateway.stderr.on('data', (c) => {
      stderr += c;
      process.stderr.write(c);
    });
    const exited = new Promise((done) => gateway.once('exit', (code, signal) => done({ code, signal })));

    const health = node(rt.healthcheck);
    const healthEnv = { ...runEnv, CIPORT_HEALTHCHECK_URL: `https://127.0.0.1:${port}/readyz` };
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (gateway.exitCode !== null) fail(`gateway exited (${gateway.exitCode}) before it was healthy`);
      const h = spawnSync(health[0], health.slice(1), { env: healthEnv, encoding: 'utf8' });
      if (h.status === 0) {
        console.log(`== HEALTHCHECK: ${h.stdout.trim()}`);
        break;
      }
      if (Date.now() > deadline) fail(`HEALTHCHECK still failing after 60 s: ${h.stdout}${h.stderr}`);
      await new Promise((done) => setTimeout(done, 500));
    }
    if (!existsSync(join(dataDir, 'ca.crt'))) fail(`no generated CA in data_dir ${rt.workdir}`);

    gateway.kill('SIGTERM');
    const end = await exited;
    gateway = undefined;
    if (end.code !== 0 || !stderr.includes('gateway stopped'))
      fail(`gateway did not drain cleanly on SIGTERM (${end.code ?? end.signal})`);
    console.log('== SIGTERM: drained, exit 0');
    console.log('image-build-steps: OK');
  } finally {
    if (gateway) gateway.kill('SIGKILL');
    if (keepWork) console.log(`image-build-steps: kept ${work}`);
    else rmSync(work, { recursive: true, force: true });
  }
}

try {
  await main();
} catch (err) {
  console.error(`image-build-steps: ${err instanceof Error ? err.message : err}`);
  process.exitCode = 1;
}
