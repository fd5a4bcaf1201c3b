// The audit log: its entries, and first the server's verification of its hash chain.

import { api, describeError } from './api.js';
import { h, runLink } from './dom.js';
import { dateTime, risk, time } from './format.js';

/** `reload` shows the view again: submitting the query already in the address changes nothing to route on. */
export function auditView(view, runId, limit, reload) {
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
    if (location.hash === hash) reload();
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
      verification.setAttribute('data-status', report.status);
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
            h('td', { title: e.kid ? `key ${e.kid}` : undefined }, e.mac ? 'MAC' : e.kid ? 'signed' : 'none'),
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
    h('p', {}, 'The append-only, hash-chained record of every decision and action, each signed by its writer. The server checks the chain, the signatures and the anchors as it reads it.'),
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

/** What each status means, first and loud: a log that is not proven intact cannot be taken at its word. */
const HEADLINES = {
  verified: ['audit-verified', '✓ Verified: every record is signed by its writer and the chain is intact up to the latest anchor. '],
  unanchored: ['audit-unanchored', '⚠ Unanchored: every record is signed by its writer and the chain is intact, but no anchor outside Redis pins its end: records cut from the end would go unnoticed. '],
  unverified: ['audit-unverified', '⚠ Unverified: the server was given no writers’ audit keys, so nothing here proves who wrote these records; only the chain was checked. '],
};

function verificationBanner(report) {
  const anchor = report.anchor ? `, anchored at #${report.anchor.seq} ${dateTime(report.anchor.at)}${report.anchor.verified ? ' (verified)' : ''}, ${report.sinceAnchor ?? 0} since` : report.anchor === null ? ', no anchor taken yet' : '';
  const summary =
    report.entries === undefined
      ? 'The whole log was checked.'
      : `The whole log was checked: ${report.entries} entries, ${report.macsVerified} authenticated by their writer${report.unsigned ? `, ${report.unsigned} from writers without a key` : ''}${report.head ? `, head at #${report.head.seq}` : ''}${anchor}.`;
  const headline = HEADLINES[report.status];
  if (headline) return [h('strong', { testid: headline[0] }, headline[1]), summary];
  const { problems, problemCount } = report;
  const shown = problems.length < problemCount ? ` (the first ${problems.length} listed)` : '';
  return [
    h('strong', { testid: 'audit-problems-title' }, `✗ Problems found: ${problemCount} ${problemCount === 1 ? 'problem' : 'problems'}${shown}. `),
    summary,
    h('ul', { testid: 'audit-problems' }, problems.map((p) => h('li', {}, `#${p.seq} ${p.problem}: ${p.detail}`))),
  ];
}
