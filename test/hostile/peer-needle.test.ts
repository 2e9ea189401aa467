// Hostile review (issue 11, r11), the peer check's row needles (9f4ccf8): the connecting
// socket's row is now found by its 4-tuple text (' PEERHEX:PORT LISTENERHEX:PORT ') instead of
// parsing every row to the listener. A needle that differs from the kernel's text by one
// character refuses the job (or, worse, matches another row), so:
// - the needles are checked against an independent formatter that writes rows the way the
//   kernel does (`%08X` of each 32-bit word in host order, `%04X` port), for every text form
//   Node can give for an address (inet_ntop as remoteAddress, the WHATWG form, expanded,
//   upper-case, embedded IPv4), in both byte orders, and must match no other row (the
//   accepted end, other ports or addresses, the other table's form);
// - real processes of the job's uid (root here) and of another uid (setpriv 65534) connect to a
//   127.0.0.1 listener (as the client's) from every source a local user can pick: other
//   loopback addresses, the host's own non-loopback address, an AF_INET6 socket on a
//   v4-mapped address, bound to 0.0.0.0 / '::': every own connection passes, every other one
//   is refused with its uid; one reset right after connecting fails closed.
import { spawn } from 'node:child_process';
import { type AddressInfo, createServer, type Server, type Socket, SocketAddress } from 'node:net';
import { networkInterfaces } from 'node:os';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  normalizeAddress,
  type PeerVerdict,
  procAddress,
  rowNeedles,
  sameUserCheck,
} from '../../src/client/peer-uid.js';
import { waitFor } from '../fixtures/wait-for.js';

/** The kernel's text of one address (16 or 4 bytes): each 32-bit word as a host u32, `%08X`. */
function kernelHex(bytes: Uint8Array, littleEndian: boolean): string {
  const buf = Buffer.from(bytes);
  let out = '';
  for (let w = 0; w < buf.length; w += 4) {
    const v = littleEndian ? buf.readUInt32LE(w) : buf.readUInt32BE(w);
    out += v.toString(16).toUpperCase().padStart(8, '0');
  }
  return out;
}

/** A row as tcp4_seq_show / tcp6_seq_show print it (connecting socket: local = peer). */
function kernelRow(
  sl: number,
  local: string,
  lport: number,
  remote: string,
  rport: number,
  uid: number,
): string {
  const p = (n: number) => n.toString(16).toUpperCase().padStart(4, '0');
  return `${String(sl).padStart(4)}: ${local}:${p(lport)} ${remote}:${p(rport)} 01 00000000:00000000 00:00000000 00000000 ${String(uid).padStart(5)}        0 ${7000 + sl} 1 0000000000000000 20 4 30 10 -1\n`;
}

const mapped = (v4: Uint8Array) => new Uint8Array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, ...v4]);

/** The texts Node (or a caller) may hand the check for 16 address bytes. */
function v6Texts(bytes: Uint8Array): string[] {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2)
    groups.push(((bytes[i] as number) * 256 + (bytes[i + 1] as number)).toString(16));
  const expanded = groups.join(':');
  const ntop = new SocketAddress({ address: expanded, family: 'ipv6' }).address; // remoteAddress's form
  const whatwg = new URL(`http://[${expanded}]/`).hostname.slice(1, -1);
  const padded = groups.map((g) => g.padStart(4, '0')).join(':');
  return [ntop, whatwg, expanded, padded, padded.toUpperCase(), ntop.toUpperCase()];
}

const port = fc.integer({ min: 1, max: 65535 });
const v4 = fc.uint8Array({ minLength: 4, maxLength: 4 });
const v6 = fc.oneof(
  fc.uint8Array({ minLength: 16, maxLength: 16 }),
  v4.map(mapped), // v4-mapped: must be written in both tables' forms
  v4.map((b) => new Uint8Array([...Array(12).fill(0), ...b])), // ::a.b.c.d (inet_ntop prints it dotted)
  fc.uint8Array({ minLength: 2, maxLength: 2 }).map((b) => new Uint8Array([...Array(14).fill(0), ...b])),
);

