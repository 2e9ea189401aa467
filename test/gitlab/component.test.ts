// The GitLab CI/CD component (templates/ciport/template.yml) and the YAML of docs/gitlab-ci.md as
// GitLab reads them, without running anything: the spec header and its inputs, interpolation,
// the hidden jobs and what `extends:` gives a job, and GitLab's refusals of wrong inputs.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { agentConfigSchema } from '../../src/agent/config.js';
import { ROOT } from '../fixtures/cli.js';
import { gatewayConfig } from '../fixtures/gateway.js';
import {
  buildJobs,
  COMPONENT_FILE,
  interpolate,
  interpolationBlocks,
  isMap,
  loadComponent,
  parseCiYaml,
  resolveInputs,
  withIncludes,
  type YamlMap,
} from './ci-config.js';
import { DOC_FILE, docBlocks } from './doc-blocks.js';

const component = loadComponent('ciport');
const REQUIRED = { gateway: 'https://ciport.example.com', audience: 'https://ciport.example.com' };

function pipeline(inputs: YamlMap, jobs: YamlMap = { job: { extends: '.ciport', script: ['true'] } }) {
  return buildJobs(
    withIncludes({
      include: [{ component: '$CI_SERVER_FQDN/platform/ciport/ciport@0.1.0', inputs }],
      ...jobs,
    }),
  );
}

