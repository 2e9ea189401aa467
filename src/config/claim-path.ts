// Claim paths: how a rule's `when:` key names a claim, possibly nested (Keycloak's
// `realm_access.roles`). The syntax is jq's, without the leading dot:
//
//   path    = segment *("." segment)
//   segment = bare / quoted
//   bare    = 1*(any character but "." and '"')        realm_access, roles, urn:zitadel:iam:org:id
//   quoted  = '"' 1*(char / '\"' / '\\') '"'            "my.client", "https://acme.example/roles"
//
// `resource_access."ciport.prod".roles` is a valid plain YAML key; a path that starts with a
// quote must itself be quoted in YAML: `'"https://acme.example/roles"': admin`.
// A bare segment containing "://" is refused: it is a namespaced claim name (Auth0, Okta custom
// claims) whose dots were meant literally, and splitting it would silently match nothing.
// Pure syntax; resolution against claims is the policy's (src/policy/claim-path.ts).

/** The segments of `text`, or a message saying what is wrong with it. */
export function parseClaimPath(text: string): { segments: string[] } | { error: string } {
  const segments: string[] = [];
  let i = 0;
  while (true) {
    if (text[i] === '"') {
      let segment = '';
      i++;
      while (i < text.length && text[i] !== '"') {
        if (text[i] === '\\') {
          const next = text[i + 1];
          if (next !== '"' && next !== '\\')
            return { error: `claim path ${JSON.stringify(text)}: only \\" and \\\\ may follow a backslash` };
          segment += next;
          i += 2;
        } else segment += text[i++];
      }
      if (i >= text.length) return { error: `claim path ${JSON.stringify(text)}: unterminated quoted name` };
      i++;
      if (segment === '') return { error: `claim path ${JSON.stringify(text)}: empty quoted name` };
      segments.push(segment);
    } else {
      let end = i;
      while (end < text.length && text[end] !== '.' && text[end] !== '"') end++;
      const segment = text.slice(i, end);
      if (segment === '')
        return { error: `claim path ${JSON.stringify(text)}: empty name (two dots, or a dot at either end)` };
      if (text[end] === '"')
        return { error: `claim path ${JSON.stringify(text)}: a quote may only start a name` };
      if (segment.includes('://')) {
        return {
          error: `claim path ${JSON.stringify(text)}: a claim name containing dots must be quoted, e.g. ${JSON.stringify(quoteIfNeeded(text))}`,
        };
      }
      segments.push(segment);
      i = end;
    }
    if (i === text.length) return { segments };
    if (text[i] !== '.')
      return { error: `claim path ${JSON.stringify(text)}: expected "." after a quoted name` };
    i++;
    if (i === text.length) return { error: `claim path ${JSON.stringify(text)}: ends with a dot` };
  }
}

/** A segment as written in a path: bare when it can be, quoted otherwise. */
function quoteIfNeeded(segment: string): string {
  return segment !== '' && !/[."\\]/.test(segment) && !segment.includes('://')
    ? segment
    : `"${segment.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
}

/** The canonical text of a path: `fork` and `"fork"` are both `fork`. */
export function formatClaimPath(segments: readonly string[]): string {
  return segments.map(quoteIfNeeded).join('.');
}
