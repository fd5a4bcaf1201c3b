/**
 * Prompt-injection signals in untrusted content (web pages, e-mails, documents, tool results):
 *
 * - `instruction`: text that addresses the model and tries to steer it: "ignore your previous
 *   instructions", "this is a message to you, GPT-4", "before you can solve the task...", "do not
 *   tell the user", "use the tool `send_money` with...", `<INFORMATION>` blocks, requests to send
 *   or forward something to an address.
 * - `role_marker`: chat-template tokens and role labels that try to start a new turn
 *   (`<|im_start|>`, `[INST]`, `<<SYS>>`, a line starting with "system:" or "### System").
 * - `hidden_unicode`: invisible characters: Unicode tag characters (U+E0000-U+E007F, used for
 *   "ASCII smuggling"), zero-width characters, a BOM inside the text, bidi overrides.
 *
 * Each pattern has its own confidence; signals of different patterns within a few hundred
 * characters of each other reinforce one another (1 - product of (1 - c)). So one weak signal
 * ("please send this to bob@example.com") stays low, while the combination typical of an attack
 * (addressing the model + a task switch + an exfiltration request) scores high.
 *
 * Every regular expression here has only bounded repetitions and no nested quantifiers, and
 * starts with a literal or a short alternation: the work per start position is bounded, so a scan
 * is linear in the text length.
 */
import { conf, type Finding } from './finding.js';

interface Pattern {
  id: string;
  kind: 'instruction' | 'role_marker';
  re: RegExp;
  confidence: number;
  /**
   * The pattern began with a word boundary, checked in code instead: the character before the
   * match must not be a lower-case ASCII letter or a digit. Injected text is often glued to the
   * field it was planted in ("...New York, USAIgnore your previous instructions"), which `\b`
   * would miss, while "unignored" must not count.
   */
  glued: boolean;
}

// A word gap: spaces, or a line break with indentation (YAML folds long strings), or an escaped
// \n in serialized text.
const S = '(?:\\s|\\\\[nrt]){1,12}';
const AI = '(?:GPT(?:-?\\d(?:\\.\\d)?o?)?|ChatGPT|Claude|Gemini|Llama|Copilot|AI(?:\\s{1,3}assistant)?|assistant|model|language\\s{1,3}model|LLM|chatbot)';
const STRONG_OBJECT = '(?:[a-z]{0,4}struct[a-z]{0,6}|prompts?|directives?|rules|guidelines|commands|programming|constraints|guardrails|system\\s{1,3}prompt)';
const WEAK_OBJECT = '(?:messages?|e-?mails?|tasks?|requests?|context|conversation|directions?|orders|guidance)';
const OVERRIDE_VERB = '(?:ignore|disregard|forget|overlook|override|bypass|discard|abandon)';
const TEMPORAL = '(?:previous|prior|preceding|above|earlier|former|foregoing|original|initial|old|existing|system|all|any|your|the)';
const ADDRESS = `['"\\x60]{0,2}(?:[\\w.+-]{1,64}@[\\w-]{1,63}(?:\\.[\\w-]{1,63}){1,5}|(?:https?:\\/\\/|www\\.)[^\\s'"\\x60<>]{3,120}|[A-Z]{2}\\d{2}[A-Z0-9]{8,30}|\\+?\\d[\\d -]{7,16}\\d)`;

function p(id: string, kind: Pattern['kind'], source: string, confidence: number, flags = 'gi'): Pattern {
  const glued = source.startsWith('\\b') && !source.includes('|\\b');
  return { id, kind, re: new RegExp(glued ? source.slice(2) : source, flags), confidence, glued };
}

const gluedToWord = (text: string, i: number): boolean => {
  const c = i > 0 ? text.charCodeAt(i - 1) : -1;
  if ((c === 110 || c === 116 || c === 114) && i > 1 && text.charCodeAt(i - 2) === 92) return false; // an escaped \n, \t, \r in serialized text
  return (c >= 97 && c <= 122) || (c >= 48 && c <= 57);
};

