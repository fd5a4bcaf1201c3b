import { svg } from './dom.js';
import { formatLabel, risk } from './format.js';

/**
 * The chain as a picture: a box per agent in order of first appearance, an arrow per handoff
 * (solid) or delegation (dashed) with its guard verdict, and under each box the agent's decisions
 * and last context label. Long text is cut; the full text is in each element's tooltip.
 */
export function chainPicture(run) {
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
