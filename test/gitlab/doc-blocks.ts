// The YAML blocks of docs/gitlab-ci.md, by what their first line says they are: a
// `.gitlab-ci.yml`, a ciport gateway config (excerpt) or a ciport agent config. A block that says
// none of these is an error: every block on the page is checked by something.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from '../fixtures/cli.js';
import { isMap, parseCiYaml, type YamlMap } from './ci-config.js';

export const DOC_FILE = 'docs/gitlab-ci.md';

/** The gateway URL the examples name; the tests point it at the gateway they start. */
export const DOC_GATEWAY = 'https://ciport.example.com';

export type BlockKind = 'pipeline' | 'gateway' | 'agent';

export interface DocBlock {
  kind: BlockKind;
  /** The first line, without `# `. */
  title: string;
  text: string;
  value: YamlMap;
}

const KINDS: Array<[RegExp, BlockKind]> = [
  [/^\.gitlab-ci\.yml\b/, 'pipeline'],
  [/^ciport gateway config\b/, 'gateway'],
  [/^ciport agent config\b/, 'agent'],
];

export function docBlocks(markdown = readFileSync(join(ROOT, DOC_FILE), 'utf8')): DocBlock[] {
  return [...markdown.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => {
    const text = m[1] as string;
    const title = /^# (.*)/.exec(text)?.[1] ?? '';
    const kind = KINDS.find(([re]) => re.test(title))?.[1];
    if (!kind)
      throw new Error(
        `${DOC_FILE}: a yaml block must start with "# .gitlab-ci.yml…", "# ciport gateway config…" or "# ciport agent config…": ${text.slice(0, 60)}`,
      );
    const docs = parseCiYaml(text, `${DOC_FILE} (${title})`);
    const value = docs[0];
    if (docs.length !== 1 || !isMap(value))
      throw new Error(`${DOC_FILE} (${title}): expected one YAML mapping`);
    return { kind, title, text, value };
  });
}