/** The instruction and role-marker patterns (exported for tests and documentation). */
export const INJECTION_PATTERNS: readonly Pattern[] = [
  // Overriding what the model was told.
  p('ignore_previous', 'instruction', `\\b${OVERRIDE_VERB}\\b[^.!?;]{0,40}?\\b${TEMPORAL}\\b[^.!?;]{0,30}?\\b${STRONG_OBJECT}\\b`, 0.95),
  p('ignore_previous_weak', 'instruction', `\\b${OVERRIDE_VERB}${S}(?:all${S}|any${S})?(?:of${S})?(?:your|the|my|these|those)${S}(?:previous|prior|preceding|earlier|original|initial)${S}${WEAK_OBJECT}\\b`, 0.5),
  p('ignore_above', 'instruction', `\\b(?:ignore|disregard|forget)${S}(?:all${S}|everything${S}|anything${S})?(?:the${S}|(?:that|what(?:'s|${S}is|${S}was)?)${S})?(?:(?:text|instructions?|content|message)${S})?(?:(?:written|said|stated|mentioned|given)${S})?(?:above|before${S}this|previously)\\b`, 0.8),
  p('forget_everything', 'instruction', `\\bforget${S}(?:everything|all|what)${S}(?:you${S}(?:were${S}told|know|learned|have${S}been${S}told)|that${S}came${S}before)\\b`, 0.85),
  p('do_not_follow', 'instruction', `\\b(?:do${S}not|don'?t|stop)${S}(?:follow(?:ing)?|obey(?:ing)?)${S}(?:the|your|any)${S}(?:previous${S}|prior${S}|original${S}|user'?s?${S}|system${S})?${STRONG_OBJECT}\\b`, 0.9),
  p('instead_of_task', 'instruction', `\\binstead${S}of${S}(?:the|your)${S}(?:original|user'?s?|current|given|assigned)${S}(?:task|request|instructions?)\\b`, 0.7),
  p('new_instructions', 'instruction', `\\b(?:new|updated|revised|additional|real|actual|true|secret|hidden|override)${S}(?:instructions?|directives?|system${S}prompt|orders)\\s{0,3}:`, 0.7),
  p('important_instructions', 'instruction', `\\bimportant${S}(?:instructions?|message|note|request)s?${S}(?:from${S}[^\\n]{1,60}?${S})?(?:for|to)${S}(?:you|the${S}${AI})\\b`, 0.8),
  // Re-assigning the model's role.
  p('you_are_now', 'instruction', `\\byou${S}are${S}now${S}(?:a${S}|an${S}|the${S}|in${S})?(?:no${S}longer|DAN|free|unrestricted|unfiltered|jailbroken|developer${S}mode|evil|uncensored|an?${S}(?:AI|assistant|model)${S}(?:that|which|without|with${S}no))\\b`, 0.85),
  p('you_are_now_weak', 'instruction', `\\byou${S}are${S}now${S}(?:a|an|my|acting${S}as)\\b`, 0.3),
  p('from_now_on', 'instruction', `\\bfrom${S}now${S}on,?${S}you${S}(?:are|will|must|shall|should|have${S}to|may${S}only)\\b`, 0.5),
  p('pretend', 'instruction', `\\b(?:pretend${S}(?:to${S}be|you${S}are|that${S}you)|act${S}as${S}if${S}you|role-?play${S}as)\\b`, 0.5),
  p('mode_switch', 'instruction', `\\b(?:developer|god|admin|jailbreak|DAN|unrestricted|debug)${S}mode${S}(?:enabled|activated|on)\\b|\\benable${S}(?:developer|god|admin|jailbreak|DAN)${S}mode\\b`, 0.8),
  p('system_prompt_leak', 'instruction', `\\b(?:reveal|print|show|repeat|output|display|leak|dump|tell${S}me|what${S}(?:is|are))${S}(?:me${S})?(?:your|the)${S}(?:system${S}prompt|initial${S}(?:prompt|instructions)|hidden${S}(?:prompt|instructions)|original${S}instructions|instructions${S}above)\\b`, 0.9),
  p('system_prompt', 'instruction', `\\bsystem${S}prompt\\b`, 0.3),
  // Hiding the action from the user.
  p('hide_from_user', 'instruction', `\\b(?:do${S}not|don'?t|never|without)${S}(?:tell(?:ing)?|inform(?:ing)?|notify(?:ing)?|alert(?:ing)?|warn(?:ing)?|ask(?:ing)?|mention(?:ing)?${S}(?:this${S}|it${S}|anything${S})?to|reveal(?:ing)?${S}(?:this${S}|it${S}|anything${S})?to|let(?:ting)?)${S}the${S}user\\b`, 0.9),
  p('user_must_not_know', 'instruction', `\\bthe${S}user${S}(?:must|should|will|does|need)${S}(?:not|never)${S}(?:know|find${S}out|be${S}told|notice|see|learn)\\b|\\b(?:keep|hide)${S}(?:this|it)${S}(?:secret${S}|hidden${S}|confidential${S})?from${S}the${S}user\\b|\\bwithout${S}the${S}user(?:'s)?${S}(?:knowing|knowledge|noticing|consent|permission)\\b`, 0.85),
  // Addressing the model directly.
  p('message_to_ai', 'instruction', `\\b(?:message|note|instructions?|request)s?${S}(?:from${S}[^\\n]{1,60}?${S})?(?:to|for)${S}you,?${S}(?:the${S})?${AI}\\b`, 0.9),
  p('dear_ai', 'instruction', `\\b(?:dear|attention|hey|hi|hello|note${S}to(?:${S}the)?|instructions?${S}for(?:${S}the)?|to${S}the)${S}(?:AI|assistant|AI${S}assistant|language${S}model|LLM|GPT(?:-?\\d)?|ChatGPT|Claude|chatbot)\\b`, 0.8),
  p('if_you_are_ai', 'instruction', `\\bif${S}you${S}are${S}(?:an?${S})?(?:AI|LLM|(?:large${S})?language${S}model|assistant|chatbot|GPT|bot|agent${S}reading)\\b`, 0.9),
  p('ai_reading_this', 'instruction', `\\b(?:AI|LLM|assistant|model|agent|bot)s?${S}(?:reading|processing|summari[sz]ing|parsing|analy[sz]ing)${S}(?:this|these)\\b`, 0.85),
  p('before_task', 'instruction', `\\bbefore${S}(?:you${S}(?:can${S})?|you${S}are${S}able${S}to${S})?(?:solve|solving|complete|completing|finish|answer|continue|proceed(?:ing)?${S}with|do(?:ing)?)${S}(?:the|your|this|any)${S}(?:task|request|question|job|instructions?)${S}(?:that${S}|which${S})?(?:I|the${S}user)${S}gave\\b|\\bbefore${S}you${S}can${S}(?:solve|complete|finish|answer)${S}the${S}task\\b`, 0.8),
  p('after_you_do_that', 'instruction', `\\bafter${S}you${S}(?:do|did|have${S}done|finish|complete)${S}(?:that|this|it),?${S}you${S}(?:can|may|should|must)${S}(?:solve|complete|continue|proceed|return|go${S}back|answer)\\b`, 0.8),
  p('task_i_gave_you', 'instruction', `\\b(?:the|your)${S}(?:original${S})?task${S}(?:that${S})?I${S}gave${S}you\\b`, 0.6),
  // Steering tool use.
  p('use_tool', 'instruction', `\\b(?:you${S}(?:should|must|need${S}to|have${S}to|will)|please|now|then,?|first,?|finally,?)${S}(?:use|call|invoke|run|execute|trigger)${S}(?:the${S})?(?:tool|function|api|command|plugin)\\b`, 0.85),
  p('tool_with_arguments', 'instruction', `\\b(?:use|call|invoke)${S}the${S}(?:tool|function)${S}\\x60?[A-Za-z_][\\w.]{2,60}\\x60?${S}with${S}(?:the${S})?(?:following${S})?(?:arguments|parameters|args)\\b`, 0.85),
  // Sending data somewhere.
  p('send_to_address', 'instruction', `\\b(?:send|forward|transfer|wire|e-?mail|mail|post|upload|share|pay|leak|exfiltrate|copy|paste|submit)\\b[^\\n]{0,120}?\\bto${S}(?:the${S}(?:website|web${S}site|address|url|account|iban|e-?mail(?:${S}address)?|recipient|number|page)${S})?${ADDRESS}`, 0.5),
  // Tag blocks that frame injected text as privileged.
  p('info_block', 'instruction', `<\\/?\\s{0,2}(?:INFORMATION|IMPORTANT|INSTRUCTIONS?|SYSTEM_?PROMPT|ADMIN|SECRET|HIDDEN|OVERRIDE|ASSISTANT_INSTRUCTIONS?)\\s{0,2}>`, 0.8, 'g'),
  p('shouting', 'instruction', `\\b(?:IMPORTANT|URGENT|ATTENTION|WARNING|CRITICAL)\\s{0,2}!{2,}`, 0.5, 'g'),

  // Role markers.
  p('chat_template_token', 'role_marker', `<\\|(?:im_start|im_end|im_sep|system|user|assistant|endoftext|begin_of_text|end_of_text|start_header_id|end_header_id|eot_id|eom_id|python_tag|fim_prefix|fim_middle|fim_suffix)\\|>|\\[\\/?INST\\]|<<\\/?SYS>>|<\\/?(?:start_of_turn|end_of_turn)>`, 0.9),
  p('role_label_system', 'role_marker', `^[ \\t>]{0,8}(?:#{1,4}[ \\t]{0,3})?(?:\\*\\*)?(?:system|developer)(?:\\*\\*)?[ \\t]{0,3}(?:\\([^)\\n]{0,30}\\))?[ \\t]{0,2}:`, 0.7, 'gim'),
  p('role_label_assistant', 'role_marker', `^[ \\t>]{0,8}(?:#{1,4}[ \\t]{0,3})?(?:\\*\\*)?(?:assistant|AI)(?:\\*\\*)?[ \\t]{0,3}:`, 0.6, 'gim'),
  p('role_label_user', 'role_marker', `^[ \\t>]{0,8}(?:#{1,4}[ \\t]{0,3})?(?:\\*\\*)?(?:user|human)(?:\\*\\*)?[ \\t]{0,3}:`, 0.4, 'gim'),
  p('markdown_role_header', 'role_marker', `^#{2,4}[ \\t]{0,3}(?:system|instruction|instructions|response|assistant)[ \\t]{0,3}:?[ \\t]{0,3}$`, 0.6, 'gim'),
  p('json_role', 'role_marker', `"role"\\s{0,3}:\\s{0,3}"(?:system|assistant|developer)"`, 0.6),
];

