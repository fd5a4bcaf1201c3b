import { SpanStatusCode, trace, type Attributes, type Span, type Tracer } from '@opentelemetry/api';
import type { Label } from '../agents/label.js';
import { redact, scan } from '../guards/content/scanner.js';
import { ATTR } from './attributes.js';
import { capturesContent } from './setup.js';

/** Palisade's tracer: the API's no-op until a provider is registered (see `setupTracing`). */
export const tracer = (): Tracer => trace.getTracer('palisade');

/** The label as span attributes. */
export const labelAttributes = (label: Label): Attributes => ({
  [ATTR.PALISADE_LABEL_LEVEL]: label.level,
  [ATTR.PALISADE_LABEL_CATEGORIES]: [...label.categories],
  [ATTR.PALISADE_LABEL_INTEGRITY]: label.integrity,
});

/** Records a thrown error on the span and marks it failed; errors marked `benign` (control flow, such as a pause) are not failures. */
export function recordError(span: Span, error: unknown): void {
  if (!span.isRecording() || (error as { benign?: unknown } | null)?.benign === true) return;
  span.recordException(error instanceof Error ? error : String(error));
  span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.message : String(error) });
}

/** Sets a content attribute only when the operator opted in, and only after PII and secrets are redacted. */
export function setContent(span: Span, name: string, text: string): void {
  if (!capturesContent() || !span.isRecording()) return;
  span.setAttribute(name, redact(text, scan(text, { injection: false })));
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
