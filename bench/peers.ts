// The peers the port is compared with, started on loopback for one run of the peer table: an
// iperf3 server (the raw-TCP target), a private sshd with `ssh -L`, a stunnel client/server
// pair, haproxy in TCP mode and pgbouncer. Missing Debian packages are installed first
// (apt-get, non-interactive; a policy-rc.d forbids package scripts to start daemons, so the
// system's sshd, haproxy or pgbouncer are never started). Everything listens on 127.0.0.1 on
// free ports, uses its own configuration in the run's directory and is stopped by PID.
import { execFile } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { freePort } from '../test/fixtures/free-port.js';
import type { Processes } from './proc.js';

const run = promisify(execFile);
const LOOP = '127.0.0.1';

/** Debian packages the table needs, by the program that must exist. */
const PACKAGES: ReadonlyArray<[program: string, pkg: string]> = [
  ['/usr/bin/iperf3', 'iperf3'],
  ['/usr/sbin/haproxy', 'haproxy'],
  ['/usr/bin/stunnel4', 'stunnel4'],
  ['/usr/sbin/pgbouncer', 'pgbouncer'],
  ['/usr/sbin/sshd', 'openssh-server'],
  ['/usr/bin/ssh', 'openssh-client'],
  ['/usr/bin/ssh-keygen', 'openssh-client'],
  ['/usr/bin/openssl', 'openssl'],
  ['/usr/bin/pgbench', 'postgresql-client'],
  ['/usr/bin/ss', 'iproute2'],
];

export type Log = (line: string) => void;

/** Install the missing packages from Debian (root only); returns what is still missing. */
export async function ensurePackages(log: Log): Promise<string[]> {
  const initdb = existsSync('/usr/lib/postgresql')
    ? (await run('sh', ['-c', 'ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null || true'])).stdout.trim()
    : '';
  const missing = new Set(PACKAGES.filter(([p]) => !existsSync(p)).map(([, pkg]) => pkg));
  if (!initdb) missing.add('postgresql');
  if (missing.size === 0) return [];
  const pkgs = [...missing];
  if (process.getuid?.() !== 0) {
    log(`missing packages (not root, not installing): ${pkgs.join(' ')}`);
    return pkgs;
  }
  log(`installing from Debian: ${pkgs.join(' ')}`);
  const policy = '/usr/sbin/policy-rc.d';
  const ownPolicy = !existsSync(policy);
  if (ownPolicy)
    writeFileSync(policy, '#!/bin/sh\n# ciport bench: package scripts start no daemons\nexit 101\n', {
      mode: 0o755,
    });
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const install = () =>
    run('apt-get', ['install', '-y', '-q', '--no-install-recommends', ...pkgs], { env, maxBuffer: 64 << 20 });
  try {
    try {
      await install();
    } catch {
      await run('apt-get', ['update', '-q'], { env, maxBuffer: 64 << 20 });
      await install();
    }
  } catch (err) {
    log(`apt-get install failed: ${(err as Error).message.split('\n').slice(-3).join(' ')}`);
  } finally {
    if (ownPolicy) rmSync(policy, { force: true });
  }
  return PACKAGES.filter(([p]) => !existsSync(p)).map(([, pkg]) => pkg);
}

/** Installed version of a Debian package, or '?'. */
export async function debVersion(pkg: string): Promise<string> {
  try {
    return (await run('dpkg-query', ['-W', `-f=${'$'}{Version}`, pkg])).stdout.trim() || '?';
  } catch {
    return '?';
  }
}

async function listening(port: number): Promise<string[]> {
  const { stdout } = await run('ss', ['-Hltn', `sport = :${port}`]);
  return stdout
    .split('\n')
    .filter(Boolean)
    .map((l) => l.trim().split(/\s+/)[3] ?? '');
}

/** Wait until something listens on `port`, and make sure it listens on loopback only. */
export async function waitListening(name: string, port: number, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const local = await listening(port);
    if (local.length > 0) {
      const open = local.filter((a) => !/^(127\.0\.0\.1|\[::1\]|\[::ffff:127\.0\.0\.1\]):/.test(a));
      if (open.length > 0) throw new Error(`${name} listens on ${open.join(', ')}: not loopback only`);
      return;
    }
    if (Date.now() > deadline) throw new Error(`${name} did not listen on ${LOOP}:${port}`);
    await sleep(100);
  }
}

export interface Forward {
  /** Local port forwarding to PostgreSQL, and to the iperf3 server. */
  pg?: number;
  tcp?: number;
  /** Root PIDs of the peer's processes (their trees are its CPU). */
  pids: number[];
}

export interface Targets {
  pg: number;
  iperf: number;
}

async function postgresIds(): Promise<{ uid: number; gid: number } | undefined> {
  if (process.getuid?.() !== 0) return undefined;
  return {
    uid: Number((await run('id', ['-u', 'postgres'])).stdout.trim()),
    gid: Number((await run('id', ['-g', 'postgres'])).stdout.trim()),
  };
}