/** Signals of different patterns closer than this (in characters) reinforce each other. */
const CLUSTER_DISTANCE = 600;

export interface InjectionOptions {
  /** Reinforce nearby signals (default true). */
  combine?: boolean;
}

/** Prompt-injection signals in `text`, sorted by offset. */
export function detectInjection(text: string, options: InjectionOptions = {}): Finding[] {
  const found: Finding[] = [];
  for (const pat of INJECTION_PATTERNS) {
    pat.re.lastIndex = 0;
    for (let m = pat.re.exec(text); m !== null; m = pat.re.exec(text)) {
      if (m[0].length === 0) {
        pat.re.lastIndex++;
        continue;
      }
      if (pat.glued && gluedToWord(text, m.index)) {
        pat.re.lastIndex = m.index + 1;
        continue;
      }
      found.push({ type: 'injection', kind: pat.kind, start: m.index, end: m.index + m[0].length, ruleId: `injection.${pat.id}`, category: 'injection', confidence: pat.confidence });
    }
  }
  detectHiddenUnicode(text, found);
  found.sort((a, b) => a.start - b.start || b.end - a.end);
  const merged = dropContained(found);
  if (options.combine !== false) reinforce(merged);
  return merged.map((f) => ({ ...f, confidence: conf(f.confidence) }));
}

