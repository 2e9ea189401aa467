// The target schema: one strict member per protocol (src/config/targets/). A key of another
// protocol is refused at load with its file, line and path, through the gateway's loader, the
// agent's and `ciport config check`; every target the docs, examples and deploy recipes show
// still loads.
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { parseAgentConfig } from '../../src/agent/config.js';
import { loadGatewayConfig, parseGatewayConfig } from '../../src/config/load.js';
import { Secret } from '../../src/config/secret.js';
import { PROTOCOLS, targetSchema } from '../../src/config/targets/index.js';
import { CiportError } from '../../src/errors/index.js';
import { runCli } from '../helpers/cli.js';

const ROOT = new URL('../../', import.meta.url).pathname;

/** The loader's message for a config with these targets (YAML list items, indented by 2). */
function loadError(targets: string): string {
  try {
    parseGatewayConfig(`targets:\n${targets}`, 'gw.yaml', { resolveSecrets: false });
  } catch (err) {
    expect(err).toBeInstanceOf(CiportError);
    expect((err as CiportError).code).toBe('CIPORT_E_CONFIG_INVALID');
    return (err as CiportError).message;
  }
  throw new Error('expected the configuration to be refused');
}

const target = (protocol: string, lines: string) =>
  `  - name: t\n    protocol: ${protocol}\n    address: h.internal:1\n${lines}`;

describe('a key of another protocol is refused at load, with its line and path', () => {
  it.each([
    // [protocol, the misplaced lines, line of the key, path, key]
    ['redis', '    sslmode: require\n', 5, 'targets[0]', 'sslmode'],
    ['redis', '    query_audit: false\n', 5, 'targets[0]', 'query_audit'],
    [
      'redis',
      '    credentials: {password: {env: P}, token: {env: T}}\n',
      5,
      'targets[0].credentials',
      'token',
    ],
    [
      'postgres',
      '    credentials:\n      user: app\n      token: {env: T}\n',
      7,
      'targets[0].credentials',
      'token',
    ],
    ['postgres', '    server_public_key: {file: k.pem}\n', 5, 'targets[0]', 'server_public_key'],
    ['postgres', '    credentials: {user: app, kind: bearer}\n', 5, 'targets[0].credentials', 'kind'],
    ['mysql', '    sslmode: verify-full\n', 5, 'targets[0]', 'sslmode'],
    [
      'mysql',
      '    credentials:\n      dynamic:\n        admin: {user: a, password: {env: A}}\n        owner: app_owner\n',
      8,
      'targets[0].credentials.dynamic',
      'owner',
    ],
    ['mysql', '    credentials: {user: u, header: X-K}\n', 5, 'targets[0].credentials', 'header'],
    ['http', '    database: app\n', 5, 'targets[0]', 'database'],
    ['http', '    query_max_length: 100\n', 5, 'targets[0]', 'query_max_length'],
    [
      'http',
      '    credentials:\n      token: {env: T}\n      dynamic: {admin: {user: a, password: {env: A}}}\n',
      7,
      'targets[0].credentials',
      'dynamic',
    ],
    ['tcp', '    tls: true\n', 5, 'targets[0]', 'tls'],
    ['tcp', '    credentials: {user: u}\n', 5, 'targets[0]', 'credentials'],
    ['tcp', '    database: app\n', 5, 'targets[0]', 'database'],
    // aws: no address (STS is reached through the SDK's endpoint resolution).
    ['aws', '    role_arn: arn:aws:iam::123456789012:role/x\n', 4, 'targets[0]', 'address'],
  ])('%s target with %j', (protocol, lines, line, path, key) => {
    const message = loadError(target(protocol, lines));
    expect(message.split('\n')).toHaveLength(1);
    expect(message).toContain(`gw.yaml:${line}: ${path}: unknown key "${key}" for `);
    // It says which protocol's object it is and what that object does take.
    expect(message).toMatch(new RegExp(`${protocol} target.*\\(its keys: `));
    expect(message).not.toMatch(/Invalid input|invalid_union/i);
  });

  it('every protocol is covered above', () => {
    // ssh: in its own block below (its required keys would add their own issues here).
    expect([...PROTOCOLS].sort()).toEqual(['aws', 'http', 'mysql', 'postgres', 'redis', 'ssh', 'tcp']);
  });
});

