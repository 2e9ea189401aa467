// `npm run docs:config`: rewrite the generated reference in docs/config.md from the schema
// (run after changing src/config/schema.ts; test/config/reference.test.ts checks it).
import { readFileSync, writeFileSync } from 'node:fs';
import { spliceReference } from '../dist/src/config/reference.js';

const file = new URL('../docs/config.md', import.meta.url);
const before = readFileSync(file, 'utf8');
const after = spliceReference(before);
if (after !== before) writeFileSync(file, after);
process.stdout.write(`docs/config.md: ${after === before ? 'already up to date' : 'reference rewritten'}\n`);
