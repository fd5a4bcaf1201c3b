// Runs: the list of recent runs, and one run followed live through its event stream.

import { api, ApiError, describeError, readEventStream } from './api.js';
import { chainPicture } from './chain-picture.js';
import { append, dl, h, runLink, safeHttpUrl } from './dom.js';
import { eventText } from './event-text.js';
import { dateTime, formatLabel, risk, time } from './format.js';
import { every, REFRESH_MS } from './refresh.js';

const POLL_MS = 2000;
const TERMINAL = new Set(['completed', 'failed', 'cancelled']);

export function runsView(view) {
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

export function runView(view, runId) {
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
    timeline.append(h('li', { testid: 'timeline-event', 'data-type': event.type }, `${time(event.at)} `, h('strong', {}, `[${event.agent ?? 'run'}]`), ` ${eventText(event)}${event.withheld ? ` (${event.withheld.reason})` : ''}`));
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
