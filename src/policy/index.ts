// Policy: pure rule matching over verified claims. No I/O; the identity layer supplies the facts.

export {
  DISCLOSE_LEVELS,
  type DisclosedFailure,
  type DiscloseLevel,
  disclosedDecision,
  disclosedReason,
} from './disclose.js';
export {
  compilePolicy,
  type Decision,
  type DecisionRequest,
  type Failure,
  type GrantedTarget,
  type Policy,
  type PolicyInput,
  type PolicyRuleInput,
  type RuleSummary,
} from './engine.js';
export { failureMessage, formatDecision, formatValue, MISSING, withApprovals } from './explain.js';
export { globCrossesSeparators, globSource, globToRegExp } from './glob.js';
export {
  type Finding,
  formatFinding,
  type LintInput,
  lintPolicy,
  MAX_LEEWAY_MS,
  MAX_TTL_MS,
  PATH_CLAIMS,
  PIN_CLAIMS,
} from './lint.js';
export {
  canonical,
  compileMatcher,
  type Matcher,
  type MatcherNode,
  numeric,
  parseMatcher,
} from './matchers.js';
