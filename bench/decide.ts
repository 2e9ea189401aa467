// `npm run bench -- decide`: token verification plus policy decision per second on one core,
// with a 200-rule policy, and the share of that time spent verifying the signature.
import { createPublicKey, verify as cryptoVerify } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { issuerSchema, ruleSchema } from '../src/config/schema.js';
import { DevSigner, mintToken, TokenVerifier } from '../src/identity/index.js';
import { compilePolicy } from '../src/policy/index.js';
import { fmt, median, opsPerSecond, table } from './stats.js';

const ISSUER = 'https://gitlab.bench.example';
const RULES = 200;
const TOKENS = 500;

/** 200 rules of the shapes operators write; the job's own rule is the last one. */
function rules() {
  return Array.from({ length: RULES }, (_, i) =>
    ruleSchema.parse({
      name: `rule-${i}`,
      issuer: 'gl',
      when: {
        project_id: String(10_000 + i),
        ref_protected: true,
        ref: i % 2 ? { one_of: ['main', 'release'] } : { glob: 'release/*' },
        environment: { glob: `env-${i}/**` },
        pipeline_source: { not: { one_of: ['merge_request_event', 'external_pull_request_event'] } },
      },
      allow: [`db-${i}`],
      max_ttl: '30m',
    }),
  );
}

export async function benchDecide(rounds: number): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'ciport-bench-'));
  try {
    return await measureDecide(dir, rounds);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function measureDecide(dir: string, rounds: number): Promise<string> {
  const signer = await DevSigner.ephemeral({ alg: 'RS256' });
  const jwksFile = join(dir, 'jwks.json');
  writeFileSync(jwksFile, JSON.stringify(signer.jwks()));
  const issuer = issuerSchema.parse({
    name: 'gl',
    kind: 'gitlab',
    issuer: ISSUER,
    audience: 'ciport',
    jwks_file: jwksFile,
  });
  const verifier = new TokenVerifier([issuer]);
  const policy = compilePolicy({ issuers: [issuer], rules: rules() });
  const last = RULES - 1;
  const tokens = await Promise.all(
    Array.from({ length: TOKENS }, (_, i) =>
      mintToken(signer, ISSUER, {
        project_id: String(10_000 + last),
        job_project_id: String(10_000 + last),
        ref: 'main',
        ref_protected: 'true',
        environment: `env-${last}/eu`,
        pipeline_source: 'push',
        job_id: String(i),
      }),
    ),
  );
  // Raw RS256 verification with node:crypto: the floor under any JWT library.
  const jwk = signer.jwks().keys[0]!;
  const publicKey = createPublicKey({ key: jwk as import('node:crypto').JsonWebKey, format: 'jwk' });
  const parts = tokens.map((t) => {
    const [h, p, s] = t.split('.') as [string, string, string];
    return { input: Buffer.from(`${h}.${p}`), sig: Buffer.from(s, 'base64url') };
  });

  const facts = (await verifier.verify(tokens[0]!)).facts;
  const decide = () => policy.decide({ issuer: 'gl', facts, defaultTtlMs: 900_000 });
  if (decide().decision !== 'allow') throw new Error('bench policy does not allow its own token');

  const full: number[] = [];
  const decideOnly: number[] = [];
  const sigOnly: number[] = [];
  for (let r = 0; r < rounds; r++) {
    // Interleaved: every measurement once per round, so drift hits all alike.
    full.push(
      await opsPerSecond(TOKENS, async (i) => {
        const v = await verifier.verify(tokens[i]!);
        return policy.decide({ issuer: v.issuer.name, facts: v.facts, defaultTtlMs: 900_000 });
      }),
    );
    decideOnly.push(await opsPerSecond(TOKENS * 4, decide));
    sigOnly.push(
      await opsPerSecond(TOKENS, (i) =>
        cryptoVerify('RSA-SHA256', parts[i]!.input, publicKey, parts[i]!.sig),
      ),
    );
  }
  const f = median(full);
  const d = median(decideOnly);
  const s = median(sigOnly);
  const sigShare = f / s; // (1/s) / (1/f): time of one signature check over time of one full pass
  const decideShare = f / d;
  return [
    `decide: ${RULES} rules, RS256 tokens, one core, median of ${rounds} interleaved rounds`,
    '',
    table([
      ['measure', 'ops/s', 'ratio to verify+decide'],
      ['verify + decide (whole path)', fmt(f), '1.00x'],
      ['policy decide alone (200 rules)', fmt(d), `${(d / f).toFixed(2)}x`],
      ['RS256 signature check alone (node:crypto)', fmt(s), `${(s / f).toFixed(2)}x`],
    ]),
    '',
    `share of the whole path spent in the signature check: ${(sigShare * 100).toFixed(0)}%`,
    `share spent in the 200-rule decision: ${(decideShare * 100).toFixed(1)}%`,
  ].join('\n');
}
