// Usage per broker and time range, from `GET /admin/v1/usage`.
import { get, query } from './api.js';
import { h, fill, duration, named } from './ui.js';
import { stackedBars, lines } from './charts.js';

const RANGES = { '1h': 3600, '6h': 6 * 3600, '24h': 86400, '7d': 7 * 86400, '30d': 30 * 86400 };
const CLASS_COLORS = { '2xx': '#2e9d62', '3xx': '#7b8794', '4xx': '#e0a030', '5xx': '#d64545', '1xx': '#8aa4c8', none: '#7a3b8f' };
const OP_COLORS = ['#1f5fbf', '#2e9d62', '#e0a030', '#d64545', '#7a3b8f', '#138d90', '#b45309', '#5b6b7f', '#c2185b', '#6a8f2e', '#999'];

const pct = (n, d) => (d ? `${((100 * n) / d).toFixed(n && n / d < 0.001 ? 3 : 1)} %` : '—');

function legend(colors) {
  return h('div', { class: 'legend' }, Object.entries(colors).map(([k, c]) => h('span', {}, h('i', { style: `background:${c}` }), k)));
}

export function usageScreen(box, me, params) {
  const broker = h('select', { id: 'u-broker' }, h('option', { value: '' }, 'all brokers'));
  const range = h('select', { id: 'u-range' }, Object.keys(RANGES).map((r) => h('option', { value: r }, `last ${r}`)));
  range.value = params.get('range') || '24h';
  const body = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  fill(box, h('div', { class: 'bar' }, h('h1', { class: 'grow' }, 'Usage'),
    h('label', {}, 'Broker', broker), h('label', {}, 'Range', range),
    h('button', { type: 'button', class: 'quiet', onclick: () => load() }, 'Refresh')), body);

  get('/brokers').then(({ brokers }) => {
    for (const b of brokers) broker.append(h('option', { value: b.id }, b.name && b.name !== b.id ? `${b.id} (${b.name})` : b.id));
  }).catch(() => {}).finally(() => {
    // NB: a broker from the address that the list lacks (deleted, or not
    // this token's) is still asked for: the API decides what it shows.
    const want = params.get('broker') || '';
    if (want && ![...broker.options].some((o) => o.value === want)) broker.append(h('option', { value: want }, want));
    broker.value = want;
    load();
  });

  let alive = true;
  async function load() {
    if (!alive) return;
    const secs = RANGES[range.value];
    const to = new Date();
    const from = new Date(to.getTime() - secs * 1000);
    history.replaceState(null, '', `#/usage${query({ broker: broker.value, range: range.value })}`);
    try {
      const u = await get(`/usage${query({ broker: broker.value, after: from.toISOString(), before: to.toISOString() })}`);
      render(u);
    } catch (x) {
      fill(body, h('p', { class: 'error' }, x.message));
    }
  }

  function render(u) {
    const t = u.total;
    const long = u.to_us - u.from_us > 2 * 86400e6;
    const timeFmt = (us) => {
      const d = new Date(us / 1000);
      const hm = `${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}`;
      return long ? `${d.getMonth() + 1}/${d.getDate()} ${hm}` : hm;
    };
    const byT = (key) => {
      const m = new Map();
      for (const p of u.series) {
        const b = m.get(p.t_us) || { t: p.t_us, values: {} };
        b.values[p[key]] = (b.values[p[key]] || 0) + p.count;
        m.set(p.t_us, b);
      }
      return [...m.values()];
    };
    const ops = u.operations.map((o) => o.operation);
    const opColors = Object.fromEntries(ops.map((o, i) => [o, OP_COLORS[i % OP_COLORS.length]]));
    const lat = (i) => u.latency.map((p) => ({ t: p.t_us, v: p.latency_us[i] || 0 }));
    const card = (label, value, id) => h('div', { class: 'card', id }, h('div', { class: 'muted' }, label), h('div', { class: 'big' }, value));
    if (!t.count) {
      fill(body, h('p', { class: 'empty' }, 'No exchange in this range.'));
      return;
    }
    const common = { from: u.from_us, to: u.to_us, timeFmt };
    fill(body,
      h('div', { class: 'cards' },
        card('Requests', t.count.toLocaleString(), 'u-requests'),
        card('Error rate (5xx, no answer)', pct(t.errors, t.count), 'u-errors'),
        card('4xx rate', pct(t.client_errors, t.count), 'u-4xx'),
        card('p50 latency', duration(t.latency_us[0])),
        card('p90 latency', duration(t.latency_us[1])),
        card('p99 latency', duration(t.latency_us[2]))),
      h('div', { class: 'grid2' },
        h('section', { class: 'panel' }, h('h3', {}, 'Requests by status class'), legend(Object.fromEntries(Object.entries(CLASS_COLORS).filter(([k]) => u.series.some((p) => p.class === k)))),
          stackedBars({ ...common, title: 'Requests by status class over time', width: u.bucket_us, buckets: byT('class'), keys: Object.keys(CLASS_COLORS), colors: CLASS_COLORS })),
        h('section', { class: 'panel' }, h('h3', {}, 'Requests by operation'), legend(opColors),
          stackedBars({ ...common, title: 'Requests by operation over time', width: u.bucket_us, buckets: byT('operation'), keys: ops, colors: opColors })),
        h('section', { class: 'panel' }, h('h3', {}, 'Latency percentiles'), legend({ p50: '#2e9d62', p90: '#e0a030', p99: '#d64545' }),
          lines({ ...common, title: 'Latency percentiles over time', fmt: (v) => duration(v), series: [
            { key: 'p50', color: '#2e9d62', points: lat(0) }, { key: 'p90', color: '#e0a030', points: lat(1) }, { key: 'p99', color: '#d64545', points: lat(2) }] })),
        h('section', { class: 'panel' }, h('h3', {}, 'Error rate'), legend({ '5xx or no answer': '#d64545', '4xx': '#e0a030' }),
          lines({ ...common, title: 'Error rate over time', fmt: (v) => `${Math.round(v)} %`, series: [
            { key: '5xx or no answer', color: '#d64545', points: u.latency.map((p) => ({ t: p.t_us, v: (100 * p.errors) / p.count })) },
            { key: '4xx', color: '#e0a030', points: u.latency.map((p) => ({ t: p.t_us, v: (100 * p.client_errors) / p.count })) }] }))),
      h('h2', {}, 'By operation'),
      h('div', { class: 'tablewrap' }, h('table', { id: 'u-operations' },
        h('thead', {}, h('tr', {}, ['Operation', 'Requests', '4xx', 'Errors', 'Error rate', 'p50', 'p90', 'p99'].map((c) => h('th', {}, c)))),
        h('tbody', {}, u.operations.map((o) => h('tr', {},
          h('td', {}, o.operation), h('td', {}, o.count), h('td', {}, o.client_errors), h('td', {}, o.errors),
          h('td', {}, pct(o.errors, o.count)), h('td', {}, duration(o.latency_us[0])), h('td', {}, duration(o.latency_us[1])), h('td', {}, duration(o.latency_us[2]))))))),
      h('h2', {}, 'Instances and bindings by plan'),
      u.plans.length ? h('div', { class: 'tablewrap' }, h('table', { id: 'u-plans' },
        h('thead', {}, h('tr', {}, ['Service', 'Plan', 'Instances created', 'Instances deleted', 'Bindings created', 'Bindings deleted'].map((c) => h('th', {}, c)))),
        h('tbody', {}, u.plans.map((p) => h('tr', {},
          h('td', {}, p.service_name || '—'), h('td', {}, named(p.plan_name, p.plan_id)),
          h('td', {}, p.instances_created), h('td', {}, p.instances_deleted), h('td', {}, p.bindings_created), h('td', {}, p.bindings_deleted))))))
        : h('p', { class: 'empty' }, 'No instance or binding was created or deleted in this range.'),
      h('p', { class: 'note' }, `Buckets of ${duration(u.bucket_us)}; created and deleted count what the broker accepted (200, 201, 202). Percentiles above 8,192 exchanges are ClickHouse estimates.`));
  }
  broker.addEventListener('change', () => load());
  range.addEventListener('change', () => load());
  return () => { alive = false; };
}
