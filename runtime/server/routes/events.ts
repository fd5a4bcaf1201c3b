import type { ServerResponse } from 'node:http';
import { clearanceFor, eventFor, readerOf, type Reader } from '../../event-view.js';
import { TERMINAL_EVENTS } from '../../events.js';
import type { RunStore, StoredEvent } from '../../stores/run-store.js';
import type { Principal } from '../../../agents/principal.js';
import { visibleRun, type ServerContext } from '../context.js';
import { ApiError, notFound } from '../errors.js';
import { principalKey } from '../rate-limit.js';
import { defineRoute, type Route } from '../route.js';
import { RunIdParams } from '../schemas.js';

const STREAM_ID = /^\d+-\d+$/;

/** Redis stream ids (`<ms>-<seq>`) in order. */
function after(id: string, than: string): boolean {
  const [a1, a2] = id.split('-').map(Number) as [number, number];
  const [b1, b2] = than.split('-').map(Number) as [number, number];
  return a1 > b1 || (a1 === b1 && a2 > b2);
}

/**
 * The run's events with their stream ids, live, until the terminal one (or, when the stream goes
 * quiet, until the record says the run has ended) or until `signal` aborts. Like `Run.events`, but
 * the ids are what `Last-Event-ID` resumes from.
 */
async function* eventsWithIds(store: RunStore, runId: string, options: { signal: AbortSignal; pollMs: number; onIdle: () => void }): AsyncGenerator<StoredEvent> {
  const cursor = store.openEvents(runId);
  // Closing the cursor drops its connection, which ends a blocked read at once.
  const close = (): void => void cursor.close();
  options.signal.addEventListener('abort', close, { once: true });
  try {
    while (!options.signal.aborted) {
      const batch = await cursor.read(options.pollMs);
      for (const stored of batch) {
        yield stored;
        if (TERMINAL_EVENTS.has(stored.event.type)) return;
      }
      if (batch.length === 0) {
        const record = await store.getRun(runId);
        if (!record || record.status !== 'running') return;
        options.onIdle();
      }
    }
  } finally {
    options.signal.removeEventListener('abort', close);
    await cursor.close();
  }
}

/**
 * Counts the caller's open streams in Redis, across every edge: each one holds a Redis connection for
 * as long as the run goes on, so one principal may hold only so many. Returns the release.
 */
async function holdStream(ctx: ServerContext, principal: Principal): Promise<() => Promise<void>> {
  const key = `${ctx.prefix}:edge:streams:${principalKey(principal)}`;
  // The key outlives the longest stream, so a server that died holding streams frees its count in time.
  const [[, open] = []] = (await ctx.redis.multi().incr(key).pexpire(key, ctx.streamLifetimeMs + 60_000).exec()) ?? [];
  const release = async (): Promise<void> => void (await ctx.redis.decr(key).catch(() => undefined));
  if (Number(open) > ctx.maxStreamsPerPrincipal) {
    await release();
    throw new ApiError(429, 'too_many_streams', `at most ${ctx.maxStreamsPerPrincipal} event streams may be open at once per principal; close one first`);
  }
  return release;
}

/** One event as its reader may see it: what it quotes only when they are cleared for it. */
const frame = (stored: StoredEvent, reader: Reader): string => `id: ${stored.id}\nevent: ${stored.event.type}\ndata: ${JSON.stringify(eventFor(stored.event, reader))}\n\n`;

export function eventRoutes(ctx: ServerContext): Route[] {
  return [
    defineRoute({
      method: 'GET',
      url: '/v1/runs/:id/events',
      tag: 'runs',
      summary: "A run's events as Server-Sent Events, from the start or after Last-Event-ID, until the run ends",
      params: RunIdParams,
      ok: { status: 200, description: 'id: the event id, event: its type, data: the event as JSON', contentType: 'text/event-stream' },
      errors: [404, 429],
      handler: async ({ request, reply, principal, params }) => {
        const { run, as } = await visibleRun(ctx, principal, params.id);
        // Events carry the run's own words (input, output, tool errors): not for approvers, who see the redacted run.
        if (as === 'approver') throw notFound(`no event stream of run '${params.id}' that you may follow`);
        // What events quote (a tool's error, a guard's words) reaches the caller only as far as the policy clears them, as for a reply.
        const reader = readerOf(principal, run.principal, clearanceFor(ctx.policy));
        const release = await holdStream(ctx, principal);
        const header = request.headers['last-event-id'];
        const resumeAfter = typeof header === 'string' && STREAM_ID.test(header.trim()) ? header.trim() : undefined;
        reply.hijack();
        const res: ServerResponse = reply.raw;
        res.writeHead(200, {
          'content-type': 'text/event-stream; charset=utf-8',
          'cache-control': 'no-cache, no-transform',
          connection: 'keep-alive',
          // Proxies such as nginx would otherwise hold events back.
          'x-accel-buffering': 'no',
        });
        const gone = new AbortController();
        res.on('close', () => gone.abort());
        // A stream ends after a while (the client resumes with Last-Event-ID) and when the server closes.
        const lifetime = setTimeout(() => gone.abort(), ctx.streamLifetimeMs);
        ctx.streams.add(gone);
        let lastWrite = Date.now();
        const write = (text: string): void => {
          lastWrite = Date.now();
          res.write(text);
        };
        const onIdle = (): void => {
          if (Date.now() - lastWrite >= ctx.heartbeatMs) write(': keep-alive\n\n');
        };
        try {
          for await (const stored of eventsWithIds(ctx.store, run.id, { signal: gone.signal, pollMs: ctx.eventPollMs, onIdle })) {
            if (resumeAfter === undefined || after(stored.id, resumeAfter)) write(frame(stored, reader));
          }
        } catch (error) {
          // A client that left is not an error; Redis failing mid-stream is reported in the stream, which then ends.
          if (!gone.signal.aborted) {
            request.log.warn({ err: error }, 'run event stream failed');
            write(`event: error\ndata: ${JSON.stringify({ error: { code: 'unavailable', message: 'the event stream was interrupted; reconnect with Last-Event-ID' } })}\n\n`);
          }
        } finally {
          clearTimeout(lifetime);
          ctx.streams.delete(gone);
          res.end();
          await release();
        }
      },
    }),
  ];
}