/** Drops a finding lying inside another one of the same kind with at least its confidence. */
function dropContained(sorted: Finding[]): Finding[] {
  const out: Finding[] = [];
  for (const f of sorted) {
    let contained = false;
    for (let k = out.length - 1; k >= 0 && k >= out.length - 8; k--) {
      const g = out[k]!;
      if (g.kind === f.kind && g.start <= f.start && g.end >= f.end && g.confidence >= f.confidence) {
        contained = true;
        break;
      }
    }
    if (!contained) out.push(f);
  }
  return out;
}

/**
 * Signals from different rules within CLUSTER_DISTANCE of each other form a cluster; each
 * finding's confidence becomes at least the cluster's: 1 - product over the cluster's rules of
 * (1 - the rule's highest confidence there). Linear: one sweep over the sorted findings.
 */
function reinforce(sorted: Finding[]): void {
  let i = 0;
  while (i < sorted.length) {
    let j = i + 1;
    let end = sorted[i]!.end;
    while (j < sorted.length && sorted[j]!.start - end <= CLUSTER_DISTANCE) {
      end = Math.max(end, sorted[j]!.end);
      j++;
    }
    if (j - i > 1) {
      const best = new Map<string, number>();
      for (let k = i; k < j; k++) {
        const f = sorted[k]!;
        if (f.kind === 'hidden_unicode' && f.confidence < 0.5) continue;
        best.set(f.ruleId, Math.max(best.get(f.ruleId) ?? 0, f.confidence));
      }
      if (best.size > 1) {
        let miss = 1;
        for (const c of best.values()) miss *= 1 - c;
        const combined = Math.min(0.99, 1 - miss);
        for (let k = i; k < j; k++) {
          const f = sorted[k]!;
          if (best.has(f.ruleId)) f.confidence = Math.max(f.confidence, combined);
        }
      }
    }
    i = j;
  }
}

