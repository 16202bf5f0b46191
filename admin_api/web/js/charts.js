// Charts through uPlot (vendored, see vendor/README.txt). Each chart is drawn from server-side
// aggregates only and comes with its numbers as a table for keyboard and screen-reader users.

import uPlot from '../vendor/uPlot.esm.js';
import { h, table } from './dom.js';

export const PALETTE = ['#1f5fbf', '#1a7f37', '#b35900', '#8250df', '#cf222e', '#0a7ea4'];

function sized(container, build) {
  const width = () => Math.max(280, container.clientWidth || 600);
  const plot = build(width());
  const observer = new ResizeObserver(() => plot.setSize({ width: width(), height: 240 }));
  observer.observe(container);
  return plot;
}

// series: [{label, values: number[]}], x: Date[]
export function timeChart({ title, x, series, valueLabel = '' }) {
  const plotBox = h('div', { class: 'chart-canvas', role: 'img', 'aria-label': `${title} over time (the numbers are in the table below)` });
  const rows = x.map((at, i) => ({ at, values: series.map((s) => s.values[i]) }));
  const details = h('details', {}, h('summary', {}, `${title}: the numbers`), table([
    { label: 'Period', value: (r) => r.at.toLocaleString(), header: true },
    ...series.map((s, i) => ({ label: s.label, value: (r) => String(s.display ? s.display[rows.indexOf(r)] : r.values[i]), class: 'num' })),
  ], rows));
  const box = h('figure', { class: 'chart' }, h('figcaption', {}, title), plotBox, details);
  requestAnimationFrame(() => sized(plotBox, (width) => new uPlot({
    width, height: 240,
    series: [{}, ...series.map((s, i) => ({ label: s.label, stroke: PALETTE[i % PALETTE.length], width: 2, points: { show: x.length < 60 } }))],
    axes: [{}, { label: valueLabel, size: 60 }],
    scales: { x: { time: true } },
  }, [x.map((d) => d.getTime() / 1000), ...series.map((s) => s.values)], plotBox)));
  return box;
}

// bars: [{label, value, display?}] (display: the exact text for the table, e.g. a decimal amount)
export function barChart({ title, bars, empty = 'Nothing to show.' }) {
  if (!bars.length) return h('figure', { class: 'chart' }, h('figcaption', {}, title), h('p', { class: 'empty' }, empty));
  const plotBox = h('div', { class: 'chart-canvas', role: 'img', 'aria-label': `${title} (the numbers are in the table below)` });
  const details = h('details', {}, h('summary', {}, `${title}: the numbers`), table([
    { label: 'What', value: (b) => b.label, header: true },
    { label: 'Value', value: (b) => b.display ?? String(b.value), class: 'num' }], bars));
  const box = h('figure', { class: 'chart' }, h('figcaption', {}, title), plotBox, details);
  requestAnimationFrame(() => sized(plotBox, (width) => new uPlot({
    width, height: 240,
    series: [{}, { label: 'count', stroke: PALETTE[4], fill: `${PALETTE[4]}aa`, paths: uPlot.paths.bars({ size: [0.6, 80] }), points: { show: false } }],
    axes: [{ values: (u, splits) => splits.map((i) => (bars[i] ? bars[i].label : '')), space: 40, rotate: 0 }, { size: 60 }],
    scales: { x: { time: false, range: [-0.5, bars.length - 0.5] } },
    legend: { show: false },
  }, [bars.map((_, i) => i), bars.map((b) => b.value)], plotBox)));
  return box;
}
