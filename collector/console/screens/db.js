// The Database screen: `#/db` lists the database agents; `#/db/<oid>`
// shows one server at a chosen moment: the timeline of its snapshots,
// charts of its main counters (a click picks the moment), the sessions of
// that moment and its lock tree drawn as a tree, root blockers marked,
// cycles and waits visible.
//
// Never renders text from the server as HTML (queries, users and hosts
// are the monitored server's data): lib.js's `h` sets text only.

import { api, h, chart, align, rangePicker, fmtNum, fmtTime, fmtAgo, fmtDuration, header, errorBox, badge, every, sleep } from '../lib.js';
import { useStyles, sortableTable, panel, select, setHashQuery } from './kit.js';

/** Charts drawn when the agent reports their counters: [title, names]. */
const CHARTS = [
  ['Threads', ['db.threads_running', 'db.threads_connected']],
  ['Statements per second', ['db.questions_per_sec', 'db.com_select_per_sec', 'db.com_insert_per_sec', 'db.com_update_per_sec', 'db.com_commit_per_sec']],
  ['Row locks', ['db.innodb_row_lock_current_waits', 'db.innodb_deadlocks_per_sec', 'db.innodb_row_lock_waits_per_sec']],
  ['InnoDB rows per second', ['db.innodb_rows_read_per_sec', 'db.innodb_rows_inserted_per_sec', 'db.innodb_rows_updated_per_sec', 'db.innodb_rows_deleted_per_sec']],
];

export async function render(root, params, signal) {
  await useStyles();
  if (!params.oid) return renderList(root, signal);
  return renderServer(root, params, signal);
}

/** Every database agent of the project, linking to its screen. */
async function renderList(root, signal) {
  root.appendChild(header('Databases'));
  const table = sortableTable([
    { key: 'status', label: 'Status', cell: (a) => badge(a.paused ? 'paused' : a.status) },
    { key: 'oname', label: 'Server', cell: (a) => h('a', { href: '#/db/' + a.oid }, a.oname) },
    { key: 'hostname', label: 'Host' },
    { key: 'version', label: 'Agent version' },
    { key: 'last_seen', label: 'Last seen', sort: (a) => a.last_seen_ms, cell: (a) => fmtAgo(a.last_seen_ms) },
  ], { sortKey: 'oname', empty: 'No database agent reports to this project yet.' });
  root.appendChild(panel('Database servers', null, table.el));
  const { agents } = await api('agents', {}, signal);
  table.setRows(agents.filter((a) => a.product === 'db'));
}

