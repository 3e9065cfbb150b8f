// Two small SVG charts, drawn in the page: stacked bars over time and
// lines over time. About a hundred lines instead of a charting library:
// the console needs only these two, and they follow the page's colours.

const NS = 'http://www.w3.org/2000/svg';
const W = 520, H = 200, L = 58, R = 10, T = 10, B = 24;

function el(tag, attrs, text) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

/** A round step for an axis from 0 to `max`, about four lines. */
function ticks(max) {
  if (max <= 0) return [0, 1];
  const raw = max / 4;
  const p = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * p).find((s) => s >= raw);
  const out = [];
  for (let v = 0; v <= max + step / 2; v += step) out.push(v);
  if (out[out.length - 1] < max) out.push(out[out.length - 1] + step);
  return out;
}

function frame(title, from, to, top, fmt, timeFmt) {
  const svg = el('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img', 'aria-label': title });
  const ys = ticks(top);
  const ymax = ys[ys.length - 1] || 1;
  const y = (v) => T + (H - T - B) * (1 - v / ymax);
  const x = (t) => L + (W - L - R) * ((t - from) / Math.max(1, to - from));
  for (const v of ys) {
    svg.append(el('line', { x1: L, x2: W - R, y1: y(v), y2: y(v), class: 'grid' }));
    svg.append(el('text', { x: L - 6, y: y(v) + 4, 'text-anchor': 'end' }, fmt(v)));
  }
  for (let i = 0; i <= 4; i += 1) {
    const t = from + ((to - from) * i) / 4;
    svg.append(el('text', { x: x(t), y: H - 8, 'text-anchor': i === 0 ? 'start' : i === 4 ? 'end' : 'middle' }, timeFmt(t)));
  }
  return { svg, x, y };
}

/**
 * Stacked bars: `buckets` is `[{t, values: {key: n}}]`, `keys` the stack
 * order with their colours.
 */
export function stackedBars({ title, from, to, width, buckets, keys, colors, timeFmt }) {
  const top = Math.max(1, ...buckets.map((b) => keys.reduce((s, k) => s + (b.values[k] || 0), 0)));
  const { svg, x, y } = frame(title, from, to, top, (v) => String(Math.round(v * 100) / 100), timeFmt);
  const bw = Math.max(1, x(from + width) - x(from) - 1);
  for (const b of buckets) {
    let acc = 0;
    for (const k of keys) {
      const n = b.values[k] || 0;
      if (!n) continue;
      const r = el('rect', { x: x(b.t), y: y(acc + n), width: bw, height: Math.max(0.5, y(acc) - y(acc + n)), fill: colors[k] });
      r.append(el('title', {}, `${timeFmt(b.t)} ${k}: ${n}`));
      svg.append(r);
      acc += n;
    }
  }
  return svg;
}

/** Lines: `series` is `[{key, color, points: [{t, v}]}]`. */
export function lines({ title, from, to, series, fmt, timeFmt }) {
  const top = Math.max(1, ...series.flatMap((s) => s.points.map((p) => p.v)));
  const { svg, x, y } = frame(title, from, to, top, fmt, timeFmt);
  for (const s of series) {
    if (!s.points.length) continue;
    const d = s.points.map((p, i) => `${i ? 'L' : 'M'}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join(' ');
    svg.append(el('path', { d, fill: 'none', stroke: s.color, 'stroke-width': 2 }));
    for (const p of s.points) {
      const c = el('circle', { cx: x(p.t), cy: y(p.v), r: 2.5, fill: s.color });
      c.append(el('title', {}, `${timeFmt(p.t)} ${s.key}: ${fmt(p.v)}`));
      svg.append(c);
    }
  }
  return svg;
}
