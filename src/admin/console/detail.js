// One exchange: timings, route, headers, bodies, copy as curl, HAR.
import { get } from './api.js';
import { h, fill, localTime, duration, bytes, status, outcomeBadge, prettyBody, toast } from './ui.js';

const shq = (s) => `'${String(s).replace(/'/g, "'\\''")}'`;
const SKIP = new Set(['authorization', 'host', 'content-length', 'connection', 'transfer-encoding']);

/** The request as a curl command toward the broker (credentials left as a placeholder, as the CLI does). */
export function curl(r) {
  const url = r.upstream_url || `$GATEWAY${r.path}${r.query ? `?${r.query}` : ''}`;
  let out = `curl -X ${r.method} ${shq(url)} \\\n  -u 'BROKER_USER:BROKER_PASSWORD'`;
  for (const [k, v] of r.request_headers || []) {
    if (!SKIP.has(k.toLowerCase())) out += ` \\\n  -H ${shq(`${k}: ${v}`)}`;
  }
  if (r.request_body) out += ` \\\n  --data-binary ${shq(r.request_body)}`;
  if (r.request_body_truncated) out += '\n# NB: the captured request body was truncated; the replay sends only its start.';
  return `${out}\n`;
}

/** The exchange as a HAR 1.2 log (one entry). */
export function har(r) {
  const url = r.upstream_url || `http://gateway.invalid${r.path}${r.query ? `?${r.query}` : ''}`;
  const hdrs = (l) => (l || []).map(([name, value]) => ({ name, value }));
  const ctype = (l) => ((l || []).find(([k]) => k.toLowerCase() === 'content-type') || [])[1] || '';
  const ttfb = (r.ttfb_us || 0) / 1000, total = (r.duration_us || 0) / 1000;
  const qs = new URLSearchParams(r.query || '');
  return {
    log: {
      version: '1.2',
      creator: { name: 'osb-gateway console', version: '1' },
      entries: [{
        startedDateTime: new Date(r.received_at_us / 1000).toISOString(),
        time: total,
        request: {
          method: r.method, url, httpVersion: 'HTTP/1.1', cookies: [], headers: hdrs(r.request_headers),
          queryString: [...qs].map(([name, value]) => ({ name, value })),
          postData: r.request_body ? { mimeType: ctype(r.request_headers), text: r.request_body } : undefined,
          headersSize: -1, bodySize: r.request_body_size,
        },
        response: {
          status: r.status, statusText: '', httpVersion: 'HTTP/1.1', cookies: [], headers: hdrs(r.response_headers),
          content: { size: r.response_body_size, mimeType: ctype(r.response_headers), text: r.response_body },
          redirectURL: '', headersSize: -1, bodySize: r.response_body_size,
        },
        cache: {},
        timings: { send: 0, wait: ttfb, receive: Math.max(0, total - ttfb) },
        comment: `osb-gateway record ${r.id}: ${r.operation}, outcome ${r.outcome}${r.request_body_truncated || r.response_body_truncated ? '; a body was truncated in the capture' : ''}`,
      }],
    },
  };
}

function headers(list) {
  if (!list || !list.length) return h('p', { class: 'muted' }, '(none recorded)');
  return h('table', { class: 'headers' }, h('tbody', {}, list.map(([k, v]) => h('tr', {}, h('td', {}, k),
    h('td', {}, /^\[redacted\]$/i.test(v) ? h('span', { class: 'redacted', title: 'never stored' }, v) : v)))));
}

function bodyInfo(r, side) {
  const size = r[`${side}_body_size`] || 0;
  const cut = r[`${side}_body_truncated`];
  const kept = (r[`${side}_body`] || '').length;
  return h('p', { class: 'note' }, `${bytes(size)}`, cut ? h('span', { class: 'badge warn' }, `truncated: first ${bytes(kept)} kept`) : '');
}