async function renderServer(root, params, signal) {
  const oid = params.oid;
  const agent = await api('agents/' + encodeURIComponent(oid), {}, signal);
  const sub = h('span', { class: 'sub' });
  const picker = rangePicker(params.query?.get('range') || '1h', () => loadRange());
  root.appendChild(header(h('span', {}, 'Database ', h('span', { class: 'mono' }, agent.oname), sub),
    badge(agent.paused ? 'paused' : agent.status), picker.el));

  // The moment chosen, and what it shows.
  const timelineBox = h('div', { class: 'timeline', role: 'listbox', 'aria-label': 'Snapshots' });
  const timelinePanel = panel('Snapshots', null, h('p', { class: 'muted small' },
    'Each mark is a snapshot of the server; red ones were taken for an alert. Pick one, or click a chart.'), timelineBox);
  const charts = h('div', { class: 'charts' });
  const extraPick = select([['', 'Another counter…']], '', { 'aria-label': 'Chart another counter' });
  const momentPanel = h('div', { class: 'moment' });
  root.append(timelinePanel, charts, h('div', { class: 'row' }, extraPick), momentPanel);

  let names = [];
  let snapshots = [];
  let drawn = [];
  let at = params.query?.get('at') ? Number(params.query.get('at')) : null;
  // The snapshot on screen (the newest when no moment is chosen).
  let shown = null;

  try {
    names = (await api('db/' + oid + '/stats', {}, signal)).names || [];
  } catch (e) { charts.appendChild(errorBox(e)); }
  const charted = new Set(CHARTS.flatMap(([, ns]) => ns));
  for (const n of names.filter((n) => !charted.has(n)).sort()) extraPick.appendChild(h('option', { value: n }, n));
  extraPick.hidden = extraPick.options.length < 2;
  const extra = [];
  extraPick.addEventListener('change', () => {
    if (!extraPick.value) return;
    extra.push(extraPick.value);
    extraPick.value = '';
    loadCharts();
  });

  async function loadCharts() {
    const { from, to } = picker.current();
    for (const c of drawn) c.destroy();
    drawn = [];
    charts.replaceChildren();
    const panels = CHARTS.map(([title, ns]) => [title, ns.filter((n) => names.includes(n))])
      .concat(extra.map((n) => [n, [n]]))
      .filter(([, ns]) => ns.length);
    if (!panels.length) {
      charts.appendChild(h('div', { class: 'panel chart-empty' }, 'This agent has reported no counters in this range.'));
      return;
    }
    await Promise.all(panels.map(async ([title, ns]) => {
      const box = h('div', { class: 'panel' });
      charts.appendChild(box);
      const lists = await Promise.all(ns.map((n) => api('db/' + oid + '/stats', { name: n, from, to }, signal)
        .then((r) => (r.series[0]?.points || []))
        .catch(() => [])));
      const c = chart(box, {
        title,
        series: ns.map((n) => ({ label: n.replace(/^db\./, '') })),
        data: align(lists),
        height: 180,
        // The chosen window, as the timeline above shows it.
        xRange: () => [from / 1000, to / 1000],
        onClick: (t) => pickNear(t * 1000),
      });
      drawn.push(c);
      markMoment(c, shown);
    }));
  }

  async function loadTimeline() {
    const { from, to } = picker.current();
    const r = await api('db/' + oid + '/snapshots', { from, to, limit: 1000 }, signal);
    snapshots = r.snapshots || [];
    drawTimeline();
  }

  function drawTimeline() {
    timelineBox.replaceChildren();
    if (!snapshots.length) {
      timelineBox.appendChild(h('p', { class: 'muted' }, 'No snapshot in this range.'));
      return;
    }
    const { from, to } = picker.current();
    const span = Math.max(1, to - from);
    const track = h('div', { class: 'timeline-track' });
    // Oldest first, so tabbing walks forward in time.
    for (const s of [...snapshots].reverse()) {
      const pct = Math.max(0, Math.min(100, ((s.time_ms - from) / span) * 100));
      const mark = h('button', {
        type: 'button',
        role: 'option',
        class: ['mark', s.alert ? 'alert' : null, s.locks ? 'locks' : null, s.time_ms === shown ? 'current' : null],
        'aria-selected': String(s.time_ms === shown),
        title: fmtTime(s.time_ms) + ' · ' + s.reason + ' · ' + s.sessions + ' sessions' + (s.locks ? ' · ' + s.lock_nodes + ' in lock tree' : ''),
        'aria-label': fmtTime(s.time_ms) + ', ' + s.reason,
        dataset: { time: String(s.time_ms) },
        onclick: () => pick(s.time_ms),
      });
      // CSSOM, which the CSP allows (an inline style attribute it refuses).
      mark.style.left = pct.toFixed(2) + '%';
      track.appendChild(mark);
    }
    const alerts = snapshots.filter((s) => s.alert).length;
    timelineBox.append(track, h('div', { class: 'timeline-axis muted small' },
      h('span', {}, fmtTime(from)),
      h('span', {}, snapshots.length + ' snapshots' + (alerts ? ', ' + alerts + ' for alerts' : '')),
      h('span', {}, fmtTime(to))));
  }

  function pickNear(ms) {
    if (!snapshots.length) return pick(ms);
    let best = snapshots[0];
    for (const s of snapshots) if (Math.abs(s.time_ms - ms) < Math.abs(best.time_ms - ms)) best = s;
    pick(best.time_ms);
  }

  async function pick(ms) {
    at = ms;
    setHashQuery('/db/' + oid, { at: ms });
    markCurrent(ms);
    await loadMoment();
  }

  /** Marks the snapshot shown on the timeline. */
  function markCurrent(ms) {
    for (const m of timelineBox.querySelectorAll('.mark')) {
      const on = Number(m.dataset.time) === ms;
      m.classList.toggle('current', on);
      m.setAttribute('aria-selected', String(on));
    }
  }

  async function loadMoment() {
    let snap;
    try {
      snap = await api('db/' + oid + '/sessions', { at: at ?? undefined }, signal);
    } catch (e) {
      momentPanel.replaceChildren(e.status === 404
        ? h('div', { class: 'notice placeholder' }, 'This agent has sent no snapshot yet.')
        : errorBox(e));
      return;
    }
    let locks = null;
    try {
      locks = await api('db/' + oid + '/locks', { at: snap.time_ms }, signal);
    } catch (e) { locks = { error: e }; }
    sub.textContent = ' ' + [snap.flavor, snap.version].filter(Boolean).join(' ');
    shown = snap.time_ms;
    markCurrent(shown);
    for (const c of drawn) markMoment(c, shown);
    momentPanel.replaceChildren(
      h('div', { class: 'moment-head' },
        h('h2', {}, 'At ', h('time', { datetime: new Date(snap.time_ms).toISOString() }, fmtTime(snap.time_ms))),
        badge(snap.reason === 'periodic' ? 'periodic' : 'alert'),
        h('span', { class: 'muted' }, snap.reason === 'periodic' ? 'a periodic snapshot' : 'taken for ' + snap.reason)),
      summary(snap, locks),
      lockPanel(locks),
      sessionsPanel(snap),
      variablesPanel(snap));
  }

  async function loadRange() {
    try {
      await Promise.all([loadTimeline(), loadCharts()]);
    } catch (e) {
      if (!signal.aborted) root.appendChild(errorBox(e));
    }
  }

  await loadRange();
  await loadMoment();
  // The newest data, while the range follows now and no moment is pinned.
  sleep(30000, signal).then(() => every(30000, async () => {
    if (!picker.current().live) return;
    await loadTimeline();
    if (at == null) await loadMoment();
  }, signal)).catch(() => {});
}

