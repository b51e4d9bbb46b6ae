// The Fleet screen: every agent with its status and (for servers) CPU,
// memory and disk, the top 5 servers by CPU, memory and disk I/O, the top 5
// processes across the fleet, and the project's events as they happen.
//
// One `/api/v1/fleet` request draws everything but the events; it is
// repeated every REFRESH_MS and when an agent event arrives. The table is
// rebuilt in one fragment per change, so 1,000 rows stay quick.

import {
  api, h, stream, sleep, header, errorBox, badge,
  fmtPct, fmtRate, fmtAgo, fmtTime, fmtNum,
} from '../lib.js';

const REFRESH_MS = 10_000;
const MAX_EVENTS = 100;

/**
 * Where an agent's own screen is: a server's page, a database's page, the
 * URL checks filtered to the agent's region (its `oname`), the log records
 * of the agent.
 */
export function agentHref(product, oid, oname) {
  switch (product) {
    case 'infra': return '#/server/' + encodeURIComponent(oid);
    case 'db': return '#/db/' + encodeURIComponent(oid);
    case 'url': return oname ? '#/url?' + new URLSearchParams({ q: oname }) : '#/url';
    case 'log': return '#/logs?' + new URLSearchParams({ oid: String(oid) });
    default: return '#/server/' + encodeURIComponent(oid);
  }
}

/** What the status column shows: paused and terminated outrank up. */
function statusOf(s) {
  if (s.terminated) return 'terminated';
  if (s.paused) return 'paused';
  return s.status;
}

const COLUMNS = [
  { key: 'oname', label: 'Name', value: (s) => s.oname.toLowerCase() },
  { key: 'status', label: 'Status', value: (s) => statusOf(s) },
  { key: 'product', label: 'Product', value: (s) => s.product || '' },
  { key: 'hostname', label: 'Host', value: (s) => s.hostname.toLowerCase(), cls: 'hide-narrow' },
  { key: 'cpu', label: 'CPU', value: (s) => s.cpu_pct, num: true },
  { key: 'mem', label: 'Memory', short: 'Mem', value: (s) => s.mem_pct, num: true },
  { key: 'disk', label: 'Disk used', short: 'Disk', value: (s) => s.disk_used_pct, num: true },
  { key: 'io', label: 'Disk I/O', value: (s) => s.disk_io_bytes_per_sec, num: true, cls: 'hide-narrow' },
  { key: 'updated', label: 'Updated', value: (s) => s.updated_ms, num: true, cls: 'hide-narrow' },
];

