import { SpanStatusCode, trace, type Attributes, type Span, type Tracer } from '@opentelemetry/api';
import type { Label } from '../agents/label.js';
import { redact, scan } from '../guards/content/scanner.js';
import { ATTR } from './attributes.js';
import { capturesContent } from './setup.js';

/** Palisade's tracer: the API's no-op until a provider is registered (see `setupTracing`). */
export const tracer = (): Tracer => trace.getTracer('palisade');

/** Text with its PII and secrets redacted, for spans that may carry content. */
const redacted = (text: string): string => redact(text, scan(text, { injection: false }));

/** The label as span attributes. */
export const labelAttributes = (label: Label): Attributes => ({
  [ATTR.PALISADE_LABEL_LEVEL]: label.level,
  [ATTR.PALISADE_LABEL_CATEGORIES]: [...label.categories],
  [ATTR.PALISADE_LABEL_INTEGRITY]: label.integrity,
});

/**
 * Records a thrown error on the span and marks it failed; errors marked `benign` (control flow, such as
 * a pause) are not failures. Its message may quote content (a model's or a tool's error text): only its
 * name is recorded, unless the operator opted in to content, and then its message redacted (never its stack).
 */
export function recordError(span: Span, error: unknown): void {
  if (!span.isRecording() || (error as { benign?: unknown } | null)?.benign === true) return;
  const name = error instanceof Error ? error.name : 'Error';
  const text = error instanceof Error ? error.message : String(error);
  const message = capturesContent() ? redacted(text) : undefined;
  span.recordException(message === undefined ? { name } : { name, message });
  span.setStatus({ code: SpanStatusCode.ERROR, message: message ?? name });
}

/** Sets a content attribute only when the operator opted in, and only after PII and secrets are redacted. */
export function setContent(span: Span, name: string, text: string | (() => string)): void {
  if (!capturesContent() || !span.isRecording()) return;
  span.setAttribute(name, redacted(typeof text === 'string' ? text : text()));
}

/** Runs `work` as the span's body: a thrown error is recorded on the span, and the span always ends. */
export async function inSpan<T>(span: Span, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (error) {
    recordError(span, error);
    throw error;
  } finally {
    span.end();
  }
}
