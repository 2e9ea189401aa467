// GitLab CI configuration, built the way GitLab builds it, for the keywords docs/gitlab-ci.md and
// templates/ciport/template.yml use: YAML with `!reference`; `include: component:` of this
// repository's component with `spec: inputs:` checked (required, default, options, regex, type)
// and `$[[ inputs.NAME ]]` interpolated into keys and values of the content document; included
// configuration merged under the including file; `extends` as a deep merge of hashes (lists and
// scalars replaced); then `!reference` resolved (GitLab's order: includes, extends, references);
// `rules: - if:` evaluated. Anything else it meets is an error, so a new keyword in the docs
// cannot pass untested.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments, Scalar, type YAMLSeq } from 'yaml';
import { ROOT } from '../fixtures/cli.js';

export type Yaml = null | boolean | number | string | Reference | Yaml[] | { [key: string]: Yaml };
export type YamlMap = { [key: string]: Yaml };

/** `!reference [job, key, …]`: a list of names, resolved after `extends`. */
export class Reference {
  constructor(readonly path: string[]) {}
}

const referenceTag = {
  tag: '!reference',
  collection: 'seq' as const,
  resolve: (seq: YAMLSeq) => new Reference(seq.items.map((i) => String(i instanceof Scalar ? i.value : i))),
};

/** Every YAML document of `text`, parsed as GitLab parses CI files (with `!reference`). */
export function parseCiYaml(text: string, what: string): Yaml[] {
  return parseAllDocuments(text, { customTags: [referenceTag], prettyErrors: true }).map((doc) => {
    if (doc.errors.length > 0) throw new Error(`${what}: ${doc.errors.map((e) => e.message).join('; ')}`);
    return doc.toJS({ maxAliasCount: 100 }) as Yaml;
  });
}

export function isMap(v: Yaml | undefined): v is YamlMap {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Reference);
}

// ---- components and inputs -----------------------------------------------------------------

export interface InputSpec {
  default?: Yaml;
  description?: string;
  options?: Yaml[];
  regex?: string;
  type?: 'string' | 'number' | 'boolean' | 'array';
}

export interface Component {
  inputs: Record<string, InputSpec>;
  content: YamlMap;
}

const INPUT_KEYS = new Set(['default', 'description', 'options', 'regex', 'type']);

/** A component file: the `spec:` header document, `---`, the configuration. */
export function parseComponent(text: string, what: string): Component {
  const docs = parseCiYaml(text, what);
  if (docs.length !== 2) throw new Error(`${what}: expected a spec header and a content document`);
  const [header, content] = docs;
  if (!isMap(header) || !isMap(header.spec) || Object.keys(header).length !== 1) {
    throw new Error(`${what}: the header document must hold only spec:`);
  }
  const inputs = header.spec.inputs;
  if (!isMap(inputs)) throw new Error(`${what}: spec: has no inputs:`);
  for (const [name, spec] of Object.entries(inputs)) {
    if (spec !== null && !isMap(spec)) throw new Error(`${what}: input ${name} is not a mapping`);
    for (const key of Object.keys(spec ?? {})) {
      if (!INPUT_KEYS.has(key)) throw new Error(`${what}: input ${name}: unknown keyword ${key}`);
    }
  }
  if (!isMap(content)) throw new Error(`${what}: the content document is not a mapping`);
  return { inputs: inputs as Record<string, InputSpec>, content };
}

/** The inputs a job gets: given values checked against the spec, defaults for the rest. */
export function resolveInputs(spec: Record<string, InputSpec>, given: YamlMap): Record<string, Yaml> {
  const unknown = Object.keys(given).filter((k) => !(k in spec));
  if (unknown.length > 0) throw new Error(`unknown input arguments: ${unknown.join(', ')}`);
  const values: Record<string, Yaml> = {};
  for (const [name, s] of Object.entries(spec)) {
    const input = s ?? {};
    if (!(name in given) && !('default' in input)) {
      throw new Error(`\`${name}\` input: required value has not been provided`);
    }
    const value = name in given ? (given[name] as Yaml) : (input.default as Yaml);
    const type = input.type ?? 'string';
    const typed = value === null || (type === 'array' ? Array.isArray(value) : typeof value === type);
    if (!typed) throw new Error(`\`${name}\` input: provided value is not a ${type}`);
    if (input.options && !input.options.includes(value)) {
      throw new Error(
        `\`${name}\` input: \`${String(value)}\` cannot be used because it is not in the list of allowed options`,
      );
    }
    if (input.regex && !new RegExp(input.regex).test(String(value ?? ''))) {
      throw new Error(`\`${name}\` input: provided value does not match required RegEx pattern`);
    }
    values[name] = value;
  }
  return values;
}

const BLOCK = /\$\[\[\s*(.*?)\s*\]\]/g;

