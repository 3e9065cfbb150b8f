// Brokers: list, register, edit, publish, approve, refresh the catalog,
// stage a password, delete and deactivate (behind a typed confirmation).
import { call, get, query } from './api.js';
import { h, fill, dialog, field, toast } from './ui.js';

const enc = encodeURIComponent;

function catalogCell(c) {
  if (!c || c.state) return h('span', { class: 'muted' }, (c && c.state) || '—');
  if (c.last_error) return h('span', { class: 'badge bad', title: c.last_error }, `failing: ${c.last_error}`);
  return h('span', { title: c.last_success ? `last refreshed ${c.last_success}` : '' }, `${c.services} services, ${c.plans} plans`);
}

function stateBadge(s) {
  const k = { published: 'ok', pending_approval: 'warn', deactivated: 'bad' }[s] || '';
  return h('span', { class: `badge ${k}` }, s.replace('_', ' '));
}

function routes(b) {
  const out = [];
  if (b.private) out.push(h('div', {}, h('span', { class: 'badge' }, 'private'), ' ', h('span', { class: 'mono' }, b.private.endpoint), ' ', catalogCell(b.private.catalog)));
  for (const p of b.publications) {
    out.push(h('div', {}, h('span', { class: `badge ${p.approved ? 'ok' : 'warn'}` }, `${p.location}${p.approved ? '' : ' · awaiting approval'}`), ' ',
      h('span', { class: 'mono' }, p.endpoint), ' ', catalogCell(p.catalog)));
  }
  return h('div', { class: 'routes' }, out);
}

/** The endpoint fields shared by register, edit and publish. */
function endpointFields(form, e, needPassword) {
  const [l1, endpoint] = field('Endpoint (https://…)', { name: 'endpoint', value: (e && e.endpoint) || '', required: needPassword, autocomplete: 'off' });
  const [l2, username] = field('Broker user name', { name: 'username', value: (e && e.username) || '', required: needPassword, autocomplete: 'off' });
  const [l3, password] = field(needPassword ? 'Broker password' : 'Broker password (empty: keep)', { name: 'password', type: 'password', required: needPassword, autocomplete: 'new-password' });
  const dev = h('input', { type: 'checkbox', name: 'development_mode' });
  dev.checked = !!(e && e.development_mode);
  form.append(l1, l2, l3, h('label', { class: 'inline' }, dev, 'Development mode (plain HTTP and unverified TLS allowed)'));
  return () => {
    const v = { endpoint: endpoint.value.trim(), username: username.value.trim(), development_mode: dev.checked };
    if (password.value) v.password = password.value;
    for (const k of ['endpoint', 'username']) if (!v[k]) delete v[k];
    return v;
  };
}

/** Delete or deactivate: the broker's id typed in, and what cannot be undone said. */
function confirmTyped(b, title, warning, label, run) {
  return dialog(title, (form) => {
    const [l, input] = field(`Type the broker's id, ${b.id}, to confirm`, { name: 'confirm', autocomplete: 'off', id: 'confirm-id' });
    form.append(h('p', { class: 'warning' }, warning), l);
    return { label, danger: true, enabled: () => input.value === b.id, run: async () => {
      if (input.value !== b.id) throw new Error(`That is not ${b.id}.`);
      await run();
      return true;
    } };
  });
}

