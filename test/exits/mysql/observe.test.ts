// The statement observer (observe.ts) fed protocol vectors in both directions: statements are
// reported when the server's reply begins (outcome ok/error), the rest when the connection ends
// (unanswered); each prepare gets its own PREPARE_OK; commands wait within bounds; the character
// set decides whether a statement is text or hex. The same against the real server:
// observe-live.test.ts.
import { describe, expect, it } from 'vitest';
import { CharsetScan, charsetStatement, collationClass } from '../../../src/exits/mysql/charset.js';
import { encodeConnectFrame } from '../../../src/exits/mysql/connect-wire.js';
import { type MysqlQueryEvent, MysqlQueryObserver } from '../../../src/exits/mysql/observe.js';
import { MysqlStreamObserver } from '../../../src/exits/mysql/observe-stream.js';
import { Cap, encodePacket } from '../../../src/exits/mysql/packets.js';
import { close, cmd, err, execute, feed, ok, prepare, prepared, query, reply, resultSet } from './vectors.js';

const DEPRECATE = Cap.PROTOCOL_41 | Cap.DEPRECATE_EOF;
const CLASSIC = Cap.PROTOCOL_41;

function observer(options: ConstructorParameters<typeof MysqlQueryObserver>[0] = {}) {
  const events: MysqlQueryEvent[] = [];
  const lost: string[] = [];
  const o = new MysqlQueryObserver({
    capabilities: DEPRECATE,
    onQuery: (e) => events.push(e),
    onLost: (why) => lost.push(why),
    ...options,
  });
  const texts = () => events.map((e) => `${e.command}:${e.text}:${e.outcome ?? '-'}`);
  return { o, events, lost, texts };
}

