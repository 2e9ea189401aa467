// For streams an agent serves, the gateway is not the exit: it audits what it sees pass, with
// MysqlStreamObserver on both directions (observe-stream.ts). A job sends these bytes; the agent
// (an honest exit) relays them to MariaDB, which reads the wrapped-sequence packet as LOAD DATA
// file content (mysql-audit-forgery.test.ts shows the server's side). The gateway's audit must
// not record it as a statement.
import { describe, expect, it } from 'vitest';
import { encodeConnectFrame } from '../../src/exits/mysql/connect-wire.js';
import { LOCAL_CAPABILITIES } from '../../src/exits/mysql/frontend.js';
import type { MysqlQueryEvent } from '../../src/exits/mysql/observe.js';
import { MysqlStreamObserver } from '../../src/exits/mysql/observe-stream.js';
import { encodePacket } from '../../src/exits/mysql/packets.js';

const query = (sql: string) => encodePacket(Buffer.concat([Buffer.from([0x03]), Buffer.from(sql)]), 0);

describe('gateway observer of agent-served mysql streams', () => {
  it('does not report LOAD DATA LOCAL content as a statement when its sequence id wraps to 0', () => {
    const events: MysqlQueryEvent[] = [];
    const observer = new MysqlStreamObserver({ onQuery: (e) => events.push(e) });
    const frame = encodeConnectFrame({
      kind: 'connect',
      user: 'app',
      collation: 45,
      capabilities: LOCAL_CAPABILITIES,
      maxPacketSize: 1 << 24,
      attributes: {},
    });
    observer.pushFromApp(frame);
    // The exit's OK, then the job's LOAD DATA and the server's LOCAL INFILE request.
    observer.pushFromExit(encodePacket(Buffer.from([0, 0, 0, 2, 0, 0, 0]), 2));
    observer.pushFromApp(query("LOAD DATA LOCAL INFILE 'x' INTO TABLE t"));
    observer.pushFromExit(encodePacket(Buffer.from('\xfbx', 'latin1'), 1));
    const content: Buffer[] = [];
    for (let seq = 2; seq <= 255; seq++) content.push(encodePacket(Buffer.from('x\n'), seq));
    content.push(encodePacket(Buffer.from('\x03DROP DATABASE forged_via_agent\n'), 0));
    content.push(encodePacket(Buffer.alloc(0), 1));
    observer.pushFromApp(Buffer.concat(content));
    // The gateway's observer stops where the agent's exit refuses: the first out-of-sequence packet.
    expect(events.map((e) => e.text)).toEqual(["LOAD DATA LOCAL INFILE 'x' INTO TABLE t"]);
  });
});
