// The console's shell: reads the hash route, loads the screen module
// (`screens/<name>.js`, exporting `render(root, params, signal)`), and
// aborts the previous screen's work (its fetches, streams, timers) through
// its AbortSignal when the route changes.
//
// Never renders data itself; a screen module that does not exist yet shows
// a placeholder instead of breaking the shell.

import { api, h, errorBox } from './lib.js';

/**
 * Routes: `#/<screen>/<rest>`. Each entry names the module and turns the
 * path's remaining parts into the params the screen gets.
 */
const ROUTES = {
  fleet: { title: 'Fleet', params: () => ({}) },
  server: { title: 'Server', params: (rest) => ({ oid: rest[0] }) },
  db: { title: 'Databases', params: (rest) => ({ oid: rest[0] }) },
  logs: { title: 'Logs', params: () => ({}) },
  url: { title: 'URL checks', params: (rest) => ({ name: rest.length ? rest.join('/') : undefined }) },
  alerts: { title: 'Alerts', params: (rest) => ({ tab: rest[0] }) },
};

/** Which nav entry a screen belongs under. */
const NAV_OF = { server: 'fleet' };

const main = document.getElementById('main');
let current = null;

/** Parses `location.hash` into {screen, rest, query}. */
function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [path, search] = raw.split('?');
  const parts = path.split('/').filter(Boolean).map((p) => {
    try { return decodeURIComponent(p); } catch { return p; }
  });
  return { screen: parts[0] || 'fleet', rest: parts.slice(1), query: new URLSearchParams(search || '') };
}

async function route() {
  const { screen, rest, query } = parseHash();
  const spec = ROUTES[screen];
  if (!spec) {
    location.replace('#/fleet');
    return;
  }
  if (current) current.abort();
  const controller = new AbortController();
  current = controller;
  const params = { ...spec.params(rest), query };
  document.title = spec.title + ' · Sightline';
  for (const a of document.querySelectorAll('#nav a')) {
    const active = a.dataset.screen === (NAV_OF[screen] || screen);
    if (active) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  closeMenu();
  const root = h('div', { class: 'screen screen-' + screen });
  main.replaceChildren(root);
  root.appendChild(h('p', { class: 'muted loading' }, 'Loading…'));
  let module;
  try {
    module = await import('./screens/' + screen + '.js');
  } catch (e) {
    if (controller.signal.aborted) return;
    console.info('screen module missing', screen, e);
    root.replaceChildren(
      h('div', { class: 'screen-head' }, h('h1', {}, spec.title)),
      h('div', { class: 'notice placeholder' },
        h('strong', {}, 'Not built yet. '),
        'The ' + spec.title + ' screen is not part of this build of the console.'));
    return;
  }
  if (controller.signal.aborted) return;
  root.replaceChildren();
  try {
    await module.render(root, params, controller.signal);
  } catch (e) {
    if (controller.signal.aborted || e?.name === 'AbortError') return;
    console.error(e);
    root.appendChild(errorBox(e));
  }
}

const toggle = document.getElementById('menu-toggle');
const nav = document.getElementById('nav');
function closeMenu() {
  nav.classList.remove('open');
  toggle.setAttribute('aria-expanded', 'false');
}
toggle.addEventListener('click', () => {
  const open = !nav.classList.contains('open');
  nav.classList.toggle('open', open);
  toggle.setAttribute('aria-expanded', String(open));
});

document.getElementById('skip').addEventListener('click', (e) => {
  e.preventDefault();
  main.focus();
});

async function showProject() {
  try {
    const who = await api('session');
    document.getElementById('project').textContent = who.project;
  } catch (e) {
    console.warn('cannot read the session', e);
  }
}

window.addEventListener('hashchange', route);
showProject();
// Replacing the hash fires hashchange, which routes.
if (!location.hash || location.hash === '#' || location.hash === '#/') location.replace('#/fleet');
else route();
