// Small DOM and formatting helpers shared by the screens. Everything that
// shows data builds text nodes (never innerHTML), so a hostile id, header
// or body is shown, not run.

/** `h('td', {class: 'id'}, 'text', child)`: an element. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    // NB: through the CSSOM: the page's CSP refuses style attributes.
    else if (k === 'style') el.style.cssText = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  add(el, children);
  return el;
}

function add(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) add(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  add(el, children);
  return el;
}

/** The OSB operations, as the gateway classifies them. */
export const OPERATIONS = [
  'FETCH_CATALOG', 'PROVISION_INSTANCE', 'UPDATE_INSTANCE', 'DEPROVISION_INSTANCE',
  'FETCH_INSTANCE', 'POLL_INSTANCE_LAST_OPERATION', 'BIND', 'UNBIND', 'FETCH_BINDING',
  'POLL_BINDING_LAST_OPERATION', 'OTHER',
];

export const OUTCOMES = ['ok', 'broker_error', 'rejected', 'upstream_error', 'timeout', 'aborted', 'shutdown'];

const pad = (n, w = 2) => String(n).padStart(w, '0');

/** µs since the epoch as `yyyy-MM-dd HH:mm:ss` in the browser's time zone. */
export function localTime(us, withMs = false) {
  if (!us) return '';
  const d = new Date(Math.floor(us / 1000));
  const s = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  return withMs ? `${s}.${pad(d.getMilliseconds(), 3)}` : s;
}

/**
 * `yyyy-MM-dd HH:mm:ss` (seconds, or minutes and seconds, may be left
 * out) in local time as an RFC 3339 upper bound in UTC, or an error text.
 * A bound without seconds includes its whole minute.
 */
export function parseLocal(text) {
  const m = /^\s*(\d{4})-(\d{1,2})-(\d{1,2})(?:[ T](\d{1,2})(?::(\d{1,2})(?::(\d{1,2}))?)?)?\s*$/.exec(text);
  if (!m) return { error: 'expected yyyy-MM-dd HH:mm:ss' };
  const [y, mo, d, hh, mi, ss] = m.slice(1).map((x) => (x === undefined ? undefined : Number(x)));
  const end = [hh === undefined ? 23 : hh, mi === undefined ? 59 : mi, ss === undefined ? 59 : ss];
  const date = new Date(y, mo - 1, d, end[0], end[1], end[2], 999);
  if (Number.isNaN(date.getTime()) || date.getMonth() !== mo - 1 || date.getDate() !== d || end[0] > 23 || end[1] > 59 || end[2] > 59) {
    return { error: `${text.trim()} is not a date` };
  }
  return { value: date.toISOString() };
}

/** A duration in µs for people: `840 µs`, `12.3 ms`, `2.41 s`. */
export function duration(us) {
  if (us === undefined || us === null || Number.isNaN(us)) return '';
  if (us < 1000) return `${Math.round(us)} µs`;
  if (us < 1e6) return `${(us / 1000).toFixed(us < 1e4 ? 1 : 0)} ms`;
  return `${(us / 1e6).toFixed(2)} s`;
}

export function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1 << 20) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / (1 << 20)).toFixed(1)} MiB`;
}

/** The status as a coloured cell. */
export function status(code) {
  return h('span', { class: `status s${Math.floor((code || 0) / 100)}` }, code || '—');
}

export function outcomeBadge(o) {
  const kind = o === 'ok' ? 'ok' : o === 'broker_error' || o === 'rejected' ? 'warn' : 'bad';
  return h('span', { class: `badge ${kind}` }, o || '—');
}

/** `name` with the id as a tooltip, or the id. */
export function named(name, id) {
  return name ? h('span', { title: id }, name) : id ? h('span', { class: 'mono' }, id) : '';
}

export function toast(msg, bad = false) {
  const box = document.getElementById('toast');
  const m = h('div', { class: bad ? 'msg bad' : 'msg' }, msg);
  box.append(m);
  setTimeout(() => m.remove(), bad ? 7000 : 3500);
}

/** `f` called at most once per `ms` of quiet. */
export function debounce(f, ms) {
  let t;
  return (...a) => { clearTimeout(t); t = setTimeout(() => f(...a), ms); };
}

/**
 * JSON text pretty-printed and coloured; `[REDACTED]` values marked.
 * Not JSON: the text as it is.
 */
export function prettyBody(text) {
  const pre = h('pre', { class: 'body', tabindex: '0' });
  if (!text) return fill(pre, h('span', { class: 'muted' }, '(empty)'));
  let v;
  try { v = JSON.parse(text); } catch { return fill(pre, text); }
  render(pre, v, 0);
  return pre;
}

const REDACTED = '[REDACTED]';

function render(out, v, depth) {
  const ind = '  '.repeat(depth);
  if (Array.isArray(v)) {
    if (!v.length) return out.append('[]');
    out.append('[\n');
    v.forEach((x, i) => {
      out.append(ind + '  ');
      render(out, x, depth + 1);
      out.append(i + 1 < v.length ? ',\n' : '\n');
    });
    out.append(ind + ']');
  } else if (v && typeof v === 'object') {
    const ks = Object.keys(v);
    if (!ks.length) return out.append('{}');
    out.append('{\n');
    ks.forEach((k, i) => {
      out.append(ind + '  ', h('span', { class: 'j-key' }, JSON.stringify(k)), ': ');
      render(out, v[k], depth + 1);
      out.append(i + 1 < ks.length ? ',\n' : '\n');
    });
    out.append(ind + '}');
  } else if (typeof v === 'string') {
    out.append(v === REDACTED
      ? h('span', { class: 'redacted', title: 'redacted by the gateway before it was stored' }, REDACTED)
      : h('span', { class: 'j-str' }, JSON.stringify(v)));
  } else if (typeof v === 'number') {
    out.append(h('span', { class: 'j-num' }, String(v)));
  } else {
    out.append(h('span', { class: 'j-lit' }, String(v)));
  }
}

/**
 * A modal dialog; `build(form)` fills it and returns the submit handler,
 * which returns true to close. Esc and Cancel close it. Resolves when it
 * closes.
 */
export function dialog(title, build) {
  return new Promise((resolve) => {
    const form = h('form', { method: 'dialog' });
    const err = h('p', { class: 'error', role: 'alert' });
    const dlg = h('dialog', { 'aria-label': title }, form);
    form.append(h('h1', {}, title));
    const submit = build(form);
    form.append(err);
    const ok = h('button', { type: 'submit', class: submit.danger ? 'danger' : '' }, submit.label || 'Save');
    form.append(h('div', { class: 'actions' },
      h('button', { type: 'button', class: 'quiet', onclick: () => dlg.close() }, 'Cancel'), ok));
    if (submit.enabled) {
      ok.disabled = !submit.enabled();
      form.addEventListener('input', () => { ok.disabled = !submit.enabled(); });
    }
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      err.textContent = '';
      ok.disabled = true;
      try {
        if (await submit.run()) dlg.close('done');
      } catch (x) {
        err.textContent = x.message;
      } finally {
        ok.disabled = submit.enabled ? !submit.enabled() : false;
      }
    });
    dlg.addEventListener('close', () => { dlg.remove(); resolve(dlg.returnValue === 'done'); });
    document.body.append(dlg);
    dlg.showModal();
    const first = form.querySelector('input, select, textarea');
    if (first) first.focus();
  });
}

/** A labelled input. */
export function field(label, attrs) {
  const input = h(attrs.tag || 'input', { ...attrs, tag: undefined });
  return [h('label', {}, label, input), input];
}