describe('errors inside a member are that member’s, not "invalid input"', () => {
  it('a bad value names its key', () => {
    expect(loadError(target('postgres', '    sslmode: strict\n'))).toMatch(
      /^gw\.yaml:5: targets\[0\]\.sslmode: Invalid option: expected one of "disable"\|"require"/,
    );
    expect(loadError(target('redis', '    database: app\n'))).toBe(
      'gw.yaml:5: targets[0].database: a redis database is a number (the SELECT index)',
    );
    expect(loadError(target('http', '    tls: {ca: {file: ca.pem}, verify: false}\n'))).toMatch(
      /^gw\.yaml:5: targets\[0\]\.tls: unknown key "verify" for tls \(its keys: ca, servername\)$/,
    );
  });

  it('an unknown or missing protocol lists the known ones', () => {
    expect(loadError(target('ftp', ''))).toBe(
      'gw.yaml:3: targets[0].protocol: unknown protocol "ftp" (known: postgres, mysql, redis, http, tcp, ssh, aws)',
    );
    expect(loadError('  - {name: t, address: "h:1"}\n')).toBe(
      'gw.yaml:2: targets[0].protocol: a target needs a protocol: postgres, mysql, redis, http, tcp, ssh, aws',
    );
  });

  it('http credentials that describe no single injection are refused at load', () => {
    expect(
      loadError(target('http', '    credentials: {token: {env: T}, user: u, password: {env: P}}\n')),
    ).toBe(
      'gw.yaml:5: targets[0].credentials: both a token and user/password are set; say which one to inject with kind: bearer|basic|header',
    );
    expect(loadError(target('http', '    credentials: {user: u}\n'))).toMatch(
      /targets\[0\]\.credentials: basic authentication needs both user and password$/,
    );
    expect(loadError(target('http', '    credentials: {header: Host, token: {env: T}}\n'))).toBe(
      'gw.yaml:5: targets[0].credentials.header: this header cannot be injected',
    );
  });

  it('every issue of every target is listed, each with its own path', () => {
    const message = loadError(
      `${target('redis', '    sslmode: require\n')}  - {name: u, protocol: tcp, address: "h:1", tls: true}\n`,
    );
    expect(message.split('\n')).toEqual([
      expect.stringContaining('gw.yaml:5: targets[0]: unknown key "sslmode" for a redis target'),
      expect.stringContaining('gw.yaml:6: targets[1]: unknown key "tls" for a tcp target'),
    ]);
  });

  it('the agent loads targets with the same schema and messages', () => {
    const text =
      'gateway: https://gw.example:8443\nname: dc1\ntargets:\n' +
      '  - {name: db, protocol: postgres, address: "db:5432", credentials: {user: app, token: {env: T}}}\n';
    expect(() => parseAgentConfig(text, 'agent.yaml', {})).toThrow(
      /agent\.yaml:4: targets\[0\]\.credentials: unknown key "token" for the credentials of a postgres target/,
    );
  });

  it('ciport config check prints the member’s issue and exits 2', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ciport-targets-'));
    const file = join(dir, 'gw.yaml');
    writeFileSync(file, `targets:\n${target('redis', '    sslmode: require\n')}`);
    const r = await runCli(['config', 'check', '--skip-secrets', file]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('CIPORT_E_CONFIG_INVALID');
    expect(r.stderr).toContain(`${file}:5: targets[0]: unknown key "sslmode" for a redis target (its keys: `);
  });
});

