// The admin API, as the console calls it: the same endpoints and the same
// bearer token as the CLI. The token lives in sessionStorage (gone when the
// browser closes) unless the user asked to be remembered (localStorage).

const KEY = 'osb-gateway.token';

export function token() {
  return sessionStorage.getItem(KEY) || localStorage.getItem(KEY) || '';
}

export function keepToken(t, remember) {
  forgetToken();
  (remember ? localStorage : sessionStorage).setItem(KEY, t);
}

export function forgetToken() {
  sessionStorage.removeItem(KEY);
  localStorage.removeItem(KEY);
}

/** An API error: the status and the API's own description. */
export class ApiError extends Error {
  constructor(status, body) {
    super(body && body.description ? body.description : `HTTP ${status}`);
    this.status = status;
    this.code = body && body.error;
  }
}

let onUnauthorized = () => {};
export function whenUnauthorized(f) { onUnauthorized = f; }

/** Calls `path` (under /admin/v1) and returns the parsed JSON answer. */
export async function call(method, path, body, t = token()) {
  const init = { method, headers: { Authorization: `Bearer ${t}`, Accept: 'application/json' } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const r = await fetch(`/admin/v1${path}`, init);
  const text = await r.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = { description: text }; }
  if (r.status === 401 && t === token()) onUnauthorized();
  if (!r.ok) throw new ApiError(r.status, json);
  return json;
}

export const get = (path) => call('GET', path);

/** `?a=b&...` of the non-empty entries of `params`. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : '';
}

/**
 * The live tail as server-sent events, read with fetch (EventSource cannot
 * send the bearer token). Calls `onRecord(record)` per record and
 * `onLagged(n)` when the server dropped `n`; returns a function that stops.
 */
export function tail(params, onRecord, onLagged, onEnd) {
  const ctl = new AbortController();
  (async () => {
    try {
      const r = await fetch(`/admin/v1/logs/tail${query(params)}`, {
        headers: { Authorization: `Bearer ${token()}`, Accept: 'text/event-stream' },
        signal: ctl.signal,
      });
      if (!r.ok) throw new ApiError(r.status, await r.json().catch(() => null));
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let at;
        while ((at = buf.indexOf('\n\n')) >= 0) {
          const frame = buf.slice(0, at);
          buf = buf.slice(at + 2);
          let event = 'message', data = '';
          for (const line of frame.split('\n')) {
            if (line.startsWith('event:')) event = line.slice(6).trim();
            else if (line.startsWith('data:')) data += line.slice(5).trim();
          }
          if (!data) continue;
          const v = JSON.parse(data);
          if (event === 'record') onRecord(v);
          else if (event === 'lagged') onLagged(v.lagged);
        }
      }
      onEnd(null);
    } catch (e) {
      if (e.name !== 'AbortError') onEnd(e);
    }
  })();
  return () => ctl.abort();
}