/**
 * Draws a dashed line at `ms` (the moment on screen) across chart `c`,
 * through uPlot's draw hook, so the charts say which moment the tables
 * below show.
 */
function markMoment(c, ms) {
  const u = c.plot;
  if (!u) return;
  u.sightlineMoment = ms == null ? null : ms / 1000;
  if (!u.sightlineMomentHook) {
    u.sightlineMomentHook = true;
    (u.hooks.draw = u.hooks.draw || []).push((plot) => {
      if (plot.sightlineMoment == null) return;
      const x = plot.valToPos(plot.sightlineMoment, 'x', true);
      const { left, top, width, height } = plot.bbox;
      if (!(x >= left && x <= left + width)) return;
      const ratio = globalThis.devicePixelRatio || 1;
      const ctx = plot.ctx;
      ctx.save();
      ctx.strokeStyle = '#1f6feb';
      ctx.lineWidth = 2 * ratio;
      ctx.setLineDash([5 * ratio, 4 * ratio]);
      ctx.beginPath();
      ctx.moveTo(x, top);
      ctx.lineTo(x, top + height);
      ctx.stroke();
      ctx.restore();
    });
  }
  c.box.dataset.moment = ms == null ? '' : String(ms);
  u.redraw(false);
}

function stat(label, value, level, note) {
  return h('div', { class: ['stat', level] }, h('div', { class: 'label' }, label), h('div', { class: 'value' }, value),
    note ? h('div', { class: 'note muted small' }, note) : null);
}