export async function render(root, params, signal) {
  const query = params.query || new URLSearchParams();
  const view = {
    sort: COLUMNS.some((c) => c.key === query.get('sort')) ? query.get('sort') : 'oname',
    desc: query.get('dir') === 'desc',
    text: query.get('q') || '',
    status: query.get('status') || '',
    product: query.get('product') || '',
  };
  let fleet = null;
  let drawnOnce = false;

  const live = h('span', { class: 'live-dot', title: 'Live events' });
  const updated = h('span', { class: 'muted small' });
  root.appendChild(header(h('span', {}, 'Fleet'), h('span', { class: 'muted small' }, live, 'Live'), updated));
  const problem = h('div');
  root.appendChild(problem);

  const stats = h('div', { class: 'stats', 'aria-label': 'Counts' });
  root.appendChild(stats);

  const topCpu = topPanel('Top CPU', 'top-cpu');
  const topMem = topPanel('Top memory', 'top-mem');
  const topIo = topPanel('Top disk I/O', 'top-io');
  const topProc = topPanel('Top processes', 'top-processes');
  root.appendChild(h('div', { class: 'grid fleet-tops' }, topCpu.el, topMem.el, topIo.el, topProc.el));

  // Filters and the table.
  const search = h('input', {
    type: 'search', placeholder: 'Filter by name, host or product', 'aria-label': 'Filter agents', value: view.text,
  });
  const statusSelect = h('select', { 'aria-label': 'Status' },
    h('option', { value: '' }, 'Any status'),
    ['up', 'no data', 'paused', 'terminated'].map((s) => h('option', { value: s }, s)));
  statusSelect.value = view.status;
  const productSelect = h('select', { 'aria-label': 'Product' }, h('option', { value: '' }, 'Any product'));
  const count = h('span', { class: 'count' });
  // Roles spelled out: the stylesheet lays the rows out as grids.
  const headRow = h('tr', { role: 'row' });
  const tbody = h('tbody', { role: 'rowgroup' });
  const table = h('table', { class: 'fleet', role: 'table', 'aria-label': 'Agents' },
    h('thead', { role: 'rowgroup' }, headRow), tbody);
  const tablePanel = h('section', { class: 'panel fleet-table', 'aria-label': 'Agents' },
    h('div', { class: 'filters' }, search, statusSelect, productSelect, count),
    h('div', { class: 'table-wrap' }, table));

  const events = h('ul', { class: 'events', 'aria-label': 'Events', 'aria-live': 'polite' });
  const eventsPanel = h('section', { class: 'panel fleet-events' },
    h('h2', {}, 'Events', h('span', { class: 'muted' }, 'newest first')), events);
  root.appendChild(tablePanel);
  root.appendChild(eventsPanel);

  for (const col of COLUMNS) {
    const th = h('th', { scope: 'col', role: 'columnheader', class: [col.num ? 'num' : '', col.cls || '', 'c-' + col.key], dataset: { key: col.key } },
      h('button', { type: 'button', class: 'sort', onclick: () => sortBy(col.key), 'aria-label': 'Sort by ' + col.label },
        col.short ? [h('span', { class: 'long' }, col.label), h('span', { class: 'short' }, col.short)] : col.label));
    headRow.appendChild(th);
  }

  function remember() {
    const q = new URLSearchParams();
    if (view.sort !== 'oname') q.set('sort', view.sort);
    if (view.desc) q.set('dir', 'desc');
    if (view.text) q.set('q', view.text);
    if (view.status) q.set('status', view.status);
    if (view.product) q.set('product', view.product);
    const s = q.toString();
    // replaceState: no hashchange, so the screen is not rebuilt.
    history.replaceState(null, '', '#/fleet' + (s ? '?' + s : ''));
  }

  function sortBy(key) {
    if (view.sort === key) view.desc = !view.desc;
    else { view.sort = key; view.desc = COLUMNS.find((c) => c.key === key).num === true; }
    remember();
    drawTable();
  }

  let filterTimer = null;
  search.addEventListener('input', () => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(() => { view.text = search.value.trim(); remember(); drawTable(); }, 120);
  });
  statusSelect.addEventListener('change', () => { view.status = statusSelect.value; remember(); drawTable(); });
  productSelect.addEventListener('change', () => { view.product = productSelect.value; remember(); drawTable(); });

  function drawStats() {
    const rows = fleet.servers;
    const paused = rows.filter((s) => s.paused && !s.terminated).length;
    const terminated = rows.filter((s) => s.terminated).length;
    const up = rows.filter((s) => s.status === 'up' && !s.terminated).length;
    // A terminated agent sends nothing on purpose: not an outage.
    const quiet = rows.length - up - terminated;
    const stat = (label, value, cls) => h('div', { class: ['stat', cls], dataset: { stat: label } },
      h('div', { class: 'label' }, label), h('div', { class: 'value' }, fmtNum(value, 0)));
    stats.replaceChildren(
      stat('Agents', rows.length),
      stat('Up', up, up ? 'ok' : ''),
      stat('No data', quiet, quiet ? 'crit' : ''),
      stat('Paused', paused, paused ? 'warn' : ''),
      terminated ? stat('Terminated', terminated) : null,
    );
    const products = [...new Set(rows.map((s) => s.product).filter(Boolean))].sort();
    const chosen = view.product;
    productSelect.replaceChildren(h('option', { value: '' }, 'Any product'),
      products.map((p) => h('option', { value: p }, p)));
    productSelect.value = products.includes(chosen) ? chosen : '';
  }

  function drawTops() {
    const byOid = new Map(fleet.servers.map((s) => [s.oid, s]));
    const ranked = (list, fmt, max) => list.map((r) => ({
      name: r.oname, href: agentHref((byOid.get(r.oid) || {}).product || 'infra', r.oid, r.oname),
      value: fmt(r.value), pct: max ? Math.min(100, (r.value / max) * 100) : r.value,
    }));
    const top = fleet.top || {};
    topCpu.draw(ranked(top.cpu || [], fmtPct, 100));
    topMem.draw(ranked(top.mem || [], fmtPct, 100));
    const ioMax = Math.max(1, ...(top.disk_io || []).map((r) => r.value));
    topIo.draw(ranked(top.disk_io || [], fmtRate, ioMax));
    topProc.draw((top.processes || []).map((p) => ({
      name: p.name + ' (' + p.pid + ')', sub: p.oname, href: agentHref('infra', p.oid),
      value: fmtPct(p.cpu_pct), pct: Math.min(100, p.cpu_pct),
      title: p.cmdline || p.name,
    })));
  }

  function visibleRows() {
    const text = view.text.toLowerCase();
    let rows = fleet.servers.filter((s) => (!view.status || statusOf(s) === view.status)
      && (!view.product || s.product === view.product)
      && (!text || s.oname.toLowerCase().includes(text) || s.hostname.toLowerCase().includes(text)
        || (s.product || '').includes(text)));
    const col = COLUMNS.find((c) => c.key === view.sort) || COLUMNS[0];
    const dir = view.desc ? -1 : 1;
    rows = rows.map((s) => [col.value(s), s]);
    rows.sort((a, b) => {
      const [x] = a, [y] = b;
      // Missing values last, whichever the direction.
      if (x == null && y == null) return a[1].oname.localeCompare(b[1].oname);
      if (x == null) return 1;
      if (y == null) return -1;
      if (x < y) return -dir;
      if (x > y) return dir;
      return a[1].oname.localeCompare(b[1].oname);
    });
    return rows.map(([, s]) => s);
  }

  function drawTable() {
    if (!fleet) return;
    for (const th of headRow.children) {
      if (th.dataset.key === view.sort) th.setAttribute('aria-sort', view.desc ? 'descending' : 'ascending');
      else th.removeAttribute('aria-sort');
    }
    if (!drawnOnce) performance.mark('fleet-table-start');
    const rows = visibleRows();
    const fragment = document.createDocumentFragment();
    for (const s of rows) fragment.appendChild(tableRow(s));
    if (!rows.length) {
      fragment.appendChild(h('tr', { role: 'row' }, h('td', { role: 'cell', colspan: COLUMNS.length, class: 'muted' },
        fleet.servers.length ? 'No agent matches the filter.' : 'No agent has reported yet. Start one with this project\'s license.')));
    }
    tbody.replaceChildren(fragment);
    if (!drawnOnce) performance.mark('fleet-table-built');
    if (!drawnOnce) {
      drawnOnce = true;
      // When the first full table has reached the screen (for the speed test
      // and anyone measuring): after the frame that lays it out and paints
      // it, i.e. in the frame after.
      requestAnimationFrame(() => requestAnimationFrame(() => performance.mark('fleet-drawn')));
    }
    count.textContent = rows.length === fleet.servers.length
      ? fleet.servers.length + ' agents'
      : rows.length + ' of ' + fleet.servers.length + ' agents';
  }

  async function refresh() {
    try {
      fleet = await api('fleet', {}, signal);
      if (!drawnOnce) performance.mark('fleet-data');
      problem.replaceChildren();
    } catch (e) {
      if (signal.aborted) return;
      problem.replaceChildren(errorBox(e));
      return;
    }
    updated.textContent = 'Updated ' + fmtTime(fleet.time_ms || Date.now()).slice(11);
    drawStats();
    drawTops();
    drawTable();
  }

  // Events: the last day's, then live.
  const names = () => new Map((fleet ? fleet.servers : []).map((s) => [s.oid, s]));
  function eventItem(e, fresh) {
    const agent = e.oid != null ? names().get(e.oid) : null;
    return h('li', { class: fresh ? 'new' : '' },
      h('time', { datetime: new Date(e.time_ms).toISOString(), title: fmtTime(e.time_ms) }, fmtTime(e.time_ms).slice(5, 16)),
      badge(e.severity || 'info'),
      h('div', { class: 'msg' },
        e.oname ? h('a', { href: agentHref(agent ? agent.product : 'infra', e.oid, e.oname) }, e.oname) : null,
        e.oname ? ' · ' : null,
        h('span', { class: 'kind muted' }, e.kind), ' ', e.message));
  }
  let soon = null;
  function refreshSoon() {
    clearTimeout(soon);
    soon = setTimeout(refresh, 500);
  }

  await refresh();
  try {
    const recent = await api('events', { limit: 50 }, signal);
    events.replaceChildren(...(recent.events || []).map((e) => eventItem(e, false)));
    if (!events.children.length) events.appendChild(h('li', { class: 'muted empty' }, 'No events in the last 24 hours.'));
  } catch (e) {
    if (!signal.aborted) events.replaceChildren(h('li', {}, errorBox(e)));
  }
  stream('events/stream', (type, e) => {
    if (!e || typeof e !== 'object') return;
    events.querySelector('.empty')?.remove();
    events.prepend(eventItem(e, true));
    while (events.children.length > MAX_EVENTS) events.lastChild.remove();
    if (String(e.kind).startsWith('agent.')) refreshSoon();
  }, signal, { events: ['event'], onState: (open) => live.classList.toggle('on', open) });
  signal.addEventListener('abort', () => { clearTimeout(soon); clearTimeout(filterTimer); });

  (async () => {
    while (!signal.aborted) {
      await sleep(REFRESH_MS, signal);
      if (!signal.aborted) await refresh();
    }
  })();
}