// ---------------------------------------------------------------------------------------------
// hidden Unicode

const isTagLow = (c: number): boolean => c >= 0xdc00 && c <= 0xdc7f; // U+E0000-U+E007F = \uDB40\uDC00-\uDC7F
const isZeroWidth = (c: number): boolean => (c >= 0x200b && c <= 0x200f) || (c >= 0x2060 && c <= 0x2064) || c === 0xfeff;
const isBidi = (c: number): boolean => (c >= 0x202a && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069);
const HIDDEN = /[\u200B-\u200F\u202A-\u202E\u2060-\u2064\u2066-\u2069\uFEFF]|\uDB40[\uDC00-\uDC7F]/g;

function hiddenAt(text: string, i: number): number {
  const c = text.charCodeAt(i);
  if (c === 0xdb40 && isTagLow(text.charCodeAt(i + 1))) return 2;
  return isZeroWidth(c) || isBidi(c) ? 1 : 0;
}

/** Is the code point before/after position i a letter of a script that uses joiners or marks (non-ASCII), or an emoji? */
function joinerContext(text: string, i: number, len: number): boolean {
  const before = text.codePointAt(i > 1 && text.charCodeAt(i - 1) >= 0xdc00 && text.charCodeAt(i - 1) <= 0xdfff ? i - 2 : i - 1);
  const after = text.codePointAt(i + len);
  const legit = (cp: number | undefined): boolean => cp !== undefined && cp > 0x7f && /[\p{L}\p{M}\p{Extended_Pictographic}\u{1F3FB}-\u{1F3FF}\uFE0F]/u.test(String.fromCodePoint(cp));
  return legit(before) || legit(after);
}

function detectHiddenUnicode(text: string, out: Finding[]): void {
  HIDDEN.lastIndex = 0;
  for (let m = HIDDEN.exec(text); m !== null; m = HIDDEN.exec(text)) {
    const start = m.index;
    let end = start;
    let tags = 0;
    let bidi = 0;
    let zw = 0;
    for (let w = hiddenAt(text, end); w > 0; w = hiddenAt(text, end)) {
      const c = text.charCodeAt(end);
      if (w === 2) tags++;
      else if (isBidi(c)) bidi++;
      else zw++;
      end += w;
    }
    HIDDEN.lastIndex = end;
    const count = tags + bidi + zw;
    let ruleId: string;
    let confidence: number;
    if (tags > 0) {
      ruleId = 'injection.unicode_tags';
      confidence = 0.95;
    } else if (bidi > 0) {
      ruleId = 'injection.bidi_control';
      confidence = bidi >= 2 ? 0.7 : 0.5;
    } else {
      const c = text.charCodeAt(start);
      if (count === 1 && c === 0xfeff && start === 0) continue; // a byte-order mark
      if (count <= 2 && (c === 0x200c || c === 0x200d || c === 0x200e || c === 0x200f) && joinerContext(text, start, end - start)) continue; // joiners in emoji and scripts, RTL marks
      ruleId = 'injection.zero_width';
      confidence = count >= 3 ? 0.7 : 0.3;
    }
    out.push({ type: 'injection', kind: 'hidden_unicode', start, end, ruleId, category: 'injection', confidence });
  }
}

/** Decodes Unicode tag characters (ASCII smuggling) back to the ASCII they hide. */
export function decodeTagCharacters(s: string): string {
  let out = '';
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    if (cp >= 0xe0020 && cp <= 0xe007e) out += String.fromCharCode(cp - 0xe0000);
  }
  return out;
}