describe('statement observer: reports what the server answered', () => {
  it.each([1, 3, 7, 1024])(
    'queries, prepares, executes and USE, once answered (chunks of %i bytes)',
    (step) => {
      const { o, events, texts } = observer();
      const app = (b: Buffer) => feed((c) => o.app.push(c), b, step);
      const server = (b: Buffer) => feed((c) => o.server.push(c), b, step);
      app(query('SELECT 1'));
      expect(events).toEqual([]); // sent, not answered yet
      server(reply(resultSet(1, true)));
      app(prepare('SELECT * FROM t WHERE a = ?'));
      server(reply(prepared(7, 1, 1, true)));
      app(execute(7, 0, 'secret-parameter'));
      server(reply([ok()]));
      app(cmd(0x02, 'we`ird'));
      server(reply([err(1049, "Unknown database 'we`ird'")]));
      app(close(7));
      app(execute(7, 0, 'after close'));
      server(reply([err(1243, 'Unknown prepared statement handler')]));
      app(cmd(0x0e)); // COM_PING: answered, no event
      server(reply([ok()]));
      expect(texts()).toEqual([
        'query:SELECT 1:ok',
        'prepare:SELECT * FROM t WHERE a = ?:ok',
        'execute:SELECT * FROM t WHERE a = ?:ok',
        'init_db:USE `we``ird`:error',
      ]);
      expect(JSON.stringify(events)).not.toContain('secret');
      expect(o.waiting).toBe(0);
    },
  );

  it('commands pipelined behind one after which the server closed: unanswered, never "ok"', () => {
    const { o, texts } = observer();
    o.app.push(
      Buffer.concat([
        query('SELECT 1'),
        query('KILL CONNECTION CONNECTION_ID()'),
        query('DROP DATABASE production'),
        prepare('DELETE FROM t'),
      ]),
    );
    o.server.push(reply(resultSet(1, true)));
    o.server.push(reply([err(1927, 'Connection was killed')]));
    expect(texts()).toEqual(['query:SELECT 1:ok', 'query:KILL CONNECTION CONNECTION_ID():error']);
    o.finish();
    expect(texts().slice(2)).toEqual([
      'query:DROP DATABASE production:unanswered',
      'prepare:DELETE FROM t:unanswered',
    ]);
    // Nothing after the end.
    o.app.push(query('SELECT 2'));
    o.server.push(reply([ok()]));
    expect(texts()).toHaveLength(4);
  });

  it('refuses an empty packet where a command was due (the server would answer it: replies would shift)', () => {
    const { o, texts } = observer();
    o.app.push(Buffer.concat([query('SELECT 1'), encodePacket(Buffer.alloc(0), 0), query('DROP TABLE t')]));
    expect(o.violation).toMatch(/empty packet/);
    expect(o.violationAt).toBe(query('SELECT 1').length);
    o.server.push(reply(resultSet(1, true)));
    o.finish();
    expect(texts()).toEqual(['query:SELECT 1:ok']);
  });

  it("keeps each statement's send time", () => {
    const { o, events } = observer();
    const before = Date.now();
    o.app.push(query('SELECT SLEEP(1)'));
    const sent = Date.now();
    o.server.push(reply([ok()]));
    expect(events[0]?.at).toBeGreaterThanOrEqual(before);
    expect(events[0]?.at).toBeLessThanOrEqual(sent);
  });

  it.each([
    ['DEPRECATE_EOF', DEPRECATE],
    ['classic EOFs', CLASSIC],
  ])('pipelined prepares: each execute carries its own statement (%s)', (_name, capabilities) => {
    const d = capabilities === DEPRECATE;
    const { o, events, lost } = observer({ capabilities });
    o.app.push(Buffer.concat([prepare('SELECT 1'), prepare('SELECT ?, ?'), prepare('DELETE FROM victim')]));
    o.server.push(
      Buffer.concat([reply(prepared(1, 1, 0, d)), reply(prepared(2, 2, 2, d)), reply(prepared(3, 0, 0, d))]),
    );
    o.app.push(Buffer.concat([execute(3), execute(1), execute(2)]));
    o.server.push(Buffer.concat([reply([ok()]), reply(resultSet(1, d)), reply([err()])]));
    expect(lost).toEqual([]);
    expect(events.filter((e) => e.command === 'execute').map((e) => `${e.text}:${e.outcome}`)).toEqual([
      'DELETE FROM victim:ok',
      'SELECT 1:ok',
      'SELECT ?, ?:error',
    ]);
  });

  it("a failed prepare maps nothing; MariaDB's statement id -1 is the last one prepared", () => {
    const { o, texts } = observer();
    o.app.push(prepare('SELEC oops'));
    o.server.push(reply([err()]));
    o.app.push(Buffer.concat([prepare('SELECT 2'), execute(0xffffffff), execute(1)]));
    o.server.push(
      Buffer.concat([reply(prepared(1, 1, 0, true)), reply(resultSet(1, true)), reply(resultSet(1, true))]),
    );
    expect(texts()).toEqual([
      'prepare:SELEC oops:error',
      'prepare:SELECT 2:ok',
      'execute:SELECT 2:ok',
      'execute:SELECT 2:ok',
    ]);
  });

  it('COM_STMT_CLOSE (no reply) takes effect in order: an execute sent before it is still reported', () => {
    const { o, texts } = observer();
    o.app.push(prepare('SELECT 5'));
    o.server.push(reply(prepared(5, 1, 0, true)));
    o.app.push(Buffer.concat([execute(5), close(5), execute(5)]));
    o.server.push(
      Buffer.concat([reply(resultSet(1, true)), reply([err(1243, 'Unknown prepared statement')])]),
    );
    expect(texts()).toEqual(['prepare:SELECT 5:ok', 'execute:SELECT 5:ok']);
  });

  it('bounds remembered statements', () => {
    const { o, events } = observer({ maxStatements: 2 });
    for (let i = 1; i <= 3; i++) {
      o.app.push(prepare(`SELECT ${i}`));
      o.server.push(reply(prepared(i, 1, 0, true)));
    }
    for (let i = 1; i <= 3; i++) {
      o.app.push(execute(i));
      o.server.push(reply([ok()]));
    }
    expect(events.filter((e) => e.command === 'execute').map((e) => e.text)).toEqual([
      'SELECT 2',
      'SELECT 3',
    ]);
  });

  it('asks the relay to wait while too many commands wait for their reply, and lets it go on as they are answered', async () => {
    const { o } = observer({ maxWaiting: 4, maxWaitingBytes: 1 << 20 });
    for (let i = 0; i < 4; i++) o.app.push(query(`SELECT ${i}`));
    expect(o.room()).toBeUndefined();
    o.app.push(query('SELECT 4'));
    const wait = o.room();
    expect(wait).toBeInstanceOf(Promise);
    let resumed = false;
    void wait?.then(() => {
      resumed = true;
    });
    o.server.push(Buffer.concat([reply([ok()]), reply([ok()])]));
    await Promise.resolve();
    expect(resumed).toBe(false); // 3 waiting: more than half
    o.server.push(reply([ok()]));
    await Promise.resolve();
    expect(resumed).toBe(true);
  });

  it('commands without a reply (COM_STMT_CLOSE) never make the relay wait when nothing is answered ahead', () => {
    const { o } = observer({ maxWaiting: 4 });
    for (let i = 0; i < 20; i++) o.app.push(close(i));
    expect(o.waiting).toBe(0);
    expect(o.room()).toBeUndefined();
  });

  it('statement bytes waiting count too', () => {
    const { o } = observer({ maxWaitingBytes: 100 });
    o.app.push(query('x'.repeat(200)));
    expect(o.room()).toBeUndefined(); // one command is always let through
    o.app.push(query('SELECT 1'));
    expect(o.room()).toBeInstanceOf(Promise);
  });

  it('replies it cannot follow: the exit is told (it closes the connection); what waited is unanswered', () => {
    const { o, lost, texts } = observer();
    o.app.push(Buffer.concat([query('SELECT 1'), query('SELECT 2')]));
    o.server.push(encodePacket(ok(), 7));
    expect(lost[0]).toMatch(/sequence id 7 where 1 was due/);
    o.finish();
    expect(texts()).toEqual(['query:SELECT 1:unanswered', 'query:SELECT 2:unanswered']);
  });

  it('a passive observer that loses track reports what waited as unanswered, then commands as sent', () => {
    const { o, texts } = observer({ onLost: undefined });
    o.app.push(query('SELECT 1'));
    o.server.push(encodePacket(ok(), 7));
    o.app.push(query('SELECT 2'));
    expect(texts()).toEqual(['query:SELECT 1:unanswered', 'query:SELECT 2:-']);
  });

  it('without capabilities (the local listener): no reply tracking, guards only', () => {
    const o = new MysqlQueryObserver();
    o.app.push(query("SET NAMES 'big5'"));
    expect(o.violationError?.code).toBe('CIPORT_E_MYSQL_CHARSET');
    expect(o.room()).toBeUndefined();
  });
});

