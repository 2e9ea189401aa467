// The deployment recipes under deploy/ hold together: what can be checked without a container
// engine or a cluster is checked here (structure, cross-references, `ciport config check` on
// every gateway.yaml they ship, `systemd-analyze verify` on the unit). The image recipe itself
// is run by scripts/image-build-steps.mjs (.ci/run, "Image recipe").
import { execFileSync, spawnSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, posix } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { ensureBuilt, ROOT, runCli } from '../fixtures/cli.js';
import {
  argsOf,
  DEPLOY,
  type Doc,
  dockerPlan,
  kubernetesDocs,
  parseUnit,
  portOf,
  readYaml,
  secretRefs,
} from './recipes.js';

const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
  version: string;
  engines: { node: string };
  scripts: Record<string, string>;
};
const [build, runtime] = dockerPlan();
const IMAGE_DATA_DIR = '/var/lib/ciport';
const IMAGE_CONFIG = '/etc/ciport/gateway.yaml';

beforeAll(async () => {
  await ensureBuilt();
}, 180_000);

/** `ciport config check --skip-secrets` on a config text; its stdout line. */
async function configCheck(text: string, name: string): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'ciport-deploy-'));
  try {
    const file = join(dir, name);
    writeFileSync(file, text);
    const r = await runCli(['config', 'check', '--skip-secrets', file]);
    expect(r.code, r.stderr).toBe(0);
    return r.stdout;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('deploy/Dockerfile', () => {
  it('builds in a full image and runs in a slim one of the same release, pinned by tag', () => {
    expect(build?.name).toBe('build');
    const major = Number(/\d+/.exec(pkg.engines.node)?.[0]);
    for (const stage of [build, runtime]) {
      const m = /^node:(\d+)-([a-z]+)(-slim)?$/.exec(stage?.from ?? '');
      expect(m, stage?.from).not.toBeNull();
      expect(Number(m?.[1])).toBeGreaterThanOrEqual(major);
    }
    expect(runtime?.from).toMatch(/-slim$/);
    // same Node major and Debian release: better-sqlite3 compiled in one loads in the other
    expect(runtime?.from.replace(/-slim$/, '')).toBe(build?.from);
  });

  it('build stage: npm ci, the same build as `npm pack` (prepack), the runner client, then only production modules', () => {
    expect(argsOf(build!, 'RUN')).toEqual([
      'npm ci',
      pkg.scripts.prepack,
      'npm run build:client -- --quiet',
      'npm prune --omit=dev',
    ]);
    // The gateway in the image serves the client it was built with (docs/gateway.md).
    expect(argsOf(runtime!, 'COPY')).toContain(
      '--from=build /src/dist/client/ciport /src/dist/client/ciport.sha256 ./dist/client/',
    );
    expect(pkg.scripts.prepack).toBe('npm run build');
    // every COPY source exists and is not excluded by .dockerignore
    const ignored = readFileSync(join(ROOT, '.dockerignore'), 'utf8')
      .split('\n')
      .filter((l) => l && !l.startsWith('#'));
    for (const args of argsOf(build!, 'COPY')) {
      for (const src of args.split(' ').slice(0, -1)) {
        expect(existsSync(join(ROOT, src)), src).toBe(true);
        expect(
          ignored.some((p) => src === p || src.startsWith(`${p}/`)),
          src,
        ).toBe(false);
      }
    }
  });

  it('runtime stage: non-root, data_dir a volume, health check on /readyz with node, gateway by default', () => {
    const user = argsOf(runtime!, 'USER');
    expect(user).toHaveLength(1);
    const [uid, gid] = (user[0] as string).split(':').map(Number);
    expect(uid).toBeGreaterThan(0);
    expect(gid).toBeGreaterThan(0);
    expect(argsOf(runtime!, 'VOLUME')).toEqual([JSON.stringify([IMAGE_DATA_DIR])]);
    expect(argsOf(runtime!, 'WORKDIR').at(-1)).toBe(IMAGE_DATA_DIR);
    expect(argsOf(runtime!, 'EXPOSE')).toEqual(['8443']);
    const hc = argsOf(runtime!, 'HEALTHCHECK')[0] as string;
    expect(hc).toContain('CMD ["node", "/opt/ciport/deploy/healthcheck.mjs"]');
    expect(argsOf(runtime!, 'COPY')).toContain('deploy/healthcheck.mjs ./deploy/healthcheck.mjs');
    // the healthcheck's default URL is the port the image exposes, on loopback
    expect(readFileSync(join(DEPLOY, 'healthcheck.mjs'), 'utf8')).toContain(
      "'https://127.0.0.1:8443/readyz'",
    );
    expect(argsOf(runtime!, 'ENTRYPOINT')).toEqual(['["ciport"]']);
    expect(JSON.parse(argsOf(runtime!, 'CMD')[0] as string)).toEqual(['gateway', '--config', IMAGE_CONFIG]);
    // no compiler, no npm install in the runtime stage: modules come built from the build stage
    const runs = argsOf(runtime!, 'RUN').join('\n');
    expect(runs).not.toMatch(/npm (ci|install)|apt-get|node-gyp/);
    expect(runs).toContain('ln -s /opt/ciport/bin/ciport.js /usr/local/bin/ciport');
    expect(runs).toContain(`useradd --system --uid ${uid} --gid ${gid}`);
    expect(argsOf(runtime!, 'COPY')).toContain('--from=build /src/node_modules ./node_modules');
  });

  it('the CI script refuses an instruction it cannot perform, so the recipe cannot drift from it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ciport-dockerfile-'));
    try {
      const file = join(dir, 'Dockerfile');
      writeFileSync(
        file,
        'FROM node:24-bookworm AS build\nADD https://example.com/x /x\nFROM node:24-bookworm-slim\n',
      );
      const r = spawnSync(
        process.execPath,
        [join(ROOT, 'scripts/image-build-steps.mjs'), '--plan', '--dockerfile', file],
        {
          encoding: 'utf8',
        },
      );
      expect(r.status).toBe(1);
      expect(r.stderr).toContain('unsupported instruction ADD');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('deploy/kubernetes', () => {
  const docs = kubernetesDocs();
  const one = (kind: string, name?: string): Doc => {
    const found = docs.filter((d) => d.doc.kind === kind && (!name || d.doc.metadata?.name === name));
    expect(found, `${kind} ${name ?? ''}`).toHaveLength(1);
    return found[0]!.doc;
  };
  const deployment = one('Deployment');
  const pod = deployment.spec.template.spec;
  const container = pod.containers[0];
  const configMap = one('ConfigMap');
  const gatewayYaml = configMap.data['gateway.yaml'] as string;
  const gateway = parse(gatewayYaml) as Doc;
  const podLabels = deployment.spec.template.metadata.labels as Record<string, string>;
  const subsetOf = (sel: Record<string, string>) => Object.entries(sel).every(([k, v]) => podLabels[k] === v);

  it('kinds and apiVersions, one namespace, common labels', () => {
    const want: Record<string, string> = {
      Namespace: 'v1',
      ConfigMap: 'v1',
      Secret: 'v1',
      Deployment: 'apps/v1',
      Service: 'v1',
      PodDisruptionBudget: 'policy/v1',
      Kustomization: 'kustomize.config.k8s.io/v1beta1',
    };
    for (const { file, doc } of docs) {
      expect(want[doc.kind], `${file}: kind ${doc.kind}`).toBe(doc.apiVersion);
      if (doc.kind === 'Kustomization') continue;
      expect(doc.metadata.labels?.['app.kubernetes.io/name'], file).toBe('ciport');
      if (doc.kind !== 'Namespace') expect(doc.metadata.namespace, file).toBe(one('Namespace').metadata.name);
    }
    // kustomization applies everything but secret.yaml (a shape, never values)
    const k = one('Kustomization');
    const files = [...new Set(docs.map((d) => d.file))].filter((f) => f !== 'kustomization.yaml');
    expect([...k.resources].sort()).toEqual(files.filter((f) => f !== 'secret.yaml').sort());
  });

  it('two replicas on a PostgreSQL store; selectors match the pod labels', () => {
    expect(deployment.spec.replicas).toBe(2);
    expect(gateway.store?.postgres, 'several gateways need the PostgreSQL store').toBeDefined();
    expect(subsetOf(deployment.spec.selector.matchLabels)).toBe(true);
    expect(subsetOf(one('Service').spec.selector)).toBe(true);
    const pdb = one('PodDisruptionBudget');
    expect(subsetOf(pdb.spec.selector.matchLabels)).toBe(true);
    expect(pdb.spec.minAvailable).toBeLessThan(deployment.spec.replicas);
  });

  it('ports agree: gateway listen port = containerPort = Service targetPort; probes on real paths over HTTPS', () => {
    const port = container.ports.find((p: Doc) => p.name === 'https');
    expect(port.containerPort).toBe(portOf(gateway.listen));
    expect(gateway.listen).toMatch(/^0\.0\.0\.0:/);
    const svc = one('Service').spec.ports[0];
    expect([port.name, port.containerPort]).toContain(svc.targetPort);
    const probes = { startupProbe: '/readyz', readinessProbe: '/readyz', livenessProbe: '/healthz' } as const;
    for (const [probe, path] of Object.entries(probes)) {
      const get = container[probe].httpGet;
      expect(get, probe).toEqual({ path, port: 'https', scheme: 'HTTPS' });
    }
    // the gateway's route table serves these paths (test/deploy/store-role.test.ts calls them)
    const api = readFileSync(join(ROOT, 'src/gateway/api.ts'), 'utf8');
    expect(api).toContain('/^\\/healthz$/');
    expect(api).toContain('/^\\/readyz$/');
    // the drain fits in the grace period
    const grace = Number(/^(\d+)s$/.exec(gateway.server.drain_grace)?.[1]);
    expect(pod.terminationGracePeriodSeconds).toBeGreaterThan(grace);
  });

  it('runs as the image user, read-only root, every written path a volume', () => {
    const uid = Number((argsOf(runtime!, 'USER')[0] as string).split(':')[0]);
    expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: uid });
    expect(container.securityContext).toMatchObject({
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ['ALL'] },
    });
    expect(container.resources.requests).toBeDefined();
    expect(container.resources.limits.memory).toBeDefined();
    const mounts = container.volumeMounts as Doc[];
    const volumes = new Set((pod.volumes as Doc[]).map((v) => v.name));
    for (const m of mounts) expect(volumes.has(m.name), m.name).toBe(true);
    const mounted = (path: string) =>
      mounts.some((m) => path === m.mountPath || path.startsWith(`${m.mountPath}/`));
    expect(mounted(gateway.data_dir)).toBe(true);
    expect(gateway.data_dir).toBe(IMAGE_DATA_DIR);
    expect(mounted('/tmp')).toBe(true);
    expect(container.args).toEqual(JSON.parse(argsOf(runtime!, 'CMD')[0] as string));
    const config = mounts.find((m) => m.mountPath === IMAGE_CONFIG);
    expect(config?.subPath).toBe('gateway.yaml');
    const cmVolume = (pod.volumes as Doc[]).find((v) => v.name === config?.name);
    expect(cmVolume?.configMap.name).toBe(configMap.metadata.name);
  });

  it('every secret the gateway.yaml names is provided: files by a Secret volume, env by a Secret key', async () => {
    const { files, envs } = secretRefs(gateway);
    const secrets = docs.filter((d) => d.doc.kind === 'Secret').map((d) => d.doc);
    const keysOf = (name: string) =>
      Object.keys(secrets.find((s) => s.metadata.name === name)?.stringData ?? {});
    for (const file of files) {
      const mount = (container.volumeMounts as Doc[]).find((m) => dirname(file) === m.mountPath);
      expect(mount, file).toBeDefined();
      const volume = (pod.volumes as Doc[]).find((v) => v.name === mount?.name);
      expect(keysOf(volume?.secret?.secretName), file).toContain(posix.basename(file));
    }
    for (const name of envs) {
      const env = (container.env as Doc[]).find((e) => e.name === name);
      expect(env, name).toBeDefined();
      const ref = env?.valueFrom.secretKeyRef;
      expect(keysOf(ref.name), name).toContain(ref.key);
    }
    expect(await configCheck(gatewayYaml, 'gateway.yaml')).toContain('; secrets not checked)');
  });
});

