// Shared helpers for every console screen: API calls, DOM building, live
// streams, charts and formatting.
//
// Never sets HTML from data: `h` and every helper here put text in with
// textContent (or text nodes), and links only to this collector's routes.
// Never fetches from anywhere but this collector (the CSP forbids it too).

/** An error the API answered, with its HTTP status. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function apiUrl(path, query) {
  const clean = String(path).replace(/^\/+/, '').replace(/^api\/v1\//, '');
  const url = new URL('/api/v1/' + clean, location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v === undefined || v === null || v === '') continue;
    url.searchParams.set(k, String(v));
  }
  return url;
}

async function call(method, path, query, body, signal) {
  const init = { method, credentials: 'same-origin', headers: { Accept: 'application/json' }, signal };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(apiUrl(path, query), init);
  if (res.status === 401) {
    // The session ended (expired, signed out elsewhere, collector
    // restarted): back to the sign-in form.
    location.assign('/');
    throw new ApiError(401, 'signed out');
  }
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { error: text }; }
  if (!res.ok) throw new ApiError(res.status, (data && data.error) || res.statusText);
  return data;
}

/** GET `/api/v1/<path>` with `query` (an object; empty values left out). */
export function api(path, query, signal) {
  return call('GET', path, query, undefined, signal);
}

/** POST JSON `body` to `/api/v1/<path>`. */
export function post(path, body) {
  return call('POST', path, undefined, body === undefined ? {} : body);
}

/** PUT JSON `body` to `/api/v1/<path>`. */
export function put(path, body) {
  return call('PUT', path, undefined, body);
}

/** DELETE `/api/v1/<path>`. */
export function del(path) {
  return call('DELETE', path, undefined, undefined);
}

const URL_ATTRS = new Set(['href', 'src', 'action', 'formaction']);

/**
 * Builds an element. `attrs`: `class`, `dataset` (object), `style` is
 * refused (the CSP forbids inline style; use classes), `on<event>`
 * functions become listeners, `true`/`false` toggle boolean attributes,
 * anything else is set as an attribute. Children: strings and numbers
 * become text, arrays are flattened, null/undefined/false are skipped.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') {
      el.addEventListener(k.slice(2).toLowerCase(), v);
    } else if (k === 'class') {
      el.className = Array.isArray(v) ? v.filter(Boolean).join(' ') : String(v);
    } else if (k === 'dataset') {
      Object.assign(el.dataset, v);
    } else if (k === 'style') {
      throw new Error('h: inline style is forbidden by the CSP; use a class');
    } else if (URL_ATTRS.has(k)) {
      const s = String(v);
      // Only this collector's own routes: no javascript:, data: or other hosts.
      if (!/^(#|\/(?!\/)|\?)/.test(s)) throw new Error('h: refusing link ' + s);
      el.setAttribute(k, s);
    } else if (k === 'value' && 'value' in el) {
      el.value = String(v);
    } else if (v === true) {
      el.setAttribute(k, '');
    } else {
      el.setAttribute(k, String(v));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

/** Sets `el`'s text (never HTML). */
export function text(el, value) {
  el.textContent = value === undefined || value === null ? '' : String(value);
  return el;
}

/**
 * Listens to server-sent events at `/api/v1/<path>` until `signal` aborts.
 * `onEvent(type, data)` gets each event's type and its JSON data (or the
 * raw text). `options.events` names the event types to listen for
 * (default: message, event, firing, resolved, lagged); `options.query` adds query
 * parameters; `options.onState(open)` hears the connection come and go.
 * The browser reconnects by itself after a drop.
 */
export function stream(path, onEvent, signal, options = {}) {
  const source = new EventSource(apiUrl(path, options.query), { withCredentials: false });
  const types = options.events || ['message', 'event', 'firing', 'resolved', 'lagged'];
  for (const type of types) {
    source.addEventListener(type, (e) => {
      let data = e.data;
      try { data = JSON.parse(e.data); } catch { /* text */ }
      onEvent(type, data, e.lastEventId);
    });
  }
  if (options.onState) {
    source.addEventListener('open', () => options.onState(true));
    source.addEventListener('error', () => options.onState(false));
  }
  if (signal) {
    if (signal.aborted) source.close();
    else signal.addEventListener('abort', () => source.close(), { once: true });
  }
  return source;
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export function sleep(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
  });
}