function interpolateString(text: string, inputs: Record<string, Yaml>): Yaml {
  const whole = /^\$\[\[\s*(.*?)\s*\]\]$/.exec(text);
  const lookup = (expr: string): Yaml => {
    const m = /^inputs\.([A-Za-z0-9_-]+)$/.exec(expr);
    if (!m) throw new Error(`unsupported interpolation block $[[ ${expr} ]]`);
    const name = m[1] as string;
    if (!(name in inputs)) throw new Error(`unknown interpolation key: \`${name}\``);
    return inputs[name] as Yaml;
  };
  // A value that is one block keeps the input's type; inside a longer string it is text.
  if (whole) return lookup(whole[1] as string);
  return text.replace(BLOCK, (_, expr: string) => String(lookup(expr) ?? ''));
}

/** `$[[ inputs.x ]]` replaced in every key and string value of the content document. */
export function interpolate(value: Yaml, inputs: Record<string, Yaml>): Yaml {
  if (typeof value === 'string') return interpolateString(value, inputs);
  if (Array.isArray(value)) return value.map((v) => interpolate(v, inputs));
  if (value instanceof Reference)
    return new Reference(value.path.map((p) => String(interpolateString(p, inputs))));
  if (isMap(value)) {
    const out: YamlMap = {};
    for (const [k, v] of Object.entries(value))
      out[String(interpolateString(k, inputs))] = interpolate(v, inputs);
    return out;
  }
  return value;
}

/** Every `$[[ … ]]` block of a document, as written. */
export function interpolationBlocks(value: Yaml): string[] {
  if (typeof value === 'string') return [...value.matchAll(BLOCK)].map((m) => m[1] as string);
  if (Array.isArray(value)) return value.flatMap(interpolationBlocks);
  if (isMap(value))
    return Object.entries(value).flatMap(([k, v]) => [...interpolationBlocks(k), ...interpolationBlocks(v)]);
  return [];
}

// ---- this repository's component -----------------------------------------------------------

export const COMPONENT_FILE = 'templates/ciport/template.yml';

/** `$CI_SERVER_FQDN/group/project/ciport@version`: the form docs/gitlab-ci.md tells users to write. */
export const COMPONENT_REF =
  /^\$CI_SERVER_FQDN\/[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.-]+)+\/([a-z0-9_-]+)@([A-Za-z0-9_.~-]+)$/;

export function loadComponent(name: string): Component {
  // templates/<name>/template.yml or templates/<name>.yml, as GitLab looks them up.
  const file = name === 'ciport' ? COMPONENT_FILE : `templates/${name}.yml`;
  return parseComponent(readFileSync(join(ROOT, file), 'utf8'), file);
}

// ---- a pipeline's configuration ------------------------------------------------------------

const GLOBAL_KEYS = new Set(['include', 'stages', 'variables']);
/** Top-level keywords that change every job: not modelled, so not allowed in what the tests run. */
const UNMODELLED_GLOBALS = new Set([
  'default',
  'workflow',
  'image',
  'services',
  'cache',
  'before_script',
  'after_script',
]);

/** The main file with its includes merged in (the main file wins), before `extends`. */
export function withIncludes(main: YamlMap, hook: (inputs: YamlMap) => YamlMap = (i) => i): YamlMap {
  const includes =
    main.include === undefined ? [] : Array.isArray(main.include) ? main.include : [main.include];
  let merged: YamlMap = {};
  for (const entry of includes) {
    if (!isMap(entry) || typeof entry.component !== 'string') {
      throw new Error(`unsupported include ${JSON.stringify(entry)} (only component: is modelled)`);
    }
    const m = COMPONENT_REF.exec(entry.component);
    if (!m)
      throw new Error(
        `component reference ${entry.component}: expected $CI_SERVER_FQDN/<project path>/<name>@<version>`,
      );
    for (const key of Object.keys(entry)) {
      if (key !== 'component' && key !== 'inputs') throw new Error(`include: unsupported keyword ${key}`);
    }
    const component = loadComponent(m[2] as string);
    const given = entry.inputs === undefined ? {} : entry.inputs;
    if (!isMap(given)) throw new Error('include: inputs: must be a mapping');
    const inputs = resolveInputs(component.inputs, hook(given));
    merged = deepMerge(merged, interpolate(component.content, inputs) as YamlMap);
  }
  const { include: _, ...rest } = main;
  return deepMerge(merged, rest);
}

/** GitLab's merge for `extends` and includes: hashes deep-merged, everything else replaced. */
export function deepMerge(base: YamlMap, override: YamlMap): YamlMap {
  const out: YamlMap = { ...base };
  for (const [k, v] of Object.entries(override)) {
    const b = out[k];
    out[k] = isMap(b) && isMap(v) ? deepMerge(b, v) : v;
  }
  return out;
}

