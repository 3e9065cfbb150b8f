// Communication logs: search as you type, more on scroll, live mode.
import { get, query, tail } from './api.js';
import {
  h, fill, OPERATIONS, OUTCOMES, debounce, localTime, parseLocal, duration, status, outcomeBadge, named, toast,
} from './ui.js';

/** The criteria the screen offers: [query key, label, placeholder]. */
const TEXT = [
  ['status', 'Response code', '>399, 403, 4xx, 500-599'],
  ['plan', 'Service plan', 'id or name'],
  ['service', 'Service', 'id or name'],
  ['instance_id', 'Service instance', 'instance id'],
  ['broker', 'Broker', 'broker id'],
  ['location', 'Location', 'private, global, eu-1…'],
  ['platform', 'Platform', 'platform id'],
];

/** The table row of one summary (or record). */
export function logRow(r, fresh = false) {
  const open = () => { location.hash = `#/logs/${encodeURIComponent(r.id)}`; };
  return h('tr', {
    class: fresh ? 'row fresh' : 'row', tabindex: '0', dataset: { id: r.id },
    onclick: open, onkeydown: (e) => { if (e.key === 'Enter') open(); },
  },
  h('td', { class: 'nowrap mono' }, localTime(r.received_at_us)),
  h('td', {}, r.platform || h('span', { class: 'muted' }, '—')),
  h('td', {}, r.location),
  h('td', {}, r.broker),
  h('td', { class: 'nowrap' }, r.operation),
  h('td', {}, status(r.status)),
  h('td', { class: 'nowrap' }, duration(r.duration_us)),
  h('td', {}, named(r.service_name, r.service_id)),
  h('td', {}, named(r.plan_name, r.plan_id)),
  h('td', { class: 'id', title: r.instance_id }, r.instance_id),
  h('td', {}, outcomeBadge(r.outcome)));
}

export const HEAD = ['Time', 'Platform', 'Location', 'Broker', 'Operation', 'Status', 'Duration', 'Service', 'Plan', 'Instance', 'Outcome'];

