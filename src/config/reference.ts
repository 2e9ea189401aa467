// The configuration reference in docs/config.md, generated from the zod schema's JSON Schema
// (`ciport config schema --format markdown`, `npm run docs:config`): one row per key with its
// type, default and description, so the docs cannot drift from what the loader accepts.
// A test compares docs/config.md with this output.
import { gatewayJsonSchema } from './schema.js';

type Node = {
  type?: string | string[];
  properties?: Record<string, Node>;
  additionalProperties?: Node | boolean;
  items?: Node;
  anyOf?: Node[];
  oneOf?: Node[];
  enum?: unknown[];
  const?: unknown;
  default?: unknown;
  description?: string;
  pattern?: string;
  format?: string;
  $ref?: string;
  required?: string[];
  minimum?: number;
  exclusiveMinimum?: number;
};

interface Row {
  key: string;
  type: string;
  default: string;
  description: string;
  /** Starts the keys of one member of a discriminated union (a target's protocol): a heading. */
  heading?: { title: string; note: string };
}

export const REFERENCE_BEGIN =
  '<!-- BEGIN GENERATED REFERENCE: `npm run docs:config` rewrites this part; edit src/config/schema.ts -->';
export const REFERENCE_END = '<!-- END GENERATED REFERENCE -->';

const DURATION_PATTERN = '^\\d+(ms|s|m|h|d)$';
const NAME_PATTERN = '^[a-z0-9][a-z0-9_-]{0,62}$';
const DURATION_DESCRIPTION = /^Duration: /;
const SECRET_DESCRIPTION = /^A secret: /;

function isSecret(node: Node): boolean {
  const alts = node.anyOf ?? [];
  return (
    alts.length === 2 &&
    alts.every((a) => a.type === 'object' && a.properties && Object.keys(a.properties).length === 1) &&
    'env' in (alts[0]?.properties ?? {}) &&
    'file' in (alts[1]?.properties ?? {})
  );
}

/** A short type: `duration`, `secret`, `"a" \| "b"`, `list of string`, `string or list of string`. */
function typeOf(node: Node): string {
  if (node.$ref) return 'matcher (docs/policy.md)';
  if (isSecret(node)) return 'secret';
  if (node.enum) return node.enum.map((v) => JSON.stringify(v)).join(' | ');
  if (node.const !== undefined) return JSON.stringify(node.const);
  if (node.anyOf ?? node.oneOf)
    return [...new Set((node.anyOf ?? node.oneOf ?? []).map(typeOf))].join(' or ');
  if (node.pattern === DURATION_PATTERN) return 'duration';
  if (node.pattern === NAME_PATTERN) return 'name';
  if (node.pattern?.includes('\\d{1,5}$')) return 'host:port';
  if (node.format === 'uri') return 'URL';
  if (node.type === 'array') return `list of ${node.items ? typeOf(node.items) : 'any'}`;
  if (node.type === 'object') {
    if (!node.properties && typeof node.additionalProperties === 'object') {
      return `map of ${typeOf(node.additionalProperties)}`;
    }
    return 'object';
  }
  if (node.type === 'integer') {
    const positive = node.exclusiveMinimum === 0 || (node.minimum ?? -1) >= 1;
    return positive
      ? 'positive integer'
      : node.minimum !== undefined
        ? `integer ≥ ${node.minimum}`
        : 'integer';
  }
  return Array.isArray(node.type) ? node.type.join(' or ') : (node.type ?? 'any');
}

function describe(node: Node): string {
  const own = node.description ?? '';
  // The shared descriptions of durations and secrets are said once, above the tables.
  if (DURATION_DESCRIPTION.test(own) || SECRET_DESCRIPTION.test(own)) return '';
  return own;
}

function showDefault(node: Node, required: boolean): string {
  if (node.default === undefined) return required ? '(required)' : '';
  if (typeof node.default === 'object' && node.default !== null && !Array.isArray(node.default)) return '';
  return `\`${JSON.stringify(node.default)}\``;
}

function cell(text: string): string {
  return text.replaceAll('|', '\\|').replaceAll('\n', ' ');
}

/** Rows for `node`'s properties under `prefix`, depth first, in schema order. */
function rows(node: Node, prefix: string, out: Row[], alternative = false): void {
  // Keys of one alternative of a union (`store.sqlite` or `store.postgres`) are not all required.
  const required = new Set(alternative ? [] : (node.required ?? []));
  for (const [key, child] of Object.entries(node.properties ?? {})) {
    const path = prefix ? `${prefix}.${key}` : key;
    out.push({
      key: path,
      type: typeOf(child),
      default: showDefault(child, required.has(key)),
      description:
        describe(child) || (child.pattern === NAME_PATTERN && key === 'name' ? 'Unique in the list.' : ''),
    });
    descend(child, path, out);
  }
}

