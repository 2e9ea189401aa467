// Entry point of the self-contained runner client (scripts/build-client.mjs bundles this file).
import { clientMain } from './client.js';
import { runAsProcess } from './program.js';

runAsProcess((argv) => clientMain(argv));
