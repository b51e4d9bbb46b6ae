// The URL checks screen: `#/url` is the table of every target as it is
// now (state, last code, elapsed, body length, region, certificate days
// left), sortable and filterable; `#/url/<name>` is one target's history:
// per region a chart of elapsed time with its phases stacked (DNS,
// connect, TLS, first byte, transfer) and its checks with their reasons.
//
// Never renders a target's URL, detail or certificate text as HTML: lib.js's
// `h` sets text only, and links go only to this console's own routes.

import { api, h, chart, rangePicker, fmtNum, fmtBytes, fmtTime, fmtAgo, header, errorBox, badge, every, sleep, PALETTE } from '../lib.js';
import { useStyles, sortableTable, panel, select, fmtMs, setHashQuery } from './kit.js';

const STATES = ['down', 'pending', 'degraded', 'up'];
const STATE_RANK = { down: 0, pending: 1, degraded: 2, up: 3 };
const PHASES = [
  ['dns', 'DNS'],
  ['connect', 'Connect'],
  ['tls', 'TLS'],
  ['first_byte', 'First byte'],
  ['transfer', 'Transfer'],
];

export async function render(root, params, signal) {
  await useStyles();
  if (params.name) return renderTarget(root, params, signal);
  return renderTable(root, params, signal);
}

function certCell(days) {
  if (days == null) return h('span', { class: 'muted' }, '–');
  const level = days < 7 ? 'crit' : days < 21 ? 'warn' : 'ok';
  return h('span', { class: 'days days-' + level }, fmtNum(days, 0) + ' d');
}

function failureText(t) {
  if (t.failure && t.failure !== 'none') return t.failure.replace(/_/g, ' ') + (t.detail ? ': ' + t.detail : '');
  return t.detail || '';
}

async function renderTable(root, params, signal) {
  const query = params.query || new URLSearchParams();
  const search = h('input', { type: 'search', placeholder: 'Filter by name, URL or region', 'aria-label': 'Filter targets', value: query.get('q') || '' });
  const stateFilter = select([['', 'Every state'], ...STATES.map((s) => [s, s])], query.get('state') || '', { 'aria-label': 'State' });
  const count = h('span', { class: 'count' });
  const live = h('span', { class: 'live-dot' });
  root.appendChild(header('URL checks', h('span', { class: 'muted small' }, live, 'refreshes every 15 s')));
  const stats = h('div', { class: 'stats' });
  root.appendChild(stats);
  const table = sortableTable([
    { key: 'state', label: 'State', sort: (t) => STATE_RANK[t.state] ?? 9, cell: (t) => badge(t.state) },
    { key: 'name', label: 'Target', cell: (t) => h('a', { href: '#/url/' + encodeURIComponent(t.name) + '?agent=' + t.oid }, t.name) },
    { key: 'region', label: 'Region' },
    { key: 'url', label: 'URL', class: 'ellipsis hide-narrow', cell: (t) => h('span', { class: 'mono', title: t.url }, t.method && t.method !== 'GET' ? t.method + ' ' + t.url : t.url) },
    { key: 'status_code', label: 'Code', num: true, cell: (t) => t.status_code ? String(t.status_code) : h('span', { class: 'muted' }, 'none') },
    { key: 'elapsed_ms', label: 'Elapsed', num: true, cell: (t) => fmtMs(t.elapsed_ms) },
    { key: 'body_bytes', label: 'Body', num: true, cell: (t) => fmtBytes(t.body_bytes) },
    { key: 'cert_days_left', label: 'Certificate', num: true, cell: (t) => certCell(t.cert_days_left == null ? null : Math.min(t.cert_days_left, t.cert_chain_days_left ?? t.cert_days_left)) },
    { key: 'last_check_ms', label: 'Checked', cell: (t) => fmtAgo(t.last_check_ms) },
    { key: 'since_ms', label: 'In state since', class: 'hide-narrow', cell: (t) => fmtAgo(t.since_ms) },
    { key: 'failure', label: 'Reason', class: 'wrap reason', sort: (t) => failureText(t), cell: (t) => failureText(t) },
  ], { sortKey: 'state', empty: 'No URL check matches.', rowAttrs: (t) => ({ class: 'state-' + t.state, dataset: { target: t.name, region: t.region } }) });
  root.appendChild(h('section', { class: 'panel' },
    h('div', { class: 'filters' }, search, stateFilter, count), table.el));

  let targets = [];
  let counts = {};
  function draw() {
    const q = search.value.trim().toLowerCase();
    const st = stateFilter.value;
    const shown = targets.filter((t) => (!st || t.state === st)
      && (!q || [t.name, t.url, t.region].some((v) => String(v || '').toLowerCase().includes(q))));
    table.setRows(shown);
    count.textContent = shown.length === targets.length ? targets.length + ' targets' : shown.length + ' of ' + targets.length + ' targets';
    stats.replaceChildren(...STATES.map((s) => h('button', {
      type: 'button', class: ['stat', 'stat-button', s === 'down' && counts[s] ? 'crit' : s === 'degraded' && counts[s] ? 'warn' : s === 'up' ? 'ok' : null],
      'aria-pressed': String(st === s),
      onclick: () => { stateFilter.value = st === s ? '' : s; persist(); draw(); },
    }, h('div', { class: 'label' }, s[0].toUpperCase() + s.slice(1)), h('div', { class: 'value' }, fmtNum(counts[s] || 0)))));
  }
  function persist() {
    setHashQuery('/url', { q: search.value.trim(), state: stateFilter.value });
  }
  search.addEventListener('input', () => { persist(); draw(); });
  stateFilter.addEventListener('change', () => { persist(); draw(); });
  await every(15000, async () => {
    const r = await api('url/checks', {}, signal);
    targets = r.targets || [];
    counts = r.counts || {};
    live.classList.add('on');
    draw();
  }, signal, (e) => { live.classList.remove('on'); console.warn(e); });
}