function sessionsNote(ids) {
  return ids.length ? (ids.length === 1 ? 'session ' : 'sessions ') + ids.join(', ') : null;
}

function plural(n, one, many) {
  return fmtNum(n) + ' ' + (n === 1 ? one : many);
}

function summary(snap, locks) {
  const hasLocks = locks && !locks.error;
  const blockers = hasLocks ? (locks.root_blockers || []) : [];
  const cycle = hasLocks ? (locks.in_cycle || []) : [];
  return h('div', { class: 'stats' },
    stat('Sessions', fmtNum(snap.sessions.length) + (snap.sessions_omitted ? ' +' + snap.sessions_omitted : '')),
    stat('Waiting for a lock', hasLocks ? fmtNum(locks.waiting) : '–', hasLocks && locks.waiting ? 'warn' : null),
    stat('Longest wait', hasLocks && locks.max_wait_ms ? fmtDuration(locks.max_wait_ms) : '–', hasLocks && locks.max_wait_ms > 10000 ? 'crit' : null),
    stat('Root blockers', blockers.length ? fmtNum(blockers.length) : 'none', blockers.length ? 'crit' : 'ok', sessionsNote(blockers)),
    stat('In a cycle', cycle.length ? fmtNum(cycle.length) : 'none', cycle.length ? 'crit' : null, sessionsNote(cycle)));
}

/** The lock tree: each root a blocker, its waiters nested under it. */
function lockPanel(locks) {
  if (!locks) return null;
  if (locks.error) {
    return panel('Lock tree', null, locks.error.status === 404
      ? h('p', { class: 'muted' }, 'No lock tree at this moment.')
      : errorBox(locks.error));
  }
  const note = locks.locks_read ? (locks.waiting ? locks.waiting + ' waiting' : null) : 'the server reported no lock waits';
  const body = [];
  if (locks.locks_refused) body.push(h('div', { class: 'notice error' }, 'The agent\'s lock tree was malformed and left out: ' + locks.locks_refused));
  if (!locks.tree || !locks.tree.length) {
    body.push(h('p', { class: 'muted' }, locks.locks_read ? 'No session waits for a lock.' : 'No lock waits at this moment.'));
  } else {
    body.push(h('ul', { class: 'lock-tree', role: 'tree', 'aria-label': 'Lock tree' }, locks.tree.map((n) => lockNode(n, 0))));
    body.push(h('p', { class: 'muted small legend' },
      badge('root blocker'), ' holds what others wait for and waits for nothing: the session to end. ',
      badge('cycle'), ' its wait closes a cycle (a deadlock the server has not broken yet). ',
      badge('gone'), ' no longer in the process list.'));
  }
  return panel('Lock tree', note, body);
}

