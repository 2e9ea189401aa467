// What the job log must never show of the exported variables. The client itself says which
// variables carry a one-time credential: with an env file it leaves them out of what it prints
// (docs/client.md, `ciport open`). On top of that, by name and by shape: the password of any
// URL with userinfo, decoded and as written, so a credential is masked wherever a tool echoes it.

/** Variables that hold a credential whenever they are set (DESIGN, "Contract"). */
const SECRET_NAMES = new Set([
  'PGPASSWORD',
  'REDISCLI_AUTH',
  'MYSQL_PWD',
  'AWS_CONTAINER_AUTHORIZATION_TOKEN',
]);

/**
 * @param all every variable the client exported (its env file)
 * @param printed what it was willing to print on stdout (`--json` `env`)
 * @returns the strings to mask, longest first
 */
export function secretValues(all: Record<string, string>, printed: Record<string, string>): string[] {
  const secrets = new Set<string>();
  for (const [name, value] of Object.entries(all)) {
    if (!Object.hasOwn(printed, name) || SECRET_NAMES.has(name)) secrets.add(value);
    for (const password of urlPasswords(value)) secrets.add(password);
  }
  secrets.delete('');
  return [...secrets].sort((a, b) => b.length - a.length);
}

function urlPasswords(value: string): string[] {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return [];
  }
  if (!url.password) return [];
  let decoded = url.password;
  try {
    decoded = decodeURIComponent(url.password);
  } catch {
    // A malformed escape: the password as written is all there is to mask.
  }
  return [url.password, decoded];
}
