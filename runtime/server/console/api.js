// The session and the API: the operator's token, requests to `/v1` and its event streams.

export const TOKEN_KEY = 'palisade.console.token';

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

export const state = {
  token: sessionStorage.getItem(TOKEN_KEY) ?? '',
  me: undefined,
  /** Stops the timers and streams of the view on screen. */
  leave: () => {},
};

/**
 * Ends the session; the console's entry sets it to signing out (so this module need not import the page's sign-in).
 * @type {(message: string) => void}
 */
let endSession = () => {};

export function onSessionEnd(handler) {
  endSession = handler;
}

export function describeError(error) {
  if (error instanceof ApiError) return `${error.message}${error.code ? ` (${error.code})` : ''}`;
  return error instanceof Error ? error.message : String(error);
}

export async function api(path, init = {}) {
  const headers = { accept: 'application/json', authorization: `Bearer ${state.token}` };
  if (init.body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(path, {
    method: init.method ?? 'GET',
    headers,
    body: init.body === undefined ? undefined : JSON.stringify(init.body),
    cache: 'no-store',
    credentials: 'omit',
    signal: init.signal,
  });
  const text = await response.text();
  let data;
  try {
    data = text ? JSON.parse(text) : undefined;
  } catch {
    data = undefined;
  }
  if (!response.ok) {
    const error = data?.error;
    const failure = new ApiError(response.status, error?.code, error?.message ?? `${response.status} ${response.statusText}`, error?.details);
    // Credentials that stopped working (expired token, revoked key) end the session.
    if (response.status === 401 && state.me) endSession(`Signed out: ${failure.message}`);
    throw failure;
  }
  return data;
}

/**
 * Reads a Server-Sent Events stream with fetch, since EventSource cannot send the Authorization header.
 * Calls `onEvent({ event, data, id })` per message; resolves when the server ends the stream.
 * `lastId` resumes after the last message seen, as EventSource would on a reconnect.
 */
export async function readEventStream(path, onEvent, signal, lastId) {
  const headers = { accept: 'text/event-stream', authorization: `Bearer ${state.token}` };
  if (lastId) headers['last-event-id'] = lastId;
  const response = await fetch(path, {
    headers,
    cache: 'no-store',
    credentials: 'omit',
    signal,
  });
  if (!response.ok || !response.body) throw new ApiError(response.status, undefined, `the event stream answered ${response.status}`);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let message = { event: 'message', data: [], id: undefined };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    for (;;) {
      const end = buffer.search(/\r\n|\r|\n/);
      // A lone CR at the end of a chunk may be the first half of CRLF: wait for the next chunk.
      if (end < 0 || (buffer[end] === '\r' && end === buffer.length - 1)) break;
      const line = buffer.slice(0, end);
      buffer = buffer.slice(end + (buffer.startsWith('\r\n', end) ? 2 : 1));
      if (line === '') {
        if (message.data.length) onEvent({ event: message.event, data: message.data.join('\n'), id: message.id });
        message = { event: 'message', data: [], id: message.id };
        continue;
      }
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      const fieldValue = colon < 0 ? '' : line.slice(colon + (line[colon + 1] === ' ' ? 2 : 1));
      if (field === 'data') message.data.push(fieldValue);
      else if (field === 'event') message.event = fieldValue;
      else if (field === 'id') message.id = fieldValue;
    }
  }
}
