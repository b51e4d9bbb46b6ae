// The Logs screen (`#/logs`): search the stored records (query, range,
// agent and source filters, paged), LiveTail over the collector's tail
// stream with the same filters (pause and resume the view, a bounded
// number of lines kept), and the patterns of a range with their counts.
//
// Log lines are untrusted input: they are only ever set as text (lib.js's
// `h`), never parsed as HTML, and the page keeps at most `TAIL_KEEP` lines
// and `TAIL_HELD` held while paused, whatever the rate.

import { api, h, stream, rangePicker, fmtNum, fmtTime, header, errorBox } from '../lib.js';
import { useStyles, tabs, sortableTable, select, setHashQuery } from './kit.js';

/** Lines LiveTail keeps on the page; older ones leave as new ones come. */
export const TAIL_KEEP = 1000;
/** Lines held while the view is paused; past it the oldest are dropped. */
const TAIL_HELD = 5000;
/** Records per search page. */
const PAGE = 100;

export async function render(root, params, signal) {
  await useStyles();
  const query = params.query || new URLSearchParams();
  const state = {
    tab: ['search', 'tail', 'patterns'].includes(query.get('tab')) ? query.get('tab') : 'search',
    q: query.get('q') || '',
    oid: query.get('oid') || '',
    category: query.get('category') || '',
    fields: query.get('fields') || '',
  };

  root.appendChild(header('Logs'));
  // The filters every view shares.
  const agentPick = select([['', 'Every agent']], '', { 'aria-label': 'Agent', name: 'oid' });
  const categoryInput = h('input', { type: 'search', name: 'category', placeholder: 'Source (category)', 'aria-label': 'Source', list: 'log-categories', value: state.category });
  const categories = h('datalist', { id: 'log-categories' });
  const qInput = h('input', { type: 'search', name: 'q', class: 'query', placeholder: 'Words that must all occur, or "a phrase"', 'aria-label': 'Query', value: state.q });
  const fieldsInput = h('input', { type: 'search', name: 'fields', class: 'fields', placeholder: 'Fields: status=500', 'aria-label': 'Fields', value: query.get('fields') || '' });
  // Outside the form (after the range picker), and still its submit button.
  const apply = h('button', { type: 'submit', class: 'primary go', form: 'log-filter-form' }, 'Search');
  const picker = rangePicker(query.get('range') || '1h', () => { if (state.tab !== 'tail') show(state.tab); });
  // The range picker has a form of its own (the custom range): beside this
  // one, not inside it.
  const form = h('form', { role: 'search', id: 'log-filter-form' }, qInput, fieldsInput, agentPick, categoryInput, categories);
  const filters = h('div', { class: 'filters log-filters' }, form, picker.el, apply);
  const view = h('div', { class: 'log-view' });
  let viewAbort = null;

  const tabBar = tabs([['search', 'Search'], ['tail', 'LiveTail'], ['patterns', 'Patterns']], state.tab, (key) => show(key));
  root.append(tabBar.el, h('section', { class: 'panel' }, filters, view));

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    show(state.tab);
  });
  agentPick.addEventListener('change', () => show(state.tab));

  // The log agents, for the picker.
  let agentsLoaded = false;
  api('agents', {}, signal).then(({ agents }) => {
    for (const a of agents.filter((x) => x.product === 'log')) agentPick.appendChild(h('option', { value: String(a.oid) }, a.oname));
    agentPick.value = state.oid;
    agentsLoaded = true;
  }).catch(() => {});

  function read() {
    state.q = qInput.value.trim();
    if (agentsLoaded) state.oid = agentPick.value;
    state.category = categoryInput.value.trim();
    state.fields = fieldsInput.value.trim();
  }

  function show(tab) {
    read();
    state.tab = tab;
    setHashQuery('/logs', { tab, q: state.q, oid: state.oid, category: state.category, fields: state.fields });
    apply.textContent = tab === 'tail' ? 'Apply' : tab === 'patterns' ? 'Show' : 'Search';
    picker.el.hidden = tab === 'tail';
    // Patterns are counted per source, over every agent, without a query.
    qInput.hidden = tab === 'patterns';
    agentPick.hidden = tab === 'patterns';
    // Fields (from the agent's parse rules) are a search filter.
    fieldsInput.hidden = tab !== 'search';
    if (viewAbort) viewAbort.abort();
    viewAbort = new AbortController();
    signal.addEventListener('abort', () => viewAbort.abort(), { once: true });
    view.replaceChildren();
    const s = viewAbort.signal;
    const run = tab === 'tail' ? liveTail(view, state, s) : tab === 'patterns' ? patterns(view, state, picker, s) : search(view, state, picker, s);
    run.catch((e) => { if (!s.aborted && e?.name !== 'AbortError') view.appendChild(errorBox(e)); });
  }

  show(state.tab);
  collectCategories(categories, signal);
}

