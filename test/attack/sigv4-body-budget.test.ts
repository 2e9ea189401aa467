// Attack: a job opens many connections to an `aws_sigv4` http target and sends 8 MiB bodies on
// each (the exit buffers each body whole to hash it): 256 connections of one session held 2 GiB
// in the gateway. Bodies held for signing now share one process-wide budget; past it a request is
// answered 503 CIPORT_E_AWS_SIGV4_BUSY at once, and the budget comes back when a request is done.
import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signedBodies } from '../../src/exits/http/sigv4.js';
import { type ExitListener, startExit } from '../exits/http/helpers.js';
import { type AwsFixture, startAwsFixture } from '../fixtures/aws.js';

let aws: AwsFixture;
let api: ExitListener;
const savedLimit = signedBodies.limit;

beforeAll(async () => {
  aws = await startAwsFixture();
  Object.assign(process.env, aws.env());
  api = await startExit({
    address: new URL(aws.url).host,
    injection: { kind: 'aws_sigv4', service: 'execute-api', region: 'eu-west-1' },
  });
  signedBodies.limit = 1000;
});
afterAll(async () => {
  signedBodies.limit = savedLimit;
  await api?.close();
  await aws?.stop();
});

/** A raw socket to the exit, reading what comes back until `until` matches. */
function open(): { socket: Socket; read(until: RegExp): Promise<string> } {
  const socket = connect(api.port, '127.0.0.1');
  let got = '';
  const waiters: Array<() => void> = [];
  socket.on('data', (c: Buffer) => {
    got += c.toString('latin1');
    for (const w of waiters.splice(0)) w();
  });
  return {
    socket,
    read: (until) =>
      new Promise((resolve, reject) => {
        const check = () => (until.test(got) ? resolve(got) : waiters.push(check));
        socket.once('close', () => (until.test(got) ? resolve(got) : reject(new Error(`closed: ${got}`))));
        check();
      }),
  };
}

const head = (length: number) =>
  `POST /prod/items HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${length}\r\nExpect: 100-continue\r\n\r\n`;

describe('bodies held for SigV4 share one budget', () => {
  it('refuses a body past the budget with 503, and takes it again once the first is done', async () => {
    const first = open();
    first.socket.write(head(800));
    // 100 Continue: the exit has reserved the first body's 800 bytes.
    await first.read(/100 Continue/);
    expect(signedBodies.held).toBe(800);

    const second = open();
    second.socket.write(head(800));
    const refused = await second.read(/\r\n\r\n[\s\S]*CIPORT_E_AWS_SIGV4_BUSY/);
    expect(refused).toMatch(/^HTTP\/1\.1 503 /);
    second.socket.destroy();

    first.socket.write('x'.repeat(800));
    const answered = await first.read(/HTTP\/1\.1 \d{3} [\s\S]*HTTP\/1\.1 \d{3} /);
    expect(answered).toMatch(/HTTP\/1\.1 200 /);
    first.socket.destroy();
    await new Promise((r) => first.socket.once('close', r));
    await expect.poll(() => signedBodies.held).toBe(0);

    const third = open();
    third.socket.write(head(800));
    await third.read(/100 Continue/);
    third.socket.write('y'.repeat(800));
    expect(await third.read(/HTTP\/1\.1 \d{3} [\s\S]*HTTP\/1\.1 \d{3} /)).toMatch(/HTTP\/1\.1 200 /);
    third.socket.destroy();
  });
});