describe('row needles against an independent kernel formatter (hostile review)', () => {
  it('an IPv4 peer: the needle is its tcp row (and its v4-mapped tcp6 row), whatever text Node gave', () => {
    fc.assert(
      fc.property(v4, port, v4, port, fc.boolean(), (pb, pp, lb, lp, le) => {
        const pText = pb.join('.');
        const lText = lb.join('.');
        const row4 = kernelRow(1, kernelHex(pb, le), pp, kernelHex(lb, le), lp, 65534);
        const row6 = kernelRow(2, kernelHex(mapped(pb), le), pp, kernelHex(mapped(lb), le), lp, 65534);
        for (const peer of [pText, `::ffff:${pText}`, `::FFFF:${pText}`, ...v6Texts(mapped(pb))]) {
          const needles = rowNeedles({ address: peer, port: pp }, { address: lText, port: lp }, le);
          expect(needles, peer).toHaveLength(2);
          expect(row4.includes(needles[0] as string), `${peer} tcp`).toBe(true);
          expect(row6.includes(needles[1] as string), `${peer} tcp6`).toBe(true);
          // each needle only in its own table's row
          expect(row6.includes(needles[0] as string)).toBe(false);
          expect(row4.includes(needles[1] as string)).toBe(false);
        }
      }),
      { numRuns: 400 },
    );
  });

  it('an IPv6 peer: the needle is its tcp6 row for every text form; procAddress reads it back', () => {
    fc.assert(
      fc.property(v6, port, v6, port, fc.boolean(), (pb, pp, lb, lp, le) => {
        const row6 = kernelRow(3, kernelHex(pb, le), pp, kernelHex(lb, le), lp, 1000);
        const canon = normalizeAddress(v6Texts(pb)[0] as string);
        expect(procAddress(kernelHex(pb, le), le)).toBe(canon);
        for (const peer of v6Texts(pb)) {
          expect(normalizeAddress(peer), peer).toBe(canon);
          for (const listener of v6Texts(lb)) {
            const needles = rowNeedles({ address: peer, port: pp }, { address: listener, port: lp }, le);
            expect(
              needles.some((n) => row6.includes(n)),
              `${peer} -> ${listener} (${le ? 'LE' : 'BE'}) in ${row6}`,
            ).toBe(true);
          }
        }
      }),
      { numRuns: 300 },
    );
  });

  it("a needle matches no other 4-tuple's row: not the accepted end, not another port or address", () => {
    const endpoint = fc.record({ bytes: v4, port });
    fc.assert(
      fc.property(endpoint, endpoint, endpoint, endpoint, fc.boolean(), (p, l, q, m, le) => {
        fc.pre(!(Buffer.from(p.bytes).equals(Buffer.from(q.bytes)) && p.port === q.port));
        const needles = rowNeedles(
          { address: p.bytes.join('.'), port: p.port },
          { address: l.bytes.join('.'), port: l.port },
          le,
        );
        const others = [
          // the listener's accepted socket (local = listener, remote = peer)
          kernelRow(1, kernelHex(l.bytes, le), l.port, kernelHex(p.bytes, le), p.port, 0),
          // another peer to the same listener, in either table
          kernelRow(2, kernelHex(q.bytes, le), q.port, kernelHex(l.bytes, le), l.port, 65534),
          kernelRow(3, kernelHex(mapped(q.bytes), le), q.port, kernelHex(mapped(l.bytes), le), l.port, 65534),
          // the same peer to another listener (m differs from l)
          ...(Buffer.from(m.bytes).equals(Buffer.from(l.bytes)) && m.port === l.port
            ? []
            : [kernelRow(4, kernelHex(p.bytes, le), p.port, kernelHex(m.bytes, le), m.port, 65534)]),
          // the peer as a listener (remote 0:0)
          kernelRow(5, kernelHex(p.bytes, le), p.port, '00000000', 0, 65534),
        ];
        for (const row of others)
          for (const n of needles) expect(row.includes(n), `${n} in ${row}`).toBe(false);
      }),
      { numRuns: 500 },
    );
  });
});

const root = process.geteuid?.() === 0;

