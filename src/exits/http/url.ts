// Client side of protocol `http`: nothing protocol-specific travels in the tunnel (the app's
// HTTP/1.1 bytes are carried raw to the exit), so the client only needs the URL it exports to the
// job (`CIPORT_<TARGET>_URL`) for the local listener.
import { isIP } from 'node:net';

/**
 * The URL the job uses for an `http` target's local listener: plain `http://` on the loopback
 * listener (TLS is the exit's business, towards the upstream). IPv6 hosts are bracketed.
 */
export function httpListenerUrl(host: string, port: number): string {
  const h = isIP(host) === 6 ? `[${host}]` : host;
  return `http://${h}:${port}`;
}
