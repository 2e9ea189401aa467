// Entry of action/dist/post.cjs (npm run build:action), run after the job's last step.
import { runPost } from './post.js';
import { runBundled } from './run-bundled.js';

runBundled(async (clientPath) => runPost(process.env, process.stdout, clientPath));