describe('the component file', () => {
  it('is a spec header with the documented inputs, then the configuration', () => {
    const text = readFileSync(join(ROOT, COMPONENT_FILE), 'utf8');
    expect(text).toMatch(/\n---\n/);
    expect(Object.keys(component.inputs)).toEqual([
      'gateway',
      'audience',
      'targets',
      'ttl',
      'client',
      'client-version',
      'client-sha256',
    ]);
    // Every input is described, and the docs' table lists exactly these, defaults included.
    const table =
      readFileSync(join(ROOT, DOC_FILE), 'utf8').match(/^\| `([a-z0-9-]+)` \| ([^|]+) \|/gm) ?? [];
    const documented = Object.fromEntries(
      table.map((row) => {
        const m = /^\| `([a-z0-9-]+)` \| ([^|]+) \|/.exec(row) as RegExpExecArray;
        return [m[1], (m[2] as string).trim()];
      }),
    );
    for (const [name, spec] of Object.entries(component.inputs)) {
      expect(spec.description, name).toBeTruthy();
      const doc = documented[name];
      if (spec.default === undefined) expect(doc, name).toBe('required');
      else expect(doc, name).toMatch(new RegExp(`^\`${spec.default === '' ? "''" : spec.default}\``));
    }
    expect(Object.keys(documented).filter((n) => !(n in component.inputs))).toEqual([]);
  });

  it('interpolates only declared inputs, and uses each of them', () => {
    const used = new Set(
      interpolationBlocks(component.content).map((b) => /^inputs\.([a-z0-9-]+)$/.exec(b)?.[1] ?? `bad: ${b}`),
    );
    expect([...used].sort()).toEqual(Object.keys(component.inputs).sort());
  });

  it('defines .ciport-client (token, settings, client) and .ciport (a port around the script)', () => {
    const content = interpolate(component.content, resolveInputs(component.inputs, REQUIRED)) as YamlMap;
    expect(Object.keys(content)).toEqual(['.ciport-client', '.ciport']);
    const client = content['.ciport-client'] as YamlMap;
    expect(client.id_tokens).toEqual({ CIPORT_ID_TOKEN: { aud: 'https://ciport.example.com' } });
    expect(client.variables).toMatchObject({
      CIPORT_GATEWAY: 'https://ciport.example.com',
      CIPORT_CLIENT: 'auto',
      CIPORT_CLIENT_VERSION: '',
      CIPORT_CLIENT_SHA256: '',
      CIPORT_HOME: '/tmp/ciport-$CI_JOB_ID',
    });
    const port = content['.ciport'] as YamlMap;
    expect(port.extends).toBe('.ciport-client');
    // The fetch step is the same text in both (a YAML anchor), not a copy that can drift.
    expect((port.before_script as string[])[0]).toBe((client.before_script as string[])[0]);
  });

  it('its scripts are POSIX sh (images without bash run them with sh)', () => {
    const content = interpolate(component.content, resolveInputs(component.inputs, REQUIRED)) as YamlMap;
    for (const job of Object.values(content)) {
      if (!isMap(job)) continue;
      for (const line of [...(job.before_script as string[]), ...(job.after_script as string[])]) {
        expect(() => execFileSync('dash', ['-n', '-c', line], { stdio: 'pipe' }), line).not.toThrow();
        expect(line, 'no bashisms').not.toMatch(
          /\[\[|\$\{[A-Za-z_]+\/|\bfunction\b|<<<|\bsource\b|\$'|\blocal\b/,
        );
      }
    }
  });
});

describe('extends: .ciport, as GitLab merges it', () => {
  it('gives the job the token with the aud input, the settings, and the port around its own script', () => {
    const jobs = pipeline(
      { ...REQUIRED, audience: 'https://gw.acme.test', targets: 'db cache:6380', ttl: '20m' },
      { test: { extends: '.ciport', variables: { CIPORT_TTL: '5m' }, script: ['psql -c "select 1"'] } },
    );
    const job = jobs.get('test') as YamlMap;
    expect([...jobs.keys()]).toEqual(['test']); // hidden jobs do not run
    expect(job.id_tokens).toEqual({ CIPORT_ID_TOKEN: { aud: 'https://gw.acme.test' } });
    // Hashes merge, the job's own variable wins; lists are replaced, so the script is the job's.
    expect(job.variables).toMatchObject({ CIPORT_TARGETS: 'db cache:6380', CIPORT_TTL: '5m' });
    expect(job.script).toEqual(['psql -c "select 1"']);
    const before = job.before_script as string[];
    expect(before).toHaveLength(2);
    expect(before[0]).toMatch(/^# ciport: the runner client/);
    expect(before[1]).toMatch(/^# ciport: open the port/);
    // The gateway from the input (never a variable a pipeline run could set), targets after `--`.
    expect(before[0]).toContain("CIPORT_GATEWAY='https://ciport.example.com'");
    expect(before[1]).toContain(
      'ciport open --gateway="$CIPORT_GATEWAY" $ciport_ttl --dotenv "$CIPORT_HOME/port.env" --state "$CIPORT_HOME/open.json" -- "$@"',
    );
    expect(job.after_script).toHaveLength(2);
  });

  it('!reference [.ciport, before_script] keeps the port under a job with its own before_script', () => {
    const [main] = parseCiYaml(
      [
        'include:',
        '  - component: $CI_SERVER_FQDN/platform/ciport/ciport@0.1.0',
        '    inputs: {gateway: "https://ciport.example.com", audience: "https://ciport.example.com"}',
        'job:',
        '  extends: .ciport',
        '  before_script:',
        '    - !reference [.ciport, before_script]',
        '    - echo mine',
        '  script: [make test]',
        '',
      ].join('\n'),
      'test',
    );
    const before = buildJobs(withIncludes(main as YamlMap)).get('job')?.before_script as string[];
    expect(before).toHaveLength(3);
    expect(before[0]).toMatch(/^# ciport: the runner client/);
    expect(before[1]).toMatch(/^# ciport: open the port/);
    expect(before[2]).toBe('echo mine');
  });
});

describe('inputs: what GitLab refuses', () => {
  it.each([
    [{ audience: 'x' }, '`gateway` input: required value has not been provided'],
    [{ ...REQUIRED, target: 'db' }, 'unknown input arguments: target'],
    [{ ...REQUIRED, gateway: 'http://ciport.example.com' }, '`gateway` input: provided value does not match'],
    [{ ...REQUIRED, targets: 'Prod-DB' }, '`targets` input: provided value does not match'],
    [{ ...REQUIRED, ttl: '15 minutes' }, '`ttl` input: provided value does not match'],
    [{ ...REQUIRED, client: 'npm' }, '`client` input: `npm` cannot be used'],
    [{ ...REQUIRED, 'client-sha256': 'ABC' }, '`client-sha256` input: provided value does not match'],
    [{ ...REQUIRED, 'client-version': 'latest' }, '`client-version` input: provided value does not match'],
    [{ ...REQUIRED, ttl: 30 }, '`ttl` input: provided value is not a string'],
  ])('%j', (inputs, message) => {
    expect(() => pipeline(inputs as YamlMap)).toThrow(message);
  });

  it('accepts several targets with local ports, and a pinned version and checksum', () => {
    const job = pipeline({
      ...REQUIRED,
      targets: 'test-db:15432 cache',
      'client-version': '0.1.0',
      'client-sha256': 'a'.repeat(64),
    }).get('job') as YamlMap;
    expect(job.variables).toMatchObject({
      CIPORT_TARGETS: 'test-db:15432 cache',
      CIPORT_CLIENT_VERSION: '0.1.0',
      CIPORT_CLIENT_SHA256: 'a'.repeat(64),
    });
  });
});

describe(`${DOC_FILE}: every YAML block`, () => {
  const blocks = docBlocks();

  it('is a pipeline, the gateway config or the agent config, and parses', () => {
    expect(blocks.map((b) => b.kind).sort()).toEqual([
      'agent',
      'gateway',
      'pipeline',
      'pipeline',
      'pipeline',
      'pipeline',
      'pipeline',
    ]);
  });

  it('the gateway excerpt is a valid gateway config', () => {
    const gateway = blocks.find((b) => b.kind === 'gateway')?.value as YamlMap;
    const config = gatewayConfig(
      { listen: '127.0.0.1:8443', ...gateway },
      { TEST_DB_PASSWORD: 'x', PROD_MIGRATOR_PASSWORD: 'y' },
    );
    expect(config.rules.map((r) => r.name)).toEqual([
      'no-forks',
      'ledger-tests',
      'ledger-migrate-production',
      'ledger-reports',
    ]);
  });

  it('the agent config is valid', () => {
    const agent = blocks.find((b) => b.kind === 'agent')?.value as YamlMap;
    expect(() => agentConfigSchema.parse(agent)).not.toThrow();
  });

  it('pipelines include the component as $CI_SERVER_FQDN/<project>/ciport@<version>, or use ciport by hand', () => {
    for (const block of blocks.filter((b) => b.kind === 'pipeline')) {
      const jobs = buildJobs(withIncludes(block.value));
      expect(jobs.size, block.title).toBeGreaterThan(0);
      for (const [name, job] of jobs) {
        // Every job asks for a token with the gateway's audience, however it gets it.
        expect(job.id_tokens, `${block.title}: ${name}`).toEqual({
          CIPORT_ID_TOKEN: { aud: 'https://ciport.example.com' },
        });
      }
    }
  });
});

describe("README's pipeline snippet", () => {
  it('builds with the component as GitLab builds it: a test job with the token and the port', () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const block = /## In a pipeline[\s\S]*?```yaml\n([\s\S]*?)```/.exec(readme)?.[1];
    expect(block, 'the yaml block under "In a pipeline"').toBeDefined();
    const [doc] = parseCiYaml((block as string).replace(/^ {2}/gm, ''), 'README.md');
    const jobs = buildJobs(withIncludes(doc as YamlMap));
    expect([...jobs.keys()]).toEqual(['test']);
    const job = jobs.get('test') as YamlMap;
    expect(job.id_tokens).toEqual({ CIPORT_ID_TOKEN: { aud: 'https://ciport.example.com' } });
    expect(job.variables).toMatchObject({ CIPORT_TARGETS: 'test-db' });
    expect(job.before_script).toHaveLength(2);
  });
});
