// The peer check's lookup on a socket table shaped like a busy runner's: 15,000 time-wait rows
// whose remote end is the listener (what a connection-per-test suite leaves behind), then the
// rows of the connections being checked. A regular file, so this measures ciport's own work, not
// the kernel's formatting of /proc/net/tcp (~2 µs per row, on top). `BENCH_PEER_SCAN_COMPARE`
// names a second build of src/client/peer-uid (an .mjs file) to measure side by side, e.g. the
// parent of commit 9f4ccf8:
//   git show 9f4ccf8^:src/client/peer-uid.ts > /tmp/old.ts
//   npx esbuild /tmp/old.ts --format=esm --platform=node --outfile=/tmp/old.mjs
//   BENCH_PEER_SCAN_COMPARE=/tmp/old.mjs npm run bench -- peer-scan --rounds=2
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import * as current from '../src/client/peer-uid.js';

const TIME_WAIT_ROWS = 15_000;
const LOOKUPS = 200;
const LISTENER = { address: '127.0.0.1', port: 8080 };

function table(): string {
  const rows = [
    '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
  ];
  for (let i = 0; i < TIME_WAIT_ROWS; i++) {
    const port = (0x2000 + (i % 0x6000)).toString(16).toUpperCase().padStart(4, '0');
    rows.push(
      `${String(i).padStart(5)}: 0100007F:${port} 0100007F:1F90 06 00000000:00000000 03:00000F9B 00000000     0        0 0 3 0000000000000000`,
    );
  }
  for (let i = 0; i < LOOKUPS; i++) {
    const port = (0x9000 + i).toString(16).toUpperCase();
    rows.push(
      `${String(20_000 + i).padStart(5)}: 0100007F:${port} 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 ${7000 + i} 1 0000000000000000 20 4 30 10 -1`,
    );
  }
  return `${rows.join('\n')}\n`;
}

type Module = Pick<typeof current, 'SocketTable'>;

/** CPU ms per lookup of `mod` over the file (each lookup must find its own row). */
async function measure(mod: Module, file: string): Promise<number> {
  const t = new mod.SocketTable(file);
  const c0 = process.cpuUsage();
  for (let i = 0; i < LOOKUPS; i++) {
    const e = await t.lookup({ address: '127.0.0.1', port: 0x9000 + i }, LISTENER);
    if (!e || e.inode !== 7000 + i) throw new Error(`lookup ${i} did not find its row`);
  }
  const c = process.cpuUsage(c0);
  return (c.user + c.system) / LOOKUPS / 1000;
}

export async function benchPeerScan(rounds: number): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'ciport-peer-scan-'));
  try {
    const file = join(dir, 'tcp');
    writeFileSync(file, table());
    const other = process.env.BENCH_PEER_SCAN_COMPARE;
    const compare = other ? ((await import(pathToFileURL(other).href)) as Module) : undefined;
    const lines = [
      `peer-scan: ${TIME_WAIT_ROWS} time-wait rows to the listener before the checked rows, ${LOOKUPS} lookups per measurement, CPU ms per lookup`,
      '',
      `| round | this tree |${compare ? ` ${other} |` : ''}`,
      `|---|---:|${compare ? '---:|' : ''}`,
    ];
    for (let r = 1; r <= rounds; r++) {
      const now = await measure(current, file);
      const then = compare ? await measure(compare, file) : undefined;
      lines.push(`| ${r} | ${now.toFixed(2)} |${then === undefined ? '' : ` ${then.toFixed(2)} |`}`);
    }
    return lines.join('\n');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
