// Readers for the deployment recipes under deploy/ that test/deploy/*.test.ts check: the
// Dockerfile as scripts/image-build-steps.mjs parses it, the Kubernetes manifests, the compose
// file and the systemd unit.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { type RequestOptions, request } from 'node:https';
import { join } from 'node:path';
import { parse, parseAllDocuments } from 'yaml';
import { ROOT, spawnCli } from '../fixtures/cli.js';
import { waitFor } from '../fixtures/wait-for.js';

export const DEPLOY = join(ROOT, 'deploy');

export interface DockerStep {
  op: string;
  args: string;
}
export interface DockerStage {
  name: string;
  from: string;
  steps: DockerStep[];
}

/** deploy/Dockerfile exactly as the CI script that performs its steps reads it. */
export function dockerPlan(): DockerStage[] {
  const out = execFileSync(process.execPath, [join(ROOT, 'scripts/image-build-steps.mjs'), '--plan'], {
    encoding: 'utf8',
  });
  return JSON.parse(out) as DockerStage[];
}

export const argsOf = (stage: DockerStage, op: string): string[] =>
  stage.steps.filter((s) => s.op === op).map((s) => s.args);

// biome-ignore lint/suspicious/noExplicitAny: manifests are free-form YAML, checked field by field
export type Doc = Record<string, any>;

/** Every document of every deploy/kubernetes/*.yaml, with the file it came from. */
export function kubernetesDocs(): { file: string; doc: Doc }[] {
  const dir = join(DEPLOY, 'kubernetes');
  const docs: { file: string; doc: Doc }[] = [];
  for (const file of readdirSync(dir)
    .filter((f) => f.endsWith('.yaml'))
    .sort()) {
    for (const d of parseAllDocuments(readFileSync(join(dir, file), 'utf8'))) {
      if (d.errors.length) throw new Error(`${file}: ${d.errors[0]?.message}`);
      const doc = d.toJS() as Doc | null;
      if (doc) docs.push({ file, doc });
    }
  }
  return docs;
}

export function readYaml(path: string): Doc {
  return parse(readFileSync(path, 'utf8')) as Doc;
}

/** `{file: P}` and `{env: N}` secrets anywhere in a gateway config. */
export function secretRefs(config: unknown): { files: string[]; envs: string[] } {
  const files: string[] = [];
  const envs: string[] = [];
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === 'object') {
      const o = v as Record<string, unknown>;
      const keys = Object.keys(o);
      if (keys.length === 1 && typeof o.file === 'string') files.push(o.file);
      else if (keys.length === 1 && typeof o.env === 'string') envs.push(o.env);
      else Object.values(o).forEach(walk);
    }
  };
  walk(config);
  return { files, envs };
}

/** A systemd unit as section -> key -> values (keys may repeat). */
export function parseUnit(text: string): Record<string, Record<string, string[]>> {
  const unit: Record<string, Record<string, string[]>> = {};
  let section: Record<string, string[]> | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#') || line.startsWith(';')) continue;
    const head = /^\[(.+)\]$/.exec(line);
    if (head) {
      section = unit[head[1] as string] ??= {};
      continue;
    }
    const eq = line.indexOf('=');
    if (!section || eq < 0) throw new Error(`unit: cannot parse "${line}"`);
    const key = line.slice(0, eq).trim();
    const values = section[key] ?? [];
    values.push(line.slice(eq + 1).trim());
    section[key] = values;
  }
  return unit;
}

/** host:port → port. */
export const portOf = (listen: string): number => Number(listen.slice(listen.lastIndexOf(':') + 1));

/** One HTTPS GET (HTTP/1.1, as kubelet probes): status and body. */
export function httpsGet(
  url: string,
  options: RequestOptions = {},
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, options, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        body += c;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** `ciport gateway --config FILE` as a process, once it says it listens (fails if it exits first). */
export async function startGatewayProcess(config: string, env?: NodeJS.ProcessEnv) {
  const gateway = spawnCli(['gateway', '--config', config], { ...(env ? { env } : {}), timeoutMs: 60_000 });
  await waitFor(
    () => gateway.stderr().includes('gateway listening on') || gateway.child.exitCode !== null,
    30_000,
  );
  if (gateway.child.exitCode !== null)
    throw new Error(`gateway exited ${gateway.child.exitCode}: ${gateway.stderr()}`);
  return gateway;
}