/**
 * Calls `fn` now and then every `ms` until `signal` aborts; a failing call
 * is reported to `onError` (default: console) and the loop goes on.
 */
export async function every(ms, fn, signal, onError = (e) => console.warn(e)) {
  while (!signal?.aborted) {
    try { await fn(); } catch (e) { if (!signal?.aborted) onError(e); }
    await sleep(ms, signal);
  }
}

// ---------------------------------------------------------------- charts

/** The colours the charts use, in order. */
export const PALETTE = ['#2f81f7', '#e5534b', '#3fb950', '#d29922', '#a371f7', '#1b9aaa', '#db61a2', '#768390', '#f0883e', '#6cb6ff'];

/**
 * A time chart over uPlot in `root`. `opts`: `title`, `unit` (a formatter
 * for values, e.g. `fmtPct`), `series` ([{label, color?, fill?}]), `data`
 * ([times in unix seconds, values per series...]), `height` (px),
 * `onClick(timeSeconds)` for a click on the plot, `yMin`, `yMax`, `sync`
 * (a key: charts sharing it move their cursors together), `xRange()`
 * (the x axis's [from, to] in unix seconds), `name` (set as
 * the figure's `data-chart`). Returns `{plot, box, setData(data),
 * destroy()}`; it follows its container's width. The figure element keeps
 * the uPlot instance as `.uplot`, for tests and tools.
 */
export function chart(root, opts) {
  const Plot = globalThis.uPlot;
  const box = h('figure', { class: 'chart', dataset: opts.name ? { chart: opts.name } : undefined },
    opts.title ? h('figcaption', {}, opts.title) : null);
  root.appendChild(box);
  const fmt = opts.unit || fmtNum;
  const width = () => Math.max(200, box.clientWidth || root.clientWidth || 600);
  const series = [{ value: (u, v) => (v == null ? '–' : fmtTime(v * 1000)) }];
  (opts.series || []).forEach((s, i) => {
    const color = s.color || PALETTE[i % PALETTE.length];
    series.push({
      label: s.label,
      stroke: color,
      width: 1.5,
      fill: s.fill ? color + '22' : undefined,
      // uPlot's default: dots only where points are sparse.
      points: { size: 4 },
      spanGaps: false,
      value: (u, v) => (v == null ? '–' : fmt(v)),
    });
  });
  const scaleY = { auto: true };
  if (opts.yMin !== undefined || opts.yMax !== undefined) {
    scaleY.range = (u, min, max) => [
      opts.yMin !== undefined ? Math.min(opts.yMin, min) : min,
      opts.yMax !== undefined ? Math.max(opts.yMax, max) : max,
    ];
  }
  const config = {
    width: width(),
    height: opts.height || 200,
    series,
    // `xRange()` (unix seconds): the chosen window, not the data's extent,
    // so a chart of one point or a gap shows where in time it is.
    scales: { x: opts.xRange ? { time: true, range: () => opts.xRange() } : { time: true }, y: scaleY },
    axes: [
      { stroke: '#768390', grid: { stroke: '#d0d7de55' }, ticks: { stroke: '#d0d7de' } },
      { stroke: '#768390', grid: { stroke: '#d0d7de55' }, ticks: { stroke: '#d0d7de' },
        values: (u, vals) => vals.map((v) => fmt(v)),
        // As wide as the longest label: "1.8 MiB/s" is not cut.
        size: (u, values) => 16 + 7 * Math.max(3, ...(values || []).map((v) => String(v).length)) },
    ],
    hooks: {
      // Away from the plot, the legend shows the newest values.
      setCursor: [(u) => { if (u.cursor.idx == null) showLatest(u); }],
    },
    cursor: {
      // No drag-to-zoom; and uPlot's default `drag.click` swallows a click
      // whose press and release positions differ by a fraction of a pixel
      // (taking it for a drag): every click on the plot is a click here.
      drag: { x: false, y: false, click: () => {} },
      points: { size: 6 },
      sync: opts.sync ? { key: opts.sync } : undefined,
    },
    legend: { live: true },
  };
  const data = opts.data || [[], ...(opts.series || []).map(() => [])];
  const plot = Plot ? new Plot(config, data, box) : null;
  box.uplot = plot;
  if (plot) showLatest(plot);
  if (!Plot) box.appendChild(h('p', { class: 'muted' }, 'Charts are unavailable (uPlot did not load).'));
  if (plot && opts.onClick) {
    plot.over.classList.add('clickable');
    plot.over.addEventListener('click', () => {
      const idx = plot.cursor.idx;
      if (idx == null) return;
      const t = plot.data[0][idx];
      if (t != null) opts.onClick(t, idx);
    });
  }
  const resize = new ResizeObserver(() => plot && plot.setSize({ width: width(), height: opts.height || 200 }));
  resize.observe(box);
  return {
    plot,
    box,
    setData(d) {
      if (!plot) return;
      plot.setData(d);
      if (plot.cursor.idx == null) showLatest(plot);
    },
    destroy() { resize.disconnect(); if (plot) plot.destroy(); box.remove(); },
  };
}

