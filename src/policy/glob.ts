// Glob patterns for claim values. Anchored at both ends. Claim paths use `/` (GitLab groups,
// GitHub `owner/repo`) and `:` (the `sub` claim: `project_path:g/p:ref_type:branch:ref:main`)
// as separators, so the single-segment wildcards stop at both:
//   `*`   any run of characters other than `/` and `:` (possibly empty)
//   `**`  any run of characters at all (crosses `/` and `:`); three or more stars act as `**`
//   `?`   exactly one character other than `/` and `:`
// Every other character is literal: there are no classes, braces or escapes, and regular
// expression metacharacters (`.`, `+`, `(`, `\`, …) match themselves.

// The ECMAScript SyntaxCharacters: the only ones that may (and must) be escaped in `u` mode.
const META = /[\\^$.*+?()[\]{}|]/g;

/** The regular expression source (anchored) that a glob pattern compiles to. */
export function globSource(pattern: string): string {
  let out = '';
  let i = 0;
  const chars = Array.from(pattern); // code points, so `?` next to an emoji stays one character
  while (i < chars.length) {
    const c = chars[i] as string;
    if (c === '*') {
      let run = 0;
      while (chars[i] === '*') {
        run++;
        i++;
      }
      out += run >= 2 ? '[\\s\\S]*' : '[^/:]*';
      continue;
    }
    out += c === '?' ? '[^/:]' : c.replace(META, '\\$&');
    i++;
  }
  return `^${out}$`;
}

/** Compile a glob pattern. `u` mode: `?` and `*` count code points, not UTF-16 halves. */
export function globToRegExp(pattern: string, ignoreCase = false): RegExp {
  return new RegExp(globSource(pattern), ignoreCase ? 'iu' : 'u');
}

/** True when the pattern contains `**`, i.e. it reaches across `/` and `:`. */
export function globCrossesSeparators(pattern: string): boolean {
  return pattern.includes('**');
}
