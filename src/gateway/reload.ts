// What a configuration reload (SIGHUP) may change. Policy is what operators change often and
// what a restart is too heavy for: `rules`, `issuers` (keys, audiences, leeway…) and
// `admin_tokens` apply to new sessions and requests at once. Everything the process is built
// around — the port, TLS, the store, data_dir, session and server limits, the targets and their
// exits (connection pools, per-session role machinery), job liveness — needs a restart: a
// reload that changes any of it is refused as a whole, so the gateway never runs half of one
// configuration and half of another.
import { canonicalJson, type JsonValue } from '../audit/canonical.js';
import type { GatewayConfig } from '../config/schema.js';

export const RELOADABLE_KEYS = ['rules', 'issuers', 'admin_tokens'] as const;

/** The secret-free JSON form (secrets serialise as their source, e.g. `env:NAME`). */
function plain(value: unknown): JsonValue {
  return JSON.parse(JSON.stringify(value ?? null)) as JsonValue;
}

/**
 * Config paths that differ between `running` and `next` and need a restart (empty: `next` can
 * be applied by a reload). Issuers reload, except their `job_api` (the liveness watcher).
 */
export function restartOnlyChanges(
  running: Readonly<GatewayConfig>,
  next: Readonly<GatewayConfig>,
): string[] {
  const keys = new Set([...Object.keys(running), ...Object.keys(next)]);
  const changed: string[] = [];
  for (const key of [...keys].sort()) {
    if ((RELOADABLE_KEYS as readonly string[]).includes(key)) continue;
    const a = (running as Record<string, unknown>)[key];
    const b = (next as Record<string, unknown>)[key];
    if (canonicalJson(plain(a)) !== canonicalJson(plain(b))) changed.push(key);
  }
  const jobApis = (cfg: Readonly<GatewayConfig>) =>
    canonicalJson(
      plain(Object.fromEntries(cfg.issuers.filter((i) => i.job_api).map((i) => [i.name, i.job_api]))),
    );
  if (jobApis(running) !== jobApis(next)) changed.push('issuers[].job_api');
  return changed;
}
