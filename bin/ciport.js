#!/usr/bin/env -S node --
// `--` above: Node 20 and 24 read `--env-file F` anywhere in argv, so without it
// `ciport open db --env-file .ciport.env` would make node itself fail.
import { main } from '../dist/src/cli/main.js';
import { runAsProcess } from '../dist/src/cli/program.js';

runAsProcess(main);
