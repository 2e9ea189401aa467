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
// a finished command must not hold the shell. stdout/stderr writes are synchronous on Linux
// for files, pipes and terminals, so nothing printed is lost.
main(process.argv).then((code) => process.exit(code));