async function collectCategories(list, signal) {
  try {
    const r = await api('logs/search', { limit: 500, from: Date.now() - 24 * 3600e3 }, signal);
    const seen = new Set(r.records.map((x) => x.category).filter(Boolean));
    list.replaceChildren(...[...seen].sort().map((c) => h('option', { value: c })));
  } catch { /* the field still takes any text */ }
}

/** `status=500 method=GET` as the search's `field.status=500&field.method=GET`. */
function fieldParams(text) {
  const out = {};
  for (const term of text.split(/\s+/)) {
    const i = term.indexOf('=');
    if (i > 0) out['field.' + term.slice(0, i)] = term.slice(i + 1);
  }
  return out;
}

function recordLine(rec, options = {}) {
  const fields = Object.entries(rec.fields || {});
  return h('li', { class: ['log-line', options.fresh ? 'new' : null], dataset: { oid: String(rec.oid) } },
    h('time', { class: 'log-time', datetime: new Date(rec.time_ms).toISOString() }, fmtTime(rec.time_ms)),
    h('span', { class: 'log-source', title: rec.path || '' }, (rec.oname || rec.oid) + (rec.category ? ' · ' + rec.category : '')),
    h('span', { class: 'log-text' }, rec.text, rec.cut ? h('span', { class: 'badge', title: 'The line was longer than the agent keeps' }, 'cut') : null),
    fields.length ? h('span', { class: 'log-fields' }, fields.map(([k, v]) => h('span', { class: 'field-chip' }, k + '=' + v))) : null);
}

async function search(view, state, picker, signal) {
  const list = h('ol', { class: 'log-lines', 'aria-label': 'Results' });
  const status = h('span', { class: 'count' });
  const newer = h('button', { type: 'button', disabled: true }, '← Newer');
  const older = h('button', { type: 'button', disabled: true }, 'Older →');
  view.append(h('div', { class: 'row log-pager' }, status, h('span', { class: 'spacer' }), newer, older), list);
  const { from, to } = picker.current();
  // Cursors of the pages seen, to go back.
  const pages = [null];
  let page = 0;
  let next = null;
  async function load() {
    status.textContent = 'Searching…';
    const r = await api('logs/search', {
      q: state.q, oid: state.oid, category: state.category, from, to, limit: PAGE, before: pages[page] ?? undefined,
      ...fieldParams(state.fields),
    }, signal);
    next = r.next;
    list.replaceChildren(...r.records.map((rec) => recordLine(rec)));
    if (!r.records.length) list.appendChild(h('li', { class: 'muted empty-row' }, page ? 'No older record.' : 'No record matches in this range.'));
    status.textContent = r.records.length
      ? 'Records ' + fmtNum(page * PAGE + 1) + '–' + fmtNum(page * PAGE + r.records.length) + ', newest first'
      : '';
    newer.disabled = page === 0;
    older.disabled = !next;
  }
  newer.addEventListener('click', () => { page = Math.max(0, page - 1); load(); });
  older.addEventListener('click', () => {
    if (!next) return;
    pages[page + 1] = next;
    page += 1;
    load();
  });
  await load();
}

