// Pieces the product screens (Database, Logs, URL checks, Alerts) share on
// top of lib.js: their stylesheet, tabs, sortable tables, small forms.
//
// Never sets HTML from data: every node comes from lib.js's `h`, which
// only sets text. Never fetches anything but this collector's own files.

import { h } from '../lib.js';

let styles = null;

/**
 * Loads `screens/products.css` once (a `<link>` to this collector's own
 * file, as the CSP allows) and resolves when it applies, so a screen is
 * not drawn unstyled first.
 */
export function useStyles() {
  if (!styles) {
    styles = new Promise((resolve) => {
      const link = h('link', { rel: 'stylesheet', href: '/assets/screens/products.css' });
      link.addEventListener('load', () => resolve(), { once: true });
      link.addEventListener('error', () => resolve(), { once: true });
      document.head.appendChild(link);
    });
  }
  return styles;
}

/**
 * A row of tabs (keyboard: arrows move between them). `tabs`: [[key,
 * label]]; `onSelect(key)`. Returns `{el, select(key)}`.
 */
export function tabs(list, current, onSelect) {
  const buttons = list.map(([key, label]) => h('button', {
    type: 'button', role: 'tab', class: 'tab', id: 'tab-' + key, dataset: { tab: key },
    onclick: () => select(key),
  }, label));
  const el = h('div', { class: 'tabs', role: 'tablist' }, buttons);
  el.addEventListener('keydown', (e) => {
    if (e.key !== 'ArrowRight' && e.key !== 'ArrowLeft') return;
    const i = buttons.indexOf(document.activeElement);
    if (i < 0) return;
    const next = buttons[(i + (e.key === 'ArrowRight' ? 1 : buttons.length - 1)) % buttons.length];
    next.focus();
    select(next.dataset.tab);
  });
  function mark(key) {
    for (const b of buttons) {
      const on = b.dataset.tab === key;
      b.setAttribute('aria-selected', String(on));
      b.tabIndex = on ? 0 : -1;
    }
  }
  function select(key) {
    mark(key);
    onSelect(key);
  }
  mark(current);
  return { el, select };
}

/**
 * A table sortable by clicking its headers. `columns`: [{key, label,
 * num?, sort?(row) -> comparable, cell(row) -> node|text, class?}].
 * `rowAttrs(row)` gives each row's attributes. Returns `{el, setRows(rows),
 * tbody}`; the sort survives `setRows`.
 */
export function sortableTable(columns, options = {}) {
  let rows = [];
  let sortKey = options.sortKey || null;
  let dir = options.dir || 1;
  const heads = columns.map((c) => {
    // A column hidden on a phone (`hide-narrow`) hides whole, header too.
    const narrow = /\bhide-narrow\b/.test(c.class || '') ? 'hide-narrow' : null;
    const th = h('th', { class: [c.num ? 'num' : null, narrow].filter(Boolean).join(' ') || null, scope: 'col' },
      c.sort === false ? c.label : h('button', { type: 'button', class: 'sort', onclick: () => sortBy(c.key) }, c.label));
    return th;
  });
  const tbody = h('tbody');
  const table = h('table', { class: options.class || null }, h('thead', {}, h('tr', {}, heads)), tbody);
  const el = h('div', { class: 'table-wrap' }, table);
  const empty = options.empty || 'Nothing to show.';
  function sortBy(key) {
    if (sortKey === key) dir = -dir; else { sortKey = key; dir = 1; }
    draw();
  }
  function value(c, row) {
    return c.sort ? c.sort(row) : row[c.key];
  }
  function draw() {
    columns.forEach((c, i) => {
      if (c.key === sortKey) heads[i].setAttribute('aria-sort', dir > 0 ? 'ascending' : 'descending');
      else heads[i].removeAttribute('aria-sort');
    });
    let list = rows;
    const col = columns.find((c) => c.key === sortKey);
    if (col) {
      list = [...rows].sort((a, b) => {
        const x = value(col, a), y = value(col, b);
        if (x == null && y == null) return 0;
        if (x == null) return 1;
        if (y == null) return -1;
        return (x < y ? -1 : x > y ? 1 : 0) * dir;
      });
    }
    if (!list.length) {
      tbody.replaceChildren(h('tr', {}, h('td', { colspan: columns.length, class: 'muted empty-row' }, empty)));
      return;
    }
    tbody.replaceChildren(...list.map((row) => h('tr', options.rowAttrs ? options.rowAttrs(row) : {},
      columns.map((c) => h('td', { class: [c.num ? 'num' : null, c.class].filter(Boolean).join(' ') || null }, c.cell ? c.cell(row) : row[c.key])))));
  }
  draw();
  return {
    el,
    tbody,
    setRows(list) { rows = list || []; draw(); },
  };
}

/** A labelled form field. */
export function field(label, input, hint) {
  return h('label', { class: 'field' }, h('span', { class: 'field-label' }, label), input,
    hint ? h('span', { class: 'field-hint muted small' }, hint) : null);
}

/** A `<select>` of `[value, label]` options with `value` chosen. */
export function select(options, value, attrs = {}) {
  const el = h('select', attrs, options.map(([v, label]) => h('option', { value: v }, label)));
  el.value = value == null ? '' : String(value);
  return el;
}

/** Milliseconds, short (0.8 ms, 12 ms, 1.4 s). */
export function fmtMs(ms) {
  if (ms == null) return '–';
  if (ms < 1) return ms.toFixed(2) + ' ms';
  if (ms < 10) return ms.toFixed(1) + ' ms';
  if (ms < 1000) return Math.round(ms) + ' ms';
  return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + ' s';
}

/** Replaces the hash's query without routing again (keeps the screen). */
export function setHashQuery(path, query) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  const s = q.toString();
  history.replaceState(null, '', '#' + path + (s ? '?' + s : ''));
}

/** A panel with a heading (and an optional note beside it). */
export function panel(title, note, ...children) {
  return h('section', { class: 'panel' }, h('h2', {}, h('span', {}, title), note ? h('span', { class: 'muted' }, note) : null), children);
}