export function brokersScreen(box, me) {
  const operator = me.role === 'operator';
  const list = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  const register = h('button', { type: 'button', id: 'register' }, 'Register a broker');
  fill(box, h('div', { class: 'bar' }, h('h1', { class: 'grow' }, 'Brokers'), register), list);

  async function load() {
    try {
      const { brokers } = await get('/brokers');
      if (!brokers.length) return fill(list, h('p', { class: 'empty' }, 'No broker yet: register one.'));
      fill(list, h('div', { class: 'tablewrap' }, h('table', { id: 'brokers' },
        h('thead', {}, h('tr', {}, ['Broker', 'Owner', 'State', 'Routes and catalogs', 'Actions'].map((c) => h('th', {}, c)))),
        h('tbody', {}, brokers.map(row)))));
    } catch (x) {
      fill(list, h('p', { class: 'error' }, x.message));
    }
  }

  const done = (msg) => async (r) => {
    toast(msg + (r && r.warning ? ` (${r.warning})` : ''));
    await load();
    return true;
  };

  function row(b) {
    const act = (label, f, cls = 'quiet small') => h('button', { type: 'button', class: cls, onclick: f, dataset: { action: label } }, label);
    const actions = [
      h('a', { class: 'button quiet small', href: `#/logs${query({ broker: b.id })}` }, 'Communication logs'),
      h('a', { class: 'button quiet small', href: `#/usage${query({ broker: b.id })}` }, 'Usage'),
      act('Refresh catalog', async () => {
        try {
          const r = await call('POST', `/brokers/${enc(b.id)}/catalog/refresh`);
          const bad = r.results.filter((x) => x.error || x.last_error);
          toast(bad.length ? `Catalog refresh failed for ${bad.length} of ${r.results.length} routes.` : `Catalog refreshed (${r.results.length} routes).`, bad.length > 0);
          load();
        } catch (x) { toast(x.message, true); }
      }),
    ];
    if (!b.deactivated_at && b.state !== 'deactivated') {
      actions.push(act('Edit', () => edit(b)), act('Publish', () => publish(b)), act('Password', () => password(b)));
      if (operator) {
        for (const p of b.publications.filter((x) => !x.approved)) {
          actions.push(act(`Approve ${p.location}`, async () => {
            try { await done(`${b.id} approved in ${p.location}.`)(await call('POST', `/brokers/${enc(b.id)}/publications/${enc(p.location)}/approve`)); } catch (x) { toast(x.message, true); }
          }, 'small'));
        }
      }
      for (const p of b.publications.filter((x) => !x.approved)) {
        actions.push(act(`Revoke ${p.location}`, async () => {
          try { await done(`Publication in ${p.location} revoked.`)(await call('DELETE', `/brokers/${enc(b.id)}/publications/${enc(p.location)}`)); } catch (x) { toast(x.message, true); }
        }));
      }
      actions.push(act('Deactivate', () => confirmTyped(b, `Deactivate ${b.id}`,
        'Deactivation is permanent and cannot be undone: the broker\'s catalog becomes empty and new provisions are refused. Existing instances and bindings keep working.',
        'Deactivate', async () => done(`${b.id} deactivated.`)(await call('POST', `/brokers/${enc(b.id)}/deactivate`))), 'quiet small danger'));
    }
    actions.push(act('Delete', () => confirmTyped(b, `Delete ${b.id}`,
      `Deleting cannot be undone: the broker and all its routes stop at once, and the id ${b.id} can never be registered again. Its communication logs are kept. A broker with an approved publication cannot be deleted.`,
      'Delete', async () => done(`${b.id} deleted.`)(await call('DELETE', `/brokers/${enc(b.id)}`))), 'quiet small danger'));
    return h('tr', { dataset: { broker: b.id } },
      h('td', {}, h('strong', {}, b.name || b.id), h('div', { class: 'mono muted' }, b.id)),
      h('td', {}, b.owner),
      h('td', {}, stateBadge(b.state)),
      h('td', {}, routes(b)),
      h('td', {}, h('div', { class: 'actions-cell' }, actions)));
  }

  function edit(b) {
    return dialog(`Edit ${b.id}`, (form) => {
      const [l1, name] = field('Name', { name: 'name', value: b.name || '' });
      const [l2, refresh] = field('Catalog refresh interval', { name: 'catalog_refresh', value: b.catalog_refresh || '1h' });
      const redact = h('input', { type: 'checkbox', name: 'redact_parameters' });
      redact.checked = !!b.redact_parameters;
      form.append(l1);
      const ep = b.private ? endpointFields(form, b.private, false) : () => ({});
      form.append(l2, h('label', { class: 'inline' }, redact, 'Redact request parameters in the logs'));
      return { run: async () => done(`${b.id} saved.`)(await call('PATCH', `/brokers/${enc(b.id)}`,
        { name: name.value.trim(), catalog_refresh: refresh.value.trim(), redact_parameters: redact.checked, ...ep() })) };
    });
  }

  function publish(b) {
    return dialog(`Publish ${b.id}`, (form) => {
      const loc = h('select', { name: 'location', id: 'location' }, ['global', ...(me.locations || [])].map((l) => h('option', { value: l }, l)));
      form.append(h('p', { class: 'note' }, 'A publication serves platforms in one location (or every location, as Global) once an operator approves it.'),
        h('label', {}, 'Location', loc));
      const ep = endpointFields(form, null, true);
      return { label: 'Publish', run: async () => done(`${b.id} published in ${loc.value}.`)(await call('PUT', `/brokers/${enc(b.id)}/publications/${enc(loc.value)}`, ep())) };
    });
  }

  function password(b) {
    return dialog(`Password of ${b.id}`, (form) => {
      const locs = [...(b.private ? ['private'] : []), ...b.publications.map((p) => p.location)];
      const loc = h('select', { name: 'location' }, locs.map((l) => h('option', { value: l }, l)));
      const [l1, pw] = field('New broker password', { name: 'password', type: 'password', required: true, autocomplete: 'new-password' });
      const stage = h('input', { type: 'checkbox', name: 'stage' });
      stage.checked = true;
      form.append(h('label', {}, 'Route', loc), l1, h('label', { class: 'inline' }, stage, 'Stage it: keep the current password until the broker accepts the new one'));
      return { label: 'Set password', run: async () => done(stage.checked ? 'Password staged.' : 'Password replaced.')(
        await call('PUT', `/brokers/${enc(b.id)}/password`, { location: loc.value, password: pw.value, stage: stage.checked })) };
    });
  }

  register.addEventListener('click', () => dialog('Register a broker', (form) => {
    const [l1, id] = field('Id (permanent: it is in every platform\'s URL)', { name: 'id', required: true, autocomplete: 'off', id: 'reg-id' });
    const [l2, name] = field('Name', { name: 'name', autocomplete: 'off' });
    form.append(l1, l2);
    let owner = null;
    if (operator) {
      const [l3, o] = field('Owner (customer id)', { name: 'owner', required: true, autocomplete: 'off' });
      owner = o;
      form.append(l3);
    }
    const ep = endpointFields(form, null, true);
    return { label: 'Register', run: async () => {
      const body = { id: id.value.trim(), ...ep() };
      if (name.value.trim()) body.name = name.value.trim();
      if (owner) body.owner = owner.value.trim();
      return done(`${body.id} registered.`)(await call('POST', '/brokers', body));
    } };
  }));

  load();
}