function lockNode(n, depth) {
  const who = [n.user, n.host].filter(Boolean).join('@');
  const wait = n.wait;
  const marks = [
    n.root_blocker ? badge('root blocker') : null,
    n.in_cycle ? badge('cycle') : null,
    n.gone ? badge('gone') : null,
    n.repeated ? h('span', { class: 'badge' }, 'also shown above') : null,
  ];
  const trx = n.trx;
  const line = h('div', { class: ['lock-node', n.root_blocker ? 'root-blocker' : null, n.in_cycle ? 'in-cycle' : null] },
    h('div', { class: 'lock-title' },
      h('strong', { class: 'mono' }, 'Session ' + n.session_id),
      who ? h('span', { class: 'mono muted' }, who) : null,
      n.db ? h('span', { class: 'muted' }, 'db ' + n.db) : null,
      marks),
    wait ? h('div', { class: 'lock-wait' },
      h('span', { class: 'wait-time' }, 'waits ' + fmtDuration(wait.wait_ms)),
      ' for a ', h('strong', {}, String(wait.kind || '').toLowerCase() + ' lock'),
      wait.mode ? ' (' + wait.mode + (wait.holder_mode ? ', held ' + wait.holder_mode : '') + ')' : '',
      wait.table ? [' on ', h('span', { class: 'mono' }, wait.table)] : null,
      wait.index ? [' index ', h('span', { class: 'mono' }, wait.index)] : null,
      wait.data ? [' row ', h('span', { class: 'mono' }, wait.data)] : null) : null,
    h('div', { class: 'lock-detail muted small' },
      [n.command, n.state, n.time_ms != null ? 'for ' + fmtDuration(n.time_ms) : null].filter(Boolean).join(' · '),
      trx ? ' · trx ' + trx.id + ' ' + trx.state + ', ' + fmtDuration(trx.age_ms) + ' old, ' + plural(trx.rows_locked, 'row', 'rows') + ' locked'
        + (trx.idle_ms ? ', idle ' + fmtDuration(trx.idle_ms) : '') : null),
    n.query ? h('code', { class: 'lock-query' }, n.query + (n.query_cut ? ' …' : ''))
      : trx && trx.last_query ? h('code', { class: 'lock-query muted' }, 'last: ' + trx.last_query) : null);
  const kids = n.children || [];
  return h('li', { role: 'treeitem', 'aria-level': String(depth + 1), 'aria-expanded': kids.length ? 'true' : null, dataset: { session: String(n.session_id) } },
    line,
    kids.length ? h('ul', { role: 'group' }, kids.map((c) => lockNode(c, depth + 1))) : null);
}

function sessionsPanel(snap) {
  const table = sortableTable([
    { key: 'id', label: 'Id', num: true },
    { key: 'user', label: 'User', cell: (s) => h('span', { class: 'mono' }, s.user) },
    { key: 'host', label: 'Host', class: 'hide-narrow' },
    { key: 'db', label: 'Db' },
    { key: 'command', label: 'Command' },
    { key: 'state', label: 'State', class: 'ellipsis' },
    { key: 'time_ms', label: 'Time', num: true, cell: (s) => fmtDuration(s.time_ms) },
    { key: 'trx', label: 'Transaction', sort: (s) => s.trx?.age_ms, cell: (s) => s.trx ? s.trx.state + ' · ' + fmtDuration(s.trx.age_ms) + (s.trx.rows_locked ? ' · ' + s.trx.rows_locked + ' locked' : '') : '–' },
    { key: 'query', label: 'Query', class: 'wrap query', cell: (s) => h('code', {}, (s.query || (s.trx?.last_query ? 'last: ' + s.trx.last_query : '')) + (s.query_cut ? ' …' : '')) },
  ], { sortKey: 'time_ms', dir: -1, class: 'compact', empty: 'No active session at this moment.' });
  table.setRows(snap.sessions);
  return panel('Sessions', snap.sessions.length + ' active' + (snap.sessions_omitted ? ', ' + snap.sessions_omitted + ' more not kept' : ''), table.el);
}

function variablesPanel(snap) {
  const vars = Object.entries(snap.variables || {});
  if (!vars.length) return null;
  const filter = h('input', { type: 'search', placeholder: 'Filter variables', 'aria-label': 'Filter variables' });
  const table = sortableTable([
    { key: 'name', label: 'Variable', cell: (r) => h('span', { class: 'mono' }, r.name) },
    { key: 'value', label: 'Value', class: 'wrap', cell: (r) => h('span', { class: 'mono' }, r.value) },
  ], { sortKey: 'name', class: 'compact' });
  const all = vars.map(([name, value]) => ({ name, value }));
  table.setRows(all);
  filter.addEventListener('input', () => {
    const f = filter.value.toLowerCase();
    table.setRows(all.filter((r) => r.name.toLowerCase().includes(f)));
  });
  return h('details', { class: 'panel' }, h('summary', {}, h('strong', {}, 'Server variables'), h('span', { class: 'muted' }, ' ' + vars.length + ' in force at this moment')), filter, table.el);
}
