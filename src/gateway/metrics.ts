// Prometheus metrics, one registry per gateway instance (several can run in one test process).
// Kept small: what an operator alerts on.
import { Counter, Gauge, Registry } from 'prom-client';

export interface GatewayMetrics {
  registry: Registry;
  sessionsActive: Gauge;
  sessionsOpened: Counter<'issuer'>;
  sessionsDenied: Counter<'reason'>;
  sessionsEnded: Counter<'reason'>;
  tunnelsActive: Gauge;
  tunnelsOpened: Counter<'target'>;
  tunnelsRefused: Counter<'code'>;
  tunnelBytes: Counter<'target' | 'direction'>;
}

export function createMetrics(): GatewayMetrics {
  const registry = new Registry();
  const registers = [registry];
  return {
    registry,
    sessionsActive: new Gauge({
      name: 'ciport_sessions_active',
      help: 'Sessions currently active on this gateway.',
      registers,
    }),
    sessionsOpened: new Counter({
      name: 'ciport_sessions_opened_total',
      help: 'Sessions opened, by issuer.',
      labelNames: ['issuer'],
      registers,
    }),
    sessionsDenied: new Counter({
      name: 'ciport_sessions_denied_total',
      help: 'Session requests refused, by error code.',
      labelNames: ['reason'],
      registers,
    }),
    sessionsEnded: new Counter({
      name: 'ciport_sessions_ended_total',
      help: 'Sessions ended, by end reason.',
      labelNames: ['reason'],
      registers,
    }),
    tunnelsActive: new Gauge({
      name: 'ciport_tunnel_connections_active',
      help: 'Tunnel connections (CONNECT streams) currently open.',
      registers,
    }),
    tunnelsOpened: new Counter({
      name: 'ciport_tunnel_connections_total',
      help: 'Tunnel connections opened, by target.',
      labelNames: ['target'],
      registers,
    }),
    tunnelsRefused: new Counter({
      name: 'ciport_tunnel_connections_refused_total',
      help: 'Tunnel connections refused, by error code.',
      labelNames: ['code'],
      registers,
    }),
    tunnelBytes: new Counter({
      name: 'ciport_tunnel_bytes_total',
      help: 'Bytes carried by tunnels, by target and direction (up: client to target).',
      labelNames: ['target', 'direction'],
      registers,
    }),
  };
}
