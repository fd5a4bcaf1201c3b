// DOM helpers: text only. Whatever is passed in as a child becomes a text node, never markup.

import { shortId } from './format.js';

const SVG_NS = 'http://www.w3.org/2000/svg';

/** An element; string and number children become text nodes, so data can never become markup. */
export function h(tag, attrs = {}, ...children) {
  return build(document.createElement(tag), attrs, children);
}

export function svg(tag, attrs = {}, ...children) {
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

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export const $ = (id) => document.getElementById(id);

/** A link inside the console: the id goes through encodeURIComponent, so it cannot leave the hash. */
export const runLink = (runId, attrs = {}) => h('a', { href: `#/runs/${encodeURIComponent(runId)}`, ...attrs }, shortId(runId));

/** Only http(s) links leave the console: a `javascript:` trace URL must not become clickable. */
export function safeHttpUrl(value) {
  try {
    const url = new URL(String(value), location.href);
    return url.protocol === 'http:' || url.protocol === 'https:' ? url.href : undefined;
  } catch {
    return undefined;
  }
}

export function dl(rows) {
  return h('dl', { class: 'facts' }, rows.filter(Boolean).map(([term, value, testid]) => [h('dt', {}, term), h('dd', { testid }, value)]));
}