export async function startIperf3(
  procs: Processes,
  dir: string,
  port?: number,
): Promise<{ port: number; pid: number }> {
  const p = port ?? (await freePort());
  const log = join(dir, 'iperf3.log');
  const proc = procs.spawn('iperf3', 'iperf3', ['-s', '-B', LOOP, '-p', String(p), '--logfile', log]);
  await waitListening('iperf3', p);
  return { port: p, pid: proc.pid! };
}

/** A private sshd (its own host key, authorized_keys and config) and `ssh -N -L` through it. */
export async function startSsh(procs: Processes, dir: string, t: Targets): Promise<Forward> {
  const d = join(dir, 'ssh');
  mkdirSync(d, { recursive: true, mode: 0o700 });
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(d, 'host_key')]);
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(d, 'client_key')]);
  writeFileSync(join(d, 'authorized_keys'), `${readFileSync(join(d, 'client_key.pub'), 'utf8')}`, {
    mode: 0o600,
  });
  const sshdPort = await freePort();
  writeFileSync(
    join(d, 'known_hosts'),
    `[${LOOP}]:${sshdPort} ${readFileSync(join(d, 'host_key.pub'), 'utf8').split(' ').slice(0, 2).join(' ')}\n`,
  );
  writeFileSync(
    join(d, 'sshd_config'),
    `# private sshd of one ciport bench run (not the system's)
Port ${sshdPort}
ListenAddress ${LOOP}
HostKey ${join(d, 'host_key')}
PidFile none
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AuthorizedKeysFile ${join(d, 'authorized_keys')}
AllowTcpForwarding local
PermitOpen ${LOOP}:${t.pg} ${LOOP}:${t.iperf}
GatewayPorts no
X11Forwarding no
AllowAgentForwarding no
PermitTTY no
Ciphers aes128-gcm@openssh.com,chacha20-poly1305@openssh.com
Compression no
UseDNS no
Subsystem sftp none
LogLevel ERROR
`,
  );
  if (process.getuid?.() === 0) mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
  await run('/usr/sbin/sshd', ['-t', '-f', join(d, 'sshd_config')]);
  const sshd = procs.spawn('sshd', '/usr/sbin/sshd', ['-D', '-e', '-f', join(d, 'sshd_config')]);
  await waitListening('sshd', sshdPort);
  const pg = await freePort();
  const tcp = await freePort();
  // One SSH connection carries every forwarded connection: that is what `ssh -L` is.
  const ssh = procs.spawn('ssh -L', 'ssh', [
    '-N',
    '-F',
    '/dev/null',
    '-i',
    join(d, 'client_key'),
    '-p',
    String(sshdPort),
    '-o',
    'BatchMode=yes',
    '-o',
    'StrictHostKeyChecking=yes',
    '-o',
    `UserKnownHostsFile=${join(d, 'known_hosts')}`,
    '-o',
    'Ciphers=aes128-gcm@openssh.com',
    '-o',
    'Compression=no',
    '-o',
    'ExitOnForwardFailure=yes',
    '-L',
    `${LOOP}:${pg}:${LOOP}:${t.pg}`,
    '-L',
    `${LOOP}:${tcp}:${LOOP}:${t.iperf}`,
    `${userInfo().username}@${LOOP}`,
  ]);
  await waitListening('ssh -L', pg);
  await waitListening('ssh -L', tcp);
  return { pg, tcp, pids: [ssh.pid!, sshd.pid!] };
}

/** A self-signed ECDSA P-256 certificate (its own CA) in DIR/cert.pem, key in DIR/key.pem. */
async function selfSignedCert(d: string): Promise<void> {
  await run(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-days',
      '2',
      '-subj',
      `/CN=${LOOP}`,
      '-keyout',
      'key.pem',
      '-out',
      'cert.pem',
    ],
    { cwd: d },
  );
}

/** stunnel client → TLS 1.3 (AES-128-GCM, pinned ECDSA P-256 certificate) → stunnel server. */
export async function startStunnel(procs: Processes, dir: string, t: Targets): Promise<Forward> {
  const d = join(dir, 'stunnel');
  mkdirSync(d, { recursive: true, mode: 0o700 });
  await selfSignedCert(d);
  writeFileSync(
    join(d, 'server.pem'),
    readFileSync(join(d, 'key.pem'), 'utf8') + readFileSync(join(d, 'cert.pem'), 'utf8'),
    { mode: 0o600 },
  );
  const common = `foreground = yes
pid =
syslog = no
debug = 3
sslVersionMin = TLSv1.3
ciphersuites = TLS_AES_128_GCM_SHA256
socket = l:TCP_NODELAY=1
socket = r:TCP_NODELAY=1
`;
  const [srvPg, srvTcp, pg, tcp] = [await freePort(), await freePort(), await freePort(), await freePort()];
  writeFileSync(
    join(d, 'server.conf'),
    `${common}output = ${join(d, 'server.log')}
cert = ${join(d, 'server.pem')}
[pg]
accept = ${LOOP}:${srvPg}
connect = ${LOOP}:${t.pg}
[iperf]
accept = ${LOOP}:${srvTcp}
connect = ${LOOP}:${t.iperf}
`,
  );
  writeFileSync(
    join(d, 'client.conf'),
    `${common}output = ${join(d, 'client.log')}
client = yes
verifyPeer = yes
CAfile = ${join(d, 'cert.pem')}
[pg]
accept = ${LOOP}:${pg}
connect = ${LOOP}:${srvPg}
[iperf]
accept = ${LOOP}:${tcp}
connect = ${LOOP}:${srvTcp}
`,
  );
  const server = procs.spawn('stunnel server', 'stunnel4', [join(d, 'server.conf')]);
  await waitListening('stunnel server', srvPg);
  const client = procs.spawn('stunnel client', 'stunnel4', [join(d, 'client.conf')]);
  await waitListening('stunnel client', pg);
  await waitListening('stunnel client', tcp);
  return { pg, tcp, pids: [client.pid!, server.pid!] };
}