/**
 * One agent's table row, built with plain DOM calls (a thousand of them
 * per refresh): text only, as everywhere.
 */
function tableRow(s) {
  const tr = document.createElement('tr');
  tr.setAttribute('role', 'row');
  tr.dataset.oid = String(s.oid);
  const cell = (cls, title) => {
    const td = document.createElement('td');
    td.setAttribute('role', 'cell');
    if (cls) td.className = cls;
    if (title) td.title = title;
    tr.appendChild(td);
    return td;
  };
  const link = document.createElement('a');
  link.href = agentHref(s.product, s.oid, s.oname);
  link.className = 'agent-link';
  link.textContent = s.oname;
  cell('', s.oname).appendChild(link);
  cell('').appendChild(badge(statusOf(s)));
  cell('c-product').textContent = s.product || '';
  cell('hide-narrow', s.hostname).textContent = s.hostname;
  const server = s.product === 'infra' || s.product === undefined;
  bar(cell('num'), server, s.cpu_pct);
  bar(cell('num'), server, s.mem_pct);
  bar(cell('num', s.disk_mount || ''), server, s.disk_used_pct);
  cell('num hide-narrow').textContent = server ? fmtRate(s.disk_io_bytes_per_sec) : '';
  cell('num hide-narrow muted', s.updated_ms ? fmtTime(s.updated_ms) : '').textContent =
    s.updated_ms ? fmtAgo(s.updated_ms) : '–';
  return tr;
}

