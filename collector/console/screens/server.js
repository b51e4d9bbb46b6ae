// The Server screen: one server agent's charts (CPU by part, memory, swap,
// load, filesystems, disk I/O, network, TCP) over a chosen range, the
// process list at any moment on a chart (click a point), and the server's
// events. A preset range follows now: the charts are refetched every
// LIVE_MS without reloading the page.

import {
  api, h, stream, sleep, chart, align, rangePicker, header, errorBox, badge,
  fmtPct, fmtBytes, fmtRate, fmtNum, fmtTime, fmtAgo, fmtDuration,
} from '../lib.js';

const LIVE_MS = 5_000;
/** About this many points per chart, whatever the range. */
const POINTS = 720;

const fmtLoad = (v) => fmtNum(v, 2);
const fmtCount = (v) => fmtNum(v, 0);

/**
 * The charts: each lists [metric, label] pairs. A null label names the
 * series by its labels (mount, device, interface). `hostOnly` keeps the
 * series without a `cpu` label (the host's total, not each core);
 * `zeroIs` says what a chart of zeros only means, shown instead of it.
 */
const CHARTS = [
  { name: 'cpu', title: 'CPU by part', unit: fmtPct, yMin: 0, hostOnly: true, metrics: [
    ['cpu.user', 'user'], ['cpu.system', 'system'], ['cpu.iowait', 'iowait'], ['cpu.steal', 'steal'],
    ['cpu.nice', 'nice'], ['cpu.irq', 'irq'], ['cpu.softirq', 'softirq']] },
  { name: 'mem', title: 'Memory', unit: fmtBytes, yMin: 0, metrics: [
    ['mem.used_bytes', 'used'], ['mem.cached_bytes', 'cached'], ['mem.buffers_bytes', 'buffers'],
    ['mem.available_bytes', 'available']] },
  { name: 'swap', title: 'Swap', unit: fmtBytes, yMin: 0, zeroIs: 'No swap on this server.', metrics: [
    ['swap.used_bytes', 'used'], ['swap.total_bytes', 'total']] },
  { name: 'load', title: 'Load average', unit: fmtLoad, yMin: 0, metrics: [
    ['load.1m', '1 min'], ['load.5m', '5 min'], ['load.15m', '15 min']] },
  { name: 'fs', title: 'Filesystems used', unit: fmtPct, yMin: 0, yMax: 100, metrics: [['disk.used_pct', null]] },
  { name: 'diskio', title: 'Disk I/O', unit: fmtRate, yMin: 0, metrics: [
    ['diskio.read_bytes_per_sec', 'read'], ['diskio.write_bytes_per_sec', 'write']] },
  { name: 'net', title: 'Network', unit: fmtRate, yMin: 0, metrics: [
    ['net.rx_bytes_per_sec', 'in'], ['net.tx_bytes_per_sec', 'out']] },
  { name: 'tcp', title: 'TCP connections', unit: fmtCount, yMin: 0, metrics: [
    ['net.tcp.established', 'established'], ['net.tcp.time_wait', 'time-wait'],
    ['net.tcp.orphans', 'orphans']] },
];

/** A unix-ms time as a `datetime-local` value with seconds. */
function localSeconds(ms) {
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60e3);
  return d.toISOString().slice(0, 19);
}

/** A series' name from its labels (`sda`, `/var`, `eth0 ...`). */
function labelText(labels) {
  const values = Object.entries(labels || {}).filter(([k]) => k !== 'host').map(([, v]) => v);
  return values.join(' ');
}