/** haproxy in `mode tcp`, default threads. */
export async function startHaproxy(procs: Processes, dir: string, t: Targets): Promise<Forward> {
  const [pg, tcp] = [await freePort(), await freePort()];
  const cfg = join(dir, 'haproxy.cfg');
  writeFileSync(
    cfg,
    `global
    maxconn 4096
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
listen bench_pg
    bind ${LOOP}:${pg}
    server pg ${LOOP}:${t.pg}
listen bench_tcp
    bind ${LOOP}:${tcp}
    server iperf ${LOOP}:${t.iperf}
`,
  );
  await run('haproxy', ['-c', '-q', '-f', cfg]);
  const p = procs.spawn('haproxy', 'haproxy', ['-db', '-f', cfg]);
  await waitListening('haproxy', pg);
  await waitListening('haproxy', tcp);
  return { pg, tcp, pids: [p.pid!] };
}

/**
 * pgbouncer in session pooling mode (pool size 20). It checks the client's SCRAM login against
 * the role's SCRAM secret copied from pg_authid, then logs in to the server with the keys of
 * that exchange: the closest peer to a proxy that injects credentials.
 */
export async function startPgbouncer(
  procs: Processes,
  dir: string,
  t: Targets & { database: string; user: string; scramSecret: string },
): Promise<Forward> {
  const d = join(dir, 'pgbouncer');
  mkdirSync(d, { recursive: true, mode: 0o700 });
  const port = await freePort();
  writeFileSync(join(d, 'userlist.txt'), `"${t.user}" "${t.scramSecret}"\n`, { mode: 0o600 });
  writeFileSync(
    join(d, 'pgbouncer.ini'),
    `[databases]
${t.database} = host=${LOOP} port=${t.pg} dbname=${t.database}
[pgbouncer]
listen_addr = ${LOOP}
listen_port = ${port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = ${join(d, 'userlist.txt')}
pool_mode = session
max_client_conn = 500
default_pool_size = 20
server_tls_sslmode = disable
client_tls_sslmode = disable
log_connections = 0
log_disconnections = 0
logfile = ${join(d, 'pgbouncer.log')}
ignore_startup_parameters = extra_float_digits
`,
  );
  const ids = await postgresIds();
  if (ids) {
    // pgbouncer refuses to run as root: it runs as the postgres OS user, spawned directly so
    // that its PID is ours to stop.
    chmodSync(dir, 0o755);
    for (const f of [d, join(d, 'userlist.txt'), join(d, 'pgbouncer.ini')]) chownSync(f, ids.uid, ids.gid);
  }
  const p = procs.spawn('pgbouncer', '/usr/sbin/pgbouncer', [join(d, 'pgbouncer.ini')], ids ?? {});
  await waitListening('pgbouncer', port);
  return { pg: port, pids: [p.pid!] };
}

/**
 * A bare two-process `node:tls` relay (bench/relay.ts): the runtime's own ceiling for a TLS
 * tunnel, measured in the same run as the port (issue 11 states the bulk target against it).
 */
export async function startNodeTlsRelay(procs: Processes, dir: string, t: Targets): Promise<Forward> {
  const d = join(dir, 'node-tls');
  mkdirSync(d, { recursive: true, mode: 0o700 });
  await selfSignedCert(d);
  const relay = join(new URL('.', import.meta.url).pathname, 'relay.js');
  const start = async (name: string, args: string[]) => {
    const p = procs.spawn(name, process.execPath, [relay, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    const line = await new Promise<string>((resolve, reject) => {
      let out = '';
      p.stdout!.on('data', (b: Buffer) => {
        out += b.toString();
        if (out.includes('\n')) resolve(out.split('\n')[0]!);
      });
      p.once('exit', () => reject(new Error(`${name} exited`)));
    });
    return { pid: p.pid!, ports: (JSON.parse(line) as { ports: number[] }).ports };
  };
  const server = await start('node:tls relay server', [
    'server',
    join(d, 'cert.pem'),
    join(d, 'key.pem'),
    String(t.pg),
    String(t.iperf),
  ]);
  const client = await start('node:tls relay client', [
    'client',
    join(d, 'cert.pem'),
    ...server.ports.map(String),
  ]);
  return { pg: client.ports[0]!, tcp: client.ports[1]!, pids: [client.pid, server.pid] };
}
