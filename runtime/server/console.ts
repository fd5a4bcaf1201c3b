import { readFile } from 'node:fs/promises';
import type { FastifyInstance, FastifyReply } from 'fastify';

/**
 * The operator console: a static page, its script modules and one stylesheet that talk to the `/v1` API
 * with the operator's own credentials. The edge serves it; it holds no secrets and needs no auth
 * to load, since everything it shows comes from authenticated API calls made in the browser.
 */

/** The only files served, by URL name: nothing else under the directory is reachable, so no path traversal. */
const FILES = {
  'index.html': 'text/html; charset=utf-8',
  'console.js': 'text/javascript; charset=utf-8',
  'api.js': 'text/javascript; charset=utf-8',
  'dom.js': 'text/javascript; charset=utf-8',
  'format.js': 'text/javascript; charset=utf-8',
  'refresh.js': 'text/javascript; charset=utf-8',
  'approvals.js': 'text/javascript; charset=utf-8',
  'runs.js': 'text/javascript; charset=utf-8',
  'chain-picture.js': 'text/javascript; charset=utf-8',
  'event-text.js': 'text/javascript; charset=utf-8',
  'audit.js': 'text/javascript; charset=utf-8',
  'console.css': 'text/css; charset=utf-8',
} as const;
type FileName = keyof typeof FILES;

/**
 * Everything from this origin only, and no inline script or style: the console renders arguments and
 * outputs that attackers can influence, so even a rendering mistake must not be able to run script.
 */
const CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

function send(reply: FastifyReply, name: FileName, body: Buffer): FastifyReply {
  return reply
    .header('content-type', FILES[name])
    .header('content-security-policy', CSP)
    .header('x-content-type-options', 'nosniff')
    .header('referrer-policy', 'no-referrer')
    .header('x-frame-options', 'DENY')
    // Files change with the release; revalidating keeps an old script from talking to a newer API.
    .header('cache-control', 'no-cache')
    .send(body);
}

/**
 * Serves the console under `/console/` and sends `/` there. The page asks the API for everything it
 * shows, the Jaeger address included (`GET /v1/config`, each run's `traceUrl`).
 */
export async function registerConsole(app: FastifyInstance): Promise<void> {
  const dir = new URL('./console/', import.meta.url);
  const files = new Map<FileName, Buffer>();
  for (const name of Object.keys(FILES) as FileName[]) {
    try {
      files.set(name, await readFile(new URL(name, dir)));
    } catch (error) {
      // A build that compiled this module without copying its assets would otherwise serve 404s silently.
      throw new Error(`the console's file ${name} is missing from ${dir.pathname}: copy runtime/server/console/ next to console.js`, { cause: error });
    }
  }
  const file = (name: FileName): Buffer => files.get(name)!;

  app.get('/', (_request, reply) => reply.redirect('/console/'));
  app.get('/console', (_request, reply) => reply.redirect('/console/'));
  app.get('/console/', (_request, reply) => send(reply, 'index.html', file('index.html')));
  for (const name of Object.keys(FILES) as FileName[]) {
    app.get(`/console/${name}`, (_request, reply) => send(reply, name, file(name)));
  }
}