describe('statement observer: character sets', () => {
  // `SELECT 'a<BF>\'; DROP TABLE t; SELECT 1 #'`: one literal in UTF-8, three statements in GBK.
  const smuggled = Buffer.concat([
    Buffer.from("SELECT 'a"),
    Buffer.from([0xbf]),
    Buffer.from("\\'; DROP TABLE t; SELECT 1 #'"),
  ]);
  const hex = smuggled.toString('hex');

  it.each([
    'SET NAMES gbk',
    "set names 'big5' collate 'big5_bin';",
    '/*!40101 SET NAMES sjis */',
    'SET CHARACTER SET cp932',
    'SET CHARSET gb18030',
    'SET character_set_client = gbk',
    'SET @@session.character_set_client := 28',
    'SET GLOBAL character_set_client = "ujis"',
    'SET `character_set_client` = euckr',
  ])('refuses %s before it reaches the server: CIPORT_E_MYSQL_CHARSET, ERR 1115', (sql) => {
    for (const packet of [query(sql), prepare(sql)]) {
      const { o, events } = observer();
      o.app.push(Buffer.concat([query('SELECT 1'), packet, query('SELECT 2')]));
      expect(o.violationError?.code).toBe('CIPORT_E_MYSQL_CHARSET');
      expect(o.violationError?.errno).toBe(1115);
      expect(o.violationAt).toBe(query('SELECT 1').length);
      o.server.push(reply([ok()]));
      o.finish();
      expect(events.map((e) => e.text)).toEqual(['SELECT 1']);
    }
  });

  it('a SET NAMES longer than every observer keeps is not refused but leaves the set unverified', () => {
    for (const maxQueryLength of [32, 4096]) {
      const { o, events } = observer({ maxQueryLength });
      o.app.push(Buffer.concat([query(`SET NAMES gbk${' '.repeat(200)}`), query(smuggled)]));
      expect(o.violation).toBeUndefined();
      o.server.push(Buffer.concat([reply([ok()]), reply([ok()])]));
      expect(events[1]?.encoding).toBe('hex');
    }
  });

  it('a UTF-8 connection reports non-ASCII text as text', () => {
    const { o, events } = observer({ collation: 45 });
    o.app.push(query("SELECT 'café'"));
    o.server.push(reply(resultSet(1, true)));
    expect(events[0]).toMatchObject({ text: "SELECT 'café'", outcome: 'ok' });
    expect(events[0]?.encoding).toBeUndefined();
  });

  it('after a change it cannot read (dynamic SQL), non-ASCII statements are hex until SET NAMES utf8mb4 is answered', () => {
    const { o, events } = observer();
    const steps: [Buffer, Buffer][] = [
      [query("SET @s = CONCAT('SET NAM', 'ES gbk')"), reply([ok()])], // taints: "NAM" is not NAMES…
      [query('PREPARE s FROM @s'), reply([ok()])],
      [query('EXECUTE s'), reply([ok()])], // …but EXECUTE does
      [query(smuggled), reply([ok()])],
      [query('SELECT 1'), reply(resultSet(1, true))], // ASCII: the same in every set
      [query('SET NAMES utf8mb4'), reply([ok()])],
      [query("SELECT 'café'"), reply(resultSet(1, true))],
    ];
    for (const [a, s] of steps) {
      o.app.push(a);
      o.server.push(s);
    }
    expect(events.map((e) => [e.text, e.encoding])).toEqual([
      ["SET @s = CONCAT('SET NAM', 'ES gbk')", undefined],
      ['PREPARE s FROM @s', undefined],
      ['EXECUTE s', undefined],
      [hex, 'hex'],
      ['SELECT 1', undefined],
      ['SET NAMES utf8mb4', undefined],
      ["SELECT 'café'", undefined],
    ]);
  });

  it('a statement that changes the set and uses it at once (multi-statement) is hex itself', () => {
    const { o, events } = observer();
    const sql = Buffer.concat([Buffer.from('SET character_set_client = @x; '), smuggled]);
    o.app.push(query(sql));
    o.server.push(reply([ok()]));
    expect(events[0]).toMatchObject({ text: sql.toString('hex'), encoding: 'hex' });
  });

  it('a word beyond the kept text still counts, and a folded spelling of the variable too', () => {
    for (const sql of [
      `SELECT '${'x'.repeat(100)}'; SET NAMES gbk`,
      'SET charácter_set_client = 28',
      'SET character_set_clıent = 28',
    ]) {
      const { o, events } = observer({ maxQueryLength: 32 });
      o.app.push(Buffer.concat([query(sql), query(smuggled)]));
      o.server.push(Buffer.concat([reply([ok()]), reply([ok()])]));
      expect(events[1]?.encoding, sql).toBe('hex');
    }
  });

  it('a SET NAMES inside a versioned comment, or not answered OK, does not verify', () => {
    for (const [sql, answer] of [
      ['/*!99999 SET NAMES utf8mb4 */', ok()],
      ['SET NAMES utf8mb4', err()],
    ] as const) {
      const { o, events } = observer({ collation: 8 });
      o.app.push(Buffer.concat([query(sql), query(smuggled)]));
      o.server.push(Buffer.concat([reply([answer]), reply([ok()])]));
      expect(events[1]?.encoding, sql).toBe('hex');
    }
  });

  it('a single-byte set (latin1, the mariadb CLI in a C locale) is allowed; its non-ASCII statements are hex', () => {
    const { o, events } = observer({ collation: 8 });
    o.app.push(query(Buffer.from("SELECT 'caf\xe9'", 'latin1')));
    o.app.push(query('SET NAMES latin2'));
    o.app.push(query('SELECT 1'));
    o.server.push(Buffer.concat([reply([ok()]), reply([ok()]), reply([ok()])]));
    expect(o.violation).toBeUndefined();
    expect(events.map((e) => [e.text, e.encoding])).toEqual([
      [Buffer.from("SELECT 'caf\xe9'", 'latin1').toString('hex'), 'hex'],
      ['SET NAMES latin2', undefined],
      ['SELECT 1', undefined],
    ]);
  });

  it('scrubs password literals before writing hex (the audit cannot read hex)', () => {
    const { o, events } = observer({ collation: 8 });
    o.app.push(query(Buffer.from("CREATE USER 'j\xe9' IDENTIFIED BY 'hunter2'", 'latin1')));
    o.server.push(reply([ok()]));
    expect(Buffer.from(events[0]?.text ?? '', 'hex').toString('latin1')).toBe(
      "CREATE USER 'j\xe9' IDENTIFIED BY '***'",
    );
  });

  it('executing a statement prepared with a taint word, or one it does not know, unverifies', () => {
    for (const prep of ['SET NAMES ?', undefined]) {
      const { o, events } = observer();
      if (prep) {
        o.app.push(prepare(prep));
        o.server.push(reply(prepared(1, 0, 1, true)));
      }
      o.app.push(Buffer.concat([execute(1), query(smuggled)]));
      o.server.push(Buffer.concat([reply([ok()]), reply([ok()])]));
      expect(events.at(-1)?.encoding, String(prep)).toBe('hex');
    }
  });

  it('COM_RESET_CONNECTION unverifies (MySQL resets to the server default)', () => {
    const { o, events } = observer();
    o.app.push(Buffer.concat([cmd(0x1f), query(smuggled)]));
    o.server.push(Buffer.concat([reply([ok()]), reply([ok()])]));
    expect(events.at(-1)?.encoding).toBe('hex');
  });
});

