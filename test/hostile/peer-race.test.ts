// Hostile review (issue 11), peer check: scans stop at the peer's row and lookups that arrive
// during a running scan join it. Another uid (setpriv --reuid=65534) connects while many of
// the job's own connections are being checked, over IPv4 and v4-mapped IPv6: none of its
// connections may pass, and every own connection must.
import { spawn } from 'node:child_process';
import { type AddressInfo, connect, createServer, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type PeerVerdict, SocketTable, sameUserCheck } from '../../src/client/peer-uid.js';
import { waitFor } from '../fixtures/wait-for.js';

const root = process.geteuid?.() === 0;

describe.runIf(process.platform === 'linux' && root)(
  'peer check raced by another uid (hostile review)',
  () => {
    let server: Server;
    let port: number;
    const byPort = new Map<number, PeerVerdict>();
    const check = sameUserCheck({
      uid: 1000, // the job's uid; root (0) passes too, so own connections here are uid 0
      tables: [new SocketTable('/proc/net/tcp'), new SocketTable('/proc/net/tcp6', true)],
    }) as NonNullable<ReturnType<typeof sameUserCheck>>;

    beforeAll(async () => {
      server = createServer({ pauseOnConnect: true }, (s: Socket) => {
        s.on('error', () => {});
        const remotePort = s.remotePort as number;
        void check(s).then((v) => {
          byPort.set(remotePort, v);
        });
      });
      await new Promise<void>((resolve) => server.listen(0, '::', resolve));
      port = (server.address() as AddressInfo).port;
    });
    afterAll(() => server.close());

    it('never lets a uid 65534 connection in while own connections flood the check', async () => {
      const own: Socket[] = [];
      const nobodyPorts: number[] = [];
      for (let round = 0; round < 6; round++) {
        const child = spawn(
          'setpriv',
          [
            '--reuid=65534',
            '--regid=65534',
            '--clear-groups',
            process.execPath,
            '-e',
            `const net=require('net');let n=0;for(let i=0;i<8;i++){const s=net.connect({host:i%2?'::ffff:127.0.0.1':'127.0.0.1',port:${port}},()=>{process.stdout.write(s.localPort+'\\n');if(++n===8)process.stdout.write('done\\n')});s.on('error',()=>{})}setTimeout(()=>{},20000)`,
          ],
          { stdio: ['ignore', 'pipe', 'inherit'] },
        );
        const ports = new Promise<number[]>((resolve) => {
          let out = '';
          child.stdout.on('data', (c: Buffer) => {
            out += c.toString();
            if (out.includes('done'))
              resolve(
                out
                  .split('\n')
                  .filter((l) => /^\d+$/.test(l))
                  .map(Number),
              );
          });
        });
        for (let i = 0; i < 150; i++) {
          const s = connect({ host: i % 2 ? '::ffff:127.0.0.1' : '127.0.0.1', port });
          s.on('error', () => {});
          own.push(s);
        }
        nobodyPorts.push(...(await ports));
        await new Promise((r) => setTimeout(r, 300));
        child.kill('SIGKILL');
      }
      await waitFor(
        () => nobodyPorts.every((p) => byPort.has(p)),
        20_000,
        'a verdict on every uid 65534 connection',
      );
      const letIn = nobodyPorts.filter((p) => byPort.get(p)?.ok);
      expect(letIn, `uid 65534 connections let in: ${letIn.join(',')}`).toEqual([]);
      expect(nobodyPorts.length).toBe(48);
      const refusedReasons = new Set(nobodyPorts.map((p) => (byPort.get(p) as { reason?: string })?.reason));
      // Own connections all passed (a flaky refusal of the job's own connection is a bug too).
      const ownRefused = own.filter(
        (s) => s.localPort !== undefined && byPort.get(s.localPort as number)?.ok === false,
      );
      expect(ownRefused.length, [...refusedReasons].join('; ')).toBe(0);
      for (const s of own) s.destroy();
    }, 60_000);
  },
);
