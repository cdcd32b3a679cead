// The dashboard's entry point: token login, the hash router and the page
// lifecycle (each page gets an AbortSignal that stops its streams and timers
// when the reader moves on).

import { api, clearToken, setToken, token } from './api.js';
import { errorBox, fill, h } from './ui.js';
import overview from './overview.js';
import jobs from './jobs.js';
import job from './job.js';
import attempt from './attempt.js';
import modules from './modules.js';
import submit from './submit.js';

const routes = [
  [/^\/?$/, 'overview', overview],
  [/^\/jobs$/, 'jobs', jobs],
  [/^\/jobs\/(\d+)(?:\/(tasks|timeline|attempts))?$/, 'jobs', job],
  [/^\/jobs\/(\d+)\/attempts\/(\d+)$/, 'jobs', attempt],
  [/^\/modules$/, 'modules', modules],
  [/^\/submit$/, 'submit', submit],
];

let current = null;
let onLoginPage = false;

/** Timers that stop with the page and skip their work while the tab is hidden. */
function pageContext(signal) {
  return {
    signal,
    every(ms, fn) {
      const tick = async () => {
        if (signal.aborted) return;
        if (!document.hidden) {
          try {
            await fn();
          } catch (err) {
            if (!signal.aborted) console.warn(err);
          }
        }
        if (!signal.aborted) setTimeout(tick, ms);
      };
      setTimeout(tick, ms);
    },
  };
}

function loginPage(main, message) {
  onLoginPage = true;
  document.title = 'Log in · Quern';
  const input = h('input', {
    id: 'token', name: 'token', type: 'password', autocomplete: 'off', required: true,
    placeholder: 'qrn_…', size: '60',
  });
  const status = h('p', { class: 'field-error', 'aria-live': 'polite' }, message ?? '');
  const form = h('form', {
    class: 'card login',
    onsubmit: async (e) => {
      e.preventDefault();
      setToken(input.value);
      try {
        await api('/workers');
        location.hash = '#/';
        route();
      } catch (err) {
        clearToken();
        fill(status, err.status === 401 ? 'That token was not accepted.' : err.message);
      }
    },
  },
  h('h1', {}, 'Log in'),
  h('p', {}, h('code', {}, 'quern up'), ' prints a link that logs you in. Otherwise paste a user token (for a local cluster it is in ',
    h('code', {}, 'quern-data/token'), ').'),
  h('label', { for: 'token' }, 'User token'), input, status,
  h('button', { type: 'submit', class: 'primary' }, 'Log in'));
  fill(main, form);
  input.focus();
}

async function route() {
  // `quern up` prints http://HOST/#token=...: keep the token, then take it
  // out of the address bar and history so it is not bookmarked or shared.
  // (Checked on every route: following the link from an open dashboard
  // only changes the fragment.)
  if (location.hash.startsWith('#token=')) {
    setToken(decodeURIComponent(location.hash.slice('#token='.length)));
    history.replaceState(null, '', `${location.pathname}#/`);
  }
  current?.abort();
  const controller = new AbortController();
  current = controller;
  onLoginPage = false;
  const main = document.getElementById('main');
  const [path, query = ''] = location.hash.replace(/^#/, '').split('?');
  const loggedIn = Boolean(token());
  document.body.classList.toggle('logged-in', loggedIn);
  if (!loggedIn || path === '/login') {
    loginPage(main);
    return;
  }
  for (const [pattern, nav, page] of routes) {
    const match = path.match(pattern);
    if (!match) continue;
    for (const a of document.querySelectorAll('#nav a')) {
      a.classList.toggle('active', a.dataset.page === nav);
    }
    fill(main, h('p', { class: 'loading' }, 'Loading…'));
    try {
      await page(main, { match, query: new URLSearchParams(query) }, pageContext(controller.signal));
    } catch (err) {
      if (controller.signal.aborted || err.status === 401) return;
      fill(main, errorBox('Could not load this page', err.message));
    }
    return;
  }
  fill(main, errorBox('No such page', `Nothing lives at #${path}.`));
}

document.getElementById('logout').addEventListener('click', () => {
  clearToken();
  location.hash = '#/login';
  route();
});
window.addEventListener('quern:logged-out', () => {
  // The login form reports a refused token itself.
  if (onLoginPage) return;
  current?.abort();
  loginPage(document.getElementById('main'), 'Your token was not accepted; log in again.');
  document.body.classList.remove('logged-in');
});
window.addEventListener('hashchange', route);
route();