describe('charset.ts', () => {
  it('classifies handshake collations', () => {
    expect([45, 46, 224, 255, 33, 192, 76, 11, 63].map(collationClass)).toEqual(Array(9).fill('utf8'));
    expect([8, 5, 9, 26, 51, 94].map(collationClass)).toEqual(Array(6).fill('single-byte'));
    // gbk, big5, sjis, cp932, gb18030 (MySQL), ucs2, utf16, swe7
    expect([28, 1, 13, 95, 248, 35, 54, 10].map(collationClass)).toEqual(Array(8).fill('refused'));
  });

  it('reads statements that set the client character set, and nothing else', () => {
    const set = (s: string) => charsetStatement(Buffer.from(s));
    expect(set('SET NAMES utf8mb4')).toEqual({ value: 'utf8mb4', verdict: 'utf8', session: true });
    expect(set("/*!40101 SET NAMES 'latin1' */;")).toEqual({
      value: 'latin1',
      verdict: 'single-byte',
      session: false,
    });
    expect(set('SET NAMES DEFAULT')).toMatchObject({ verdict: 'unknown' });
    expect(set("SET NAMES 'default'")).toMatchObject({ verdict: 'refused' });
    expect(set('SET GLOBAL character_set_client = utf8mb4')).toMatchObject({
      verdict: 'utf8',
      session: false,
    });
    expect(set('SET character_set_client = 255')).toMatchObject({ verdict: 'utf8', session: true });
    for (const other of [
      'SET NAMES utf8mb4; SELECT 1',
      'SET /* x */ NAMES gbk',
      'SET character_set_client = @old',
      'UPDATE t SET names = 1',
      "SET NAMES 'ut\u00e9'",
    ]) {
      expect(set(other), other).toBeUndefined();
    }
  });

  it('the taint scan: words anywhere (strings, comments), case-insensitive, non-ASCII letters as wildcards', () => {
    const scan = (s: string | Buffer, step = 1) => {
      const c = new CharsetScan();
      const b = Buffer.from(s);
      for (let i = 0; i < b.length; i += step) c.push(b, i, Math.min(b.length, i + step));
      c.end();
      return [c.taint, c.nonAscii];
    };
    expect(scan('SELECT 1')).toEqual([false, false]);
    expect(scan("PREPARE s FROM 'SET NAMES gbk'")).toEqual([true, false]);
    expect(scan('/*!40101 SET NAMES gbk */')).toEqual([true, false]);
    expect(scan('SeT cHaRsEt x')).toEqual([true, false]);
    expect(scan('EXECUTE s')).toEqual([true, false]);
    expect(scan('ALTER TABLE t CONVERT TO CHARACTER SET utf8mb4')).toEqual([true, false]);
    expect(scan('SET @@chäracter_set_client = 28')).toEqual([true, true]);
    // Words that only contain one: no taint.
    expect(scan('SELECT surnames, charset_id, executed FROM t')).toEqual([false, false]);
    expect(scan("SELECT 'café'")).toEqual([false, true]);
  });
});

