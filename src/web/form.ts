// Form bodies of console POSTs: `application/x-www-form-urlencoded` only (what an HTML form
// sends without a file), at most `maxBytes`, read before anything acts on them.
import { CiportError } from '../errors/index.js';
import { type Req, readBody } from '../gateway/http.js';

export async function readForm(req: Req, maxBytes: number): Promise<URLSearchParams> {
  const type = String(req.headers['content-type'] ?? '')
    .split(';')[0]
    ?.trim()
    .toLowerCase();
  const body = await readBody(req, maxBytes);
  if (type !== 'application/x-www-form-urlencoded') {
    throw new CiportError(
      'CIPORT_E_USAGE',
      'the console accepts HTML forms (application/x-www-form-urlencoded) only',
    );
  }
  return new URLSearchParams(body.toString('utf8'));
}

/** One form field, trimmed; undefined when absent or empty; refused when repeated or too long. */
export function field(form: URLSearchParams, name: string, maxLength: number): string | undefined {
  const all = form.getAll(name);
  if (all.length > 1) throw new CiportError('CIPORT_E_USAGE', `"${name}" is given ${all.length} times`);
  const value = all[0]?.trim();
  if (value === undefined || value === '') return undefined;
  if (value.length > maxLength) {
    throw new CiportError('CIPORT_E_USAGE', `"${name}" is longer than ${maxLength} characters`);
  }
  return value;
}