/** Puts the newest point's values in a chart's legend. */
function showLatest(u) {
  const xs = u.data[0];
  if (!xs || !xs.length) return;
  u.setLegend({ idx: xs.length - 1 }, false);
}

/**
 * Aligns series given as [[timeMs, value], ...] lists onto one time axis
 * (unix seconds), as uPlot wants: `[times, values1, values2, ...]`, null
 * where a series has no point at a time.
 */
export function align(lists) {
  const times = new Set();
  for (const list of lists) for (const [t] of list) times.add(t);
  const xs = [...times].sort((a, b) => a - b);
  const index = new Map(xs.map((t, i) => [t, i]));
  const out = [xs.map((t) => t / 1000)];
  for (const list of lists) {
    const ys = new Array(xs.length).fill(null);
    for (const [t, v] of list) ys[index.get(t)] = v;
    out.push(ys);
  }
  return out;
}

// ---------------------------------------------------------------- ranges

/** The time ranges every screen offers, in ms. */
export const RANGES = [
  ['10m', 'Last 10 minutes', 10 * 60e3],
  ['1h', 'Last hour', 3600e3],
  ['6h', 'Last 6 hours', 6 * 3600e3],
  ['24h', 'Last 24 hours', 24 * 3600e3],
  ['7d', 'Last 7 days', 7 * 24 * 3600e3],
];

function localInput(ms) {
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60e3);
  return d.toISOString().slice(0, 16);
}

/**
 * A range picker: presets and a custom from/to. `onChange({from, to,
 * live})` is called with unix ms (`live`: a preset, which follows now).
 * Returns `{el, current(), key()}` (`key`: the preset's name or `custom`).
 */
export function rangePicker(initial, onChange) {
  let state = { key: RANGES.some(([k]) => k === initial) ? initial : '1h' };
  const select = h('select', { 'aria-label': 'Time range' },
    RANGES.map(([k, label]) => h('option', { value: k }, label)),
    h('option', { value: 'custom' }, 'Custom range…'));
  select.value = state.key;
  const from = h('input', { type: 'datetime-local', 'aria-label': 'From' });
  const to = h('input', { type: 'datetime-local', 'aria-label': 'To' });
  const apply = h('button', { type: 'submit' }, 'Apply');
  const custom = h('form', { class: 'custom-range', hidden: true }, from, to, apply);
  const current = () => {
    if (state.key === 'custom') return { from: state.from, to: state.to, live: false };
    const span = (RANGES.find(([k]) => k === state.key) || RANGES[1])[2];
    const now = Date.now();
    return { from: now - span, to: now, live: true };
  };
  select.addEventListener('change', () => {
    if (select.value === 'custom') {
      const c = current();
      from.value = localInput(c.from);
      to.value = localInput(c.to);
      custom.hidden = false;
      from.focus();
      return;
    }
    custom.hidden = true;
    state = { key: select.value };
    onChange(current());
  });
  custom.addEventListener('submit', (e) => {
    e.preventDefault();
    const f = new Date(from.value).getTime();
    const t = new Date(to.value).getTime();
    if (!(f < t)) { to.setCustomValidity('must be after From'); to.reportValidity(); return; }
    to.setCustomValidity('');
    state = { key: 'custom', from: f, to: t };
    onChange(current());
  });
  return { el: h('div', { class: 'range-picker' }, select, custom), current, key: () => state.key };
}

