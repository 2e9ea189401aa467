// Prometheus metrics, one registry per gateway instance (several can run in one test process).
// Kept small: what an operator alerts on.
import { Counter, Gauge, Registry } from 'prom-client';
import type { JobLivenessMetrics } from '../jobs/index.js';
import { subscribe } from '../session/events.js';

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
  approvals: Counter<'outcome'>;
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
    approvals: new Counter({
      name: 'ciport_approvals_total',
      help: 'Approval requests on this gateway, by outcome (requested, approved, denied, timed_out).',
      labelNames: ['outcome'],
      registers,
    }),
  };
}

/**
 * Job liveness metrics (docs/job-liveness.md), registered on `registry`; the returned sink is
 * the `metrics` option of `JobLiveness`. `ciport_job_api_unreachable{issuer}` is 1 while the
 * issuer's job API cannot be reached and liveness fails open.
 */
export function createLivenessMetrics(registry: Registry): JobLivenessMetrics {
  const registers = [registry];
  const requests = new Counter({
    name: 'ciport_job_api_requests_total',
    help: 'CI job API requests, by issuer, purpose (check|poll) and outcome.',
    labelNames: ['issuer', 'purpose', 'outcome'],
    registers,
  });
  const unreachable = new Gauge({
    name: 'ciport_job_api_unreachable',
    help: '1 while the issuer job API is unreachable (job liveness failing open).',
    labelNames: ['issuer'],
    registers,
  });
  const jobs = new Gauge({ name: 'ciport_jobs_watched', help: 'CI jobs watched for liveness.', registers });
  const sessions = new Gauge({
    name: 'ciport_job_sessions_watched',
    help: 'Sessions watched for job liveness.',
    registers,
  });
  const finished = new Counter({
    name: 'ciport_jobs_finished_total',
    help: 'CI jobs seen finished, by issuer and source (poll|check|webhook).',
    labelNames: ['issuer', 'source'],
    registers,
  });
  return {
    request: (issuer, purpose, outcome) => requests.inc({ issuer, purpose, outcome }),
    apiUnreachable: (issuer, down) => unreachable.set({ issuer }, down ? 1 : 0),
    watched: (j, s) => {
      jobs.set(j);
      sessions.set(s);
    },
    jobFinished: (issuer, source) => finished.inc({ issuer, source }),
  };
}

/** Agent metrics: connections now (per agent name), events agents reported. */
export function createAgentMetrics(registry: Registry, hub: { list(): Array<{ name: string }> }) {
  const registers = [registry];
  new Gauge({
    name: 'ciport_agents_connected',
    help: 'Agent connections to this gateway, by agent name.',
    labelNames: ['agent'],
    registers,
    collect() {
      this.reset();
      for (const a of hub.list()) this.inc({ agent: a.name });
    },
  });
  const events = new Counter({
    name: 'ciport_agent_events_total',
    help: 'Audit events agents reported, by type and outcome (recorded, duplicate, refused, failed).',
    labelNames: ['type', 'outcome'],
    registers,
  });
  return {
    event: (type: string, outcome: 'recorded' | 'duplicate' | 'refused' | 'failed') =>
      events.inc({ type, outcome }),
  };
}

/** Keep `metrics` up to date from gateway `gatewayId`'s session and tunnel events. */
export function observeMetrics(metrics: GatewayMetrics, gatewayId: string): () => void {
  return subscribe(gatewayId, {
    sessionOpened: (m) => metrics.sessionsOpened.inc({ issuer: m.issuer }),
    sessionEnded: (m) => metrics.sessionsEnded.inc({ reason: m.reason }),
    sessionsLive: (m) => metrics.sessionsActive.set(m.count),
    tunnelOpened: (m) => {
      metrics.tunnelsActive.inc();
      metrics.tunnelsOpened.inc({ target: m.target });
    },
    tunnelClosed: (m) => {
      metrics.tunnelsActive.dec();
      metrics.tunnelBytes.inc({ target: m.target, direction: 'up' }, m.up);
      metrics.tunnelBytes.inc({ target: m.target, direction: 'down' }, m.down);
    },
    tunnelRefused: (m) => metrics.tunnelsRefused.inc({ code: m.code }),
    approvalRequested: () => metrics.approvals.inc({ outcome: 'requested' }),
    approvalDecided: (m) => metrics.approvals.inc({ outcome: m.outcome }),
  });
}
