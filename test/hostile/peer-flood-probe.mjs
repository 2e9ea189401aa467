// Hostile review (issue 11), peer check under a connect/close flood from another uid (not a
// vitest test: it measures). Run as root after npm run build: node test/hostile/peer-flood-probe.mjs
// Prints the checking process's CPU, scans, and how long the job's own connections waited.

import { spawn } from 'node:child_process';
import { connect, createServer } from 'node:net';
import { SocketTable, sameUserCheck } from '../../dist/src/client/peer-uid.js';

const tcp = new SocketTable('/proc/net/tcp');
const check = sameUserCheck({ uid: 1000, tables: [tcp, new SocketTable('/proc/net/tcp6', true)] });
let checked = 0,
  refused = 0;
const server = createServer({ pauseOnConnect: true }, (s) => {
  s.on('error', () => {});
  check(s).then((v) => {
    checked++;
    if (!v.ok) refused++;
    s.destroy();
  });
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const port = server.address().port;
const flood = spawn(
  'setpriv',
  [
    '--reuid=65534',
    '--regid=65534',
    '--clear-groups',
    process.execPath,
    '-e',
    `const net=require('net');let live=0;function go(){while(live<200){live++;const s=net.connect(${port},'127.0.0.1',()=>s.destroy());s.on('error',()=>{});s.on('close',()=>{live--;setImmediate(go)})}}go();setTimeout(()=>process.exit(0),6000)`,
  ],
  { stdio: 'inherit' },
);
const cpu0 = process.cpuUsage();
const t0 = Date.now();
const lat = [];
for (let i = 0; i < 10; i++) {
  await new Promise((r) => setTimeout(r, 500));
  const a = Date.now();
  const s = connect(port, '127.0.0.1');
  s.on('error', () => {});
  await new Promise((r) => s.on('close', r));
  lat.push(Date.now() - a);
}
const cpu = process.cpuUsage(cpu0);
const lines = (await import('node:fs')).readFileSync('/proc/net/tcp', 'utf8').split('\n').length;
console.log(
  JSON.stringify({
    wallMs: Date.now() - t0,
    cpuMs: (cpu.user + cpu.system) / 1000,
    scans: tcp.scans,
    checked,
    refused,
    ownLatencyMs: lat,
    tcpRows: lines,
  }),
);
flood.kill('SIGKILL');
server.close();
process.exit(0);
