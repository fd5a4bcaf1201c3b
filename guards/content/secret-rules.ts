/**
 * Palisade's built-in secret rules, written for this project in gitleaks' TOML format (the
 * format users of secret scanners already keep), and loaded by the same `loadGitleaksRules()`
 * as a user's file. Regexes are Go RE2 syntax and run on a linear-time engine.
 *
 * Each rule is anchored on a distinctive, documented token prefix where the provider has one,
 * so these rules are high-signal; the three assignment rules (`generic-secret-assignment`,
 * `password-assignment`, the URL credentials) are lower-confidence and entropy-checked.
 *
 * `confidence` is a palisade extension (gitleaks ignores unknown keys): 0..1, the `confidence`
 * of the findings the rule produces.
 *
 * Note for maintainers: this file holds regular expressions only. Never put a real or
 * realistic-looking token in it or in tests: build test tokens at run time.
 */
export const DEFAULT_SECRET_RULES_TOML = String.raw`
title = "palisade built-in secret rules"

[[rules]]
id = "aws-access-key-id"
description = "AWS access key id (long-term AKIA, temporary ASIA, and other IAM prefixes)"
regex = '''\b((?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16})\b'''
entropy = 3.0
keywords = ["akia", "asia", "abia", "acca"]
confidence = 0.95
[[rules.allowlists]]
description = "AWS documentation examples"
regexes = ['''EXAMPLE$''']

[[rules]]
id = "aws-secret-access-key"
description = "AWS secret access key assigned to a variable"
regex = '''(?i)secret[_-]?access[_-]?key["']?[ \t]{0,3}(?:=|:|:=|=>)[ \t]{0,3}["']?([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+]|$)'''
entropy = 4.0
keywords = ["secret_access", "secretaccess", "secret-access"]
confidence = 0.9

[[rules]]
id = "github-token"
description = "GitHub token: personal (ghp_), OAuth (gho_), user-to-server (ghu_), server-to-server (ghs_), refresh (ghr_)"
regex = '''\b(gh[pousr]_[0-9A-Za-z]{36})\b'''
entropy = 3.0
keywords = ["ghp_", "gho_", "ghu_", "ghs_", "ghr_"]
confidence = 0.95

[[rules]]
id = "github-fine-grained-pat"
description = "GitHub fine-grained personal access token"
regex = '''\b(github_pat_[0-9A-Za-z_]{82})\b'''
entropy = 3.0
keywords = ["github_pat_"]
confidence = 0.95

[[rules]]
id = "gitlab-token"
description = "GitLab token: personal/project/group (glpat-), pipeline trigger, runner, deploy, OAuth and others"
regex = '''\b((?:glpat|glptt|glrt|gldt|glsoat|glcbt|glft|glimt|glagent|gloas)-[0-9A-Za-z_-]{20,100}(?:\.[0-9A-Za-z_-]{2,40}){0,3})(?:[^0-9A-Za-z_-]|$)'''
entropy = 3.0
keywords = ["glpat-", "glptt-", "glrt-", "gldt-", "glsoat-", "glcbt-", "glft-", "glimt-", "glagent-", "gloas-"]
confidence = 0.95

[[rules]]
id = "slack-token"
description = "Slack bot, user, app-level, refresh and configuration tokens"
regex = '''\b((?:xox[abeoprs]|xapp)-[0-9A-Za-z-]{10,250})\b'''
entropy = 3.0
keywords = ["xoxa-", "xoxb-", "xoxe-", "xoxo-", "xoxp-", "xoxr-", "xoxs-", "xapp-"]
confidence = 0.95

[[rules]]
id = "slack-webhook-url"
description = "Slack incoming webhook or workflow trigger URL"
regex = '''(?:https?://)?hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9+/_-]{20,200}'''
keywords = ["hooks.slack.com"]
confidence = 0.95

[[rules]]
id = "stripe-live-key"
description = "Stripe live secret or restricted key"
regex = '''\b((?:sk|rk)_live_[0-9A-Za-z]{20,247})\b'''
entropy = 3.0
keywords = ["sk_live_", "rk_live_"]
confidence = 0.95

[[rules]]
id = "openai-api-key"
description = "OpenAI API key: project, service-account and admin keys, and the legacy format"
regex = '''\b(sk-(?:proj|svcacct|admin)-[A-Za-z0-9_-]{40,250}|sk-[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20})(?:[^A-Za-z0-9_-]|$)'''
entropy = 3.0
keywords = ["sk-proj-", "sk-svcacct-", "sk-admin-", "t3blbkfj"]
confidence = 0.95

[[rules]]
id = "anthropic-api-key"
description = "Anthropic API or admin key"
regex = '''\b(sk-ant-(?:api|admin)[0-9]{2}-[A-Za-z0-9_-]{80,120})(?:[^A-Za-z0-9_-]|$)'''
entropy = 3.0
keywords = ["sk-ant-"]
confidence = 0.95

[[rules]]
id = "google-api-key"
description = "Google API key (Maps, Firebase, Gemini and other Google Cloud APIs)"
regex = '''\b(AIza[0-9A-Za-z_-]{35})(?:[^0-9A-Za-z_-]|$)'''
entropy = 3.0
keywords = ["aiza"]
confidence = 0.9

[[rules]]
id = "private-key"
description = "PEM private key block (RSA, EC, DSA, OpenSSH, PKCS#8, encrypted, PGP)"
regex = '''(?s)-----BEGIN[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----.{64,}?-----END[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----'''
keywords = ["-----begin"]
confidence = 0.95

[[rules]]
id = "jwt"
description = "JSON Web Token (signed): a bearer credential until it expires"
regex = '''\b(eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{16,})'''
entropy = 3.0
keywords = ["eyj"]
confidence = 0.7

[[rules]]
id = "npm-token"
description = "npm access token"
regex = '''\b(npm_[A-Za-z0-9]{36})\b'''
entropy = 3.0
keywords = ["npm_"]
confidence = 0.95

[[rules]]
id = "twilio-api-key"
description = "Twilio API key secret id (SK followed by 32 hex digits)"
regex = '''\b(SK[0-9a-f]{32})\b'''
entropy = 3.0
keywords = ["sk"]
confidence = 0.8

[[rules]]
id = "sendgrid-api-key"
description = "SendGrid API key"
regex = '''\b(SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43})(?:[^A-Za-z0-9_-]|$)'''
entropy = 3.0
keywords = ["sg."]
confidence = 0.95

[[rules]]
id = "huggingface-token"
description = "Hugging Face access token"
regex = '''\b(hf_[A-Za-z0-9]{34,40})\b'''
entropy = 3.0
keywords = ["hf_"]
confidence = 0.9

[[rules]]
id = "pypi-token"
description = "PyPI upload token"
regex = '''\b(pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,})'''
keywords = ["pypi-ageichlwas5vcmc"]
confidence = 0.95

[[rules]]
id = "digitalocean-token"
description = "DigitalOcean personal access, OAuth or refresh token"
regex = '''\b(do[opr]_v1_[a-f0-9]{64})\b'''
keywords = ["dop_v1_", "doo_v1_", "dor_v1_"]
confidence = 0.95

[[rules]]
id = "shopify-token"
description = "Shopify access token, custom-app, private-app token or shared secret"
regex = '''\b(shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32})\b'''
keywords = ["shpat_", "shpca_", "shppa_", "shpss_"]
confidence = 0.95

[[rules]]
id = "azure-storage-account-key"
description = "Azure storage account key in a connection string"
regex = '''(?i)AccountKey=([A-Za-z0-9+/]{86}==)'''
keywords = ["accountkey="]
confidence = 0.95

[[rules]]
id = "discord-webhook-url"
description = "Discord webhook URL (anyone holding it can post)"
regex = '''https://(?:ptb\.|canary\.)?discord(?:app)?\.com/api/webhooks/[0-9]{17,20}/[A-Za-z0-9_-]{60,80}'''
keywords = ["discord"]
confidence = 0.9

[[rules]]
id = "database-url-password"
description = "Database or message-broker URL with an embedded password"
regex = '''(?i)\b(?:postgres(?:ql)?|mysql|mariadb|mongodb(?:\+srv)?|rediss?|amqps?|mssql|sqlserver|oracle|couchdb|cockroachdb|clickhouse|neo4j(?:\+s)?)://[^\s:@/]{0,256}:([^\s@/]{1,256})@[^\s/@]{1,256}'''
secretGroup = 1
keywords = ["://"]
confidence = 0.9
[[rules.allowlists]]
description = "placeholders"
regexes = ['''(?i)^(?:password|passwd|pass|pwd|secret|changeme|\*+|x+|\.+|<[^>]*>|\[[^\]]*\]|\$\{[^}]*\}|\{\{[^}]*\}\}|\$[A-Za-z_][A-Za-z0-9_]*|%[A-Za-z_]+%)$''']

[[rules]]
id = "url-credentials"
description = "HTTP, FTP, SSH, SMTP, IMAP or LDAP URL with an embedded password"
regex = '''(?i)\b(?:https?|ftps?|sftp|ssh|git|smtps?|imaps?|ldaps?)://[^\s:@/]{1,256}:([^\s@/]{1,256})@[^\s/@]{1,256}'''
secretGroup = 1
keywords = ["://"]
confidence = 0.85
[[rules.allowlists]]
description = "placeholders"
regexes = ['''(?i)^(?:password|passwd|pass|pwd|secret|changeme|\*+|x+|\.+|<[^>]*>|\[[^\]]*\]|\$\{[^}]*\}|\{\{[^}]*\}\}|\$[A-Za-z_][A-Za-z0-9_]*|%[A-Za-z_]+%)$''']

[[rules]]
id = "generic-secret-assignment"
description = "A value assigned to a key, token or secret name (api_key=..., client_secret: ..., token=...)"
regex = '''(?i)(?:^|[^0-9A-Za-z])((?:api|access|auth|client|secret|private|app|bearer|session)[_.-]?(?:key|token|secret)|apikey|secret|token)["']?[ \t]{0,3}(?:=|:|:=|=>|\?=)[ \t]{0,3}["'\x60]?([0-9A-Za-z_./+=~-]{16,200})(?:["'\x60\s;,&]|$)'''
secretGroup = 2
entropy = 3.5
keywords = ["key", "token", "secret"]
confidence = 0.6
[[rules.allowlists]]
description = "placeholders and references, not values"
regexes = ['''(?i)^(?:x{4,}|\*{4,}|\.{4,}|(?:your|my|example|sample|dummy|fake|placeholder|redacted|changeme|insert|replace)[\w.-]*|\$\{[^}]*\}|\{\{[^}]*\}\}|(?:process\.env|os\.environ|env|config|settings|secrets|vars)\.[\w.]+)$''']

[[rules]]
id = "password-assignment"
description = "A value assigned to a password name (password=..., pwd: ...)"
regex = '''(?i)(?:^|[^0-9A-Za-z])(?:password|passwd|passphrase|pwd)["']?[ \t]{0,3}(?:=|:|:=|=>|\?=)[ \t]{0,3}["'\x60]?([^\s"'\x60;,()<>{}\[\]]{6,128})(?:["'\x60\s;,&]|$)'''
entropy = 2.5
keywords = ["pass", "pwd"]
confidence = 0.6
[[rules.allowlists]]
description = "placeholders and references, not values"
regexes = ['''(?i)^(?:x{4,}|\*{4,}|\.{4,}|\$[A-Za-z_][\w.]*|%[A-Za-z_]+%|(?:your|my|example|sample|dummy|fake|placeholder|redacted|changeme|insert|replace|new|old)[_-]?pass\w*|(?:process\.env|os\.environ|env|config|settings|secrets|vars|self|this|params|args|req|request|form|data)\.[\w.]+|null|none|nil|true|false|undefined|required|optional|string|str|hidden|masked)$''']
`;