export function logsScreen(box, params) {
  const inputs = {};
  const dateErr = h('span', { class: 'error' });
  const date = h('input', { id: 'f-before', placeholder: 'yyyy-MM-dd HH:mm:ss', value: params.get('before') || '', autocomplete: 'off' });
  inputs.before = date;
  const op = h('select', { id: 'f-operation' }, h('option', { value: '' }, 'any'), OPERATIONS.map((o) => h('option', { value: o }, o)));
  op.value = params.get('operation') || '';
  inputs.operation = op;
  const outcome = h('select', { id: 'f-outcome' }, h('option', { value: '' }, 'any'), OUTCOMES.map((o) => h('option', { value: o }, o)));
  outcome.value = params.get('outcome') || '';
  inputs.outcome = outcome;
  const fields = [
    h('label', {}, 'Request date (up to, local time)', date, dateErr),
    h('label', {}, 'Operation', op),
  ];
  for (const [k, label, ph] of TEXT) {
    const i = h('input', { id: `f-${k}`, placeholder: ph, value: params.get(k) || '', autocomplete: 'off' });
    inputs[k] = i;
    fields.push(h('label', {}, label, i));
  }
  fields.push(h('label', {}, 'Outcome', outcome));

  const tbody = h('tbody', { id: 'log-rows' });
  const info = h('p', { class: 'muted', id: 'log-info' });
  const sentinel = h('div', { class: 'sentinel' });
  const liveBtn = h('button', { type: 'button', id: 'live', class: 'quiet' }, 'Live');
  const pauseBtn = h('button', { type: 'button', id: 'pause', class: 'quiet', hidden: true }, 'Pause');
  const liveInfo = h('span', { class: 'muted', id: 'live-info' });
  const clear = h('button', { type: 'button', class: 'quiet' }, 'Clear filters');

  fill(box,
    h('div', { class: 'bar' }, h('h1', { class: 'grow' }, 'Communication logs'), liveInfo, pauseBtn, liveBtn, clear),
    h('div', { class: 'filters', role: 'search' }, fields),
    info,
    h('div', { class: 'tablewrap' }, h('table', { id: 'logs' },
      h('thead', {}, h('tr', {}, HEAD.map((c) => h('th', { class: 'nowrap' }, c)))), tbody)),
    sentinel);

  let next = null, loading = false, generation = 0, shown = new Set(), alive = true;

  function criteria() {
    const c = {};
    for (const [k, el] of Object.entries(inputs)) {
      const v = el.value.trim();
      if (!v) continue;
      if (k === 'before') {
        const p = parseLocal(v);
        if (p.error) { dateErr.textContent = p.error; continue; }
        c.before = p.value;
      } else {
        c[k] = v;
      }
    }
    return c;
  }

  async function search() {
    // NB: a search typed just before leaving the screen must not rewrite
    // the address of the next one.
    if (!alive) return;
    dateErr.textContent = '';
    const c = criteria();
    const mine = ++generation;
    // NB: the criteria go into the address, so a search can be shared and
    // survives a reload (the date as typed, in local time).
    const typed = {};
    for (const [k, el] of Object.entries(inputs)) if (el.value.trim()) typed[k] = el.value.trim();
    history.replaceState(null, '', `#/logs${query(typed)}`);
    info.textContent = 'Searching…';
    try {
      const page = await get(`/logs${query({ ...c, limit: 50 })}`);
      if (mine !== generation) return;
      shown = new Set();
      fill(tbody);
      append(page);
    } catch (x) {
      if (mine !== generation) return;
      fill(tbody);
      info.textContent = '';
      info.append(h('span', { class: 'error' }, x.message));
    }
  }

  function append(page) {
    for (const r of page.records) {
      if (shown.has(r.id)) continue;
      shown.add(r.id);
      tbody.append(logRow(r));
    }
    next = page.next;
    // NB: the observer says only when the sentinel comes into view; on a
    // screen taller than a page of rows it never leaves it, so look again
    // once the rows are laid out.
    requestAnimationFrame(() => {
      if (next && alive && sentinel.getBoundingClientRect().top < innerHeight + 400) more();
    });
    info.textContent = shown.size
      ? `${shown.size} exchange${shown.size === 1 ? '' : 's'}${next ? ', more below' : ''}; newest first.`
      : 'No exchange matches.';
  }

  async function more() {
    if (!next || loading) return;
    loading = true;
    const mine = generation;
    try {
      const page = await get(`/logs${query({ ...criteria(), limit: 50, cursor: next })}`);
      if (mine === generation) append(page);
    } catch (x) {
      toast(x.message, true);
    } finally {
      loading = false;
    }
  }

  // Live mode: the tail, with the same criteria but the date.
  let stopTail = null, paused = false, held = [];
  function live(on) {
    if (stopTail) { stopTail(); stopTail = null; }
    paused = false; held = [];
    pauseBtn.hidden = !on;
    pauseBtn.textContent = 'Pause';
    liveBtn.textContent = on ? 'Stop live' : 'Live';
    liveBtn.setAttribute('aria-pressed', on ? 'true' : 'false');
    fill(liveInfo, on ? [h('span', { class: 'live-dot' }), 'live'] : '');
    if (!on) return;
    const c = criteria();
    delete c.before;
    stopTail = tail(c, (r) => {
      if (paused) { held.push(r); fill(liveInfo, `paused: ${held.length} new`); return; }
      show(r);
    }, (n) => toast(`Live view fell behind: ${n} exchanges not shown.`, true), (err) => {
      if (err) toast(`Live view stopped: ${err.message}`, true);
      if (stopTail) live(false);
    });
  }
  function show(r) {
    if (shown.has(r.id)) return;
    shown.add(r.id);
    tbody.prepend(logRow(r, true));
    info.textContent = `${shown.size} exchanges; live rows are added at the top.`;
  }
  liveBtn.addEventListener('click', () => live(!stopTail));
  pauseBtn.addEventListener('click', () => {
    paused = !paused;
    pauseBtn.textContent = paused ? 'Resume' : 'Pause';
    pauseBtn.setAttribute('aria-pressed', paused ? 'true' : 'false');
    if (!paused) {
      held.forEach(show);
      held = [];
      fill(liveInfo, h('span', { class: 'live-dot' }), 'live');
    } else {
      fill(liveInfo, 'paused');
    }
  });
  clear.addEventListener('click', () => {
    for (const el of Object.values(inputs)) el.value = '';
    search();
  });

  const later = debounce(() => { search(); if (stopTail) live(true); }, 300);
  for (const el of Object.values(inputs)) {
    el.addEventListener('input', later);
    el.addEventListener('change', later);
  }
  const io = new IntersectionObserver((es) => { if (es.some((e) => e.isIntersecting)) more(); }, { rootMargin: '400px' });
  io.observe(sentinel);
  search();
  return () => { alive = false; io.disconnect(); if (stopTail) stopTail(); stopTail = null; };
}
