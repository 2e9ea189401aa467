// The one place text from outside (claims, refs, project paths, rule names, gateway messages)
// is made safe for a terminal or a spreadsheet. A job controls its token's claims, so a ref or
// a project path may carry ESC sequences (rewrite the screen, set the window title, fake a
// line of output), bidi overrides (show text in another order than it is stored) or a
// formula (`=HYPERLINK(…)`, run by a spreadsheet opening an export).

/** C0 controls, DEL, C1 controls, bidi marks/embeddings/overrides/isolates, line separators. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

const NAMED: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

function escapeChar(c: string): string {
  const named = NAMED[c];
  if (named) return named;
  const code = c.charCodeAt(0);
  return code < 0x100
    ? `\\x${code.toString(16).padStart(2, '0')}`
    : `\\u${code.toString(16).padStart(4, '0')}`;
}

/**
 * `text` with every control character shown as an escape (`\x1b`, `\n`, `\u202e`), for one
 * line of a table or a message. Printable text, including non-ASCII letters, is unchanged.
 */
export function printable(text: string): string {
  return text.replace(UNPRINTABLE, escapeChar);
}

/** Like `printable`, but keeps the line breaks of text that is meant to span lines. */
export function printableLines(text: string): string {
  return text.split('\n').map(printable).join('\n');
}

/**
 * A spreadsheet treats a cell starting with `=`, `+`, `-`, `@`, tab or CR as a formula (OWASP
 * "CSV injection"). Such a value gets a leading `'`, which spreadsheets show as text. So does
 * each such character right after a `;`: a spreadsheet in a locale whose list separator is `;`
 * (de, fr, es, it, nl…) splits the line there, quotes or not, and the rest would start a cell.
 */
export function defuseFormula(text: string): string {
  return text.replace(/(^|;)([=+\-@\t\r])/g, "$1'$2");
}

/**
 * Serialised JSON with every DEL, C1 control, line/paragraph separator and bidi control as a
 * `\uXXXX` escape: the same JSON value, but nothing in it can drive a terminal or reorder what a
 * reader sees (JSON.stringify escapes only C0). Such characters occur only inside strings.
 */
export function escapeJsonControls(json: string): string {
  return json.replace(
    /[\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}
