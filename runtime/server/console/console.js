// The Palisade operator console. Plain ES module, no build step.
// Everything the server sends (arguments, outputs, reasons, names) may be attacker-influenced:
// it is only ever put into the page as text (textContent, text nodes, attribute values), never as markup.

const TOKEN_KEY = 'palisade.console.token';
const REFRESH_MS = 5000;
const POLL_MS = 2000;
const SVG_NS = 'http://www.w3.org/2000/svg';
const TERMINAL = new Set(['completed', 'failed', 'cancelled']);

class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

const state = {
  token: sessionStorage.getItem(TOKEN_KEY) ?? '',
  me: undefined,
  /** Stops the timers and streams of the view on screen. */
  leave: () => {},
};

// ---------------------------------------------------------------------------------------------
// DOM helpers: text only

/** An element; string and number children become text nodes, so data can never become markup. */
function h(tag, attrs = {}, ...children) {
  return build(document.createElement(tag), attrs, children);
}

function svg(tag, attrs = {}, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

function build(el, attrs, children) {
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    el.setAttribute(key === 'testid' ? 'data-testid' : key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const $ = (id) => document.getElementById(id);

/** A link inside the console: the id goes through encodeURIComponent, so it cannot leave the hash. */
const runLink = (runId, attrs = {}) => h('a', { href: `#/runs/${encodeURIComponent(runId)}`, ...attrs }, shortId(runId));
const shortId = (id) => (id.length > 13 ? `${id.slice(0, 8)}…` : id);
const time = (ms) => (typeof ms === 'number' ? new Date(ms).toLocaleTimeString() : '—');
const dateTime = (ms) => (typeof ms === 'number' ? new Date(ms).toLocaleString() : '—');
const risk = (n) => (typeof n === 'number' ? n.toFixed(2) : '—');

/** `confidential · financial, pii · trusted`; `compact` leaves out the usual case, trusted, where space is short. */
function formatLabel(label, compact = false) {
  const parts = [label.level];
  if (label.categories.length) parts.push(label.categories.join(', '));
  if (!compact || label.integrity === 'untrusted') parts.push(label.integrity);
  return parts.join(' · ');
}

function relative(ms) {
  const s = Math.round((ms - Date.now()) / 1000);
  const abs = Math.abs(s);
  const span = abs < 90 ? `${abs} s` : abs < 5400 ? `${Math.round(abs / 60)} min` : `${Math.round(abs / 3600)} h`;
  return s >= 0 ? `in ${span}` : `${span} ago`;
}

/** Pretty-prints JSON text when it is JSON; anything else is shown as it came. */
function prettyJson(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

/** Only http(s) links leave the console: a `javascript:` trace URL must not become clickable. */
function safeHttpUrl(value) {
  try {
    const url = new URL(String(value), location.href);
    return url.protocol === 'http:' || url.protocol === 'https:' ? url.href : undefined;
  } catch {
    return undefined;
  }
}

function describeError(error) {
  if (error instanceof ApiError) return `${error.message}${error.code ? ` (${error.code})` : ''}`;
  return error instanceof Error ? error.message : String(error);
}

function dl(rows) {
  return h('dl', { class: 'facts' }, rows.filter(Boolean).map(([term, value, testid]) => [h('dt', {}, term), h('dd', { testid }, value)]));
}

// ---------------------------------------------------------------------------------------------
// API

async function api(path, init = {}) {
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
    if (response.status === 401 && state.me) signOut(`Signed out: ${failure.message}`);
    throw failure;
  }
  return data;
}

/**
 * Reads a Server-Sent Events stream with fetch, since EventSource cannot send the Authorization header.
 * Calls `onEvent({ event, data, id })` per message; resolves when the server ends the stream.
 * `lastId` resumes after the last message seen, as EventSource would on a reconnect.
 */
async function readEventStream(path, onEvent, signal, lastId) {
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

// ---------------------------------------------------------------------------------------------
// Sign-in

function showSignIn(message) {
  state.leave();
  $('nav').hidden = true;
  $('who').hidden = true;
  $('view').hidden = true;
  $('view').replaceChildren();
  $('sign-in').hidden = false;
  const error = $('sign-in-error');
  error.textContent = message ?? '';
  error.hidden = !message;
  $('api-key').focus();
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = '';
  state.me = undefined;
  showSignIn(message);
}

async function signIn(token) {
  state.token = token;
  try {
    const me = await api('/v1/me');
    state.me = me;
    sessionStorage.setItem(TOKEN_KEY, token);
  } catch (error) {
    state.token = '';
    sessionStorage.removeItem(TOKEN_KEY);
    showSignIn(`Not signed in: ${describeError(error)}`);
    return;
  }
  // Jaeger is optional: without its address the console simply offers no link to it.
  const config = await api('/v1/config').catch(() => ({}));
  const jaeger = config.jaegerUrl ? safeHttpUrl(config.jaegerUrl) : undefined;
  $('nav-jaeger')?.remove();
  if (jaeger) $('nav').append(h('a', { id: 'nav-jaeger', href: jaeger, target: '_blank', rel: 'noopener noreferrer', testid: 'nav-jaeger' }, 'Traces (Jaeger)'));
  $('sign-in').hidden = true;
  $('api-key').value = '';
  $('whoami').textContent = state.me.id;
  $('whoami-roles').textContent = [
    Array.isArray(state.me.roles) && state.me.roles.length ? `roles: ${state.me.roles.join(', ')}` : 'no roles',
    state.me.tenant ? `tenant: ${state.me.tenant}` : '',
  ]
    .filter(Boolean)
    .join(' · ');
  $('who').hidden = false;
  $('nav').hidden = false;
  $('view').hidden = false;
  route();
}

// ---------------------------------------------------------------------------------------------
// Routing: #/approvals, #/runs, #/runs/<id>, #/audit?runId=<id>

function route() {
  if (!state.me) return;
  state.leave();
  state.leave = () => {};
  const url = new URL(location.hash.replace(/^#/, '') || '/approvals', 'http://console.invalid');
  const parts = url.pathname.split('/').filter(Boolean).map(decodePart);
  for (const link of document.querySelectorAll('#nav a')) {
    if (link.getAttribute('href') === `#/${parts[0] ?? 'approvals'}`) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  const view = $('view');
  if (parts[0] === 'runs' && parts[1]) state.leave = runView(view, parts[1]);
  else if (parts[0] === 'approvals' && parts[1]) state.leave = approvalView(view, parts[1]);
  else if (parts[0] === 'runs') state.leave = runsView(view);
  else if (parts[0] === 'audit') state.leave = auditView(view, url.searchParams.get('runId') ?? '', url.searchParams.get('limit') ?? '');
  else state.leave = approvalsView(view);
}

/** A malformed escape in a hand-typed address stays as typed rather than breaking the page. */
function decodePart(part) {
  try {
    return decodeURIComponent(part);
  } catch {
    return part;
  }
}

/** Calls `refresh` now and every `ms` until stopped; never two at once. */
function every(ms, refresh) {
  let timer;
  let stopped = false;
  const tick = async () => {
    await refresh();
    if (!stopped) timer = setTimeout(tick, ms);
  };
  void tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

// ---------------------------------------------------------------------------------------------
// Approvals

function actionText(request) {
  if (request.kind === 'handoff') return `handoff to agent ${request.subject}`;
  if (request.kind === 'delegate') return `delegation to agent ${request.subject}`;
  return `tool ${request.subject}`;
}

function approvalsView(view) {
  const list = h('ol', { class: 'cards', testid: 'approvals-list' });
  const empty = h('p', { testid: 'approvals-empty', hidden: true }, 'Nothing is waiting for your decision.');
  const status = h('p', { class: 'muted', testid: 'approvals-status' });
  const decisions = h('div', { class: 'decisions', testid: 'decision-log', 'aria-label': 'Your decisions' });
  const cards = new Map();
  const refresh = async () => {
    try {
      const items = await api('/v1/approvals');
      const seen = new Set();
      const ordered = [];
      for (const { request } of items) {
        seen.add(request.id);
        let card = cards.get(request.id);
        if (!card) {
          card = approvalCard(request, (decision, reason) => {
            decisions.prepend(decisionNotice(request, decision, reason));
            card.item.remove();
            cards.delete(request.id);
          });
          card.item = h('li', {}, card.element);
          cards.set(request.id, card);
        }
        card.update(request);
        ordered.push(card.item);
      }
      // Cards kept on screen: still pending, or showing a refusal the approver has not read yet.
      for (const [id, card] of cards) if (!seen.has(id) && !card.hasMessage()) cards.delete(id);
      for (const [id, card] of cards) if (!seen.has(id)) ordered.push(card.item);
      list.replaceChildren(...ordered);
      empty.hidden = ordered.length > 0;
      status.textContent = `Updated ${time(Date.now())}; refreshes every ${REFRESH_MS / 1000} s.`;
    } catch (error) {
      status.textContent = `Could not load approvals: ${describeError(error)}`;
    }
  };
  view.replaceChildren(
    h('h2', {}, 'Pending approvals'),
    h('p', {}, 'Requests that wait for a decision you may make. Read the arguments and the chain that led here before you decide.'),
    decisions,
    status,
    empty,
    list,
  );
  return every(REFRESH_MS, refresh);
}

function decisionNotice(request, decision, reason) {
  return h(
    'p',
    { testid: 'decision-result', 'data-status': decision.status, class: `decision ${decision.status}`, role: 'status' },
    `${actionText(request)} for run `,
    runLink(request.runId),
    `: ${decision.status} by ${decision.by}${reason ? ` (“${reason}”)` : ''}. The waiting agent checks the decision and the action again before it goes on.`,
  );
}

/** One approval request, from GET /v1/approvals/:id: for its approvers, the run's principal and operators. */
function approvalView(view, id) {
  const body = h('div');
  view.replaceChildren(h('h2', {}, 'Approval request'), h('p', {}, h('a', { href: '#/approvals' }, '← Pending approvals')), body);
  api(`/v1/approvals/${encodeURIComponent(id)}`).then(
    ({ request, decision, mayDecide }) => {
      if (decision) {
        const card = approvalCard(request);
        card.update(request);
        card.element.querySelector('.decide').replaceWith(
          h('p', { testid: 'approval-decided', class: `decision ${decision.status}` }, `Decided: ${decision.status}${decision.by ? ` by ${decision.by.id}` : ''} at ${dateTime(decision.at)}${decision.note ? ` (“${decision.note}”)` : ''}.`),
        );
        body.replaceChildren(card.element);
        return;
      }
      const card = approvalCard(request, (made, reason) => card.element.replaceWith(decisionNotice(request, made, reason)));
      card.update(request);
      // The buttons stay: the server has the last word, and its reason is more useful than a greyed-out button.
      body.replaceChildren(card.element);
      if (!mayDecide) body.prepend(h('p', { class: 'muted', testid: 'approval-may-not' }, 'The server says you may not decide this request; it will tell you why if you try.'));
    },
    (error) => body.replaceChildren(h('p', { class: 'error', role: 'alert', testid: 'approval-load-error' }, `Could not load the request: ${describeError(error)}`)),
  );
  return () => {};
}

/** A request with everything needed to decide it; `onDecided(decision, reason)` runs once the server has recorded a decision. */
function approvalCard(request, onDecided) {
  const arguments_ = h('pre', { class: 'args', testid: 'approval-arguments' });
  const reasons = h('ul', { testid: 'approval-reasons' });
  const chain = h('ol', { class: 'chain-inline', testid: 'approval-chain' });
  const deadline = h('span');
  const reasonId = `reason-${request.id}`;
  const reasonInput = h('input', { id: reasonId, type: 'text', maxlength: 2000, autocomplete: 'off', testid: 'approval-reason' });
  const message = h('p', { role: 'alert', class: 'error', testid: 'approval-error', hidden: true });
  const approve = h('button', { type: 'button', class: 'approve', testid: 'approve' }, 'Approve');
  const deny = h('button', { type: 'button', class: 'deny', testid: 'deny' }, 'Deny');
  const { principal } = request;
  const facts = dl([
    ['Agent', request.agent, 'approval-agent'],
    ['Wants to call', actionText(request), 'approval-action'],
    ['Arguments (as you may see them)', arguments_],
    ['Reasons', reasons],
    ['Risk score', risk(request.risk), 'approval-risk'],
    ['Context label', formatLabel(request.label), 'approval-label'],
    ['Chain of agents', chain],
    [
      'Run started by',
      `${principal.id}${principal.roles.length ? ` (roles: ${principal.roles.join(', ')})` : ''}${principal.tenant ? `, tenant ${principal.tenant}` : ''}`,
      'approval-principal',
    ],
    ['Run', runLink(request.runId, { testid: 'approval-run' })],
    ['Requested', dateTime(request.requestedAt)],
    ['Deadline', deadline, 'approval-deadline'],
    ['Needs permission', request.permission],
  ]);
  const decide = async (approved) => {
    approve.disabled = deny.disabled = true;
    message.hidden = true;
    const reason = reasonInput.value.trim();
    try {
      const decision = await api(`/v1/approvals/${encodeURIComponent(request.id)}/${approved ? 'approve' : 'deny'}`, {
        method: 'POST',
        body: reason ? { reason } : {},
      });
      onDecided(decision, reason);
    } catch (error) {
      message.textContent = `Refused: ${describeError(error)}`;
      message.hidden = false;
      // A request decided elsewhere or expired cannot be decided again; anything else may be retried.
      const final = error instanceof ApiError && (error.status === 409 || error.status === 404);
      approve.disabled = deny.disabled = final;
    }
  };
  approve.addEventListener('click', () => void decide(true));
  deny.addEventListener('click', () => void decide(false));
  const element = h(
    'article',
    { class: 'card approval', testid: 'approval', 'data-approval-id': request.id },
    h('h3', {}, `${request.agent} wants to call ${actionText(request)}`),
    facts,
    h(
      'div',
      { class: 'decide', role: 'group', 'aria-label': 'Decision' },
      h('label', { for: reasonId }, 'Reason (optional)'),
      reasonInput,
      approve,
      deny,
    ),
    message,
  );
  return {
    element,
    hasMessage: () => !message.hidden,
    update(next) {
      arguments_.textContent = prettyJson(next.arguments);
      reasons.replaceChildren(...(next.reasons.length ? next.reasons : ['(none given)']).map((r) => h('li', {}, r)));
      chain.replaceChildren(...next.chain.map((a) => h('li', {}, a)));
      deadline.textContent = `${dateTime(next.expiresAt)} (${relative(next.expiresAt)}; no decision by then is a denial)`;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Runs

function runsView(view) {
  const body = h('tbody');
  const status = h('p', { class: 'muted', testid: 'runs-status' });
  const empty = h('p', { testid: 'runs-empty', hidden: true }, 'No runs to show.');
  const refresh = async () => {
    try {
      const { runs = [] } = await api('/v1/runs');
      const rows = runs.map((run) =>
        h(
          'tr',
          { testid: 'run-row', 'data-run-id': run.runId },
          h('td', {}, runLink(run.runId)),
          h('td', {}, run.agent),
          h('td', {}, statusBadge(run.status)),
          h('td', {}, run.principal.id),
          h('td', {}, dateTime(run.createdAt)),
        ),
      );
      body.replaceChildren(...rows);
      empty.hidden = rows.length > 0;
      status.textContent = `Updated ${time(Date.now())}.`;
    } catch (error) {
      status.textContent = `Could not load runs: ${describeError(error)}`;
    }
  };
  view.replaceChildren(
    h('h2', {}, 'Runs'),
    status,
    h(
      'table',
      { testid: 'runs-table' },
      h('caption', { class: 'visually-hidden' }, 'Recent runs'),
      h('thead', {}, h('tr', {}, ['Run', 'Agent', 'Status', 'Started by', 'Started'].map((c) => h('th', { scope: 'col' }, c)))),
      body,
    ),
    empty,
  );
  return every(REFRESH_MS, refresh);
}

const statusBadge = (status, testid) => h('span', { class: `badge ${status}`, testid }, status);

function runView(view, runId) {
  const controller = new AbortController();
  const header = h('div');
  const picture = h('figure', { class: 'chain-figure' });
  const decisions = h('tbody');
  const labels = h('ol', { testid: 'run-labels', class: 'labels' });
  const approvals = h('ul', { testid: 'run-approvals' });
  const approvalsSection = h('section', { hidden: true }, h('h3', {}, 'Approvals'), approvals);
  const outcome = h('div');
  const live = h('p', { class: 'muted', testid: 'run-live' });
  const timeline = h('ol', { class: 'timeline', testid: 'run-timeline' });
  const pending = h('ul', { class: 'waiting', testid: 'run-pending' });
  /** Approval requests of this run without a decision yet, from the events. */
  const waiting = new Map();
  let lastId;
  let summary;
  let gone = false;
  let scheduled = false;
  let inFlight = false;
  let again = false;

  const render = (run) => {
    summary = run;
    const traceUrl = run.traceUrl ? safeHttpUrl(run.traceUrl) : undefined;
    header.replaceChildren(
      dl([
        ['Status', statusBadge(run.status, 'run-status')],
        ['Agent', run.agent],
        ['Started by', run.principal.id, 'run-principal'],
        ['Started', dateTime(run.createdAt)],
        ['Last change', dateTime(run.updatedAt)],
        run.input !== undefined && ['Input', h('pre', { class: 'text', testid: 'run-input' }, run.input)],
        ['Context label', formatLabel(run.label), 'run-label'],
        traceUrl && ['Trace', h('a', { href: traceUrl, target: '_blank', rel: 'noopener noreferrer', testid: 'trace-link' }, 'View trace in Jaeger')],
      ]),
    );
    picture.replaceChildren(chainPicture(run), h('figcaption', {}, 'Agents in order: solid arrows are handoffs, dashed arrows delegations. Each box lists its guard decisions.'));
    decisions.replaceChildren(
      ...run.decisions.map((d) =>
        h(
          'tr',
          { testid: 'decision-row', 'data-verdict': d.verdict },
          h('td', {}, time(d.at)),
          h('td', {}, d.agent ?? '—'),
          h('td', {}, d.stage),
          h('td', {}, d.subject ?? ''),
          h('td', {}, h('span', { class: `verdict ${d.verdict}` }, d.verdict), d.monitored && d.monitored !== d.verdict ? ` (monitor mode: would ${d.monitored})` : ''),
          h('td', {}, d.reasons.join('; ')),
          h('td', {}, risk(d.risk)),
        ),
      ),
    );
    labels.replaceChildren(
      h('li', {}, 'start: ', formatLabel({ level: 'public', categories: [], integrity: 'trusted' })),
      ...run.labels.map((l) =>
        h(
          'li',
          { testid: 'label-entry' },
          `${time(l.at)} ${l.agent ? `${l.agent}: ` : ''}`,
          l.cause === 'label.declassified' ? `${l.source}'s answer declassified to ${formatLabel(l.label)}` : `${l.source} returned ${formatLabel(l.label)}`,
          `; context ${formatLabel(l.context)}`,
        ),
      ),
    );
    approvals.replaceChildren(
      ...run.approvals.map((a) => h('li', { testid: 'run-approval', 'data-status': a.status }, `${time(a.at)} ${a.subject}: ${a.status}${a.by ? ` by ${a.by}` : ''}`)),
    );
    approvalsSection.hidden = !run.approvals.length;
    outcome.replaceChildren();
    append(outcome, [
      run.output !== undefined ? h('section', {}, h('h3', {}, 'Output'), h('pre', { class: 'text', testid: 'run-output' }, run.output)) : null,
      run.error !== undefined ? h('section', {}, h('h3', {}, 'Error'), h('pre', { class: 'text error', testid: 'run-error' }, run.error)) : null,
    ]);
    live.textContent = TERMINAL.has(run.status) ? `The run has ended (${run.status}).` : 'Live: updates as the run goes on.';
  };

  // Events say something changed; the summary says what the run looks like now. Coalesce bursts of events.
  const load = async () => {
    if (inFlight) {
      again = true;
      return;
    }
    inFlight = true;
    try {
      do {
        again = false;
        render(await api(`/v1/runs/${encodeURIComponent(runId)}`, { signal: controller.signal }));
      } while (again && !controller.signal.aborted);
    } catch (error) {
      if (controller.signal.aborted) return;
      live.textContent = `Could not load the run: ${describeError(error)}`;
      // A run one may no longer see (or that expired) stays unseen: stop asking.
      if (error instanceof ApiError && error.status === 404) gone = true;
    } finally {
      inFlight = false;
    }
  };

  const onMessage = (message) => {
    lastId = message.id ?? lastId;
    if (message.event === 'error') {
      live.textContent = `The event stream was interrupted: ${JSON.parse(message.data)?.error?.message ?? 'unknown error'}`;
      return;
    }
    const event = JSON.parse(message.data);
    timeline.append(h('li', { testid: 'timeline-event', 'data-type': event.type }, `${time(event.at)} `, h('strong', {}, `[${event.agent ?? 'run'}]`), ` ${eventText(event)}`));
    if (event.type === 'approval.requested') waiting.set(event.approvalId, event);
    if (event.type === 'approval.decided' || event.type === 'approval.resolved') waiting.delete(event.approvalId);
    pending.replaceChildren(
      ...[...waiting.values()].map((e) =>
        h(
          'li',
          { testid: 'run-waiting' },
          `Waits for a decision on ${e.kind === 'tool' ? 'tool' : e.kind} ${e.subject} until ${dateTime(e.expiresAt)}: `,
          h('a', { href: `#/approvals/${encodeURIComponent(e.approvalId)}`, testid: 'run-waiting-link' }, 'open the request'),
        ),
      ),
    );
    // A burst of events (a model turn, its guard decisions) becomes one summary request, not one each.
    if (!scheduled) {
      scheduled = true;
      setTimeout(() => {
        scheduled = false;
        void load();
      }, 200);
    }
  };

  const following = () => !controller.signal.aborted && !gone && summary !== undefined && !TERMINAL.has(summary.status);

  // The stream ends with the run (or with the connection); after a break it resumes from the last event.
  // Where it cannot be read at all (a buffering proxy), polling the summary shows the same, later.
  const follow = async () => {
    do {
      try {
        await readEventStream(`/v1/runs/${encodeURIComponent(runId)}/events`, onMessage, controller.signal, lastId);
      } catch {
        if (controller.signal.aborted) return;
      }
      await load();
      if (following()) await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    } while (following());
  };

  view.replaceChildren(
    h('h2', {}, 'Run ', h('code', { testid: 'run-id' }, runId)),
    h('p', {}, h('a', { href: '#/runs' }, '← All runs'), ' · ', h('a', { href: `#/audit?runId=${encodeURIComponent(runId)}`, testid: 'run-audit-link' }, 'Audit log of this run')),
    live,
    pending,
    header,
    h('h3', {}, 'Chain of agents'),
    picture,
    outcome,
    h('h3', {}, 'Guard decisions'),
    h(
      'table',
      { testid: 'run-decisions' },
      h('thead', {}, h('tr', {}, ['Time', 'Agent', 'Stage', 'Subject', 'Verdict', 'Reasons', 'Risk'].map((c) => h('th', { scope: 'col' }, c)))),
      decisions,
    ),
    approvalsSection,
    h('h3', {}, 'Context label over time'),
    labels,
    h('h3', {}, 'Events'),
    timeline,
  );
  void load();
  void follow();
  return () => controller.abort();
}

/**
 * The chain as a picture: a box per agent in order of first appearance, an arrow per handoff
 * (solid) or delegation (dashed) with its guard verdict, and under each box the agent's decisions
 * and last context label. Long text is cut; the full text is in each element's tooltip.
 */
function chainPicture(run) {
  const BOX_W = 230;
  const BOX_H = 54;
  const GAP = 140;
  const PAD = 16;
  const LINE = 16;
  const MAX_LINES = 8;
  const agents = [];
  for (const activation of run.chain) if (!agents.includes(activation.agent)) agents.push(activation.agent);
  if (!agents.length && run.agent) agents.push(run.agent);
  const x = (agent) => PAD + agents.indexOf(agent) * (BOX_W + GAP);
  const decisionsOf = (agent) => run.decisions.filter((d) => d.agent === agent);
  const lastLabelOf = (agent) => run.labels.filter((l) => l.agent === agent).at(-1)?.context;
  // When they do not all fit, the decisions that held something back matter most.
  const shownOf = (agent) => {
    const own = decisionsOf(agent);
    return own.length <= MAX_LINES ? own : own.filter((d) => d.verdict !== 'allow').slice(0, MAX_LINES);
  };
  const linesOf = (agent) => shownOf(agent).length + (shownOf(agent).length < decisionsOf(agent).length ? 1 : 0);
  const tallest = Math.max(0, ...agents.map(linesOf));
  const hops = run.hops.filter((hop) => agents.includes(hop.from) && agents.includes(hop.to) && hop.from !== hop.to);
  // Neighbours get a straight arrow; a hop past other boxes arcs over them, which needs headroom.
  const neighbours = (hop) => Math.abs(agents.indexOf(hop.from) - agents.indexOf(hop.to)) === 1;
  const ARC = hops.every(neighbours) ? 0 : 44;
  const width = PAD * 2 + agents.length * BOX_W + Math.max(0, agents.length - 1) * GAP;
  const top = PAD + 28 + ARC;
  const height = top + BOX_H + 12 + tallest * LINE + PAD;
  const cut = (text, max) => (text.length > max ? `${text.slice(0, max - 1)}…` : text);
  // The tooltip sits beside the text, not in it, so the text's own content stays what is drawn.
  const titled = (el, full) => svg('g', {}, svg('title', {}, full), el);

  const names = agents.join(' → ');
  const picture = svg(
    'svg',
    { class: 'chain', role: 'img', 'aria-labelledby': 'chain-title', viewBox: `0 0 ${width} ${height}`, width, height, testid: 'chain-graph' },
    svg('title', { id: 'chain-title' }, `Chain of agents: ${names || 'none yet'}`),
    svg(
      'defs',
      {},
      svg('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 8, markerHeight: 8, orient: 'auto-start-reverse' }, svg('path', { d: 'M0,0 L10,5 L0,10 z', class: 'arrowhead' })),
    ),
  );

  for (const hop of hops) {
    const from = x(hop.from);
    const to = x(hop.to);
    const check = run.decisions.filter((d) => d.stage === 'handoff' && d.agent === hop.from && d.subject === hop.to).at(-1);
    const caption = [hop.type === 'delegation' ? 'delegates' : 'hands off', check?.verdict].filter(Boolean).join(' · ');
    const answer = hop.status ? `answered: ${hop.status}` : '';
    let line;
    let labelAt;
    let answerAt;
    if (neighbours(hop)) {
      const forward = to > from;
      const y = top + BOX_H / 2 + (hop.type === 'delegation' ? 10 : -10);
      const x1 = forward ? from + BOX_W : from;
      const x2 = forward ? to : to + BOX_W;
      line = svg('line', { x1, y1: y, x2, y2: y, 'marker-end': 'url(#arrow)' });
      labelAt = { x: (x1 + x2) / 2, y: y - 6 };
      answerAt = { x: labelAt.x, y: y + 14 };
    } else {
      const x1 = from + BOX_W / 2;
      const x2 = to + BOX_W / 2;
      line = svg('path', { d: `M${x1},${top} C${x1},${top - ARC} ${x2},${top - ARC} ${x2},${top}`, fill: 'none', 'marker-end': 'url(#arrow)' });
      labelAt = { x: (x1 + x2) / 2, y: top - ARC * 0.75 - 4 };
      answerAt = { x: labelAt.x, y: top - ARC * 0.75 + 14 };
    }
    picture.append(
      svg(
        'g',
        { class: `edge ${hop.type}`, testid: 'chain-edge', 'data-type': hop.type, 'data-from': hop.from, 'data-to': hop.to },
        titled(line, `${hop.from} ${caption} to ${hop.to}${answer ? `, ${answer}` : ''}`),
        svg('text', { ...labelAt, 'text-anchor': 'middle', class: `edge-label ${check ? `verdict ${check.verdict}` : ''}` }, caption),
        answer ? svg('text', { ...answerAt, 'text-anchor': 'middle', class: 'edge-label muted' }, answer) : null,
      ),
    );
  }

  for (const agent of agents) {
    const left = x(agent);
    const label = lastLabelOf(agent);
    const node = svg(
      'g',
      { class: 'node', testid: 'chain-node', 'data-agent': agent },
      svg('rect', { x: left, y: top, width: BOX_W, height: BOX_H, rx: 8 }),
      titled(svg('text', { x: left + BOX_W / 2, y: top + 22, 'text-anchor': 'middle', class: 'agent-name' }, cut(agent, 26)), agent),
      label ? titled(svg('text', { x: left + BOX_W / 2, y: top + 42, 'text-anchor': 'middle', class: 'node-label', testid: 'chain-node-label' }, cut(formatLabel(label, true), 36)), formatLabel(label)) : null,
    );
    const own = decisionsOf(agent);
    const shown = shownOf(agent);
    shown.forEach((d, i) => {
      const text = `${d.stage}${d.subject ? ` ${d.subject}` : ''}: ${d.verdict}`;
      const full = `${text}${d.reasons.length ? ` — ${d.reasons.join('; ')}` : ''} (risk ${risk(d.risk)})`;
      node.append(titled(svg('text', { x: left + 4, y: top + BOX_H + 12 + (i + 1) * LINE - 4, class: `decision verdict ${d.verdict}`, testid: 'chain-decision' }, cut(text, 36)), full));
    });
    if (shown.length < own.length) {
      node.append(svg('text', { x: left + 4, y: top + BOX_H + 12 + (shown.length + 1) * LINE - 4, class: 'muted' }, `+${own.length - shown.length} more (${own.filter((d) => d.verdict === 'allow').length} allowed), listed below`));
    }
    picture.append(node);
  }
  picture.append(svg('text', { x: PAD, y: PAD + 8, class: 'muted', testid: 'chain-status' }, `status: ${run.status} · context ${formatLabel(run.label)}`));
  return picture;
}

/** One line for one run event, as the CLI prints progress. */
function eventText(e) {
  const reasons = (list) => (list?.length ? ` — ${list.join('; ')}` : '');
  switch (e.type) {
    case 'run.started':
      return `run started for ${e.principal}: “${e.input}”`;
    case 'agent.started':
      return `${e.resumed ? 'resumes' : e.kind === 'start' ? 'starts' : e.kind === 'handoff' ? 'takes over' : 'is asked'} (${e.chain.join(' → ')})`;
    case 'model.response':
      return `model ${e.model}: ${[e.text ? 'text' : '', e.toolCalls?.length ? `calls ${e.toolCalls.join(', ')}` : ''].filter(Boolean).join(' + ') || 'empty reply'} (${e.inputTokens} in / ${e.outputTokens} out tokens)`;
    case 'model.error':
      return `model error: ${e.message}${e.willRetry ? ' (will retry)' : ''}`;
    case 'guard.decision':
      return `guard ${e.stage}${e.subject ? ` ${e.subject}` : ''}: ${e.verdict}${e.monitored && e.monitored !== e.verdict ? ` (monitor mode: would ${e.monitored})` : ''}${reasons(e.reasons)}${e.risk > 0 ? ` (risk ${risk(e.risk)})` : ''}`;
    case 'tool.called':
      return `calls tool ${e.tool}${e.replayed ? ' (replayed from its stored result)' : ''}`;
    case 'tool.result':
      return `${e.tool} returned (context now ${formatLabel(e.label)})`;
    case 'tool.error':
      return `tool ${e.tool} failed: ${e.message}`;
    case 'handoff':
      return `hands off to ${e.to}`;
    case 'delegation.started':
      return `asks ${e.to}`;
    case 'delegation.completed':
      return `${e.to} answered (${e.status})`;
    case 'label.declassified':
      return `${e.source}'s answer declassified ${formatLabel(e.from)} → ${formatLabel(e.to)}: ${e.reason}`;
    case 'envelope.rejected':
      return `envelope rejected: ${e.reason}`;
    case 'approval.requested':
      return `waits for approval of ${e.kind} ${e.subject} (risk ${risk(e.risk)})${reasons(e.reasons)}`;
    case 'approval.decided':
      return `${e.subject} ${e.status}${e.by ? ` by ${e.by}` : ''}${e.note ? `: ${e.note}` : ''}`;
    case 'approval.resolved':
      return `resumes after ${e.outcome} ${e.subject}${e.reason ? `: ${e.reason}` : ''}`;
    case 'rollback.started':
      return `rollback of ${e.actions} action(s) (${e.trigger}${e.by ? ` by ${e.by}` : ''})`;
    case 'action.compensated':
      return `${e.tool}: ${e.status}${e.message ? `: ${e.message}` : ''}`;
    case 'rollback.completed':
      return `rollback done: ${e.undone} undone, ${e.failed} failed, ${e.notUndone} not undoable`;
    case 'run.completed':
      return `completed: ${e.output}`;
    case 'run.failed':
      return `failed: ${e.error}`;
    case 'run.cancelled':
      return `cancelled: ${e.reason}`;
    default:
      return String(e.type);
  }
}

// ---------------------------------------------------------------------------------------------
// Audit

function auditView(view, runId, limit) {
  const runInput = h('input', { id: 'audit-run', name: 'runId', type: 'text', value: runId, autocomplete: 'off', spellcheck: 'false', testid: 'audit-run' });
  const limitInput = h('input', { id: 'audit-limit', name: 'limit', type: 'number', min: 1, max: 500, value: limit || 100, testid: 'audit-limit' });
  const verification = h('div', { testid: 'audit-verification', role: 'status', class: 'verification' });
  const body = h('tbody');
  const form = h(
    'form',
    { class: 'inline', testid: 'audit-form' },
    h('label', { for: 'audit-run' }, 'Run id (empty: the most recent entries)'),
    runInput,
    h('label', { for: 'audit-limit' }, 'At most'),
    limitInput,
    h('button', { type: 'submit', testid: 'audit-load' }, 'Load'),
  );
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const query = new URLSearchParams();
    if (runInput.value.trim()) query.set('runId', runInput.value.trim());
    if (limitInput.value) query.set('limit', limitInput.value);
    const hash = `#/audit?${query}`;
    // The same query again is a reload, which changing the hash to itself would not trigger.
    if (location.hash === hash) route();
    else location.hash = hash;
  });

  const load = async () => {
    const query = new URLSearchParams();
    if (runId) query.set('runId', runId);
    if (limit) query.set('limit', limit);
    verification.replaceChildren('Loading…');
    try {
      const { entries, verification: report } = await api(`/v1/audit?${query}`);
      verification.replaceChildren(...verificationBanner(report));
      verification.className = `verification ${report.ok ? 'ok' : 'bad'}`;
      verification.setAttribute('data-ok', String(report.ok));
      body.replaceChildren(
        ...entries.map((e) =>
          h(
            'tr',
            { testid: 'audit-entry', 'data-seq': e.seq },
            h('td', {}, e.seq),
            h('td', { title: dateTime(e.at) }, time(e.at)),
            h('td', {}, e.writer),
            h('td', {}, runLink(e.runId)),
            h('td', {}, e.principal),
            h('td', {}, e.chain.join(' → ')),
            h('td', {}, e.agent ?? ''),
            h('td', {}, e.action),
            h('td', {}, e.subject ?? ''),
            h('td', {}, h('span', { class: `verdict ${e.outcome}` }, e.outcome)),
            h('td', {}, (e.reasons ?? []).join('; ')),
            h('td', {}, e.risk === undefined ? '' : risk(e.risk)),
            h('td', { title: e.kid ? `key ${e.kid}` : undefined }, e.mac ? 'MAC' : 'none'),
          ),
        ),
      );
    } catch (error) {
      verification.className = 'verification bad';
      verification.replaceChildren(`Could not load the audit log: ${describeError(error)}`);
      body.replaceChildren();
    }
  };

  view.replaceChildren(
    h('h2', {}, 'Audit log'),
    h('p', {}, 'The append-only, hash-chained record of every decision and action. The server checks the chain as it reads it.'),
    form,
    verification,
    h(
      'div',
      { class: 'table-wrap' },
      h(
        'table',
        { testid: 'audit-table', class: 'audit' },
        h('thead', {}, h('tr', {}, ['#', 'Time', 'Writer', 'Run', 'Principal', 'Chain', 'Agent', 'Action', 'Subject', 'Outcome', 'Reasons', 'Risk', 'Signed'].map((c) => h('th', { scope: 'col' }, c)))),
        body,
      ),
    ),
  );
  void load();
  return () => {};
}

/** The verification comes first and loud: a log whose chain is broken cannot be taken at its word. */
function verificationBanner(report) {
  const summary =
    report.entries === undefined
      ? 'The whole log was checked.'
      : `The whole log was checked: ${report.entries} entries, ${report.macsVerified} of the edge's MACs verified${report.head ? `, head at #${report.head.seq}` : ''}.`;
  if (report.ok) return [h('strong', { testid: 'audit-verified' }, '✓ Verified: the chain is intact. '), summary];
  const { problems, problemCount } = report;
  const shown = problems.length < problemCount ? ` (the first ${problems.length} listed)` : '';
  return [
    h('strong', { testid: 'audit-problems-title' }, `✗ Problems found: ${problemCount} ${problemCount === 1 ? 'problem' : 'problems'}${shown}. `),
    summary,
    h('ul', { testid: 'audit-problems' }, problems.map((p) => h('li', {}, `#${p.seq} ${p.problem}: ${p.detail}`))),
  ];
}

// ---------------------------------------------------------------------------------------------
// Start

$('sign-in-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const token = $('api-key').value.trim();
  if (token) void signIn(token);
});
$('sign-out').addEventListener('click', () => signOut());
window.addEventListener('hashchange', route);
if (state.token) void signIn(state.token);
else showSignIn();