describe.runIf(process.platform === 'linux' && root)(
  'the peer check on a 127.0.0.1 listener, from every source a local user can pick (hostile review)',
  () => {
    let server: Server;
    let listenPort: number;
    const byPeer = new Map<string, PeerVerdict>();
    const check = sameUserCheck({ uid: 1000 }) as NonNullable<ReturnType<typeof sameUserCheck>>;
    const hostV4 = Object.values(networkInterfaces())
      .flat()
      .find((i) => i && i.family === 'IPv4' && !i.internal)?.address;
    const sources: Array<{ host: string; localAddress?: string; family?: number }> = [
      { host: '127.0.0.1' },
      { host: '::ffff:127.0.0.1', family: 6 },
      { host: '::ffff:7f00:1', family: 6 },
      { host: '127.0.0.1', localAddress: '127.0.0.2' },
      { host: '127.0.0.1', localAddress: '127.255.255.254' },
      { host: '127.0.0.1', localAddress: '0.0.0.0' },
      { host: '::ffff:127.0.0.1', localAddress: '::ffff:127.0.0.3' },
      { host: '::ffff:127.0.0.1', localAddress: '::ffff:7f00:4' },
      { host: '::ffff:127.0.0.1', localAddress: '::' },
      ...(hostV4
        ? [
            { host: '127.0.0.1', localAddress: hostV4 },
            { host: '::ffff:127.0.0.1', localAddress: `::ffff:${hostV4}` },
          ]
        : []),
    ];

    beforeAll(async () => {
      server = createServer({ pauseOnConnect: true }, (s: Socket) => {
        s.on('error', () => {});
        const key = `${s.remoteAddress}:${s.remotePort}`;
        void check(s).then((v) => {
          byPeer.set(key, v);
        });
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      listenPort = (server.address() as AddressInfo).port;
    });
    afterAll(() => server.close());

    /** Connect from every source as `uid` (a separate process); the peers as the listener saw them. */
    async function connectAll(asNobody: boolean): Promise<string[]> {
      const code = `const net=require('net');const v=${JSON.stringify(sources)};const out=[];let n=0;v.forEach((o,i)=>{const s=net.connect({...o,port:${listenPort}},()=>{out[i]=s.localAddress.replace(/^::ffff:/,'')+':'+s.localPort;if(++n===v.length)console.log(JSON.stringify(out))});s.on('error',e=>{out[i]='ERR '+e.code;if(++n===v.length)console.log(JSON.stringify(out))})});setTimeout(()=>process.exit(0),5000)`;
      const child = asNobody
        ? spawn(
            'setpriv',
            ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '-e', code],
            { stdio: ['ignore', 'pipe', 'inherit'] },
          )
        : spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
      });
      const peers = await waitFor(
        () => (out.includes('\n') ? (JSON.parse(out) as string[]) : undefined),
        10_000,
        'every source connected',
      );
      expect(
        peers.filter((p) => p.startsWith('ERR')),
        JSON.stringify(sources),
      ).toEqual([]);
      await waitFor(() => peers.every((p) => byPeer.has(p)), 10_000, 'a verdict on every connection');
      child.kill('SIGKILL');
      return peers;
    }

    it("the job's own connections pass from every source", async () => {
      const peers = await connectAll(false);
      const refused = peers
        .filter((p) => !byPeer.get(p)?.ok)
        .map((p) => `${p}: ${JSON.stringify(byPeer.get(p))}`);
      expect(refused).toEqual([]);
    }, 30_000);

    it("another uid's connections are refused, with its uid, from every source", async () => {
      const peers = await connectAll(true);
      for (const p of peers)
        expect(byPeer.get(p), p).toEqual({
          ok: false,
          uid: 65534,
          reason: "uid 65534 is not this job's uid 1000",
        });
    }, 30_000);

    it('another uid that resets right after connecting is refused (fails closed), never let in', async () => {
      const code = `const net=require('net');let n=0;for(let i=0;i<40;i++){const s=net.connect({host:i%2?'::ffff:127.0.0.1':'127.0.0.1',port:${listenPort}},()=>{const k=s.localAddress.replace(/^::ffff:/,'')+':'+s.localPort;setTimeout(()=>{s.resetAndDestroy();console.log(k);if(++n===40)console.log('done')},i%4)});s.on('error',()=>{})}setTimeout(()=>process.exit(0),5000)`;
      const child = spawn(
        'setpriv',
        ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '-e', code],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      let out = '';
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
      });
      await waitFor(() => out.includes('done'), 10_000, 'nobody connected and reset 40 times');
      const peers = out.split('\n').filter((l) => /:\d+$/.test(l));
      // A connection reset before accept() has no address and never reaches a verdict map key.
      await new Promise((r) => setTimeout(r, 1000));
      const letIn = peers.filter((p) => byPeer.get(p)?.ok);
      expect(letIn).toEqual([]);
      child.kill('SIGKILL');
    }, 30_000);
  },
);
