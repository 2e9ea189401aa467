// `npm run bench -- <name>…`: the project's own benchmarks. Figures are ratios to a baseline
// measured in the same run; see docs/performance.md.
import { benchAudit } from './audit.js';
import { benchCarriers } from './carriers.js';
import { benchDecide } from './decide.js';
import { benchMemory } from './memory.js';
import { benchPg } from './pg.js';
import { benchSessions } from './sessions.js';
import { benchTunnel } from './tunnel.js';

const BENCHES: Record<string, (rounds: number) => Promise<string>> = {
  audit: benchAudit,
  carriers: benchCarriers,
  decide: benchDecide,
  memory: benchMemory,
  pg: benchPg,
  sessions: benchSessions,
  tunnel: benchTunnel,
};

async function run(argv: string[]): Promise<number> {
  const names = argv.filter((a) => !a.startsWith('--'));
  const roundsArg = argv.find((a) => a.startsWith('--rounds='));
  const rounds = roundsArg ? Number(roundsArg.slice('--rounds='.length)) : 5;
  const unknown = names.filter((n) => !(n in BENCHES));
  if (names.length === 0 || unknown.length > 0) {
    process.stderr.write(`usage: npm run bench -- <${Object.keys(BENCHES).join('|')}>... [--rounds=N]\n`);
    return 2;
  }
  for (const name of names) process.stdout.write(`${await BENCHES[name]!(rounds)}\n\n`);
  return 0;
}

run(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
