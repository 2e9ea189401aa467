#!/usr/bin/env -S node --
// `--` above: Node 20 and 24 read `--env-file F` anywhere in argv, so without it
// `ciport open db --env-file .ciport.env` would make node itself fail.
import { main } from '../dist/src/cli/main.js';

// `ciport … | head`: a closed pipe ends the command quietly, as Unix tools do.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err) => {
    if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw err;
  });
}

// Exit as soon as the command is done: a closing HTTP/2 connection or a keep-alive socket of
// a finished command must not hold the shell. But first let stdout and stderr drain: a pipe
// whose reader is slower than us (`ciport sessions list --json | jq`) takes 64 KiB at once and
// queues the rest, which process.exit would throw away.
const drained = (stream) => new Promise((resolve) => stream.write('', () => resolve()));
main(process.argv).then(async (code) => {
  process.exitCode = code;
  await Promise.all([drained(process.stdout), drained(process.stderr)]);
  process.exit(code);
});
