// docs/gateway.md's reload table names every top-level key a SIGHUP refuses, so an operator
// knows beforehand which edits need a restart (`ssh:` was missing: a CA change looked reloadable).
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { gatewayConfigSchema } from '../../src/config/schema.js';
import { RELOADABLE_KEYS } from '../../src/gateway/reload.js';

const doc = readFileSync(new URL('../../docs/gateway.md', import.meta.url), 'utf8');

describe('docs/gateway.md, "Reloading the configuration"', () => {
  it('lists every restart-only key in the restart row', () => {
    const row = doc.split('\n').find((line) => line.includes('| **restart**'));
    expect(row).toBeDefined();
    const named = new Set([...(row ?? '').split('|')[1]!.matchAll(/`([a-z_]+)`/g)].map((m) => m[1]));
    const restartOnly = Object.keys(gatewayConfigSchema.shape).filter(
      (key) => !(RELOADABLE_KEYS as readonly string[]).includes(key),
    );
    expect(restartOnly.filter((key) => !named.has(key))).toEqual([]);
  });
});
