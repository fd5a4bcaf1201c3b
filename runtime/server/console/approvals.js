// Approvals: the requests waiting for the operator's decision, one request, and deciding it.

import { api, ApiError, describeError } from './api.js';
import { dl, h, runLink } from './dom.js';
import { dateTime, formatLabel, prettyJson, relative, risk, time } from './format.js';
import { every, REFRESH_MS } from './refresh.js';

/** Where a value of the arguments came from, in words an approver reads. */
function originText({ origin, via }) {
  switch (origin) {
    case 'user':
      return "the user's request";
    case 'tool':
      return `a trusted tool${via ? ` (${via})` : ''}`;
    case 'agent':
      return `agent ${via ?? ''}'s answer`;
    case 'third_party':
      return `third-party content${via ? ` (via ${via})` : ''}: anyone could have written it`;
    case 'instructions':
      return `third-party content that reads as instructions${via ? ` (via ${via})` : ''}: a likely injection`;
    default:
      return 'no source: the model wrote it';
  }
}

function actionText(request) {
  if (request.kind === 'handoff') return `handoff to agent ${request.subject}`;
  if (request.kind === 'delegate') return `delegation to agent ${request.subject}`;
  return `tool ${request.subject}`;
}

export function approvalsView(view) {
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
      for (const { request, verification, withheld } of items) {
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
        card.update(request, verification, withheld);
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
export function approvalView(view, id) {
  const body = h('div');
  view.replaceChildren(h('h2', {}, 'Approval request'), h('p', {}, h('a', { href: '#/approvals' }, '← Pending approvals')), body);
  api(`/v1/approvals/${encodeURIComponent(id)}`).then(
    ({ request, decision, mayDecide, verification, withheld }) => {
      if (decision) {
        const card = approvalCard(request);
        card.update(request, verification, withheld);
        card.element.querySelector('.decide').replaceWith(
          h('p', { testid: 'approval-decided', class: `decision ${decision.status}` }, `Decided: ${decision.status}${decision.by ? ` by ${decision.by.id}` : ''} at ${dateTime(decision.at)}${decision.note ? ` (“${decision.note}”)` : ''}.`),
        );
        body.replaceChildren(card.element);
        return;
      }
      const card = approvalCard(request, (made, reason) => card.element.replaceWith(decisionNotice(request, made, reason)));
      card.update(request, verification, withheld);
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
  const sources = h('ul', { testid: 'approval-sources' });
  // What the server's check of the request found: a refused one is not what its agent wrote, and cannot be decided.
  const verified = h('p', { role: 'alert', testid: 'approval-verification', hidden: true });
  // Content above the reader's clearance is left out by the server; such a request cannot be decided by them.
  const withheldNote = h('p', { role: 'alert', class: 'muted', testid: 'approval-withheld', hidden: true });
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
    ['Arguments (identifiers partly masked, with a fingerprint to tell look-alikes apart)', arguments_],
    ['Where the values came from', sources],
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
    verified,
    withheldNote,
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
  const decideGroup = element.querySelector('.decide');
  return {
    element,
    hasMessage: () => !message.hidden,
    update(next, verification, withheld) {
      const refused = verification?.status === 'refused';
      withheldNote.hidden = !withheld;
      withheldNote.textContent = withheld
        ? `Some of this request is above your clearance (${formatLabel(next.label)}), so its arguments, sources and quoted reasons are not shown, and you may not decide it: nobody approves what they cannot read.`
        : '';
      verified.hidden = !refused && verification?.status !== 'unauthenticated';
      verified.className = refused ? 'error' : 'muted';
      verified.dataset.status = verification?.status ?? '';
      verified.textContent = refused
        ? `This request failed verification and cannot be decided: ${verification.problem}. It is not what agent ${next.agent} wrote: it was forged or altered after it was written, so its content is not shown.`
        : 'Not verified: the server holds no keys, so nothing shows this is what the agent wrote (development only).';
      if (decideGroup) decideGroup.hidden = refused || Boolean(withheld);
      arguments_.textContent = refused || withheld ? '(withheld)' : prettyJson(next.arguments);
      sources.replaceChildren(
        ...(next.sources?.length ? next.sources : []).map((s) =>
          h('li', { testid: 'approval-source', 'data-origin': s.origin }, h('code', {}, s.path), `: ${s.value} — from ${originText(s)}`),
        ),
      );
      if (!next.sources?.length) sources.replaceChildren(h('li', { class: 'muted' }, '(none traced)'));
      reasons.replaceChildren(...(next.reasons.length ? next.reasons : ['(none given)']).map((r) => h('li', {}, r)));
      chain.replaceChildren(...next.chain.map((a) => h('li', {}, a)));
      deadline.textContent = `${dateTime(next.expiresAt)} (${relative(next.expiresAt)}; no decision by then is a denial)`;
    },
  };
}
