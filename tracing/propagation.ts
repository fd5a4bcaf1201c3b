import { context as otelContext, ROOT_CONTEXT, type Context, type TextMapGetter, type TextMapSetter } from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';

/** W3C trace context as carried by an envelope. */
export interface TraceCarrier {
  traceparent: string;
  tracestate?: string;
}

const propagator = new W3CTraceContextPropagator();

const setter: TextMapSetter<Record<string, string>> = { set: (carrier, key, value) => void (carrier[key] = value) };
const getter: TextMapGetter<Partial<TraceCarrier>> = {
  keys: (carrier) => Object.keys(carrier),
  get: (carrier, key) => (key === 'traceparent' || key === 'tracestate' ? carrier[key] : undefined),
};

/** The W3C form of `ctx`'s span context, or undefined when there is no valid, sampled-or-not span in it (tracing off). */
export function injectTrace(ctx: Context = otelContext.active()): TraceCarrier | undefined {
  const carrier: Record<string, string> = {};
  propagator.inject(ctx, carrier, setter);
  if (!carrier.traceparent) return undefined;
  return { traceparent: carrier.traceparent, ...(carrier.tracestate ? { tracestate: carrier.tracestate } : {}) };
}

/** A context whose remote parent is the carried span; the root context when nothing (valid) is carried. */
export function extractTrace(carrier: TraceCarrier | undefined, ctx: Context = ROOT_CONTEXT): Context {
  if (!carrier) return ctx;
  return propagator.extract(ctx, carrier, getter);
}