function descend(node: Node, path: string, out: Row[]): void {
  if (isSecret(node)) return;
  if (node.type === 'object' && node.properties) rows(node, path, out);
  else if (node.type === 'array' && node.items?.type === 'object') rows(node.items, `${path}[]`, out);
  else if (node.type === 'array' && node.items?.oneOf) variants(node.items.oneOf, `${path}[]`, out);
  // A list of alternatives (`admin_tokens[]`: a bare secret or a named object): the object's keys.
  else if (node.type === 'array' && node.items?.anyOf) descend(node.items, `${path}[]`, out);
  else if (node.anyOf) {
    const objects = node.anyOf.filter((alt) => alt.type === 'object' && alt.properties);
    for (const alt of objects) rows(alt, path, out, objects.length > 1);
  }
}

/**
 * A discriminated union (`targets[]`, by `protocol`): the keys every member has alike first, the
 * discriminator with all its values, then each member's own keys under its own heading.
 */
function variants(members: Node[], prefix: string, out: Row[]): void {
  const [first, ...others] = members;
  if (!first?.properties) return;
  const same = (key: string) =>
    others.every((m) => JSON.stringify(m.properties?.[key]) === JSON.stringify(first.properties?.[key]));
  const tag = Object.keys(first.properties).find((key) =>
    members.every((m) => m.properties?.[key]?.const !== undefined),
  );
  const common: Node = { type: 'object', properties: {}, required: first.required ?? [] };
  for (const [key, child] of Object.entries(first.properties)) {
    if (key === tag) {
      const values = members.map((m) => m.properties?.[key]?.const);
      (common.properties as Record<string, Node>)[key] = { ...child, const: undefined, enum: values };
    } else if (same(key)) (common.properties as Record<string, Node>)[key] = child;
  }
  rows(common, prefix, out);
  for (const member of members) {
    const own: Node = {
      ...member,
      properties: Object.fromEntries(
        Object.entries(member.properties ?? {}).filter(([key]) => !(key in (common.properties ?? {}))),
      ),
    };
    const title = `\`${prefix}\` with \`${tag}: ${String(member.properties?.[tag ?? '']?.const)}\``;
    const note = `${member.description ?? ''}${Object.keys(own.properties ?? {}).length ? '' : ' No other keys.'}`;
    out.push({ key: prefix, type: '', default: '', description: '', heading: { title, note: note.trim() } });
    rows(own, prefix, out);
  }
}

/** The generated part of docs/config.md, markers included, ending in a newline. */
export function configReference(): string {
  const schema = gatewayJsonSchema() as Node;
  const all: Row[] = [];
  rows(schema, '', all);
  const sections = new Map<string, Row[]>();
  for (const row of all) {
    const top = row.key.split(/[.[]/)[0] as string;
    const isSection = row.key === top && (row.type === 'object' || row.type.startsWith('list of object'));
    const name = isSection || sections.has(top) ? top : '(top level)';
    if (!sections.has(name)) sections.set(name, []);
    sections.get(name)?.push(row);
  }
  const lines = [
    REFERENCE_BEGIN,
    '',
    '## Reference',
    '',
    'Every key the gateway accepts, generated from `src/config/schema.ts` (targets: `src/config/targets/`).',
    'Types: a *duration* is a whole number and a unit (`500ms`, `30s`, `15m`, `2h`, `1d`); a *secret* is',
    '`{env: NAME}` or `{file: PATH}`; a *name* is lowercase `[a-z0-9_-]`, at most 63 characters; `key[]`',
    'is a key of each item of the list `key`. An empty default means the key is optional and unset.',
    'A target takes the common keys and those of its `protocol` only.',
  ];
  for (const [section, list] of sections) {
    lines.push('', `### ${section === '(top level)' ? 'Top level' : `\`${section}\``}`);
    let table = false;
    for (const r of list) {
      if (r.heading) {
        lines.push('', `#### ${r.heading.title}`, '', r.heading.note);
        table = false;
        continue;
      }
      if (!table) lines.push('', '| key | type | default | description |', '|---|---|---|---|');
      table = true;
      lines.push(`| \`${r.key}\` | ${cell(r.type)} | ${cell(r.default)} | ${cell(r.description)} |`);
    }
  }
  lines.push('', REFERENCE_END);
  return `${lines.join('\n')}\n`;
}

/** `doc` with its generated part replaced by the current one (appended when it has none). */
export function spliceReference(doc: string, reference = configReference()): string {
  const begin = doc.indexOf(REFERENCE_BEGIN);
  const end = doc.indexOf(REFERENCE_END);
  if (begin < 0 || end < begin) return `${doc.replace(/\n*$/, '\n\n')}${reference}`;
  return `${doc.slice(0, begin)}${reference}${doc.slice(end + REFERENCE_END.length).replace(/^\n/, '')}`;
}

/** The generated part of `doc` as it stands (empty when it has none). */
export function currentReference(doc: string): string {
  const begin = doc.indexOf(REFERENCE_BEGIN);
  const end = doc.indexOf(REFERENCE_END);
  return begin < 0 || end < begin ? '' : `${doc.slice(begin, end + REFERENCE_END.length)}\n`;
}
