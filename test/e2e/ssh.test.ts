// End to end, issue 16: SSH without shared keys. A throwaway sshd on a random loopback port
// trusts only the gateway's user CA (`ciport ssh-ca`) and lists per-user principals; jobs run
// `ciport exec` and use ssh, scp, rsync and git unmodified through the port — to a target the
// gateway exits to itself (host CA, narrowed principals, source-address) and to one an agent
// serves (pinned host key). Then: a principal the rule does not grant is refused by sshd, the
// files are useless once the session ended, a fork's job gets no certificate, and the private
// key stays in the session directory (never in logs, audit events, the store or any argv).

import { type ChildProcess, execFileSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyChain } from '../../src/audit/verify.js';
import { generateEd25519 } from '../../src/credentials/ssh-keys.js';
import type { RunningGateway } from '../../src/gateway/server.js';
import { storeText } from '../agent/harness.js';
import { agentYamlHead } from '../fixtures/agent-yaml.js';
import { baseEnv, ensureBuilt, runCli, spawnCli } from '../fixtures/cli.js';
import { freePort } from '../fixtures/free-port.js';
import { gatewayConfig, startTestGateway } from '../fixtures/gateway.js';
import { e2eGatewayDoc } from '../fixtures/gateway-doc.js';
import { FixtureIssuer } from '../fixtures/oidc-issuer.js';
import { SSHD, type Sshd, startSshd } from '../fixtures/sshd.js';
import { waitFor } from '../fixtures/wait-for.js';

const runnable = existsSync(SSHD) && process.getuid?.() === 0;
const dir = mkdtempSync(join(tmpdir(), 'ciport-e2e-ssh-'));
const ADMIN = `admin-${Math.random().toString(36).slice(2)}`;
const logLines: string[] = [];

let gateway: RunningGateway;
let issuer: FixtureIssuer;
let sshd: Sshd;
let token: string;
let caLine: string;
let agent: { child: ChildProcess; stderr: () => string; result: Promise<unknown> } | undefined;
/** The bare repository and the upload directory on the "host" (owned by `deploy`). */
let repo: string;
let drop: string;

const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { encoding: 'utf8' });

