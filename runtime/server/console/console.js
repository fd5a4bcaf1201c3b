// The Palisade operator console. Plain ES modules, no build step; this one signs in and routes.
// Everything the server sends (arguments, outputs, reasons, names) may be attacker-influenced:
// it is only ever put into the page as text (textContent, text nodes, attribute values), never as markup.

import { api, describeError, onSessionEnd, state, TOKEN_KEY } from './api.js';
import { approvalsView, approvalView } from './approvals.js';
import { auditView } from './audit.js';
import { $, h, safeHttpUrl } from './dom.js';
import { runsView, runView } from './runs.js';

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
  else if (parts[0] === 'audit') state.leave = auditView(view, url.searchParams.get('runId') ?? '', url.searchParams.get('limit') ?? '', route);
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

// ---------------------------------------------------------------------------------------------
// Start

$('sign-in-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const token = $('api-key').value.trim();
  if (token) void signIn(token);
});
$('sign-out').addEventListener('click', () => signOut());
onSessionEnd(signOut);
window.addEventListener('hashchange', route);
if (state.token) void signIn(state.token);
else showSignIn();
