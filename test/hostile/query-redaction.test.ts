// Hostile review (issue 11): a `query` event must never store a PostgreSQL password literal.
// docs/audit.md promises statements with PASSWORD '…' are redacted; these are all valid
// PostgreSQL spellings of the same ALTER ROLE (checked against the server on 127.0.0.1:5432),
// and a statement cut at MAX_STRING_LENGTH is scrubbed after the cut, so a literal that spans
// the cut loses its closing quote and escapes the pattern.
import { describe, expect, it } from 'vitest';
import { AuditEventTemplate, MAX_STRING_LENGTH } from '../../src/audit/chain.js';
import { prepareAuditEvent } from '../../src/audit/index.js';
import { QueryObserver } from '../../src/exits/postgres/relay.js';

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

// The gateway's path: a connection's template, one batch (src/gateway/tunnel.ts).
const template = new AuditEventTemplate('query', base as never, ['statements']);
const stored = (statement: string) =>
  prepareAuditEvent(template.input({ statements: [{ at: new Date().toISOString(), statement }] })).dataText;
const storedStatement = (statement: string) =>
  (JSON.parse(stored(statement)) as { statements: Array<{ statement: string }> }).statements[0]?.statement;

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

  it('does not store the part of a password literal that the relay cut at query_max_length (4096)', () => {
    // The real path: the relay's QueryObserver keeps the first 4096 bytes of a simple Query,
    // then the audit writer scrubs what is left — without the literal's closing quote.
    const texts: string[] = [];
    const observer = new QueryObserver({ onQuery: (e) => texts.push(e.text) });
    const sql = `select '${'x'.repeat(4000)}'; ALTER ROLE app PASSWORD 'hunter2secret_${'y'.repeat(100)}'`;
    const body = Buffer.concat([Buffer.from(sql), Buffer.from([0])]);
    const header = Buffer.alloc(5);
    header.write('Q', 0);
    header.writeInt32BE(body.length + 4, 1);
    observer.push(Buffer.concat([header, body]));
    expect(texts).toHaveLength(1);
    expect(stored(texts[0] as string).includes('hunter2secret'), 'password literal stored in clear').toBe(
      false,
    );
  });
});

describe('query audit redaction: what stays and what goes', () => {
  it.each([
    ["CREATE USER a IDENTIFIED WITH mysql_native_password BY 'hunter2secret'", true],
    ["ALTER USER a IDENTIFIED BY 'hunter2secret'", true],
    ["ALTER ROLE app PASSWORD E'hunter2\\'secret'", true],
    ["ALTER ROLE app PASSWORD -- set it\n 'hunter2secret'", true],
    ['ALTER ROLE app PASSWORD NULL', false],
    ['SELECT password FROM users WHERE id = 1', false],
  ])('%s', (statement, secret) => {
    const text = storedStatement(statement) as string;
    expect(text.includes('hunter2')).toBe(false);
    if (secret) expect(text).toContain("'***'");
    else expect(text).toBe(statement);
  });

  it("keeps what follows the literal: PASSWORD 'x' VALID UNTIL …", () => {
    const text = storedStatement("ALTER ROLE app PASSWORD 'hunter2secret' VALID UNTIL 'infinity'");
    expect(text).toBe("ALTER ROLE app PASSWORD '***' VALID UNTIL 'infinity'");
  });
});