describe('each protocol keeps the keys its exit reads', () => {
  it('parses a full target of each protocol', () => {
    const parsed = parseGatewayConfig(
      [
        'targets:',
        '  - name: pg',
        '    protocol: postgres',
        '    address: db:5432',
        '    database: app',
        '    tls: {ca: {file: ca.pem}, servername: db.internal}',
        '    sslmode: verify-ca',
        '    query_audit: false',
        '    query_max_length: 64',
        '    credentials:',
        '      user: app',
        '      password: {env: PW}',
        '      dynamic: {admin: {user: admin, password: {env: ADMIN}}, grant: [reader], owner: app_owner}',
        '  - name: my',
        '    protocol: mysql',
        '    address: db:3306',
        '    database: app',
        '    tls: true',
        '    server_public_key: {file: rsa.pem}',
        '    query_max_length: 64',
        '    credentials:',
        '      dynamic: {admin: {user: admin, password: {env: ADMIN}}, grant: [app_rw], create: session_start}',
        '  - {name: cache, protocol: redis, address: "r:6379", database: "3", credentials: {user: ci, password: {env: R}}}',
        '  - {name: cache2, protocol: redis, address: "r:6379", database: 0}',
        '  - {name: api, protocol: http, address: "api:443", tls: true, credentials: {header: X-API-Key, token: {env: K}}}',
        '  - {name: raw, protocol: tcp, address: "raw:22", tags: [ops], description: a raw port}',
      ].join('\n'),
      'gw.yaml',
      { resolveSecrets: false },
    );
    const [pg, my, cache, cache2, api, raw] = parsed.targets;
    expect(pg?.protocol === 'postgres' && pg.credentials?.dynamic).toMatchObject({
      owner: 'app_owner',
      grant: ['reader'],
      create: 'first_connection',
    });
    expect(my?.protocol === 'mysql' && my.credentials?.dynamic).toEqual({
      admin: { user: 'admin', password: expect.any(Secret) },
      grant: ['app_rw'],
      create: 'session_start',
    });
    expect(my?.protocol === 'mysql' && my.server_public_key).toBeInstanceOf(Secret);
    expect(cache?.protocol === 'redis' && cache.database).toBe(3);
    expect(cache2?.protocol === 'redis' && cache2.database).toBe(0);
    expect(api?.protocol === 'http' && api.credentials?.header).toBe('X-API-Key');
    expect(raw).toEqual({
      name: 'raw',
      protocol: 'tcp',
      address: 'raw:22',
      tags: ['ops'],
      description: 'a raw port',
    });
  });
});

// ---- every documented target still loads ---------------------------------------------------------

/**
 * The ```yaml blocks of a Markdown file that hold a target (`protocol:` next to `address:`, or
 * `role_arn:` for aws targets, which have no address).
 */
function yamlBlocks(file: string): { where: string; text: string }[] {
  const text = readFileSync(file, 'utf8');
  const blocks: { where: string; text: string }[] = [];
  for (const m of text.matchAll(/^```ya?ml\n([\s\S]*?)^```/gm)) {
    const body = m[1] ?? '';
    if (!/^\s*-?\s*protocol:\s/m.test(body) || !/address:|role_arn:/.test(body)) continue;
    const line = text.slice(0, m.index).split('\n').length;
    blocks.push({ where: `${file.slice(ROOT.length)}:${line}`, text: body });
  }
  return blocks;
}

/** The targets of a parsed document: its `targets:` list, or a bare list of targets. */
function targetsIn(doc: unknown): unknown[] {
  if (Array.isArray(doc)) return doc.filter((t) => t && typeof t === 'object' && 'protocol' in t);
  const targets = (doc as { targets?: unknown } | null)?.targets;
  return Array.isArray(targets) ? targets : [];
}

function markdownFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? markdownFiles(join(dir, e.name)) : e.name.endsWith('.md') ? [join(dir, e.name)] : [],
  );
}

