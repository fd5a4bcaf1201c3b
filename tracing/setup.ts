import { trace } from '@opentelemetry/api';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BasicTracerProvider, BatchSpanProcessor, type SpanExporter } from '@opentelemetry/sdk-trace-base';
import { ATTR_SERVICE_NAME } from '@opentelemetry/semantic-conventions';

export interface TracingOptions {
  /** Defaults to OTEL_SERVICE_NAME, then `palisade`. */
  serviceName?: string;
  /** An OTLP/HTTP endpoint: a base (`http://collector:4318`, `/v1/traces` is added) or the full traces URL. */
  endpoint?: string;
  /** An exporter of your own instead of OTLP/HTTP. */
  exporter?: SpanExporter;
  /** Record model input and output and tool arguments and results on spans, after redaction of PII and secrets. Off by default. */
  captureContent?: boolean;
}

export interface Tracing {
  /** Whether a tracer provider was registered (false: tracing is off and spans are no-ops). */
  readonly enabled: boolean;
  forceFlush(): Promise<void>;
  shutdown(): Promise<void>;
}

const OFF: Tracing = { enabled: false, forceFlush: async () => undefined, shutdown: async () => undefined };

let contentCapture = false;

/** Whether spans may carry (redacted) content. */
export const capturesContent = (): boolean => contentCapture;

/**
 * Spans carry ids, names, labels, verdicts and usage; content only when the operator opts in,
 * and then redacted.
 *
 * Turns on OpenTelemetry tracing, when configured: an exporter or endpoint is passed, or
 * OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set. Otherwise nothing is
 * registered and the runtime's spans are the API's no-ops.
 */
export function setupTracing(options: TracingOptions = {}): Tracing {
  const env = process.env;
  const configured = options.exporter !== undefined || !!options.endpoint || !!env.OTEL_EXPORTER_OTLP_ENDPOINT || !!env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT;
  if (!configured || env.OTEL_SDK_DISABLED === 'true') return OFF;
  const exporter =
    options.exporter ??
    // Without a url the exporter reads the OTEL_EXPORTER_OTLP_* variables itself.
    new OTLPTraceExporter(options.endpoint ? { url: tracesUrl(options.endpoint) } : {});
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ [ATTR_SERVICE_NAME]: options.serviceName ?? env.OTEL_SERVICE_NAME ?? 'palisade' }),
    spanProcessors: [new BatchSpanProcessor(exporter)],
  });
  if (!trace.setGlobalTracerProvider(provider)) {
    void provider.shutdown();
    throw new Error('a global OpenTelemetry tracer provider is already registered');
  }
  contentCapture = options.captureContent ?? env.PALISADE_TRACE_CONTENT === 'true';
  return {
    enabled: true,
    forceFlush: () => provider.forceFlush(),
    shutdown: async () => {
      await provider.shutdown();
      trace.disable();
      contentCapture = false;
    },
  };
}

function tracesUrl(endpoint: string): string {
  const trimmed = endpoint.replace(/\/+$/, '');
  return trimmed.endsWith('/v1/traces') ? trimmed : `${trimmed}/v1/traces`;
}
