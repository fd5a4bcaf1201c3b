import type { ChatMessage, ModelProvider, ModelRequest, ModelResponse, ToolCall } from '../model.js';

/** A read-only view of the conversation that a script decides from. */
export class Conversation {
  constructor(readonly request: ModelRequest) {}

  get messages(): readonly ChatMessage[] {
    return this.request.messages;
  }

  /** The most recent user message: the request this agent is working on. */
  get lastUser(): string {
    for (let i = this.messages.length - 1; i >= 0; i--) {
      const m = this.messages[i]!;
      if (m.role === 'user') return m.content;
    }
    return '';
  }

  /** Whether the tool was already called since the last user message. */
  called(tool: string): boolean {
    return this.result(tool) !== undefined;
  }

  /** The latest result of a tool since the last user message: parsed JSON when it is JSON. */
  result(tool: string): unknown {
    for (let i = this.messages.length - 1; i >= 0; i--) {
      const m = this.messages[i]!;
      if (m.role === 'user') return undefined;
      if (m.role === 'tool' && m.name === tool) {
        try {
          return JSON.parse(m.content);
        } catch {
          return m.content;
        }
      }
    }
    return undefined;
  }

  /** Whether a tool of this name is offered to the model on this turn. */
  offers(tool: string): boolean {
    return this.request.tools.some((t) => t.name === tool);
  }
}

export type ScriptReply = string | { text?: string; calls?: Array<{ name: string; args?: Record<string, unknown> }> };
export type Script = (conversation: Conversation) => ScriptReply;

export interface ScriptedModelOptions {
  /** Reported as the model name (`gen_ai.request.model`). */
  model?: string;
  script: Script;
}

// A rough count keeps token budgets meaningful without a tokenizer.
const estimateTokens = (text: string): number => Math.ceil(text.length / 4);

/** A deterministic model for demos and tests: a function of the conversation, no network. */
export class ScriptedModel implements ModelProvider {
  readonly provider = 'palisade.scripted';
  readonly model: string;
  private readonly script: Script;

  constructor(options: ScriptedModelOptions) {
    this.model = options.model ?? 'scripted';
    this.script = options.script;
  }

  async generate(request: ModelRequest): Promise<ModelResponse> {
    const reply = this.script(new Conversation(request));
    const { text, calls = [] } = typeof reply === 'string' ? { text: reply } : reply;
    // Ids depend only on the conversation's length, so a replayed turn yields the same ids.
    const turn = request.messages.length;
    const toolCalls: ToolCall[] = calls.map((c, i) => ({ id: `call_${turn}_${i}`, name: c.name, arguments: JSON.stringify(c.args ?? {}) }));
    const prompt = request.system + request.messages.map((m) => ('content' in m ? (m.content ?? '') : '')).join('');
    return {
      content: text ?? null,
      toolCalls,
      usage: { inputTokens: estimateTokens(prompt), outputTokens: estimateTokens((text ?? '') + toolCalls.map((c) => c.arguments).join('')) },
      model: this.model,
    };
  }
}