/** A percentage as a bar drawn by the cell's own background (one element). */
function bar(td, shown, pct) {
  if (!shown) return;
  if (pct == null) {
    td.textContent = '–';
    td.classList.add('muted');
    return;
  }
  td.classList.add('bar', pct >= 90 ? 'crit' : pct >= 75 ? 'warn' : 'ok');
  // CSSOM, not a style attribute: the CSP allows it.
  td.style.setProperty('--pct', Math.max(0, Math.min(100, pct)).toFixed(1) + '%');
  td.textContent = fmtPct(pct);
}

/** A panel with a ranked list. */
function topPanel(title, id) {
  const list = h('ol', { class: 'top', id });
  const el = h('section', { class: 'panel', 'aria-label': title }, h('h2', {}, title), list);
  return {
    el,
    draw(items) {
      if (!items.length) {
        list.replaceChildren(h('li', { class: 'muted' }, 'No data yet.'));
        return;
      }
      list.replaceChildren(...items.map((i) => h('li', { title: i.title || '' },
        h('span', { class: 'name' }, h('a', { href: i.href }, i.name), i.sub ? h('span', { class: 'muted small' }, ' · ' + i.sub) : null),
        h('span', { class: 'num' }, i.value),
        h('span', { class: 'bar' }, h('progress', { max: 100, value: Math.max(0, i.pct || 0) })))));
    },
  };
}
