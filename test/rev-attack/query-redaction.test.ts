// Hostile review (issue 11): a `query` event must never store a PostgreSQL password literal.
// docs/audit.md promises statements with PASSWORD '…' are redacted; these are all valid
// PostgreSQL spellings of the same ALTER ROLE (checked against the server on 127.0.0.1:5432),
// and a statement cut at MAX_STRING_LENGTH is scrubbed after the cut, so a literal that spans
// the cut loses its closing quote and escapes the pattern.
import { describe, expect, it } from 'vitest';
import { MAX_STRING_LENGTH } from '../../src/audit/chain.js';
import { auditEvent, prepareAuditEvent } from '../../src/audit/index.js';

const base = {
  session: 'ses_a',
  connection: 'con_a',
  principal: {
    issuer: 'gl',
    subject: 's',
    project: 'p',
    ref: 'main',
    pipeline: '1',
    job: '2',
    job_url: null,
  },
  target: 'db',
  rule: 'r',
  exit: 'gateway',
};

const stored = (statement: string) =>
  prepareAuditEvent(auditEvent('query', { ...base, statement } as never)).dataText;

describe('query audit redaction (hostile review)', () => {
  it.each([
    ["ALTER ROLE app PASSWORD 'hunter2secret'"], // the documented case: holds
    ["ALTER ROLE app PASSWORD'hunter2secret'"],
    ["ALTER ROLE app PASSWORD E'hunter2secret'"],
    ['ALTER ROLE app PASSWORD $$hunter2secret$$'],
    ['ALTER ROLE app PASSWORD $pw$hunter2secret$pw$'],
    ["ALTER ROLE app PASSWORD U&'hunter2secret'"],
    ["ALTER ROLE app PASSWORD/**/'hunter2secret'"],
  ])('does not store the password of %s', (statement) => {
    expect(stored(statement).includes('hunter2secret'), 'password literal stored in clear').toBe(false);
  });

  it('does not store the part of a password literal that precedes the cut', () => {
    const pad = `select 1 /* ${'x'.repeat(MAX_STRING_LENGTH - 60)} */; `;
    const statement = `${pad}ALTER ROLE app PASSWORD 'hunter2secret_${'y'.repeat(200)}'`;
    expect(statement.length).toBeGreaterThan(MAX_STRING_LENGTH);
    expect(stored(statement).includes('hunter2secret'), 'password literal stored in clear').toBe(false);
  });
});