beforeAll(async () => {
  if (!runnable) return;
  const built = ensureBuilt();
  issuer = await FixtureIssuer.start({ kind: 'gitlab' });
  const stateDir = join(dir, 'gw');
  // The CA exists before the gateway ever ran: `ciport ssh-ca` makes it in data_dir.
  writeFileSync(join(dir, 'gateway.json'), JSON.stringify({ data_dir: stateDir }));
  await built;
  const ca = await runCli(['ssh-ca', '--config', join(dir, 'gateway.json')], { env: baseEnv() });
  expect(ca.stderr).toContain(`generated a new SSH user CA in ${join(stateDir, 'ssh_user_ca')}`);
  expect(ca.code).toBe(0);
  caLine = ca.stdout;

  sshd = await startSshd({
    userCa: caLine,
    // Target-scoped principals (docs/ssh.md): this host is web1 (and web1-agent) for `deploy` and
    // `other`; for `ops` it is db1. A certificate names its target, so one for db1 (`other` is
    // one of db1's logins) matches no line of other's file.
    users: {
      deploy: ['ciport:web1:deploy', 'ciport:web1-agent:deploy'],
      other: ['ciport:web1:other'],
      ops: ['ciport:db1:ops'],
    },
    hostName: 'web1.internal',
  });
  // A repository to clone and a directory to upload to, the deploy user's.
  repo = join(sshd.dir, 'repo.git');
  drop = join(sshd.dir, 'drop');
  const work = join(dir, 'work');
  mkdirSync(work);
  sh('git', ['-C', work, 'init', '-q', '-b', 'main']);
  writeFileSync(join(work, 'README'), 'deployed through ciport\n');
  sh('git', ['-C', work, 'add', 'README']);
  sh('git', ['-C', work, '-c', 'user.name=t', '-c', 'user.email=t@example.com', 'commit', '-qm', 'init']);
  sh('git', ['clone', '-q', '--bare', work, repo]);
  mkdirSync(drop);
  sh('chown', ['-R', 'deploy:deploy', repo, drop]);

  const address = `127.0.0.1:${sshd.port}`;
  const cfg = gatewayConfig(
    {
      listen: `127.0.0.1:${await freePort()}`,
      ...e2eGatewayDoc(stateDir, issuer.url, { adminEnv: 'ADMIN' }),
      targets: [
        {
          name: 'web1',
          protocol: 'ssh',
          address,
          principals: ['deploy', 'other'],
          host_ca: sshd.hostCa,
          host_key_alias: 'web1.internal',
          source_address: ['127.0.0.1/32'],
        },
        // The same sshd as db1: its logins other (which web1 lists, as ciport:web1:other) and ops.
        {
          name: 'db1',
          protocol: 'ssh',
          address,
          principals: ['other', 'ops'],
          host_ca: sshd.hostCa,
          host_key_alias: 'web1.internal',
        },
        // The same sshd, but the key pinned is another host's: the job's ssh must refuse it.
        {
          name: 'impostor',
          protocol: 'ssh',
          address,
          principals: ['deploy'],
          host_keys: [generateEd25519('another-host').publicLine],
        },
      ],
      rules: [
        {
          name: 'deploy',
          issuer: 'gitlab',
          when: { project_id: '61577203', ref_protected: true },
          allow: ['web1', 'web1-agent', 'impostor', 'db1'],
          // `other` is one of web1's principals, but this rule grants only `deploy`.
          ssh: { web1: { principals: ['deploy'] } },
          max_ttl: '30m',
        },
        // A rule that lets a fork's job in (policy lint warns about it): still no certificate.
        { name: 'forks', issuer: 'gitlab', when: { fork: true, trusted_event: false }, allow: ['web1'] },
      ],
    },
    { ADMIN },
  );
  gateway = await startTestGateway(cfg, { logLines, sweepIntervalMs: 250 });
  token = await issuer.mint({}, { preset: 'gitlab-main', audience: 'ciport' });

  const adminEnv = baseEnv({
    CIPORT_GATEWAY: gateway.url,
    CIPORT_CA_FILE: gateway.caFile,
    CIPORT_ADMIN_TOKEN: ADMIN,
  });
  const enrolled = await runCli(['agents', 'enroll', '--name', 'dc1', '--targets', 'web1-agent'], {
    env: adminEnv,
  });
  expect(enrolled.code).toBe(0);
  writeFileSync(
    join(dir, 'agent.yaml'),
    [
      ...agentYamlHead(gateway, 'dc1', join(dir, 'agent')),
      `  - {name: web1-agent, protocol: ssh, address: "${address}", principals: [deploy],`,
      `     host_keys: ["${sshd.hostKey}"]}`,
      '',
    ].join('\n'),
  );
  agent = spawnCli(['agent', '--config', join(dir, 'agent.yaml')], {
    env: baseEnv({ CIPORT_ENROLLMENT_TOKEN: enrolled.stdout.trim() }),
    timeoutMs: 600_000,
  });
  await waitFor(() => gateway.agents.hub.serves('web1-agent'), 20_000, 'the agent to connect');
}, 180_000);

