// What both bundled entries share: the runner client bundle lies next to them
// (action/dist/ciport.cjs), and the step ends as soon as its work is done and stdout drained
// (the client it may leave running is detached and unreferenced, so nothing else holds it).
import { realpathSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { error } from './commands.js';

export const CLIENT_BUNDLE = 'ciport.cjs';

export function runBundled(step: (clientPath: string) => Promise<number>): void {
  const here = dirname(realpathSync(process.argv[1] ?? '.'));
  void step(join(here, CLIENT_BUNDLE))
    .catch((err: unknown) => {
      // Not a failure the action foresaw: one annotation, the job fails.
      error(
        process.stdout,
        `ciport action: internal error: ${err instanceof Error ? err.message : String(err)}`,
      );
      return 70;
    })
    .then((code) => process.stdout.write('', () => process.exit(code)));
}
