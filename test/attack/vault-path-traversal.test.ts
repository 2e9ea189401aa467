// Attack (defence in depth; the config is the operator's, but it is often assembled from
// templates and per-team snippets): a Vault KV path or database mount/role is spliced into
// `/v1/<mount>/data/<path>` and parsed as a URL, so `secret/../../sys/...` read `sys/…` with the
// gateway's token, and `?`/`#` cut the path. Refused at load.
import { describe, expect, it } from 'vitest';
import { targetSecretSchema } from '../../src/config/fields.js';
import { vaultDatabaseFields } from '../../src/config/targets/member.js';

const kv = (path: string) => targetSecretSchema.safeParse({ vault: { path, key: 'password' } }).success;
const db = (v: { mount?: string; role: string }) => vaultDatabaseFields.safeParse(v).success;

describe('Vault paths from the config', () => {
  it('KV paths climbing out of their mount or cut by ? and # are refused', () => {
    expect(kv('secret/ci/db')).toBe(true);
    expect(kv('secret/ci.team/db-1')).toBe(true);
    for (const bad of [
      'secret/../../sys/raw/core/keyring',
      'secret/ci/../../auth/token/lookup',
      'secret/./db',
      'secret/db?version=1',
      'secret/db#frag',
      'secret/%2e%2e/sys/x',
      'secret/..\\sys/x',
    ]) {
      expect(kv(bad), bad).toBe(false);
    }
  });

  it('database mounts and roles are not `.` or `..`', () => {
    expect(db({ mount: 'database', role: 'app' })).toBe(true);
    expect(db({ mount: 'teams/db.v2', role: 'app.ro' })).toBe(true);
    expect(db({ mount: 'database', role: '..' })).toBe(false);
    expect(db({ mount: '..', role: 'app' })).toBe(false);
    expect(db({ mount: 'database/../sys', role: 'app' })).toBe(false);
  });
});