describe('every documented target loads', () => {
  const blocks = [...markdownFiles(join(ROOT, 'docs')), join(ROOT, 'README.md')].flatMap(yamlBlocks);

  it('finds the examples of every protocol in the docs', () => {
    const protocols = new Set(
      blocks.flatMap((b) => targetsIn(parse(b.text)).map((t) => (t as { protocol: string }).protocol)),
    );
    expect([...protocols].sort()).toEqual(['aws', 'http', 'mysql', 'postgres', 'redis', 'ssh', 'tcp']);
  });

  it.each(blocks.map((b) => [b.where, b.text]))('%s', (_where, text) => {
    const targets = targetsIn(parse(text));
    expect(targets.length).toBeGreaterThan(0);
    for (const t of targets) {
      const result = targetSchema.safeParse(t);
      expect(result.error?.issues ?? []).toEqual([]);
    }
  });

  it.each(['examples/gateway.yaml', 'examples/gateway-local.yaml', 'deploy/compose/gateway.yaml'])(
    '%s',
    (file) => {
      const cfg = loadGatewayConfig(join(ROOT, file), { resolveSecrets: false });
      expect(cfg.targets.length).toBeGreaterThan(0);
    },
  );
});

// Issue 15: `aws_sigv4` on http targets and `aws_rds_iam` on postgres/mysql targets are refused
// at load, with their path, when combined with another credential or (RDS) without verified TLS.
const load = (targets: string) =>
  parseGatewayConfig(`targets:\n${targets}`, 'gw.yaml', { resolveSecrets: false });

describe('aws_sigv4 on an http target', () => {
  it('loads with service and region, and with a role', () => {
    load(
      target(
        'http',
        '    tls: true\n    credentials: {aws_sigv4: {service: execute-api, region: eu-west-1}}\n',
      ),
    );
    load(
      target(
        'http',
        '    credentials:\n      aws_sigv4: {service: es, region: eu-west-1, role: "arn:aws:iam::123456789012:role/search"}\n',
      ),
    );
  });

  it.each([
    [
      'token',
      '{aws_sigv4: {service: es, region: eu-west-1}, token: {env: T}}',
      /cannot be combined with token/,
    ],
    [
      'user/password',
      '{aws_sigv4: {service: es, region: eu-west-1}, user: u, password: {env: P}}',
      /cannot be combined with user, password/,
    ],
    [
      'header',
      '{aws_sigv4: {service: es, region: eu-west-1}, header: X-Key}',
      /cannot be combined with header/,
    ],
    ['kind', '{aws_sigv4: {service: es, region: eu-west-1}, kind: bearer}', /cannot be combined with kind/],
  ])('is refused together with %s', (_what, credentials, message) => {
    const err = loadError(target('http', `    credentials: ${credentials}\n`));
    expect(err).toMatch(/targets\[0\]\.credentials/);
    expect(err).toMatch(message);
  });

  it('refuses a missing region, a bad region, a bad role ARN and unknown keys, with their path', () => {
    expect(loadError(target('http', '    credentials: {aws_sigv4: {service: es}}\n'))).toMatch(
      /targets\[0\]\.credentials\.aws_sigv4\.region/,
    );
    expect(
      loadError(target('http', '    credentials: {aws_sigv4: {service: es, region: Europe}}\n')),
    ).toMatch(/an AWS region/);
    expect(
      loadError(
        target('http', '    credentials: {aws_sigv4: {service: es, region: eu-west-1, role: deploy}}\n'),
      ),
    ).toMatch(/targets\[0\]\.credentials\.aws_sigv4\.role.*IAM role ARN/s);
    expect(
      loadError(
        target('http', '    credentials: {aws_sigv4: {service: es, region: eu-west-1, profile: x}}\n'),
      ),
    ).toMatch(/unknown key "profile"/);
  });
});

