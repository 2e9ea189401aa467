import { readFileSync } from 'node:fs';
import { LineCounter, parseDocument } from 'yaml';
import type { z } from 'zod';
import { ConfigError } from '../errors/index.js';
import { type GatewayConfig, gatewayConfigSchema } from './schema.js';
import { Secret } from './secret.js';

export interface LoadOptions {
  /** Resolve `{env}`/`{file}` secrets now (the gateway does; offline policy tools need not). */
  resolveSecrets?: boolean;
  env?: NodeJS.ProcessEnv;
}

export type Path = ReadonlyArray<string | number>;

/** `issuers[1].audience` */
export function formatPath(path: Path): string {
  let out = '';
  for (const part of path) out += typeof part === 'number' ? `[${part}]` : out ? `.${part}` : part;
  return out || '(root)';
}

/** A configuration file's text, or CIPORT_E_CONFIG_UNREADABLE naming it. */
export function readConfigFile(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code ?? 'unreadable';
    throw new ConfigError('CIPORT_E_CONFIG_UNREADABLE', `${file}: cannot read (${reason})`, { cause: err });
  }
}

export function loadGatewayConfig(file: string, options: LoadOptions = {}): Readonly<GatewayConfig> {
  return parseGatewayConfig(readConfigFile(file), file, options);
}

/** Parse, validate, resolve secrets and freeze. `file` only names the source in messages. */
export function parseGatewayConfig(
  text: string,
  file: string,
  options: LoadOptions = {},
): Readonly<GatewayConfig> {
  const { data, locate } = parseYaml(text, file);
  const cfg = validate(gatewayConfigSchema, data, file, locate);
  if (options.resolveSecrets ?? true) {
    // Every missing secret is named at once: an operator fixes them in one round, not one per run.
    const missing: string[] = [];
    for (const [path, secret] of secretsIn(cfg)) {
      try {
        secret.resolve(options.env ?? process.env, `${file}:${locate(path)}: ${formatPath(path)}`);
      } catch (err) {
        if (!(err instanceof ConfigError)) throw err;
        missing.push(err.message);
      }
    }
    if (missing.length > 0) {
      throw new ConfigError('CIPORT_E_SECRET_UNAVAILABLE', missing.join('\n'), {
        details: { missing: missing.length },
      });
    }
  }
  return deepFreeze(cfg);
}

type Locate = (path: Path) => number;

/** YAML text to plain data, plus a function from a data path to its 1-based line. */
export function parseYaml(text: string, file: string): { data: unknown; locate: Locate } {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const first = doc.errors[0];
  if (first) {
    // prettyErrors: false leaves linePos unset: the line comes from the error's offset.
    const line = lineCounter.linePos(first.pos[0]).line;
    throw new ConfigError(
      'CIPORT_E_CONFIG_INVALID',
      `${file}:${line}: YAML: ${first.message.split('\n')[0]}`,
    );
  }
  const locate: Locate = (path) => {
    // Walk down as far as the document goes, so an error about a missing key points at its parent.
    for (let n = path.length; n >= 0; n--) {
      const node = doc.getIn(path.slice(0, n), true) as { range?: [number, number, number] } | undefined;
      if (node && typeof node === 'object' && node.range) return lineCounter.linePos(node.range[0]).line;
      if (n === 0) {
        const contents = doc.contents as { range?: [number, number, number] } | null;
        if (contents?.range) return lineCounter.linePos(contents.range[0]).line;
      }
    }
    return 1;
  };
  const data = doc.toJS({ maxAliasCount: 100 }) ?? {};
  return { data, locate };
}

export function validate<S extends z.ZodType>(
  schema: S,
  data: unknown,
  file: string,
  locate: Locate,
): z.output<S> {
  const result = schema.safeParse(data);
  if (result.success) return result.data;
  const issues = result.error.issues.map((issue) => {
    const path = issue.path.filter((p): p is string | number => typeof p !== 'symbol');
    // An unknown key is best pointed at where it is written, not at the object holding it.
    const line =
      issue.code === 'unrecognized_keys' && issue.keys[0] ? locate([...path, issue.keys[0]]) : locate(path);
    const where = `${file}:${line}: ${formatPath(path)}`;
    return { path: formatPath(path), line, message: `${where}: ${describeIssue(issue)}` };
  });
  throw new ConfigError('CIPORT_E_CONFIG_INVALID', issues.map((i) => i.message).join('\n'), {
    details: { issues },
  });
}

function describeIssue(issue: z.core.$ZodIssue): string {
  if (issue.code === 'unrecognized_keys') {
    // A target's objects say which protocol's they are and list their keys (config/targets/member.ts).
    if (issue.message.startsWith('unknown key')) return issue.message;
    return `unknown key${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `"${k}"`).join(', ')}`;
  }
  if (issue.code === 'invalid_union') {
    // The deepest message of the closest alternative is more useful than "Invalid input".
    const alternatives = issue.errors.map((e) => e[0]).filter((e) => e !== undefined);
    const inner = alternatives.find((e) => e.code !== 'invalid_type') ?? alternatives[0];
    if (inner) return describeIssue(inner);
  }
  return issue.message;
}

/** Every Secret in the parsed config with its path, in document order. */
export function* secretsIn(value: unknown, path: Array<string | number> = []): Generator<[Path, Secret]> {
  if (value instanceof Secret) {
    yield [path, value];
  } else if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) yield* secretsIn(value[i], [...path, i]);
  } else if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) yield* secretsIn(v, [...path, k]);
  }
}

export function deepFreeze<T>(value: T): Readonly<T> {
  if (value && typeof value === 'object' && !(value instanceof Secret) && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}
