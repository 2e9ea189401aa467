// Reading untyped claim values. Platforms disagree on types (GitLab sends ids as "42" and
// booleans as "true", GitHub likewise, generic issuers send real JSON types), so the
// principal is built through these lenient, total readers: a wrong type yields null.

export type Claims = Readonly<Record<string, unknown>>;

/** A non-empty string; numbers become their decimal text (ids); anything else null. */
export function text(value: unknown): string | null {
  if (typeof value === 'string') return value === '' ? null : value;
  if (typeof value === 'number' && Number.isFinite(value)) return String(value);
  if (typeof value === 'bigint') return value.toString();
  return null;
}

/** `true`/`"true"` and `false`/`"false"` (any case); anything else null. */
export function flag(value: unknown): boolean | null {
  if (typeof value === 'boolean') return value;
  if (typeof value === 'string') {
    const v = value.toLowerCase();
    if (v === 'true') return true;
    if (v === 'false') return false;
  }
  return null;
}

/** A list of strings from an array (non-strings dropped), a single string, or nothing. */
export function textList(value: unknown): string[] {
  if (typeof value === 'string') return value === '' ? [] : [value];
  if (Array.isArray(value)) return value.filter((v): v is string => typeof v === 'string' && v !== '');
  return [];
}

/** `{id, path}` or null when both are missing. */
export function idPath(id: unknown, path: unknown): { id: string | null; path: string | null } | null {
  const i = text(id);
  const p = text(path);
  return i === null && p === null ? null : { id: i, path: p };
}

/** The issuer URL without a trailing slash, or null when `iss` is not an absolute http(s) URL. */
export function issuerOrigin(iss: unknown): URL | null {
  const value = text(iss);
  if (value === null) return null;
  try {
    const url = new URL(value);
    return url.protocol === 'https:' || url.protocol === 'http:' ? url : null;
  } catch {
    return null;
  }
}
