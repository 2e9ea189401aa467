// Canonical JSON: the one byte representation of a value that the audit hash chain signs.
//
// Rules (RFC 8785 "JCS" for the values ciport writes): object keys sorted by UTF-16 code units
// (JavaScript's default sort), no whitespace, strings and numbers serialised as JSON.stringify
// does, `undefined` object members omitted. Anything JSON cannot represent faithfully (NaN,
// Infinity, bigint, functions, symbols, class instances such as Date or Map, cycles, undefined
// inside arrays) is refused rather than silently coerced, so that the hash a verifier recomputes
// from a stored or exported event is always the hash that was written.

export type JsonPrimitive = string | number | boolean | null;
export type JsonValue = JsonPrimitive | JsonValue[] | JsonObject;
export interface JsonObject {
  [key: string]: JsonValue;
}

export class CanonicalJsonError extends TypeError {
  override get name(): string {
    return 'CanonicalJsonError';
  }
}

export function canonicalJson(value: unknown): string {
  return write(value, '$', new Set());
}

function write(value: unknown, path: string, ancestors: Set<object>): string {
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value);
    case 'number':
      if (!Number.isFinite(value))
        throw new CanonicalJsonError(`${path}: ${value} is not representable in JSON`);
      return JSON.stringify(value);
    case 'boolean':
      return value ? 'true' : 'false';
    case 'object': {
      if (value === null) return 'null';
      if (ancestors.has(value)) throw new CanonicalJsonError(`${path}: cyclic structure`);
      ancestors.add(value);
      try {
        if (Array.isArray(value)) {
          const items = value.map((item, i) => {
            if (item === undefined) throw new CanonicalJsonError(`${path}[${i}]: undefined inside an array`);
            return write(item, `${path}[${i}]`, ancestors);
          });
          return `[${items.join(',')}]`;
        }
        const proto = Object.getPrototypeOf(value);
        if (proto !== Object.prototype && proto !== null) {
          const kind = (value as object).constructor?.name ?? 'object';
          throw new CanonicalJsonError(`${path}: ${kind} is not a plain object`);
        }
        const record = value as Record<string, unknown>;
        const members: string[] = [];
        for (const key of Object.keys(record).sort()) {
          const member = record[key];
          if (member === undefined) continue;
          members.push(`${JSON.stringify(key)}:${write(member, `${path}.${key}`, ancestors)}`);
        }
        return `{${members.join(',')}}`;
      } finally {
        ancestors.delete(value);
      }
    }
    default:
      throw new CanonicalJsonError(`${path}: ${typeof value} is not representable in JSON`);
  }
}