describe('aws_rds_iam on postgres and mysql targets', () => {
  const rds = 'aws_rds_iam: {user: app_iam, region: eu-west-1}';

  it('loads with verified TLS (postgres verify-full, the default with tls; mysql tls)', () => {
    load(target('postgres', `    tls: true\n    credentials: {${rds}}\n`));
    load(
      target(
        'postgres',
        `    tls: {servername: db.example.internal}\n    sslmode: verify-full\n    credentials: {${rds}}\n`,
      ),
    );
    load(target('mysql', `    tls: true\n    credentials: {${rds}}\n`));
  });

  it.each([
    ['postgres', '', /needs verified TLS/],
    ['postgres', '    tls: true\n    sslmode: require\n', /needs verified TLS/],
    ['postgres', '    tls: true\n    sslmode: verify-ca\n', /needs verified TLS/],
    ['postgres', '    sslmode: verify-full\n', /needs verified TLS/],
    ['mysql', '', /needs verified TLS/],
    ['mysql', '    tls: false\n', /needs verified TLS/],
  ])('%s without verified TLS is refused', (protocol, tls, message) => {
    const err = loadError(target(protocol, `${tls}    credentials: {${rds}}\n`));
    expect(err).toMatch(/targets\[0\]\.credentials\.aws_rds_iam/);
    expect(err).toMatch(message);
  });

  it.each([
    ['postgres', `{${rds}, password: {env: P}}`, /cannot be combined with password/],
    ['mysql', `{${rds}, password: {env: P}}`, /cannot be combined with password/],
    ['postgres', `{${rds}, user: app}`, /cannot be combined with user/],
    [
      'postgres',
      `{${rds}, dynamic: {admin: {user: a, password: {env: A}}, owner: o}}`,
      /cannot be combined with dynamic/,
    ],
    ['mysql', `{${rds}, dynamic: {admin: {user: a, password: {env: A}}}}`, /cannot be combined with dynamic/],
  ])('%s: aws_rds_iam with another credential is refused (%s)', (protocol, credentials, message) => {
    const err = loadError(target(protocol, `    tls: true\n    credentials: ${credentials}\n`));
    expect(err).toMatch(/targets\[0\]\.credentials\.aws_rds_iam/);
    expect(err).toMatch(message);
  });

  it('is not a key of redis or http targets', () => {
    expect(loadError(target('redis', `    credentials: {${rds}}\n`))).toMatch(/unknown key "aws_rds_iam"/);
    expect(loadError(target('http', `    credentials: {${rds}}\n`))).toMatch(/unknown key "aws_rds_iam"/);
  });
});

describe('ssh targets', () => {
  const KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFzP6Ofmrcm/rhV0HBOCxe5xsWhNCv64JGrfaC6bXIVh';
  const ssh = (lines: string) => `  - name: web1\n    protocol: ssh\n    address: web1.internal:22\n${lines}`;

  it('loads with principals and pinned host keys or a host CA', () => {
    for (const lines of [
      `    principals: [deploy]\n    host_keys: ["${KEY}"]\n`,
      `    principals: [deploy, git]\n    host_ca: "${KEY} host-ca"\n    source_address: [10.0.0.5/32]\n`,
    ]) {
      const cfg = parseGatewayConfig(`targets:\n${ssh(lines)}`, 'gw.yaml', { resolveSecrets: false });
      expect(cfg.targets[0]).toMatchObject({ name: 'web1', protocol: 'ssh' });
    }
  });

  it('needs exactly one way to verify the host, keys that parse, principals that are login names', () => {
    expect(loadError(ssh('    principals: [deploy]\n'))).toContain(
      'an ssh target needs exactly one of host_keys (pinned keys) or host_ca (a host CA)',
    );
    expect(
      loadError(ssh(`    principals: [deploy]\n    host_keys: ["${KEY}"]\n    host_ca: "${KEY}"\n`)),
    ).toContain('exactly one of host_keys');
    expect(
      loadError(ssh('    principals: [deploy]\n    host_keys: ["ssh-ed25519 AAAAnotakey"]\n')),
    ).toContain('targets[0].host_keys[0]: not an OpenSSH public key line');
    // ssh-keyscan's line as printed (host first): the message says what to remove.
    expect(loadError(ssh(`    principals: [deploy]\n    host_keys: ["[10.0.4.7]:2222 ${KEY}"]\n`))).toContain(
      'this looks like ssh-keyscan output: drop the host name "[10.0.4.7]:2222"',
    );
    expect(loadError(ssh(`    principals: [deploy]\n    host_ca: "web1.internal ${KEY}"\n`))).toContain(
      'drop the host name "web1.internal"',
    );
    expect(loadError(ssh(`    principals: ["deploy,root"]\n    host_keys: ["${KEY}"]\n`))).toContain(
      'targets[0].principals[0]: a principal is a login name',
    );
    expect(loadError(ssh(`    host_keys: ["${KEY}"]\n`))).toContain('targets[0].principals');
    expect(
      loadError(ssh(`    principals: [deploy]\n    host_ca: "${KEY}"\n    credentials: {user: u}\n`)),
    ).toBe(
      'gw.yaml:7: targets[0]: unknown key "credentials" for a ssh target (its keys: name, protocol, address, principals, host_keys, host_ca, host_key_alias, source_address, tags, description)',
    );
  });
});