// ------------------------------------------------------------ formatting

const NUMBER_FORMATS = new Map();

/** A number with at most `digits` decimals, thousands grouped. */
export function fmtNum(v, digits = 1) {
  if (v == null || Number.isNaN(v)) return '–';
  // One formatter per precision: making one per call (toLocaleString
  // with options) costs more than the rest of a 1,000-row table.
  let format = NUMBER_FORMATS.get(digits);
  if (!format) {
    format = new Intl.NumberFormat('en-US', { maximumFractionDigits: digits });
    NUMBER_FORMATS.set(digits, format);
  }
  return format.format(Number(v));
}

/** A percentage. */
export function fmtPct(v) {
  return v == null ? '–' : fmtNum(v, v < 10 ? 1 : 0) + ' %';
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** A size in bytes, in binary units. */
export function fmtBytes(v) {
  if (v == null || Number.isNaN(v)) return '–';
  let n = Math.abs(v), i = 0;
  while (n >= 1024 && i < UNITS.length - 1) { n /= 1024; i++; }
  return (v < 0 ? '-' : '') + fmtNum(n, n < 10 && i > 0 ? 1 : 0) + ' ' + UNITS[i];
}

/** A rate in bytes per second. */
export function fmtRate(v) {
  return v == null ? '–' : fmtBytes(v) + '/s';
}

/** A duration in ms, short: 850 ms, 3.2 s, 4 min, 2 h 5 min, 3 d. */
export function fmtDuration(ms) {
  if (ms == null) return '–';
  if (ms < 1000) return fmtNum(ms, ms < 10 ? 1 : 0) + ' ms';
  const s = ms / 1000;
  if (s < 60) return fmtNum(s, 1) + ' s';
  const m = Math.floor(s / 60);
  if (m < 60) return m + ' min';
  const hrs = Math.floor(m / 60);
  if (hrs < 48) return hrs + ' h' + (m % 60 ? ' ' + (m % 60) + ' min' : '');
  return Math.floor(hrs / 24) + ' d';
}

/** A unix-ms time as local `YYYY-MM-DD HH:MM:SS`. */
export function fmtTime(ms) {
  if (ms == null) return '–';
  const d = new Date(ms);
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** How long ago a unix-ms time was. */
export function fmtAgo(ms) {
  if (ms == null) return '–';
  const d = Date.now() - ms;
  return d < 5000 ? 'just now' : fmtDuration(d) + ' ago';
}

// ------------------------------------------------------------ page parts

/** A screen's heading with optional actions on the right. */
export function header(title, ...actions) {
  return h('div', { class: 'screen-head' }, h('h1', {}, title), h('div', { class: 'actions' }, actions));
}

/** An error box for `err` (its message only). */
export function errorBox(err) {
  return h('div', { class: 'notice error', role: 'alert' }, String(err && err.message ? err.message : err));
}

/** A status badge: up, no data, paused, down, firing... */
export function badge(status) {
  const cls = String(status).toLowerCase().replace(/[^a-z]+/g, '-');
  return h('span', { class: 'badge badge-' + cls }, status);
}

/** A bar showing a percentage, with its number. */
export function meter(pct) {
  if (pct == null) return h('span', { class: 'muted' }, '–');
  const level = pct >= 90 ? 'crit' : pct >= 75 ? 'warn' : 'ok';
  const fill = h('span', { class: 'fill ' + level });
  // CSSOM, not a style attribute: the CSP allows it.
  fill.style.width = Math.max(0, Math.min(100, pct)).toFixed(1) + '%';
  return h('span', { class: 'meter' }, h('span', { class: 'track', 'aria-hidden': 'true' }, fill),
    h('span', { class: 'num' }, fmtPct(pct)));
}
