// Hostile review (issue 11, r11), the peer check's per-lookup needle search (9f4ccf8), not a
// vitest test: it measures. Each pending lookup searches every slice of the table for its own
// two needles (one of which can never match in that table), so one scan costs
// lookups × table bytes; the old lookup searched once per listener port and parsed only the
// rows to that port. Another uid controls both factors: time-wait rows to ANY port (a
// connect/close loop against its own listener) and how many of its connections to the port are
// pending (connect, reset after accept: never found, so a full scan, a rescan, and tcp6).
// Run as any user after npm run build: node test/hostile/peer-needle-scale.mjs [rows] [module]
// Prints, per number of pending lookups K, the CPU of one scan of a synthetic table of `rows`
// time-wait rows (regular file: without the kernel's ~2 µs/row formatting) with the job's row
// last. Measured at 9f4ccf8 (15 000 rows, load ~7 on 2 cores), old = 9f4ccf8^:
//   K        0     200     1000
//   old   18 ms   20 ms    44 ms
//   new   23 ms  456 ms  2225 ms   (job's own lookup waited 6.3 s wall at K=1000)
// Not reproduced with real processes (1 000-connection bursts from uid 65534, reset 1-200 ms
// after connecting, ~10 800 time-wait rows, 4-7 scans per burst): 221-300 ms CPU new vs
// 245-249 ms old, because a reset that lands before accept() costs no scan ("no address": 975
// of 1 000) and a connection still open is found at its row. So a bound to keep in mind
// (per-lookup work x table), not a demonstrated denial of service.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const rows = Number(process.argv[2] ?? 15000);
const { SocketTable } = await import(process.argv[3] ?? '../../dist/src/client/peer-uid.js');
const pad = (s) => `${s.padEnd(149)}\n`;
let text = pad(
  '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
);
for (let i = 0; i < rows; i++) {
  const p = (1024 + (i % 60000)).toString(16).toUpperCase().padStart(4, '0');
  text += pad(
    `${String(i).padStart(4)}: 0100007F:${p} 0100007F:2000 06 00000000:00000000 03:00000F9B 00000000     0        0 0 3 0000000000000000`,
  );
}
text += pad(
  `${String(rows).padStart(4)}: 0100007F:FFF0 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 9001 1 0000000000000000 20 4 30 10 -1`,
);
const dir = mkdtempSync(join(tmpdir(), 'peer-needle-'));
const file = join(dir, 'tcp');
writeFileSync(file, text);
const listener = { address: '127.0.0.1', port: 0x1f90 };
for (const k of [0, 50, 200, 1000]) {
  const table = new SocketTable(file);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const pending = [];
  for (let i = 0; i < k; i++) pending.push(table.lookup({ address: '127.0.0.1', port: 1 + i }, listener));
  const own = await table.lookup({ address: '127.0.0.1', port: 0xfff0 }, listener);
  const ownMs = performance.now() - t0;
  await Promise.all(pending);
  const cpu = process.cpuUsage(cpu0);
  console.log(
    JSON.stringify({
      rows,
      pendingLookups: k,
      scans: table.scans,
      cpuMs: Math.round((cpu.user + cpu.system) / 1000),
      ownFound: own?.uid === 1000,
      ownWaitedMs: Math.round(ownMs),
    }),
  );
}
rmSync(dir, { recursive: true, force: true });