async function renderTarget(root, params, signal) {
  const name = params.name;
  const query = params.query || new URLSearchParams();
  const picker = rangePicker(query.get('range') || '1h', () => load());
  const agentPick = select([['', 'Every region']], query.get('agent') || '', { 'aria-label': 'Region' });
  root.appendChild(header(h('span', {}, h('a', { href: '#/url', class: 'crumb' }, 'URL checks'), ' / ', h('span', { class: 'mono' }, name)),
    agentPick, picker.el));
  const body = h('div', { class: 'target-body' });
  root.appendChild(body);
  let charts = [];
  let agentsKnown = false;
  let agentFilter = query.get('agent') || '';

  async function load() {
    const { from, to } = picker.current();
    let r;
    try {
      r = await api('url/checks/' + encodeURIComponent(name) + '/results', { from, to, agent: agentFilter, limit: 1000 }, signal);
    } catch (e) {
      body.replaceChildren(errorBox(e));
      return;
    }
    if (!agentsKnown) {
      agentsKnown = true;
      // Every region checking this name, for the picker.
      try {
        const all = await api('url/checks/' + encodeURIComponent(name) + '/results', { from, to, limit: 1 }, signal);
        for (const a of all.agents) agentPick.appendChild(h('option', { value: String(a.oid) }, a.region));
      } catch { /* the picker keeps "every region" */ }
      agentPick.value = agentFilter;
      agentPick.hidden = agentPick.options.length < 3 && !agentFilter;
    }
    for (const c of charts) c.destroy();
    charts = [];
    body.replaceChildren(...r.agents.map((a) => agentSection(a, charts)));
    if (!r.agents.length) body.appendChild(h('div', { class: 'notice placeholder' }, 'No check of this target in this range.'));
  }
  agentPick.addEventListener('change', () => {
    agentFilter = agentPick.value;
    setHashQuery('/url/' + encodeURIComponent(name), { agent: agentPick.value });
    load();
  });
  await load();
  sleep(30000, signal).then(() => every(30000, async () => { if (picker.current().live) await load(); }, signal)).catch(() => {});
}

