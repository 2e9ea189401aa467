// `npm run bench -- sigv4`: what SigV4 signing at the exit costs (docs/aws.md, "Signing HTTP
// requests with SigV4"), measured in one run against the same upstream three ways: direct, through
// an `http` target that injects nothing, and through an `http` target with
// `credentials: {aws_sigv4}` (the exit buffers and hashes each body, then signs). Keep-alive
// requests on one connection, sequential: small GETs and 64 KiB POSTs. Ratios are to direct and,
// for the signed target, to the unsigned one (the cost of signing alone).
//
// Processes: the upstream (a minimal node:http server), the gateway and `ciport open` each run in
// their own process; this process only drives load. The gateway signs with static keys from its
// environment (the SDK's provider chain finds them; nothing leaves loopback).
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { DevSigner, mintToken } from '../src/identity/index.js';
import { fmt, median, table } from './stats.js';
import { child, cpuMicros, gatewayUrl, lineMatching } from './tunnel.js';

const ROOT = new URL('../../', import.meta.url).pathname;
const BIN = join(ROOT, 'bin/ciport.js');
const ISSUER = 'https://bench-issuer.invalid';
const PATHS = ['direct', 'plain', 'signed'] as const;
type Path = (typeof PATHS)[number];

const UPSTREAM = `
const http = require('node:http');
const s = http.createServer((req, res) => {
  let n = 0;
  req.on('data', (c) => { n += c.length; });
  req.on('end', () => { res.writeHead(200, {'content-type': 'application/json'}); res.end(JSON.stringify({n})); });
});
s.keepAliveTimeout = 60000;
s.listen(0, '127.0.0.1', () => console.log(s.address().port));
`;