async function liveTail(view, state, signal) {
  const list = h('ol', { class: 'log-lines tail', 'aria-label': 'LiveTail', 'aria-live': 'off' });
  const dot = h('span', { class: 'live-dot' });
  const conn = h('span', { class: 'muted' }, 'connecting…');
  const counter = h('span', { class: 'count' });
  const heldNote = h('span', { class: 'held', hidden: true });
  const pause = h('button', { type: 'button', class: 'pause', 'aria-pressed': 'false' }, 'Pause');
  const clear = h('button', { type: 'button' }, 'Clear');
  const follow = h('input', { type: 'checkbox', checked: true });
  const scroller = h('div', { class: 'tail-scroll', tabindex: '0' }, list);
  view.append(h('div', { class: 'row tail-bar' }, h('span', {}, dot, conn), counter, heldNote, h('span', { class: 'spacer' }),
    h('label', { class: 'check' }, follow, ' Follow newest'), pause, clear), scroller,
  h('p', { class: 'muted small' }, 'Shows records stored from now on that match the query, agent and source; keeps the last ' + fmtNum(TAIL_KEEP) + ' lines.'));
  let paused = false;
  let held = [];
  let dropped = 0;
  let shown = 0;
  const empty = h('li', { class: 'muted empty-row' }, 'Waiting for new lines…');
  list.appendChild(empty);

  function add(records) {
    if (empty.isConnected) empty.remove();
    const frag = document.createDocumentFragment();
    for (const rec of records) frag.appendChild(recordLine(rec, { fresh: true }));
    list.appendChild(frag);
    shown += records.length;
    while (list.childElementCount > TAIL_KEEP) list.firstElementChild.remove();
    counter.textContent = fmtNum(shown) + (shown === 1 ? ' line' : ' lines') + ' received';
    if (follow.checked) scroller.scrollTop = scroller.scrollHeight;
  }
  function note(text) {
    const li = h('li', { class: 'log-note' }, text);
    list.appendChild(li);
  }
  pause.addEventListener('click', () => {
    paused = !paused;
    pause.textContent = paused ? 'Resume' : 'Pause';
    pause.setAttribute('aria-pressed', String(paused));
    if (!paused) {
      const batch = held;
      held = [];
      heldNote.hidden = true;
      if (dropped) note(fmtNum(dropped) + ' lines arrived while paused beyond the ' + fmtNum(TAIL_HELD) + ' held, and are not shown');
      dropped = 0;
      add(batch);
    }
  });
  clear.addEventListener('click', () => { list.replaceChildren(); shown = 0; counter.textContent = ''; });
  stream('logs/tail', (type, data) => {
    if (type === 'lagged') {
      note('The view fell behind: ' + fmtNum(data?.missed ?? 0) + ' chunks of records were skipped.');
      return;
    }
    if (!data || typeof data !== 'object') return;
    if (paused) {
      held.push(data);
      if (held.length > TAIL_HELD) { held.shift(); dropped++; }
      heldNote.hidden = false;
      heldNote.textContent = 'Paused · ' + fmtNum(held.length + dropped) + ' new ' + (held.length + dropped === 1 ? 'line' : 'lines') + ' waiting';
      return;
    }
    add([data]);
  }, signal, {
    events: ['message', 'lagged'],
    query: { filter: state.q, oid: state.oid, category: state.category },
    onState: (open) => {
      dot.classList.toggle('on', open);
      conn.textContent = open ? 'live' : 'reconnecting…';
    },
  });
}

async function patterns(view, state, picker, signal) {
  const { from, to } = picker.current();
  const r = await api('logs/patterns', { category: state.category, from, to, limit: 200 }, signal);
  const list = r.patterns || [];
  const max = Math.max(1, ...list.map((p) => p.count));
  const total = list.reduce((s, p) => s + p.count, 0);
  const table = sortableTable([
    { key: 'count', label: 'Count', num: true, cell: (p) => h('span', { class: 'pattern-count' },
      h('span', { class: 'num' }, fmtNum(p.count)),
      h('progress', { max: String(max), value: String(p.count), 'aria-label': 'share' })) },
    { key: 'share', label: 'Share', num: true, sort: (p) => p.count, cell: (p) => fmtNum((p.count / Math.max(1, total)) * 100, 1) + ' %' },
    { key: 'pattern', label: 'Pattern', class: 'wrap', cell: (p) => h('code', { class: 'pattern' }, p.pattern) },
    { key: 'example', label: 'Example', class: 'wrap hide-narrow', cell: (p) => h('code', { class: 'muted' }, p.example) },
  ], { sortKey: 'count', dir: -1, class: 'compact', empty: 'No records in this range.' });
  table.setRows(list);
  view.append(h('p', { class: 'count' }, list.length + ' patterns, ' + fmtNum(total) + ' records' + (state.category ? ' of ' + state.category : '') + ', every agent. Numbers, ids, addresses and times are masked.'), table.el);
}
