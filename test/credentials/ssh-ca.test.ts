// The gateway's SSH user CA: generated once in data_dir (0600) and reused, or taken from
// `ssh.ca_key`; a key that is not Ed25519 is refused with CIPORT_E_SSH_CA_INVALID, at start when
// configured.
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Secret } from '../../src/config/secret.js';
import { lazySshCa, loadSshCa, SSH_CA_FILE } from '../../src/credentials/ssh-ca.js';
import { generateEd25519 } from '../../src/credentials/ssh-keys.js';
import { CiportError } from '../../src/errors/index.js';
import { runCli } from '../helpers/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'ciport-ssh-ca-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof CiportError ? err.code : String(err);
  }
  return undefined;
}

describe('the SSH user CA', () => {
  it('is generated in data_dir on first use, mode 0600, and the same key afterwards', () => {
    const dataDir = join(dir, 'data');
    const lazy = lazySshCa({ data_dir: dataDir });
    expect(() => statSync(join(dataDir, SSH_CA_FILE))).toThrow();
    const first = lazy();
    expect(statSync(join(dataDir, SSH_CA_FILE)).mode & 0o777).toBe(0o600);
    expect(first.publicLine).toMatch(/^ssh-ed25519 [A-Za-z0-9+/=]+ ciport-user-ca$/);
    expect(readFileSync(join(dataDir, `${SSH_CA_FILE}.pub`), 'utf8')).toBe(`${first.publicLine}\n`);
    expect(loadSshCa({ data_dir: dataDir }).publicLine).toBe(first.publicLine);
  });

  it('comes from ssh.ca_key (OpenSSH form) when configured', () => {
    const made = generateEd25519('operator-ca');
    const ca = loadSshCa({
      data_dir: join(dir, 'unused'),
      ssh: { ca_key: new Secret({ env: 'CA' }, made.privateOpenssh) },
    });
    expect(ca.publicLine).toBe(`${made.publicLine} ciport-user-ca`);
    expect(ca.origin).toBe('ssh.ca_key (env:CA)');
    expect(() => statSync(join(dir, 'unused'))).toThrow();
  });

  it('refuses a configured key that is not Ed25519 at once', () => {
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 })
      .privateKey.export({ type: 'pkcs8', format: 'pem' })
      .toString();
    const config = { data_dir: join(dir, 'unused'), ssh: { ca_key: new Secret({ file: '/etc/ca' }, rsa) } };
    expect(codeOf(() => lazySshCa(config))).toBe('CIPORT_E_SSH_CA_INVALID');
    expect(
      codeOf(() => loadSshCa({ ...config, ssh: { ca_key: new Secret({ env: 'CA' }, 'garbage') } })),
    ).toBe('CIPORT_E_SSH_CA_INVALID');
  });

  // `ciport ssh-ca` run where the gateway does not (a relative data_dir elsewhere) makes a CA
  // the gateway never signs with: the first run says so on stderr; stdout stays the one line.
  it('`ciport ssh-ca` says on stderr when it generated the key, once', async () => {
    const config = join(dir, 'gw.yaml');
    writeFileSync(config, `data_dir: ${join(dir, 'cli-data')}\n`);
    const first = await runCli(['ssh-ca', '--config', config]);
    expect(first.code).toBe(0);
    expect(first.stdout).toMatch(/^ssh-ed25519 [A-Za-z0-9+/=]+ ciport-user-ca\n$/);
    expect(first.stderr).toContain(`generated a new SSH user CA in ${join(dir, 'cli-data', SSH_CA_FILE)}`);
    const again = await runCli(['ssh-ca', '--config', config]);
    expect(again.stdout).toBe(first.stdout);
    expect(again.stderr).toBe('');
  });
});