afterAll(async () => {
  agent?.child.kill('SIGTERM');
  await agent?.result;
  await gateway?.close();
  await issuer?.close();
  await sshd?.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** A fresh TMPDIR per job: what the client writes to disk is all in there. */
function jobTmp(): string {
  return mkdtempSync(join(dir, 'job-tmp-'));
}

const env = (tmp: string, extra: NodeJS.ProcessEnv = {}) =>
  baseEnv({
    CIPORT_GATEWAY: gateway.url,
    CIPORT_CA_FILE: gateway.caFile,
    CIPORT_ID_TOKEN: token,
    TMPDIR: tmp,
    ...extra,
  });

async function eventsOf(session: string) {
  return (await gateway.store.auditEvents({ limit: 10_000 })).filter(
    (e) => (e.data as { session?: string }).session === session,
  );
}

async function latestSession() {
  const [s] = await gateway.manager.list();
  if (!s) throw new Error('no session');
  return s;
}

/** ssh, scp, rsync and git through the port to `target` (its config in CIPORT_<T>_SSH_CONFIG). */
function deployScript(target: string, v: string, tag: string): string {
  return [
    'set -e',
    `ssh -F "$${v}" ${target} 'id -un; echo "$SSH_CONNECTION" | cut -d" " -f1'`,
    `echo "scp-${tag}" > "$TMPDIR/../scp-${tag}.txt"`,
    `scp -q -F "$${v}" "$TMPDIR/../scp-${tag}.txt" ${target}:${drop}/scp-${tag}.txt`,
    `mkdir -p "$TMPDIR/../rsync-${tag}" && echo "rsync-${tag}" > "$TMPDIR/../rsync-${tag}/file"`,
    `rsync -a -e "ssh -F $${v}" "$TMPDIR/../rsync-${tag}/" ${target}:${drop}/rsync-${tag}/`,
    `git clone -q ${target}:${repo} "$TMPDIR/../clone-${tag}"`,
    `cat "$TMPDIR/../clone-${tag}/README"`,
  ].join('\n');
}

describe.skipIf(!runnable)('ssh targets', () => {
  it('ciport ssh-ca prints the user CA as one OpenSSH line, the one in data_dir', () => {
    expect(caLine).toMatch(/^ssh-ed25519 [A-Za-z0-9+/=]+ ciport-user-ca\n$/);
    expect(readFileSync(join(dir, 'gw', 'ssh_user_ca.pub'), 'utf8')).toBe(caLine);
  });

  it('ssh, scp, rsync and git clone reach a gateway target with a per-session certificate', async () => {
    const tmp = jobTmp();
    const r = await runCli(
      ['exec', 'web1', '--', 'sh', '-c', deployScript('web1', 'CIPORT_WEB1_SSH_CONFIG', 'gw')],
      {
        env: env(tmp),
        timeoutMs: 60_000,
      },
    );
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout.trim().split('\n')).toEqual(['deploy', '127.0.0.1', 'deployed through ciport']);
    expect(readFileSync(join(drop, 'scp-gw.txt'), 'utf8')).toBe('scp-gw\n');
    expect(readFileSync(join(drop, 'rsync-gw', 'file'), 'utf8')).toBe('rsync-gw\n');
    // The session directory is gone with the session; nothing else was written.
    expect(readdirSync(tmp)).toEqual([]);

    const session = await latestSession();
    const events = await eventsOf(session.id);
    const issued = events.find((e) => e.type === 'ssh.certificate_issued');
    expect(issued?.data).toMatchObject({
      target: 'web1',
      rule: 'deploy',
      principals: ['deploy'],
      certificate_principals: ['ciport:web1:deploy'],
      extensions: ['permit-pty'],
      source_address: ['127.0.0.1/32'],
      valid_before: new Date(session.expiresAt).toISOString(),
      principal: { project: 'acme/ledger', ref: 'main', pipeline: '1519139981', job: '8222997048' },
    });
    const data = issued?.data as { key_id: string; serial: string };
    expect(data.key_id).toBe(
      `ciport session=${session.id} project=acme/ledger ref=main pipeline=1519139981 job=8222997048`,
    );
    // sshd saw that very certificate: its key id and serial are in its log.
    expect(sshd.log()).toContain(`ID ${data.key_id} (serial ${data.serial})`);
    expect(events.filter((e) => e.type === 'connection.opened').length).toBeGreaterThanOrEqual(4);
    expect(events.some((e) => e.type === 'connection.closed')).toBe(true);
    expect((await verifyChain(gateway.store)).ok).toBe(true);
  });

  it('the same through an agent (pinned host key); GIT_SSH_COMMAND for a single ssh target', async () => {
    const tmp = jobTmp();
    const script = `${deployScript('web1-agent', 'CIPORT_WEB1_AGENT_SSH_CONFIG', 'agent')}\necho "$GIT_SSH_COMMAND"`;
    const r = await runCli(['exec', 'web1-agent', '--', 'sh', '-c', script], {
      env: env(tmp),
      timeoutMs: 60_000,
    });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines.slice(0, 3)).toEqual(['deploy', '127.0.0.1', 'deployed through ciport']);
    expect(lines[3]).toMatch(/^ssh -F '.*\/ciport-ssh-[^/]+\/web1-agent\.config'$/);
    expect(readFileSync(join(drop, 'rsync-agent', 'file'), 'utf8')).toBe('rsync-agent\n');
    const session = await latestSession();
    const events = await eventsOf(session.id);
    expect(events.find((e) => e.type === 'ssh.certificate_issued')?.data).toMatchObject({
      target: 'web1-agent',
      principals: ['deploy'],
    });
    expect(events.find((e) => e.type === 'connection.opened')?.data).toMatchObject({ exit: 'dc1' });
  });

  it('sshd refuses a principal the rule does not grant; the ssh_config is private and checks the host', async () => {
    const tmp = jobTmp();
    const script = [
      'cfg="$CIPORT_WEB1_SSH_CONFIG"',
      'stat -c "%a" "$(dirname "$cfg")" "$cfg" "$(dirname "$cfg")/web1"',
      'grep -E "^  (StrictHostKeyChecking|HostKeyAlias|User) " "$cfg"',
      'cat "$(dirname "$cfg")/web1.known_hosts" | cut -d" " -f1,2',
      'ssh-keygen -L -f "$(dirname "$cfg")/web1-cert.pub" | grep -A1 Principals | tail -1 | tr -d " \\t"',
      'ssh -F "$cfg" other@web1 true 2>/dev/null; echo "other: $?"',
      'ssh -F "$cfg" web1 true; echo "deploy: $?"',
    ].join('\n');
    const r = await runCli(['exec', 'web1', '--', 'sh', '-c', script], { env: env(tmp), timeoutMs: 60_000 });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout.trim().split('\n')).toEqual([
      '700',
      '600',
      '600',
      '  User deploy',
      '  HostKeyAlias web1.internal',
      '  StrictHostKeyChecking yes',
      '@cert-authority web1.internal',
      'ciport:web1:deploy',
      'other: 255',
      'deploy: 0',
    ]);
    expect(sshd.log()).toContain('Certificate does not contain an authorized principal');
    expect(sshd.log()).toMatch(/Failed publickey for other from .* ID ciport session=/);
  });

  it('a certificate for db1 does not log in on web1 as a login web1 grants to others (principals name the target)', async () => {
    const tmp = jobTmp();
    // The job holds db1 (logins other, ops) and web1 (deploy only). It presents db1's key and
    // certificate to web1 as `other`, a user whose file lists ciport:web1:other: sshd refuses,
    // where bare principals (`other` in the certificate and the file) would have let it in.
    const script = [
      'd="$(dirname "$CIPORT_DB1_SSH_CONFIG")"',
      'ssh-keygen -L -f "$d/db1-cert.pub" | grep -E "^[[:space:]]+ciport:" | tr -d " \t"',
      'ssh -F "$CIPORT_WEB1_SSH_CONFIG" -o IdentityFile="$d/db1" -o CertificateFile="$d/db1-cert.pub" other@web1 true 2>/dev/null; echo "db1 as other on web1: $?"',
      'ssh -F "$CIPORT_DB1_SSH_CONFIG" other@db1 true 2>/dev/null; echo "other on db1 port: $?"',
      'ssh -F "$CIPORT_DB1_SSH_CONFIG" ops@db1 id -un; echo "ops on db1: $?"',
    ].join('\n');
    const r = await runCli(['exec', 'db1', 'web1', '--', 'sh', '-c', script], {
      env: env(tmp),
      timeoutMs: 60_000,
    });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout.trim().split('\n')).toEqual([
      'ciport:db1:other',
      'ciport:db1:ops',
      'db1 as other on web1: 255',
      'other on db1 port: 255',
      'ops',
      'ops on db1: 0',
    ]);
    const session = await latestSession();
    const issued = (await eventsOf(session.id)).filter((e) => e.type === 'ssh.certificate_issued');
    const db1 = issued.find((e) => (e.data as { target: string }).target === 'db1')?.data as {
      key_id: string;
      serial: string;
    };
    expect(db1).toMatchObject({
      principals: ['other', 'ops'],
      certificate_principals: ['ciport:db1:other', 'ciport:db1:ops'],
    });
    const refusedLine = (l: string) =>
      l.includes('Failed publickey for other from') && l.includes(`ID ${db1.key_id} (serial ${db1.serial})`);
    expect(sshd.log().split('\n').some(refusedLine)).toBe(true);
  });

  it("a host whose key is not the pinned one is refused by the job's ssh (no login attempted)", async () => {
    const tmp = jobTmp();
    const r = await runCli(
      [
        'exec',
        'impostor',
        '--',
        'sh',
        '-c',
        'ssh -F "$CIPORT_IMPOSTOR_SSH_CONFIG" impostor true; echo "exit $?"',
      ],
      { env: env(tmp), timeoutMs: 60_000 },
    );
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe('exit 255');
    expect(r.stderr).toContain('Host key verification failed');
    const session = await latestSession();
    expect(sshd.log()).not.toContain(`ID ciport session=${session.id} `);
  });

  it('once the session ended, a new connection with the same files fails', async () => {
    const tmp = jobTmp();
    const keep = join(dir, 'kept');
    // The job copies its files out (as a leak would) and repoints the config at the copies.
    const script = [
      'src="$(dirname "$CIPORT_WEB1_SSH_CONFIG")"',
      `cp -a "$src" ${keep}`,
      `sed -i "s#$src#${keep}#g" ${keep}/web1.config`,
      `ssh -F ${keep}/web1.config web1 true && echo during: ok`,
    ].join('\n');
    const r = await runCli(['exec', 'web1', '--', 'sh', '-c', script], { env: env(tmp), timeoutMs: 60_000 });
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('during: ok');
    const after = (() => {
      try {
        execFileSync('ssh', ['-F', join(keep, 'web1.config'), 'web1', 'true'], {
          stdio: 'pipe',
          timeout: 20_000,
        });
        return 0;
      } catch (err) {
        return (err as { status: number }).status;
      }
    })();
    expect(after).toBe(255);
    // The certificate itself ends with the session's TTL (valid-before = expires_at).
    const session = await latestSession();
    expect(session.state).toBe('ended');
    const issued = (await eventsOf(session.id)).find((e) => e.type === 'ssh.certificate_issued');
    expect(issued?.data).toMatchObject({ valid_before: new Date(session.expiresAt).toISOString() });
    rmSync(keep, { recursive: true, force: true });
  });

  it('revoking the session cuts a running ssh connection and removes the files at once', async () => {
    const tmp = jobTmp();
    const script = [
      'echo "$CIPORT_WEB1_SSH_CONFIG"',
      `ssh -F "$CIPORT_WEB1_SSH_CONFIG" web1 'echo started; sleep 120'`,
      'echo "ssh exited $?"',
    ].join('\n');
    const job = spawnCli(['exec', 'web1', '--', 'sh', '-c', script], { env: env(tmp), timeoutMs: 60_000 });
    await waitFor(() => job.stdout().includes('started'), 20_000, 'the remote command to start');
    const config = job.stdout().split('\n')[0] as string;
    expect(existsSync(config)).toBe(true);
    const session = await latestSession();
    await gateway.manager.revoke(session.id, 'test', 'ssh test');
    const r = await job.result;
    expect(r.stdout).toContain('ssh exited 255');
    expect(existsSync(config)).toBe(false);
    expect(readdirSync(tmp)).toEqual([]);
  });

  it("a fork's job gets no certificate, even where a rule lets it in", async () => {
    const tmp = jobTmp();
    const forkToken = await issuer.mint({}, { preset: 'gitlab-fork-mr', audience: 'ciport' });
    const r = await runCli(['exec', 'web1', '--', 'true'], {
      env: env(tmp, { CIPORT_ID_TOKEN: forkToken }),
      timeoutMs: 30_000,
    });
    expect(r.code).toBe(3);
    expect(r.stderr).toContain('CIPORT_E_SSH_CERTIFICATE_REFUSED');
    expect(readdirSync(tmp)).toEqual([]);
    const session = await latestSession();
    expect(session.rule).toBe('forks');
    const events = await eventsOf(session.id);
    expect(events.some((e) => e.type === 'ssh.certificate_issued')).toBe(false);
    await waitFor(async () => (await gateway.store.getSession(session.id))?.state === 'ended', 10_000);
  });

  it('the private key stays in the session directory: not in logs, audit, the store or any argv', async () => {
    const tmp = jobTmp();
    const seen = join(dir, 'seen');
    mkdirSync(seen);
    // While the session lives: the key's base64 lines become grep patterns (in a file, so that
    // grep's own argv does not hold them), matched against every process's command line.
    const script = [
      'key="$(dirname "$CIPORT_WEB1_SSH_CONFIG")/web1"',
      `grep -v -- ----- "$key" > ${seen}/patterns`,
      `cp "$key" ${seen}/key`,
      `ls -A "$TMPDIR" > ${seen}/tmp`,
      `cat /proc/[0-9]*/cmdline 2>/dev/null | tr "\\0" "\\n" | grep -cFf ${seen}/patterns || true`,
      'ssh -F "$CIPORT_WEB1_SSH_CONFIG" web1 true',
    ].join('\n');
    const r = await runCli(['exec', '--verbose', 'web1', '--', 'sh', '-c', script], {
      env: env(tmp),
      timeoutMs: 60_000,
    });
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe('0');
    expect(readFileSync(join(seen, 'tmp'), 'utf8').trim()).toMatch(/^ciport-ssh-[A-Za-z0-9]+$/);
    const key = readFileSync(join(seen, 'key'), 'utf8');
    expect(key).toContain('-----BEGIN OPENSSH PRIVATE KEY-----');
    const body = key.split('\n').filter((l) => l && !l.startsWith('-----'));
    expect(body.length).toBeGreaterThan(2);
    const session = await latestSession();
    const exported = await runCli(
      ['audit', 'export', '--format', 'jsonl', '--config', join(dir, 'gateway.json')],
      {
        env: baseEnv(),
      },
    );
    expect(exported.code).toBe(0);
    expect(exported.stdout).toContain('"ssh.certificate_issued"');
    const everything = [
      r.stdout,
      r.stderr,
      logLines.join('\n'),
      agent?.stderr() ?? '',
      JSON.stringify(await eventsOf(session.id)),
      exported.stdout,
      storeText(join(dir, 'gw')),
      sshd.log(),
    ].join('\n');
    for (const line of body) expect(everything).not.toContain(line);
    expect(readdirSync(tmp)).toEqual([]);
  });
});
