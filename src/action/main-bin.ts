// Entry of action/dist/main.cjs (npm run build:action); the runner runs it with its own node.
import { runMain } from './main.js';
import { runBundled } from './run-bundled.js';

runBundled((clientPath) => runMain(process.env, process.stdout, clientPath));