function resolveExtends(config: YamlMap, name: string, seen: string[] = []): YamlMap {
  const job = config[name];
  if (!isMap(job)) throw new Error(`extends: unknown job ${name}`);
  if (seen.includes(name)) throw new Error(`extends: circular dependency ${[...seen, name].join(' > ')}`);
  if (seen.length > 10) throw new Error('extends: nesting too deep');
  const parents = job.extends === undefined ? [] : Array.isArray(job.extends) ? job.extends : [job.extends];
  let merged: YamlMap = {};
  for (const parent of parents)
    merged = deepMerge(merged, resolveExtends(config, String(parent), [...seen, name]));
  const { extends: _, ...own } = job;
  return deepMerge(merged, own);
}

function resolveReferences(value: Yaml, config: YamlMap, depth = 0): Yaml {
  if (depth > 10) throw new Error('!reference: nested too deep');
  if (value instanceof Reference) {
    let target: Yaml | undefined = config;
    for (const key of value.path) target = isMap(target) ? target[key] : undefined;
    if (target === undefined) throw new Error(`!reference [${value.path.join(', ')}] could not be found`);
    return resolveReferences(target, config, depth + 1);
  }
  if (Array.isArray(value)) return value.map((v) => resolveReferences(v, config, depth));
  if (isMap(value)) {
    return Object.fromEntries(
      Object.entries(value).map(([k, v]) => [k, resolveReferences(v, config, depth)]),
    );
  }
  return value;
}

/** Script lists may nest (a `!reference` to a list inside a list): GitLab flattens them. */
export function scriptLines(value: Yaml | undefined): string[] {
  if (value === undefined || value === null) return [];
  if (typeof value === 'string') return [value];
  if (Array.isArray(value)) return value.flatMap(scriptLines);
  throw new Error(`a script entry must be a string or a list, got ${JSON.stringify(value)}`);
}

/** Every job GitLab would consider (hidden `.jobs` excluded), with extends and references resolved. */
export function buildJobs(config: YamlMap): Map<string, YamlMap> {
  for (const key of Object.keys(config)) {
    if (UNMODELLED_GLOBALS.has(key) || (!GLOBAL_KEYS.has(key) && !isMap(config[key]))) {
      throw new Error(`unsupported top-level keyword ${key}`);
    }
  }
  const extended: YamlMap = {};
  for (const name of Object.keys(config)) {
    if (GLOBAL_KEYS.has(name)) continue;
    extended[name] = resolveExtends(config, name);
  }
  const jobs = new Map<string, YamlMap>();
  for (const [name, job] of Object.entries(extended)) {
    if (name.startsWith('.')) continue;
    const resolved = resolveReferences(job, extended) as YamlMap;
    for (const key of ['before_script', 'script', 'after_script']) {
      if (key in resolved) resolved[key] = scriptLines(resolved[key]);
    }
    jobs.set(name, resolved);
  }
  return jobs;
}

// ---- rules ----------------------------------------------------------------------------------

/** `rules: - if:` as GitLab evaluates it, for `$A == $B`, `$A == "x"`, `!=`, `&&`, `||`, `$A`. */
export function evaluateIf(expr: string, env: Record<string, string>): boolean {
  const ors = expr.split('||').map((s) => s.trim());
  return ors.some((or) =>
    or
      .split('&&')
      .map((s) => s.trim())
      .every((term) => {
        const m = /^(\S+)\s*(==|!=)\s*(\S+)$/.exec(term);
        const value = (operand: string): string | null => {
          if (/^\$[A-Za-z_][A-Za-z0-9_]*$/.test(operand)) return env[operand.slice(1)] ?? null;
          const q = /^"([^"]*)"$|^'([^']*)'$/.exec(operand);
          if (q) return q[1] ?? q[2] ?? '';
          if (operand === 'null') return null;
          throw new Error(`rules:if: unsupported operand ${operand} in ${expr}`);
        };
        if (!m) {
          if (!/^\$[A-Za-z_][A-Za-z0-9_]*$/.test(term))
            throw new Error(`rules:if: unsupported expression ${term}`);
          return Boolean(env[term.slice(1)]);
        }
        const equal = value(m[1] as string) === value(m[3] as string);
        return m[2] === '==' ? equal : !equal;
      }),
  );
}

/** Whether GitLab adds the job to the pipeline: no rules, or a first matching `if` that is not `when: never`. */
export function jobInPipeline(job: YamlMap, env: Record<string, string>): boolean {
  if (job.rules === undefined) return true;
  if (!Array.isArray(job.rules)) throw new Error('rules: must be a list');
  for (const rule of job.rules) {
    if (!isMap(rule)) throw new Error('rules: entries must be mappings');
    for (const key of Object.keys(rule)) {
      if (key !== 'if' && key !== 'when') throw new Error(`rules: unsupported keyword ${key}`);
    }
    if (rule.if === undefined || evaluateIf(String(rule.if), env)) return rule.when !== 'never';
  }
  return false;
}