describe('stream observer (gateway in front of an agent)', () => {
  const frame = (collation = 45) =>
    encodeConnectFrame({
      kind: 'connect',
      user: 'app',
      collation,
      capabilities: DEPRECATE,
      maxPacketSize: 0,
      attributes: {},
    });

  it.each([1, 5, 4096])(
    'skips the frame and the handshake answer, reports statements as answered (chunks of %i)',
    (step) => {
      const events: MysqlQueryEvent[] = [];
      const o = new MysqlStreamObserver({ onQuery: (e) => events.push(e) });
      const appBytes = Buffer.concat([frame(), query('SELECT 1'), prepare('SELECT ?')]);
      feed((c) => o.pushFromApp(c), appBytes, step);
      // The exit's OK (the handshake's answer), then the replies.
      const exitBytes = Buffer.concat([
        encodePacket(ok(), 0),
        reply(resultSet(1, true)),
        reply(prepared(9, 1, 1, true)),
      ]);
      feed((c) => o.pushFromExit(c), exitBytes, step);
      feed((c) => o.pushFromApp(c), Buffer.concat([execute(9), query('SELECT 3')]), step);
      feed((c) => o.pushFromExit(c), reply([ok()]), step);
      expect(o.state).toBe('connect');
      expect(events.map((e) => [e.command, e.text, e.outcome])).toEqual([
        ['query', 'SELECT 1', 'ok'],
        ['prepare', 'SELECT ?', 'ok'],
        ['execute', 'SELECT ?', 'ok'],
      ]);
      expect(o.room()).toBeUndefined();
      o.end();
      expect(events.at(-1)).toMatchObject({ text: 'SELECT 3', outcome: 'unanswered' });
    },
  );

  it("after a refusal, the exit's own ERR is no reply to the commands before it", () => {
    const events: MysqlQueryEvent[] = [];
    const o = new MysqlStreamObserver({ onQuery: (e) => events.push(e) });
    o.pushFromApp(Buffer.concat([frame(), query('SELECT SLEEP(5)'), query('SET NAMES gbk')]));
    // The exit refused SET NAMES: its ERR (sequence id 1), then the stream ends.
    o.pushFromExit(Buffer.concat([encodePacket(ok(), 0), reply([err(1115, 'CIPORT_E_MYSQL_CHARSET: …')])]));
    o.end();
    expect(events.map((e) => [e.text, e.outcome])).toEqual([['SELECT SLEEP(5)', 'unanswered']]);
  });

  it("takes the connection's capabilities and collation from the frame", () => {
    const events: MysqlQueryEvent[] = [];
    const o = new MysqlStreamObserver({ onQuery: (e) => events.push(e) });
    o.pushFromApp(Buffer.concat([frame(28), query(Buffer.from("SELECT 'a\xbf\\'", 'latin1'))]));
    o.pushFromExit(Buffer.concat([encodePacket(ok(), 0), reply([ok()])]));
    expect(events[0]?.encoding).toBe('hex');
  });

  it('stops on a bad frame', () => {
    const events: MysqlQueryEvent[] = [];
    const o = new MysqlStreamObserver({ onQuery: (e) => events.push(e) });
    o.pushFromApp(Buffer.concat([Buffer.from('CIMY\x01\x00\x00\x00\x02{}'), query('SELECT 1')]));
    expect(o.state).toBe('invalid');
    o.end();
    expect(events).toEqual([]);
  });
});