function kv(pairs) {
  return h('dl', { class: 'kv' }, pairs.filter(([, v]) => v !== '' && v !== undefined && v !== null)
    .map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

export function detailScreen(box, id) {
  fill(box, h('p', { class: 'muted' }, 'Loading…'));
  let url = null;
  get(`/logs/${encodeURIComponent(id)}`).then((r) => {
    const copy = h('button', { type: 'button', class: 'quiet', id: 'copy-curl' }, 'Copy as curl');
    copy.addEventListener('click', async () => {
      try { await navigator.clipboard.writeText(curl(r)); toast('curl command copied.'); } catch { toast('The browser refused the clipboard; the command is below.', true); curlBox.hidden = false; }
    });
    const curlBox = h('pre', { class: 'body', id: 'curl', hidden: true }, curl(r));
    const showCurl = h('button', { type: 'button', class: 'quiet' }, 'Show curl');
    showCurl.addEventListener('click', () => { curlBox.hidden = !curlBox.hidden; });
    url = URL.createObjectURL(new Blob([JSON.stringify(har(r), null, 2)], { type: 'application/json' }));
    const harLink = h('a', { class: 'button quiet', href: url, download: `exchange-${r.id}.har`, id: 'download-har' }, 'Download HAR');
    const history = r.instance_id
      ? h('a', { class: 'button quiet', href: `#/instance/${encodeURIComponent(r.broker)}/${encodeURIComponent(r.instance_id)}` }, 'Instance history')
      : '';
    const back = h('a', { class: 'button quiet', href: '#/logs', onclick: (e) => { if (window.history.length > 1) { e.preventDefault(); window.history.back(); } } }, '← Back');
    const plan = r.plan_name ? `${r.plan_name} (${r.plan_id})` : r.plan_id;
    const service = r.service_name ? `${r.service_name} (${r.service_id})` : r.service_id;
    fill(box,
      h('div', { class: 'bar' }, back,
        h('h1', { class: 'grow' }, `${r.operation} `, status(r.status), ' ', outcomeBadge(r.outcome)),
        history, copy, showCurl, harLink),
      curlBox,
      r.error ? h('p', { class: 'error' }, `Gateway: ${r.error}`) : '',
      h('div', { class: 'grid2' },
        h('section', { class: 'panel' }, h('h3', {}, 'Timing'), kv([
          ['Received', localTime(r.received_at_us, true)],
          ['First byte after', duration(r.ttfb_us)],
          ['Total', duration(r.duration_us)],
        ]), h('h3', {}, 'Route'), kv([
          ['Platform', r.platform], ['Location', r.location], ['Broker', r.broker],
          ['Received on', `${r.method} ${r.path}${r.query ? `?${r.query}` : ''}`],
          ['Upstream URL', r.upstream_url || '(not forwarded)'],
          ['Gateway', r.gateway],
        ])),
        h('section', { class: 'panel' }, h('h3', {}, 'OSB'), kv([
          ['Service', service], ['Plan', plan], ['Instance', r.instance_id], ['Binding', r.binding_id],
          ['Accepts incomplete', r.accepts_incomplete ? 'yes' : ''], ['Broker operation', r.broker_operation],
          ['State', r.state], ['Description', r.description], ['API version', r.api_version],
          ['Originating platform', r.originating_platform], ['Originating user', r.originating_user],
          ['Request identity', r.request_id], ['Record', r.id],
        ]))),
      h('div', { class: 'grid2' },
        h('section', {}, h('h2', {}, 'Request'), h('h3', {}, 'Headers'), headers(r.request_headers),
          h('h3', {}, 'Body'), bodyInfo(r, 'request'), prettyBody(r.request_body)),
        h('section', {}, h('h2', {}, 'Response ', status(r.status)), h('h3', {}, 'Headers'), headers(r.response_headers),
          h('h3', {}, 'Body'), bodyInfo(r, 'response'), prettyBody(r.response_body))),
      h('p', { class: 'note' }, 'Passwords and Authorization values are never stored; binding credentials are stored as ',
        h('span', { class: 'redacted' }, '[REDACTED]'), '.'));
    document.title = `${r.operation} ${r.status} · osb-gateway`;
  }).catch((x) => fill(box, h('p', { class: 'error' }, x.message), h('a', { href: '#/logs' }, 'Back to the logs')));
  return () => { if (url) URL.revokeObjectURL(url); document.title = 'osb-gateway console'; };
}