/** Requests per second of `n` sequential keep-alive requests on one connection. */
async function rate(port: number, n: number, body: Buffer | undefined): Promise<number> {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const one = () =>
    new Promise<void>((resolve, reject) => {
      const req = request(
        {
          host: '127.0.0.1',
          port,
          agent,
          method: body ? 'POST' : 'GET',
          path: '/v1/items?limit=10',
          headers: body ? { 'content-type': 'application/octet-stream', 'content-length': body.length } : {},
        },
        (res) => {
          res.resume();
          res.on('end', () =>
            res.statusCode === 200 ? resolve() : reject(new Error(`status ${res.statusCode}`)),
          );
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  try {
    for (let i = 0; i < 20; i++) await one();
    const start = performance.now();
    for (let i = 0; i < n; i++) await one();
    return n / ((performance.now() - start) / 1000);
  } finally {
    agent.destroy();
  }
}

export async function benchSigv4(rounds: number): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'ciport-bench-sigv4-'));
  const procs: ChildProcess[] = [];
  try {
    writeFileSync(join(dir, 'upstream.cjs'), UPSTREAM);
    const upstream = child([join(dir, 'upstream.cjs')]);
    procs.push(upstream);
    const upstreamPort = Number((await lineMatching(upstream, /^\d+$/))[0]);

    const signer = await DevSigner.ephemeral();
    writeFileSync(join(dir, 'jwks.json'), JSON.stringify(signer.jwks()));
    const config = join(dir, 'gateway.yaml');
    writeFileSync(
      config,
      `listen: 127.0.0.1:0
data_dir: ${join(dir, 'data')}
issuers:
  - {name: bench, kind: gitlab, issuer: ${ISSUER}, audience: ciport-bench, jwks_file: ${join(dir, 'jwks.json')}}
targets:
  - {name: api, protocol: http, address: 127.0.0.1:${upstreamPort}}
  - name: api-signed
    protocol: http
    address: 127.0.0.1:${upstreamPort}
    credentials: {aws_sigv4: {service: execute-api, region: eu-west-1}}
rules:
  - {name: bench, issuer: bench, when: {project_id: "1"}, allow: [api, api-signed]}
`,
    );
    const gateway = child(
      [BIN, 'gateway', '--config', config],
      {
        CIPORT_LOG_LEVEL: 'warn',
        AWS_ACCESS_KEY_ID: `AKIA${randomBytes(8).toString('hex').toUpperCase()}`,
        AWS_SECRET_ACCESS_KEY: randomBytes(30).toString('base64'),
        AWS_EC2_METADATA_DISABLED: 'true',
        AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
      },
      'pipe',
    );
    procs.push(gateway);
    const url = await gatewayUrl(gateway, join(dir, 'data'));
    const token = await mintToken(
      signer,
      ISSUER,
      { project_id: '1', job_project_id: '1' },
      { audience: 'ciport-bench', ttlMs: 3_600_000 },
    );
    const envFile = join(dir, 'port.env');
    const open = child([BIN, 'open', 'api', 'api-signed', '--env-file', envFile], {
      CIPORT_GATEWAY: url,
      CIPORT_CA_FILE: join(dir, 'data/ca.crt'),
      CIPORT_ID_TOKEN: token,
    });
    procs.push(open);
    for (let i = 0; i < 200 && !existsSync(envFile); i++) await sleep(50);
    if (!existsSync(envFile)) throw new Error('ciport open did not become ready within 10 s');
    const env = Object.fromEntries(
      readFileSync(envFile, 'utf8')
        .split('\n')
        .filter((l) => l.includes('='))
        .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1).replace(/^'|'$/g, '')]),
    );
    const ports: Record<Path, number> = {
      direct: upstreamPort,
      plain: Number(env.CIPORT_API_PORT),
      signed: Number(env.CIPORT_API_SIGNED_PORT),
    };
    const body = randomBytes(64 * 1024);
    const measures: [string, number, Buffer | undefined][] = [
      ['GET, small (req/s)', 2000, undefined],
      ['POST 64 KiB (req/s)', 500, body],
    ];
    const proxyCpu = () => cpuMicros(gateway.pid) + cpuMicros(open.pid);
    const results: Record<string, Record<Path, number[]>> = {};
    const cpu: Record<string, Record<Path, number[]>> = {};
    const load = [loadavg()[0] as number];
    for (let r = 0; r < rounds; r++) {
      const order = PATHS.map((_, i) => PATHS[(i + r) % PATHS.length] as Path);
      for (const [name, n, payload] of measures) {
        results[name] ??= { direct: [], plain: [], signed: [] };
        cpu[name] ??= { direct: [], plain: [], signed: [] };
        for (const path of order) {
          const before = proxyCpu();
          results[name][path].push(await rate(ports[path], n, payload));
          cpu[name][path].push((proxyCpu() - before) / n);
        }
      }
      load.push(loadavg()[0] as number);
    }
    const rows = [
      [
        'measure',
        'direct',
        'http target',
        'ratio',
        'CPU µs/req',
        'aws_sigv4 target',
        'ratio',
        'CPU µs/req',
        'signed / unsigned',
      ],
    ];
    for (const [name] of measures) {
      const v = results[name]!;
      const c = cpu[name]!;
      const ratio = (a: number[], b: number[]) => median(a.map((x, i) => x / (b[i] as number)));
      rows.push([
        name,
        fmt(median(v.direct)),
        fmt(median(v.plain)),
        `${ratio(v.plain, v.direct).toFixed(2)}x`,
        fmt(median(c.plain)),
        fmt(median(v.signed)),
        `${ratio(v.signed, v.direct).toFixed(2)}x`,
        fmt(median(c.signed)),
        `${ratio(v.signed, v.plain).toFixed(2)}x`,
      ]);
    }
    return [
      `sigv4: http targets on loopback, upstream/gateway/client in separate processes; one keep-alive connection, sequential; median of ${rounds} interleaved rounds`,
      `ratios are per round to direct (and signed to unsigned); CPU is the gateway + client time per request; load average ${load.map((l) => l.toFixed(1)).join(' -> ')}`,
      '',
      table(rows),
    ].join('\n');
  } finally {
    for (const p of procs.reverse()) p.kill('SIGTERM');
    await sleep(200);
    rmSync(dir, { recursive: true, force: true });
  }
}
