// The console's shell: sign-in, the screens behind `#/...`, sign-out.
import { call, forgetToken, keepToken, token, whenUnauthorized } from './api.js';
import { h, fill, toast } from './ui.js';
import { logsScreen } from './logs.js';
import { detailScreen } from './detail.js';
import { failedScreen, historyScreen } from './instances.js';
import { brokersScreen } from './brokers.js';
import { usageScreen } from './usage.js';

const main = document.getElementById('main');
/** Who is signed in: `{name, role, customer, locations}`. */
const session = { me: null };
let leave = () => {};

function signIn(message) {
  session.me = null;
  document.getElementById('top').hidden = true;
  const input = h('input', { type: 'password', id: 'token', autocomplete: 'current-password', required: true, placeholder: 'admin token' });
  const remember = h('input', { type: 'checkbox', id: 'remember' });
  const err = h('p', { class: 'error', role: 'alert' }, message || '');
  const form = h('form', {},
    h('h1', {}, 'osb-gateway console'),
    h('p', { class: 'muted' }, 'Sign in with an admin token: an operator token sees every broker, an owner token its customer\'s.'),
    h('label', {}, 'Admin token', input),
    h('label', { class: 'inline' }, remember, 'Keep me signed in on this browser'),
    err,
    h('button', { type: 'submit', id: 'signin' }, 'Sign in'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    err.textContent = '';
    const t = input.value.trim();
    try {
      const me = await call('GET', '/whoami', undefined, t);
      keepToken(t, remember.checked);
      start(me);
    } catch (x) {
      err.textContent = x.status === 401 ? 'This token is not accepted.' : `Cannot sign in: ${x.message}`;
    }
  });
  fill(main, h('div', { class: 'signin panel' }, form));
  input.focus();
}

function start(me) {
  session.me = me;
  const top = document.getElementById('top');
  top.hidden = false;
  fill(document.getElementById('who'), `${me.name} · ${me.role === 'operator' ? 'operator' : `owner of ${me.customer}`}`);
  if (!location.hash || location.hash === '#/' || location.hash === '#') location.hash = '#/logs';
  else route();
}

function signOut() {
  forgetToken();
  leave();
  leave = () => {};
  history.replaceState(null, '', '#/logs');
  signIn('Signed out.');
}

/** Shows the screen for the current `#/...`. */
function route() {
  if (!session.me) return;
  leave();
  leave = () => {};
  const hash = location.hash.slice(1) || '/logs';
  const [path, q] = hash.split('?');
  const params = new URLSearchParams(q || '');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  const screen = parts[0] || 'logs';
  for (const a of document.querySelectorAll('[data-nav]')) {
    a.classList.toggle('active', a.dataset.nav === screen);
    if (a.dataset.nav === screen) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  const box = h('div');
  fill(main, box);
  let stop;
  if (screen === 'logs' && parts[1]) stop = detailScreen(box, parts[1]);
  else if (screen === 'logs') stop = logsScreen(box, params);
  else if (screen === 'failed') stop = failedScreen(box);
  else if (screen === 'instance') stop = historyScreen(box, parts[1], parts[2]);
  else if (screen === 'brokers') stop = brokersScreen(box, session.me);
  else if (screen === 'usage') stop = usageScreen(box, session.me, params);
  else fill(box, h('p', { class: 'empty' }, `No screen ${screen}.`));
  if (typeof stop === 'function') leave = stop;
  main.focus({ preventScroll: true });
}

whenUnauthorized(() => {
  if (session.me) {
    forgetToken();
    leave();
    signIn('The token is no longer accepted: sign in again.');
  }
});
window.addEventListener('hashchange', route);
document.getElementById('signout').addEventListener('click', signOut);
window.addEventListener('unhandledrejection', (e) => toast(String(e.reason && e.reason.message || e.reason), true));

(async () => {
  const t = token();
  if (!t) return signIn();
  try {
    start(await call('GET', '/whoami'));
  } catch (x) {
    forgetToken();
    signIn(x.status === 401 ? '' : `Cannot reach the admin API: ${x.message}`);
  }
})();