export async function render(root, params, signal) {
  const oid = params.oid;
  if (!oid) {
    location.replace('#/fleet');
    return;
  }
  const agent = await api('agents/' + encodeURIComponent(oid), {}, signal);

  const statusBadge = h('span', {}, badge(agent.paused ? 'paused' : agent.status));
  const seen = h('span', {});
  const picker = rangePicker(params.query?.get('range') || '1h', () => {
    // Kept in the address (without a hashchange, so no rebuild): a reload
    // or a shared link shows the same range.
    const key = picker.key();
    history.replaceState(null, '', '#/server/' + encodeURIComponent(oid) + (key !== '1h' ? '?range=' + key : ''));
    load();
  });
  root.appendChild(header(
    h('span', {}, h('a', { href: '#/fleet', class: 'muted back', 'aria-label': 'Back to the fleet' }, 'Fleet'), ' / ', agent.oname),
    statusBadge, picker.el));
  root.appendChild(h('p', { class: 'muted meta' },
    [agent.product, agent.hostname, agent.os, 'agent ' + agent.version,
      'every ' + fmtDuration(agent.interval_ms), 'booted ' + fmtTime(Date.parse(agent.boot_time))].filter(Boolean).join(' · '),
    ' · last seen ', seen));
  const problem = h('div');
  root.appendChild(problem);

  const grid = h('div', { class: 'charts' });
  root.appendChild(grid);
  const panels = new Map();
  for (const spec of CHARTS) {
    const empty = h('p', { class: 'chart-empty', hidden: true }, 'No data in this range.');
    const panel = h('section', { class: 'panel', 'aria-label': spec.title }, empty);
    grid.appendChild(panel);
    panels.set(spec.name, { spec, panel, empty, chart: null, labels: '' });
  }

  // The process list at a moment.
  const procTitle = h('h2', {}, 'Processes', h('span', { class: 'muted' }, 'click a point on a chart for that moment'));
  const procBody = h('div', { class: 'table-wrap' });
  // The keyboard's way to a moment: type it (a click on a chart fills it).
  const atInput = h('input', { type: 'datetime-local', step: 1, 'aria-label': 'Moment for the process list' });
  const atForm = h('form', { class: 'row at-form' }, h('label', {}, 'At ', atInput),
    h('button', { type: 'submit' }, 'Show processes'),
    h('button', { type: 'button', class: 'latest', onclick: () => { atInput.value = ''; showProcesses(null); } }, 'Latest'));
  atForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const at = new Date(atInput.value).getTime();
    if (Number.isFinite(at)) showProcesses(at);
  });
  const procPanel = h('section', { class: 'panel processes', id: 'processes', tabindex: '-1' }, procTitle, atForm, procBody);
  const events = h('ul', { class: 'events', 'aria-label': 'Events of this server' });
  root.appendChild(h('div', { class: 'grid-2' }, procPanel,
    h('section', { class: 'panel' }, h('h2', {}, 'Events', h('span', { class: 'muted' }, 'in the range')), events)));

  async function series(name, range) {
    const span = range.to - range.from;
    const interval = Math.max(1000, agent.interval_ms || 1000);
    const query = { name, from: Math.round(range.from), to: Math.round(range.to) };
    if (span / interval > POINTS) query.step = Math.ceil(span / POINTS);
    return (await api('agents/' + encodeURIComponent(oid) + '/metrics', query, signal)).series || [];
  }

  async function drawChart(entry, range) {
    const { spec } = entry;
    const lists = [];
    const labels = [];
    const answers = await Promise.all(spec.metrics.map(([name]) => series(name, range)));
    answers.forEach((found, i) => {
      const [, label] = spec.metrics[i];
      let chosen = found;
      if (spec.hostOnly) chosen = found.filter((s) => !('cpu' in (s.labels || {})));
      chosen = chosen.filter((s) => s.points && s.points.length);
      // A named series stays in the chart (and its legend) with no points,
      // so the chart is not rebuilt under the cursor when one appears.
      if (!chosen.length && label !== null) chosen = [{ name: spec.metrics[i][0], labels: {}, points: [] }];
      for (const s of chosen) {
        const suffix = labelText(s.labels);
        labels.push(label === null ? (suffix || s.name) : (suffix ? label + ' ' + suffix : label));
        lists.push(s.points);
      }
    });
    if (signal.aborted) return;
    // `zeroIs`: all zero means there is nothing to chart (no swap at all).
    const any = spec.zeroIs
      ? lists.some((l) => l.some(([, v]) => v !== 0))
      : lists.some((l) => l.length > 0);
    entry.empty.hidden = any;
    entry.empty.textContent = spec.zeroIs && lists.some((l) => l.length > 0) ? spec.zeroIs : 'No data in this range.';
    const key = labels.join('\u0000');
    if (!any) {
      if (entry.chart) { entry.chart.destroy(); entry.chart = null; entry.labels = ''; }
      if (!entry.panel.querySelector('h3')) entry.panel.prepend(h('h3', {}, spec.title));
      return;
    }
    entry.panel.querySelector('h3')?.remove();
    const data = align(lists);
    if (entry.chart && entry.labels === key) {
      entry.chart.setData(data);
      return;
    }
    if (entry.chart) entry.chart.destroy();
    entry.labels = key;
    entry.chart = chart(entry.panel, {
      name: spec.name, title: spec.title, unit: spec.unit, yMin: spec.yMin, yMax: spec.yMax,
      series: labels.map((label) => ({ label, fill: spec.name === 'cpu' || spec.name === 'mem' })),
      data, height: 190, sync: 'server-' + oid,
      xRange: () => [shown.from / 1000, shown.to / 1000],
      onClick: (t) => showProcesses(Math.round(t * 1000)),
    });
  }

  let asked = 0;
  async function showProcesses(atMs) {
    // Only the newest request may draw: a slow answer to an older one
    // (the initial latest list) must not replace a clicked moment.
    const mine = ++asked;
    if (atMs) atInput.value = localSeconds(atMs);
    procBody.replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
    let answer;
    try {
      answer = await api('agents/' + encodeURIComponent(oid) + '/processes', atMs ? { at: atMs } : {}, signal);
      if (mine !== asked) return;
    } catch (e) {
      if (signal.aborted || mine !== asked) return;
      procBody.replaceChildren(e.status === 404 ? h('p', { class: 'muted' }, 'No process snapshot yet.') : errorBox(e));
      return;
    }
    const snap = answer.snapshot;
    procTitle.replaceChildren('Processes at ', h('time', { class: 'snapshot-time', datetime: new Date(snap.time_ms).toISOString() }, fmtTime(snap.time_ms)),
      h('span', { class: 'muted' }, (snap.reason === 'top' ? 'top ' + snap.processes.length : snap.reason + ' snapshot')
        + ' of ' + fmtNum(snap.total, 0) + ' processes'
        + (atMs ? ' · asked for ' + fmtTime(atMs).slice(11) : ' · latest')));
    const rows = [...snap.processes].sort((a, b) => b.cpu_pct - a.cpu_pct);
    procBody.replaceChildren(h('table', { class: 'compact process-table', 'aria-label': 'Processes' },
      h('thead', {}, h('tr', {},
        ['PID', 'Name', 'User', 'CPU', 'Memory', 'Resident', 'Threads', 'State', 'Command'].map((c, i) =>
          h('th', { scope: 'col', class: i >= 3 && i <= 6 ? 'num' : (i === 8 ? 'hide-narrow' : '') }, c)))),
      h('tbody', {}, rows.map((p) => h('tr', {},
        h('td', { class: 'num' }, p.pid),
        h('td', {}, p.name),
        h('td', {}, p.user),
        h('td', { class: 'num' }, fmtPct(p.cpu_pct)),
        h('td', { class: 'num' }, fmtPct(p.mem_pct)),
        h('td', { class: 'num' }, fmtBytes(p.rss_bytes)),
        h('td', { class: 'num' }, p.threads),
        h('td', {}, p.state),
        h('td', { class: 'ellipsis mono hide-narrow', title: p.cmdline }, p.cmdline))))));
    if (atMs) procPanel.scrollIntoView({ block: 'nearest', behavior: 'smooth' });
  }

  function eventItem(e, fresh) {
    return h('li', { class: fresh ? 'new' : '' },
      h('time', { datetime: new Date(e.time_ms).toISOString(), title: fmtTime(e.time_ms) }, fmtTime(e.time_ms).slice(5, 16)),
      badge(e.severity || 'info'),
      h('div', { class: 'msg' }, h('span', { class: 'kind muted' }, e.kind), ' ', e.message));
  }

  async function loadEvents(range) {
    const answer = await api('events', { oid, from: Math.round(range.from), to: Math.round(range.to), limit: 100 }, signal);
    events.replaceChildren(...(answer.events || []).map((e) => eventItem(e, false)));
    if (!events.children.length) events.appendChild(h('li', { class: 'muted empty' }, 'No events in this range.'));
  }

  let generation = 0;
  /** The range the charts show now. */
  let shown = picker.current();
  async function load() {
    const mine = ++generation;
    const range = picker.current();
    shown = range;
    try {
      const fresh = await api('agents/' + encodeURIComponent(oid), {}, signal);
      if (mine !== generation) return;
      statusBadge.replaceChildren(badge(fresh.paused ? 'paused' : fresh.status));
      seen.textContent = fmtAgo(fresh.last_seen_ms);
      await Promise.all([...panels.values()].map((entry) => drawChart(entry, range)));
      if (mine !== generation) return;
      await loadEvents(range);
      problem.replaceChildren();
    } catch (e) {
      if (!signal.aborted) problem.replaceChildren(errorBox(e));
    }
  }

  await load();
  await showProcesses(null);
  stream('events/stream', (type, e) => {
    if (!e || String(e.oid) !== String(oid) || !picker.current().live) return;
    events.querySelector('.empty')?.remove();
    events.prepend(eventItem(e, true));
  }, signal, { events: ['event'] });
  (async () => {
    while (!signal.aborted) {
      await sleep(LIVE_MS, signal);
      if (!signal.aborted && picker.current().live && !document.hidden) await load();
    }
  })();
}
