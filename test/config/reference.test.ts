// docs/config.md holds the key reference generated from src/config/schema.ts; it must match the
// schema, so a key added (or a default changed) without regenerating the docs fails here.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { configReference, currentReference, spliceReference } from '../../src/config/reference.js';
import { gatewayJsonSchema } from '../../src/config/schema.js';
import { runCli } from '../helpers/cli.js';

const DOC = new URL('../../docs/config.md', import.meta.url);

/** Every key path of the JSON Schema, `a.b`, `list[].c`, alternatives included. */
function keyPaths(node: Record<string, unknown>, prefix = '', out = new Set<string>()): Set<string> {
  const props = node.properties as Record<string, Record<string, unknown>> | undefined;
  for (const [key, child] of Object.entries(props ?? {})) {
    const path = prefix ? `${prefix}.${key}` : key;
    out.add(path);
    const items = child.items as Record<string, unknown> | undefined;
    if (child.properties) keyPaths(child, path, out);
    if (items?.properties) keyPaths(items, `${path}[]`, out);
    // A list of alternatives (admin_tokens: a bare secret or a named object): the object's keys.
    for (const alt of objectAlternatives(items)) keyPaths(alt, `${path}[]`, out);
    // A list of a discriminated union (targets, by protocol): every member's keys.
    for (const member of (items?.oneOf as Record<string, unknown>[] | undefined) ?? []) {
      keyPaths(member, `${path}[]`, out);
    }
    for (const alt of objectAlternatives(child)) keyPaths(alt, path, out);
  }
  return out;
}

/** The alternatives of `node` (anyOf) that are objects with keys, secrets ({env}, {file}) aside. */
function objectAlternatives(node: Record<string, unknown> | undefined): Record<string, unknown>[] {
  return ((node?.anyOf as Record<string, unknown>[] | undefined) ?? []).filter((alt) => {
    const keys = Object.keys((alt.properties as object | undefined) ?? {});
    return keys.length > 0 && !keys.some((k) => k === 'env' || k === 'file');
  });
}

describe('docs/config.md', () => {
  it('holds the reference generated from the schema (regenerate: npm run docs:config)', () => {
    const doc = readFileSync(DOC, 'utf8');
    expect(
      currentReference(doc) === configReference(),
      'docs/config.md is out of date with src/config/schema.ts: run `npm run docs:config` and commit docs/config.md',
    ).toBe(true);
  });

  it('lists every key of the schema, with dev and limits', () => {
    const reference = configReference();
    const paths = keyPaths(gatewayJsonSchema());
    for (const p of [
      'issuers[].dev',
      'rules[].limits',
      'rules[].limits.connections',
      'sessions.rate_limit.burst',
      'targets[].sslmode',
      'targets[].server_public_key',
      'targets[].credentials.dynamic.owner',
      'targets[].credentials.header',
      'admin_tokens[].name',
      'admin_tokens[].roles',
    ]) {
      expect(paths.has(p), p).toBe(true);
    }
    for (const p of paths) expect(reference, p).toContain(`| \`${p}\` |`);
    expect(reference).toMatch(/\| `issuers\[\]\.dev` \| boolean \| `false` \| A development issuer/);
    expect(reference).toMatch(/\| `sessions\.default_ttl` \| duration \| `"15m"` \| /);
  });

  it('splices: replaces only the generated part, idempotently', () => {
    const doc = `# Title\n\nhand-written\n\n${configReference()}\nafter\n`;
    expect(spliceReference(doc)).toBe(doc);
    const stale = doc.replace('| `listen` |', '| `listen_old` |');
    expect(spliceReference(stale)).toBe(doc);
    expect(spliceReference('# Only prose\n')).toBe(`# Only prose\n\n${configReference()}`);
  });

  it('ciport config schema --format markdown prints the same reference', async () => {
    const r = await runCli(['config', 'schema', '--format', 'markdown']);
    expect(r).toEqual({ code: 0, stdout: configReference(), stderr: '' });
    expect((await runCli(['config', 'schema', '--format', 'yaml'])).code).toBe(2);
  });
});
