// Failed and stuck instances, and one instance's history as a timeline.
import { get, query } from './api.js';
import { h, fill, localTime, duration, status, named } from './ui.js';

const historyHref = (broker, instance) => `#/instance/${encodeURIComponent(broker)}/${encodeURIComponent(instance)}`;

function problemTable(list, id) {
  if (!list.length) return h('p', { class: 'empty', id }, 'None.');
  return h('div', { class: 'tablewrap' }, h('table', { id },
    h('thead', {}, h('tr', {}, ['Instance', 'Broker', 'Location', 'Plan', 'Last operation', 'Status', 'Started', 'Last seen', 'Broker\'s description', '']
      .map((c) => h('th', { class: 'nowrap' }, c)))),
    h('tbody', {}, list.map((p) => h('tr', {},
      h('td', { class: 'id', title: p.instance_id }, p.instance_id),
      h('td', {}, p.broker),
      h('td', {}, p.location),
      h('td', {}, named(p.plan_name, p.plan_id)),
      h('td', { class: 'nowrap' }, p.operation),
      h('td', {}, p.status ? status(p.status) : h('span', { class: 'badge bad' }, 'failed')),
      h('td', { class: 'nowrap mono' }, localTime(Date.parse(p.started_at) * 1000)),
      h('td', { class: 'nowrap mono' }, localTime(Date.parse(p.last_seen_at) * 1000)),
      h('td', {}, p.description),
      h('td', { class: 'nowrap' }, h('a', { href: historyHref(p.broker, p.instance_id) }, 'History'), ' · ',
        h('a', { href: `#/logs/${encodeURIComponent(p.record_id)}` }, 'Exchange')))))));
}

export function failedScreen(box) {
  const stuckAfter = h('select', { id: 'stuck-after' }, ['10m', '1h', '6h', '24h', '7d'].map((d) => h('option', { value: d }, d)));
  stuckAfter.value = '24h';
  const body = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  async function load() {
    try {
      const r = await get(`/failed-instances${query({ stuck_after: stuckAfter.value })}`);
      const failed = r.instances.filter((p) => p.problem === 'failed');
      const stuck = r.instances.filter((p) => p.problem === 'stuck');
      fill(body,
        h('h2', {}, `Failed (${failed.length})`),
        h('p', { class: 'note' }, 'The latest provision, update or deprovision failed: the broker answered an error, or its last operation said failed. Requests the gateway refused do not count.'),
        problemTable(failed, 'failed'),
        h('h2', {}, `Stuck (${stuck.length})`),
        h('p', { class: 'note' }, `Still in progress after ${r.stuck_after}.`),
        problemTable(stuck, 'stuck'));
    } catch (x) {
      fill(body, h('p', { class: 'error' }, x.message));
    }
  }
  stuckAfter.addEventListener('change', load);
  fill(box, h('div', { class: 'bar' }, h('h1', { class: 'grow' }, 'Failed instances'),
    h('label', {}, 'Stuck after', stuckAfter),
    h('button', { type: 'button', class: 'quiet', onclick: load }, 'Refresh')), body);
  load();
}

function kind(r) {
  if (r.outcome !== 'ok' && r.outcome !== 'broker_error') return 'bad';
  if (r.status >= 500 || r.state === 'failed') return 'bad';
  if (r.status >= 400) return 'warn';
  return 'ok';
}

/** Every exchange of one instance, oldest first: provision, polls, binds, deletes. */
export function historyScreen(box, broker, instance) {
  fill(box, h('p', { class: 'muted' }, 'Loading…'));
  (async () => {
    const all = [];
    let cursor = null;
    // NB: a history is read whole, a thousand at a time, up to 5,000.
    do {
      const page = await get(`/logs${query({ broker, instance_id: instance, order: 'oldest', limit: 1000, cursor })}`);
      all.push(...page.records);
      cursor = page.next;
    } while (cursor && all.length < 5000);
    // Orphan mitigation (OSB): a delete that follows a create which failed
    // with a 5xx, timed out or never answered, with nothing in between.
    const orphan = new Set();
    const failedCreate = (r) => r.status >= 500 || r.status < 100 || r.outcome === 'timeout' || r.outcome === 'upstream_error';
    let last = {};
    for (const r of all) {
      const scope = r.binding_id ? `b:${r.binding_id}` : 'i';
      const create = r.binding_id ? 'BIND' : 'PROVISION_INSTANCE';
      const del = r.binding_id ? 'UNBIND' : 'DEPROVISION_INSTANCE';
      if (r.operation === del && last[scope] && last[scope].operation === create && failedCreate(last[scope])) orphan.add(r.id);
      if (r.operation === create || r.operation === del) last[scope] = r;
    }
    const polls = all.filter((r) => r.operation.startsWith('POLL_')).length;
    fill(box,
      h('div', { class: 'bar' }, h('h1', { class: 'grow' }, 'Instance ', h('span', { class: 'mono' }, instance)),
        h('a', { class: 'button quiet', href: `#/logs${query({ broker, instance_id: instance })}` }, 'In the logs')),
      h('p', { class: 'muted' }, `Broker ${broker}: ${all.length} exchanges (${polls} polls), oldest first.`),
      all.length ? h('ol', { class: 'timeline', id: 'timeline' }, all.map((r) => h('li', { class: kind(r) },
        h('div', {}, h('a', { href: `#/logs/${encodeURIComponent(r.id)}` }, h('strong', {}, r.operation)), ' ', status(r.status),
          r.state ? [' ', h('span', { class: 'badge' }, r.state)] : '',
          r.binding_id ? [' binding ', h('span', { class: 'mono' }, r.binding_id)] : '',
          orphan.has(r.id) ? [' ', h('span', { class: 'badge warn', title: 'a delete right after a create that failed or timed out: the platform cleaning up a possible orphan' }, 'orphan mitigation')] : ''),
        h('div', { class: 'muted mono' }, `${localTime(r.received_at_us, true)} · ${duration(r.duration_us)} · ${r.platform || 'no platform'} · ${r.plan_name || r.plan_id}`),
        r.description ? h('div', {}, r.description) : '',
        r.error ? h('div', { class: 'error' }, r.error) : ''))) : h('p', { class: 'empty' }, 'No exchange recorded for this instance.'));
  })().catch((x) => fill(box, h('p', { class: 'error' }, x.message)));
}