describe('deploy/compose.yaml', () => {
  const compose = readYaml(join(DEPLOY, 'compose.yaml'));
  const gw = compose.services.gateway;
  const configMount = (gw.volumes as string[]).find((v) => v.split(':')[1] === IMAGE_CONFIG) as string;
  const configText = readFileSync(join(DEPLOY, configMount.split(':')[0] as string), 'utf8');
  const config = parse(configText) as Doc;

  it('gateway and its PostgreSQL store; build context, bind sources, named volumes and secrets exist', () => {
    expect(Object.keys(compose.services).sort()).toEqual(['db', 'gateway']);
    expect(gw.depends_on).toEqual({ db: { condition: 'service_healthy' } });
    expect(compose.services.db.healthcheck.test).toContain('pg_isready');
    expect(compose.services.db.image).toMatch(/^postgres:\d+/);
    expect(existsSync(join(DEPLOY, gw.build.context, gw.build.dockerfile))).toBe(true);
    expect(join(DEPLOY, gw.build.context, gw.build.dockerfile)).toBe(join(DEPLOY, 'Dockerfile'));
    for (const [name, svc] of Object.entries(compose.services as Record<string, Doc>)) {
      for (const v of svc.volumes as string[]) {
        const src = v.split(':')[0] as string;
        if (src.startsWith('.')) expect(existsSync(join(DEPLOY, src)), `${name}: ${src}`).toBe(true);
        else expect(Object.keys(compose.volumes), `${name}: volume ${src}`).toContain(src);
      }
      for (const s of svc.secrets ?? []) expect(Object.keys(compose.secrets), `${name}: ${s}`).toContain(s);
    }
    for (const s of Object.values(compose.secrets as Record<string, Doc>))
      expect(s.file).toMatch(/^\.\/secrets\//);
    // data_dir is the image's volume, kept in a named volume
    expect(gw.volumes).toContain(`ciport-data:${IMAGE_DATA_DIR}`);
    expect(config.data_dir).toBe(IMAGE_DATA_DIR);
    expect(gw.read_only).toBe(true);
    expect(gw.cap_drop).toEqual(['ALL']);
  });

  it('the store role is created by deploy/postgres/ciport-store.sql from the password secret', () => {
    const db = compose.services.db;
    expect(db.volumes).toContain(
      './postgres/ciport-store.sql:/docker-entrypoint-initdb.d/10-ciport-store.sql:ro',
    );
    expect(db.environment.CIPORT_DB_PASSWORD_FILE).toBe('/run/secrets/ciport_db_password');
    expect(db.secrets).toContain('ciport_db_password');
    expect(gw.secrets).not.toContain('postgres_password');
  });

  it('port and config agree; every secret file the config names is a secret of the service', async () => {
    const [, container] = (gw.ports[0] as string).split(':');
    expect(Number(container)).toBe(portOf(config.listen));
    expect(config.store?.postgres).toBeDefined();
    const { files, envs } = secretRefs(config);
    expect(envs).toEqual([]);
    for (const file of files) {
      expect(file, file).toMatch(/^\/run\/secrets\//);
      expect(gw.secrets).toContain(posix.basename(file));
    }
    expect(await configCheck(configText, 'gateway.yaml')).toContain('config OK');
  });
});

describe('deploy/systemd', () => {
  const text = readFileSync(join(DEPLOY, 'systemd/ciport-gateway.service'), 'utf8');
  const unit = parseUnit(text);
  const svc = unit.Service as Record<string, string[]>;
  const configText = readFileSync(join(DEPLOY, 'systemd/gateway.yaml'), 'utf8');
  const config = parse(configText) as Doc;

  it('starts the gateway, reloads with SIGHUP, stops with SIGTERM within the drain', () => {
    expect(svc.ExecStart).toEqual([`ciport gateway --config ${IMAGE_CONFIG}`]);
    expect(svc.ExecReload).toEqual(['kill -HUP $MAINPID']);
    expect(svc.KillSignal).toEqual(['SIGTERM']);
    expect(unit.Install?.WantedBy).toEqual(['multi-user.target']);
  });

  it('hardened: its own user, state directory = data_dir, no privileges', () => {
    const want: Record<string, string> = {
      DynamicUser: 'yes',
      StateDirectory: 'ciport',
      WorkingDirectory: IMAGE_DATA_DIR,
      NoNewPrivileges: 'yes',
      ProtectSystem: 'strict',
      ProtectHome: 'yes',
      PrivateTmp: 'yes',
      CapabilityBoundingSet: '',
    };
    for (const [k, v] of Object.entries(want)) expect(svc[k], k).toEqual([v]);
    expect(config.data_dir).toBe(`/var/lib/${svc.StateDirectory?.[0]}`);
    // V8's JIT needs W+X pages: this setting would crash node at start
    expect(svc.MemoryDenyWriteExecute).toBeUndefined();
  });

  it('every secret the config names is a LoadCredential of the unit', async () => {
    const creds = new Set((svc.LoadCredential ?? []).map((c) => c.split(':')[0]));
    const { files, envs } = secretRefs(config);
    expect(envs).toEqual([]);
    expect(files.length).toBeGreaterThan(0);
    for (const file of files) {
      expect(dirname(file)).toBe('/run/credentials/ciport-gateway.service');
      expect(creds.has(posix.basename(file)), file).toBe(true);
    }
    expect(await configCheck(configText, 'gateway.yaml')).toContain('config OK');
  });

  it('systemd-analyze verify accepts the unit (when systemd is installed)', () => {
    const which = spawnSync('sh', ['-c', 'command -v systemd-analyze'], { encoding: 'utf8' });
    if (which.status !== 0) return; // structural checks above still hold; CI images may lack systemd
    // A root with the unit, stand-ins for the commands it runs (they need only exist) and the
    // machine's unit library (for the targets it orders against).
    const root = mkdtempSync(join(tmpdir(), 'ciport-unit-'));
    try {
      mkdirSync(join(root, 'etc/systemd/system'), { recursive: true });
      mkdirSync(join(root, 'usr/bin'), { recursive: true });
      mkdirSync(join(root, 'usr/lib'), { recursive: true });
      for (const cmd of ['ciport', 'kill']) {
        writeFileSync(join(root, 'usr/bin', cmd), '#!/bin/sh\n');
        chmodSync(join(root, 'usr/bin', cmd), 0o755);
      }
      symlinkSync('/usr/lib/systemd', join(root, 'usr/lib/systemd'));
      writeFileSync(join(root, 'etc/systemd/system/ciport-gateway.service'), text);
      const r = spawnSync(
        'systemd-analyze',
        ['verify', '--man=no', `--root=${root}`, '/etc/systemd/system/ciport-gateway.service'],
        { encoding: 'utf8' },
      );
      // Unknown keys and bad values are only warnings: none may name the unit.
      const about = `${r.stdout}${r.stderr}`.split('\n').filter((l) => l.includes('ciport-gateway.service'));
      expect(about, about.join('\n')).toEqual([]);
      expect(r.status, r.stderr).toBe(0);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});

describe('docs/deploy.md', () => {
  const doc = readFileSync(join(ROOT, 'docs/deploy.md'), 'utf8');

  it('names every file under deploy/, and every deploy/ path it names exists', () => {
    const files = execFileSync('git', ['ls-files', '--cached', '--others', '--exclude-standard', 'deploy'], {
      cwd: ROOT,
      encoding: 'utf8',
    })
      .split('\n')
      .filter(Boolean);
    for (const f of files) expect(doc, f).toContain(f);
    for (const m of doc.matchAll(/(?<![\w/])deploy\/[\w./-]*\w/g)) {
      if (m[0].startsWith('deploy/secrets')) continue; // the operator creates these
      expect(existsSync(join(ROOT, m[0])), m[0]).toBe(true);
    }
    expect(doc).toContain('scripts/image-build-steps.mjs');
  });
});