function agentSection(a, charts) {
  const results = a.results || [];
  const last = results[0];
  const section = h('section', { class: 'target-region', dataset: { region: a.region } });
  const okCount = results.filter((r) => r.ok).length;
  const elapsed = results.map((r) => r.elapsed_ms).filter((v) => v != null).sort((x, y) => x - y);
  const p = (q) => (elapsed.length ? elapsed[Math.min(elapsed.length - 1, Math.floor(q * elapsed.length))] : null);
  section.appendChild(h('div', { class: 'target-head panel' },
    h('div', { class: 'target-title' }, badge(a.state), h('strong', {}, a.region), h('span', { class: 'mono muted ellipsis' }, a.method + ' ' + a.url),
      h('span', { class: 'muted' }, 'in this state since ' + fmtTime(a.since_ms))),
    h('div', { class: 'stats' },
      h('div', { class: 'stat' }, h('div', { class: 'label' }, 'Checks shown'), h('div', { class: 'value' }, fmtNum(results.length))),
      h('div', { class: ['stat', !results.length ? null : okCount === results.length ? 'ok' : okCount * 2 < results.length ? 'crit' : 'warn'] }, h('div', { class: 'label' }, 'Succeeded'),
        h('div', { class: 'value' }, results.length ? fmtNum((okCount / results.length) * 100, 1) + ' %' : '–')),
      h('div', { class: 'stat' }, h('div', { class: 'label' }, 'Median elapsed'), h('div', { class: 'value' }, fmtMs(p(0.5)))),
      h('div', { class: 'stat' }, h('div', { class: 'label' }, '95th percentile'), h('div', { class: 'value' }, fmtMs(p(0.95)))),
      h('div', { class: 'stat' }, h('div', { class: 'label' }, 'Certificate'), h('div', { class: 'value' },
        last?.certificate ? certCell(Math.min(last.certificate.days_left, last.certificate.chain_days_left ?? last.certificate.days_left)) : '–')))));

  const chartBox = h('div', { class: 'panel phase-chart' });
  section.appendChild(chartBox);
  // Oldest first for the chart; phases stacked: each band is one phase.
  const ordered = [...results].reverse();
  const times = ordered.map((r) => r.time_ms / 1000);
  const raw = PHASES.map(([k]) => ordered.map((r) => (r.phases_ms ? r.phases_ms[k] ?? 0 : null)));
  const stacked = [];
  let acc = ordered.map(() => 0);
  for (const phase of raw) {
    acc = acc.map((v, i) => (phase[i] == null ? null : (v ?? 0) + phase[i]));
    stacked.push(acc);
  }
  const c = chart(chartBox, {
    title: 'Elapsed, by phase',
    unit: fmtMs,
    series: PHASES.map(([, label], i) => ({ label, color: PALETTE[i], fill: true })),
    data: [times, ...stacked],
    height: 220,
    yMin: 0,
  });
  chartBox.dataset.points = String(times.length);
  if (c.plot) {
    // Bands between neighbours, so each phase is its own area, and the
    // legend shows each phase's own time rather than the running sum.
    for (let i = 2; i <= PHASES.length; i++) c.plot.addBand({ series: [i, i - 1] });
    for (let i = 1; i <= PHASES.length; i++) {
      c.plot.series[i].value = (u, v, si, idx) => (idx == null || raw[i - 1][idx] == null ? '–' : fmtMs(raw[i - 1][idx]));
    }
    c.plot.setData([times, ...stacked]);
  }
  charts.push(c);

  const table = sortableTable([
    { key: 'time_ms', label: 'Time', cell: (r) => fmtTime(r.time_ms) },
    { key: 'state', label: 'State', sort: (r) => STATE_RANK[r.state] ?? 9, cell: (r) => badge(r.state) },
    { key: 'status_code', label: 'Code', num: true, cell: (r) => (r.status_code ? String(r.status_code) : h('span', { class: 'muted' }, 'none')) },
    { key: 'elapsed_ms', label: 'Elapsed', num: true, cell: (r) => fmtMs(r.elapsed_ms) },
    ...PHASES.map(([k, label]) => ({ key: k, label, num: true, class: 'hide-narrow phase', sort: (r) => r.phases_ms?.[k], cell: (r) => fmtMs(r.phases_ms?.[k]) })),
    { key: 'body_bytes', label: 'Body', num: true, cell: (r) => fmtBytes(r.body_bytes) },
    { key: 'reason', label: 'Reason', class: 'wrap reason', sort: (r) => r.reason, cell: (r) => (r.reason && r.reason !== 'none' ? [h('strong', {}, r.reason.replace(/_/g, ' ')), r.detail ? ': ' + r.detail : ''] : r.detail || h('span', { class: 'muted' }, 'ok')) },
    { key: 'remote_ip', label: 'Address', class: 'hide-narrow mono', cell: (r) => [r.remote_ip, r.http_version].filter(Boolean).join(' · ') + (r.redirects ? ' · ' + r.redirects + ' redirects' : '') },
  ], { sortKey: 'time_ms', dir: -1, class: 'compact', empty: 'No check in this range.', rowAttrs: (r) => ({ class: r.ok ? null : 'failed' }) });
  table.setRows(results);
  section.appendChild(panel('Checks', results.length + (a.next_to ? '+ (older ones beyond the limit)' : '') + ' in range', table.el));
  return section;
}