describe("a rule's ssh settings", () => {
  const doc = (ssh: string) =>
    `issuers: [{name: gl, kind: gitlab, issuer: "https://gitlab.example.com", audience: a}]\nrules:\n  - {name: r, issuer: gl, allow: [web1], ${ssh}}\n`;

  it('take principals and permits for the targets the rule allows', () => {
    const cfg = parseGatewayConfig(
      doc('ssh: {web1: {principals: [deploy], permit: [pty, port-forwarding]}}'),
      'gw.yaml',
      {
        resolveSecrets: false,
      },
    );
    expect(cfg.rules[0]?.ssh).toEqual({
      web1: { principals: ['deploy'], permit: ['pty', 'port-forwarding'] },
    });
  });

  it('refuse a target the rule does not allow, and unknown permits', () => {
    const error = (ssh: string) => {
      try {
        parseGatewayConfig(doc(ssh), 'gw.yaml', { resolveSecrets: false });
      } catch (err) {
        return (err as CiportError).message;
      }
      throw new Error('expected a refusal');
    };
    expect(error('ssh: {web2: {principals: [deploy]}}')).toContain(
      'rules[0].ssh.web2: ssh settings for web2, which the rule does not allow',
    );
    expect(error('ssh: {web1: {permit: [root]}}')).toContain('rules[0].ssh.web1.permit[0]');
  });

  // The gateway's own target decides the certificate: settings that could never yield one
  // are a load error, not a CIPORT_E_SSH_CERTIFICATE_REFUSED at every job.
  it('refuse settings for a defined target that is not ssh, or shares no principal with it', () => {
    const withTarget = (target: string, ssh: string) => `targets:\n${target}${doc(ssh)}`;
    const web1 = (protocol: string, more: string) =>
      `  - {name: web1, protocol: ${protocol}, address: "web1.internal:22"${more}}\n`;
    const sshTarget = web1(
      'ssh',
      ', principals: [deploy, git], host_ca: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFzP6Ofmrcm/rhV0HBOCxe5xsWhNCv64JGrfaC6bXIVh"',
    );
    const error = (text: string) => {
      try {
        parseGatewayConfig(text, 'gw.yaml', { resolveSecrets: false });
      } catch (err) {
        return (err as CiportError).message;
      }
      throw new Error('expected a refusal');
    };
    expect(error(withTarget(sshTarget, 'ssh: {web1: {principals: [root]}}'))).toContain(
      "rules[0].ssh.web1.principals: none of these is among web1's principals (deploy, git)",
    );
    expect(error(withTarget(web1('redis', ''), 'ssh: {web1: {permit: [pty]}}'))).toContain(
      'rules[0].ssh.web1: ssh settings for web1, a redis target',
    );
    // Narrowing to some of the target's principals is what `ssh:` is for.
    const ok = parseGatewayConfig(
      withTarget(sshTarget, 'ssh: {web1: {principals: [deploy, root]}}'),
      'gw.yaml',
      {
        resolveSecrets: false,
      },
    );
    expect(ok.rules[0]?.ssh?.web1?.principals).toEqual(['deploy', 'root']);
  });
});
