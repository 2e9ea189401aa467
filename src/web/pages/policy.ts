// Policy (docs/console.md): the rules in force (as loaded or last reloaded) and an explain box:
// paste a job's claims (JSON), pick the issuer and targets, and see the decision with its
// explanation — the offline what-if of `ciport policy explain --claims`, with the same code
// (identity/what-if.ts, the compiled policy, policy/explain.ts). Nothing is verified: claims are
// not a token.
import { formatDuration } from '../../config/duration.js';
import type { GatewayConfig } from '../../config/schema.js';
import { TARGET_NAME_RE } from '../../config/target-name.js';
import { asCiportError, CiportError } from '../../errors/index.js';
import { assertMayDo } from '../../gateway/operators.js';
import { whatIfSubject } from '../../identity/what-if.js';
import { formatDecision, withApprovals } from '../../policy/explain.js';
import { ERROR_HEADER } from '../../transport/wire.js';
import type { PageCtx } from '../context.js';
import { field } from '../form.js';
import { type Html, html, lines } from '../html.js';
import { csrfField, page } from '../layout.js';
import { sendHtml } from '../respond.js';

const MAX_CLAIMS = 32 * 1024;

function rules(config: Readonly<GatewayConfig>): Html {
  const rows = config.rules.map((r) => {
    const rule = r as unknown as Record<string, unknown>;
    const { name, issuer, when, allow, deny, max_ttl, ...rest } = rule;
    // The schema holds durations in ms; show the approval timeout as the config wrote it (15m).
    const approval = rest.approval as { timeout?: unknown } | undefined;
    if (approval && typeof approval.timeout === 'number') {
      rest.approval = { ...approval, timeout: formatDuration(approval.timeout) };
    }
    const extra =
      Object.keys(rest).length > 0 ? html`<pre>${lines(JSON.stringify(rest, null, 2))}</pre>` : '';
    return html`<tr><td><strong>${String(name)}</strong></td><td>${deny ? html`<span class="bad">deny</span>` : html`<span class="ok">allow</span>`}</td>
<td>${String(issuer ?? '')}</td><td><pre>${lines(JSON.stringify(when ?? {}, null, 2))}</pre></td>
<td>${Array.isArray(allow) ? (allow as string[]).join(', ') : ''}</td><td>${typeof max_ttl === 'number' ? formatDuration(max_ttl) : ''}</td><td>${extra}</td></tr>`;
  });
  return rows.length === 0
    ? html`<p class="muted">No rule: every request is denied.</p>`
    : html`<table><thead><tr><th>Rule</th><th>Effect</th><th>Issuer</th><th>When</th><th>Allows</th><th>Max TTL</th><th>More</th></tr></thead><tbody>${rows}</tbody></table>`;
}

function explainForm(ctx: PageCtx, values: { claims?: string; issuer?: string; targets?: string }): Html {
  const issuers = ctx.deps
    .config()
    .issuers.map(
      (i) =>
        html`<option value="${i.name}"${values.issuer === i.name ? html` selected` : ''}>${i.name}</option>`,
    );
  return html`<form method="post" action="/ui/policy/explain">${csrfField(ctx.viewer)}
<p><label for="claims">Claims (JSON object, as in a job's ID token)</label>
<textarea id="claims" name="claims" maxlength="${MAX_CLAIMS}" spellcheck="false" placeholder='{"iss": "https://gitlab.com", "project_id": "61577203", "ref": "main", "ref_protected": "true"}'>${values.claims ?? ''}</textarea></p>
<p><label>Issuer <select name="issuer"><option value="">by the claims' iss</option>${issuers}</select></label>
<label>Targets <input type="text" name="targets" value="${values.targets ?? ''}" maxlength="1000" placeholder="staging-db, cache (empty: all allowed)"></label>
<button type="submit">Explain</button></p></form>`;
}

function show(ctx: PageCtx, status: number, body: Html, headers: Record<string, string> = {}): void {
  sendHtml(
    ctx.res,
    status,
    page(
      ctx.viewer,
      { title: 'Policy', current: '/ui/policy' },
      html`<h1>Policy</h1>${body}<h2>Rules in force</h2>
<p class="muted">As loaded at start or by the last reload (SIGHUP); deny rules are checked first, then any allowing rule grants.</p>
${rules(ctx.deps.config())}`,
    ),
    { headers },
  );
}

export async function policyPage(ctx: PageCtx): Promise<void> {
  assertMayDo(ctx.deps.log, ctx.viewer.operator, 'policy.read', ctx.url.pathname);
  show(ctx, 200, html`<h2>Explain a decision</h2>${explainForm(ctx, {})}`);
}

/** POST /ui/policy/explain: the decision for the pasted claims (changes nothing). */
export async function explainClaims(ctx: PageCtx): Promise<void> {
  assertMayDo(ctx.deps.log, ctx.viewer.operator, 'policy.read', ctx.url.pathname);
  const form = ctx.form ?? new URLSearchParams();
  const values = {
    claims: (form.get('claims') ?? '').slice(0, MAX_CLAIMS),
    issuer: (form.get('issuer') ?? '').slice(0, 100),
    targets: (form.get('targets') ?? '').slice(0, 1000),
  };
  let result: Html;
  try {
    const text = field(form, 'claims', MAX_CLAIMS);
    if (!text) throw new CiportError('CIPORT_E_USAGE', 'paste the claims to explain');
    let claims: unknown;
    try {
      claims = JSON.parse(text);
    } catch (err) {
      throw new CiportError('CIPORT_E_CLAIMS_INVALID', `the claims are not JSON (${(err as Error).message})`);
    }
    const targets = (field(form, 'targets', 1000) ?? '')
      .split(/[\s,]+/)
      .filter(Boolean)
      .map((t) => t.toLowerCase());
    if (targets.length > 64 || targets.some((t) => !TARGET_NAME_RE.test(t))) {
      throw new CiportError('CIPORT_E_USAGE', 'targets: up to 64 target names, separated by commas');
    }
    const config = ctx.deps.config();
    const subject = whatIfSubject(config, claims, field(form, 'issuer', 100), 'the pasted claims');
    const policy = ctx.deps.policy();
    const decision = withApprovals(
      policy.decide({
        issuer: subject.issuer.name,
        facts: subject.facts,
        targets,
        defaultTtlMs: config.sessions.default_ttl,
      }),
      policy,
    );
    const p = subject.principal;
    result = html`<div class="${decision.decision === 'allow' ? 'notice' : 'error'}">
<p><strong class="${decision.decision === 'allow' ? 'ok' : 'bad'}">${decision.decision}</strong> for issuer ${subject.issuer.name}${p.project ? html`, project ${p.project.path ?? p.project.id ?? ''}` : ''}${p.ref?.name ? html`, ref ${p.ref.name}` : ''}${p.fork ? html`, <span class="bad">fork</span>` : ''}</p>
<pre>${lines(formatDecision(decision).trimEnd())}</pre>
<p class="muted">Offline what-if: signature, expiry and audience were not checked.</p></div>`;
  } catch (thrown) {
    const err = asCiportError(thrown);
    if (err.code === 'CIPORT_E_INTERNAL') throw err;
    show(
      ctx,
      err.httpStatus,
      html`<h2>Explain a decision</h2><div class="error"><p>${err.message}</p><p class="muted">Code <code>${err.code}</code></p></div>${explainForm(ctx, values)}`,
      { [ERROR_HEADER]: err.code },
    );
    return;
  }
  show(ctx, 200, html`<h2>Explain a decision</h2>${result}${explainForm(ctx, values)}`);
}
