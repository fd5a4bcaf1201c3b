/** Content detectors: PII, secrets (gitleaks-format rules) and prompt-injection signals. */
export { categoriesOf, compareFindings, type Finding, type FindingType } from './finding.js';
export { detectInjection, decodeTagCharacters, INJECTION_PATTERNS, type InjectionOptions } from './injection.js';
export { detectPii, ibanValid, luhnValid, ssnValid, cardBrand, PII_KINDS, type PiiKind, type PiiOptions } from './pii.js';
export { cutAtBytes, DEFAULT_MAX_BYTES, mergeFindings, redact, scan, type RedactStyle, type ScanOptions } from './scanner.js';
export { DEFAULT_SECRET_RULES_TOML } from './secret-rules.js';
export {
  builtinRules,
  loadGitleaksRules,
  SecretRulesError,
  type SecretAllowlist,
  type SecretRule,
  type SecretRules,
  type SkippedRule,
} from './gitleaks-rules.js';
export { maxMatchLength } from './secret-locator.js';
export { detectSecrets, shannonEntropy, type DetectSecretsOptions } from './secrets.js';
