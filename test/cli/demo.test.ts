import { describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';

describe('ciport demo', () => {
  it('runs issuer, gateway, target and two jobs in one process and shows the audit trail', async () => {
    const r = await runCli(['demo']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('decision: allow by rule "ledger-main"');
    expect(r.stdout).toMatch(/CIPORT_LEDGER_DB_URL=tcp:\/\/127\.0\.0\.1:\d+/);
    expect(r.stdout).toContain('got back "ledger: 41 bytes received');
    // The job is told its own values (policy.disclose: condition); the audit trail names the rule.
    expect(r.stdout).toContain(
      'decision: deny (CIPORT_E_POLICY_DENIED): denied by a deny rule (fork = true)',
    );
    expect(r.stdout).toMatch(/ session\.denied .*rule no-forks/);
    for (const type of [
      'config.loaded',
      'session.opened',
      'connection.opened',
      'connection.closed',
      'session.ended',
      'session.denied',
    ]) {
      expect(r.stdout).toContain(` ${type} `);
    }
    expect(r.stdout).toContain('chain: intact (6 events)');
    // The job's token and session secret are never shown.
    expect(r.stdout).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}/);
    expect(r.stdout).not.toContain('cps_');
  });
});
