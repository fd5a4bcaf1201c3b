import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A scripted stand-in for the OpenAI and Anthropic HTTP APIs, so tests drive the real SDKs over real
 * HTTP without the network. Non-streaming only.
 */

export type Vendor = 'openai' | 'anthropic';

/** One scripted HTTP answer. Build bodies with the helpers below so they match each vendor's wire shape. */
export interface ScriptedReply {
  /** Defaults to 200. */
  status?: number;
  body: unknown;
  headers?: Record<string, string>;
  /** Hold the answer back this long, e.g. to outlast a client timeout. */
  delayMs?: number;
}

export interface RecordedRequest {
  vendor: Vendor;
  method: string;
  /** Path and query as received, so tests can see what a `baseURL` turned into. */
  path: string;
  headers: IncomingHttpHeaders;
  body: unknown;
}

export interface ModelServer {
  /** `http://127.0.0.1:<port>`, without a trailing slash. */
  readonly url: string;
  readonly requests: RecordedRequest[];
  enqueue(vendor: Vendor, ...replies: ScriptedReply[]): void;
  /** Requests for one vendor, in arrival order. */
  requestsFor(vendor: Vendor): RecordedRequest[];
  close(): Promise<void>;
}

// Suffix matching lets a test mount the OpenAI API under any prefix, as compatible servers do.
function vendorFor(method: string | undefined, pathname: string): Vendor | undefined {
  if (method !== 'POST') return undefined;
  if (pathname.endsWith('/chat/completions')) return 'openai';
  if (pathname.endsWith('/v1/messages')) return 'anthropic';
  return undefined;
}

export async function startModelServer(): Promise<ModelServer> {
  const queues: Record<Vendor, ScriptedReply[]> = { openai: [], anthropic: [] };
  const requests: RecordedRequest[] = [];
  const timers = new Set<NodeJS.Timeout>();

  const send = (res: ServerResponse, reply: ScriptedReply): void => {
    // The client may have timed out and hung up while the reply was delayed.
    if (res.destroyed) return;
    res.writeHead(reply.status ?? 200, { 'content-type': 'application/json', ...reply.headers });
    res.end(JSON.stringify(reply.body));
  };

  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const path = req.url ?? '/';
      const vendor = vendorFor(req.method, new URL(path, 'http://localhost').pathname);
      if (!vendor) {
        send(res, { status: 404, body: { error: { message: `model-server: no route for ${req.method} ${path}` } } });
        return;
      }
      const raw = Buffer.concat(chunks).toString('utf8');
      let body: unknown = raw;
      try {
        body = JSON.parse(raw);
      } catch {
        // Kept as text so a test can still see what arrived.
      }
      requests.push({ vendor, method: req.method ?? '', path, headers: req.headers, body });

      // An unscripted call is a test bug; 418 with x-should-retry: false fails it at once instead of being retried.
      const reply =
        queues[vendor].shift() ??
        (vendor === 'openai'
          ? openaiError(418, 'model-server: no scripted reply', { headers: { 'x-should-retry': 'false' } })
          : anthropicError(418, 'invalid_request_error', 'model-server: no scripted reply', {
              'x-should-retry': 'false',
            }));
      if (!reply.delayMs) {
        send(res, reply);
        return;
      }
      const timer = setTimeout(() => {
        timers.delete(timer);
        send(res, reply);
      }, reply.delayMs);
      timers.add(timer);
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    enqueue(vendor, ...replies) {
      queues[vendor].push(...replies);
    },
    requestsFor(vendor) {
      return requests.filter((request) => request.vendor === vendor);
    },
    async close() {
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      // Keep-alive sockets would otherwise hold close() open.
      server.closeAllConnections();
      await new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
    },
  };
}

// ---- OpenAI Chat Completions shapes ----

export interface ScriptedToolCall {
  id: string;
  name: string;
  /** Raw JSON text, as OpenAI sends it. */
  arguments: string;
}

export function openaiCompletion(options: {
  text?: string | null;
  toolCalls?: ScriptedToolCall[];
  model?: string;
  usage?: { prompt: number; completion: number };
}): ScriptedReply {
  const toolCalls = options.toolCalls ?? [];
  const usage = options.usage ?? { prompt: 11, completion: 7 };
  return {
    body: {
      id: 'chatcmpl-test',
      object: 'chat.completion',
      created: 1_700_000_000,
      model: options.model ?? 'gpt-test',
      choices: [
        {
          index: 0,
          message: {
            role: 'assistant',
            content: options.text ?? null,
            refusal: null,
            ...(toolCalls.length > 0
              ? {
                  tool_calls: toolCalls.map((call) => ({
                    id: call.id,
                    type: 'function',
                    function: { name: call.name, arguments: call.arguments },
                  })),
                }
              : {}),
          },
          logprobs: null,
          finish_reason: toolCalls.length > 0 ? 'tool_calls' : 'stop',
        },
      ],
      usage: {
        prompt_tokens: usage.prompt,
        completion_tokens: usage.completion,
        total_tokens: usage.prompt + usage.completion,
      },
    },
  };
}

/** OpenAI's error envelope: `{ error: { message, type, param, code } }`. */
export function openaiError(
  status: number,
  message: string,
  options: { type?: string; code?: string | null; headers?: Record<string, string> } = {},
): ScriptedReply {
  return {
    status,
    headers: options.headers,
    body: {
      error: {
        message,
        type: options.type ?? (status === 429 ? 'requests' : status >= 500 ? 'server_error' : 'invalid_request_error'),
        param: null,
        code: options.code ?? null,
      },
    },
  };
}

// ---- Anthropic Messages shapes ----

export interface ScriptedToolUse {
  id: string;
  name: string;
  input: Record<string, unknown>;
}

export function anthropicMessage(options: {
  text?: string | string[];
  toolUses?: ScriptedToolUse[];
  model?: string;
  usage?: { input: number; output: number };
}): ScriptedReply {
  const texts = options.text === undefined ? [] : [options.text].flat();
  const toolUses = options.toolUses ?? [];
  const usage = options.usage ?? { input: 13, output: 5 };
  return {
    body: {
      id: 'msg_test',
      type: 'message',
      role: 'assistant',
      model: options.model ?? 'claude-test',
      content: [
        ...texts.map((text) => ({ type: 'text', text, citations: null })),
        ...toolUses.map((use) => ({ type: 'tool_use', id: use.id, name: use.name, input: use.input })),
      ],
      stop_reason: toolUses.length > 0 ? 'tool_use' : 'end_turn',
      stop_sequence: null,
      usage: {
        input_tokens: usage.input,
        output_tokens: usage.output,
        cache_creation_input_tokens: 0,
        cache_read_input_tokens: 0,
      },
    },
  };
}

/** Anthropic's error envelope: `{ type: 'error', error: { type, message }, request_id }`. */
export function anthropicError(
  status: number,
  type: string,
  message: string,
  headers?: Record<string, string>,
): ScriptedReply {
  return {
    status,
    headers: { 'request-id': 'req_test', ...headers },
    body: { type: 'error', error: { type, message }, request_id: 'req_test' },
  };
}
