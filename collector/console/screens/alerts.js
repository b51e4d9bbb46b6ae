// The Events and alerts screen (`#/alerts[/<tab>]`): what is firing now
// (live over the alerts stream), the rules (list, create, edit, delete),
// the history of firings and resolves, the notification channels (create,
// test, delete), the delivery attempts, the agents' maintenance (pause and
// resume their alerts, terminate and re-enable) and the agents' events.
//
// Never renders a rule's, channel's or event's text as HTML: lib.js's `h`
// sets text only. Every change goes through the API (cookie + Origin, as
// the collector demands), and a destructive one asks to be confirmed.

import { api, post, put, del, h, stream, rangePicker, fmtNum, fmtTime, fmtAgo, fmtDuration, header, errorBox, badge } from '../lib.js';
import { useStyles, tabs, sortableTable, panel, field, select } from './kit.js';
import { agentHref } from './fleet.js';

const TABS = [
  ['rules', 'Rules'],
  ['history', 'History'],
  ['channels', 'Channels'],
  ['agents', 'Agents'],
  ['deliveries', 'Deliveries'],
  ['events', 'Events'],
];

const SYNTAX = [
  ['mem.used_pct > 90 for 1m', 'a series over a limit for a while'],
  ['disk.used_pct{mount="/var"} >= 95', 'only the series with these labels'],
  ['no data', 'the agent missed three intervals'],
  ['rebooted [clear 10m]', 'the host booted'],
  ['threshold ["mem"]', "the server agent's own threshold events"],
  ['url down ["home"]   url degraded', "a URL target's state"],
  ['lock wait [> 10s] [clear 5m]', "the database agent's lock waits"],
  ['log "timeout" > 10 in 5m', 'log records holding the text'],
  ['event KIND [clear 5m]', 'any event kind the agents raise'],
];

export async function render(root, params, signal) {
  await useStyles();
  const current = TABS.some(([k]) => k === params.tab) ? params.tab : 'rules';
  root.appendChild(header('Events and alerts'));
  const firingBox = h('div', { class: 'firing' });
  const feed = h('ul', { class: 'events transitions', 'aria-label': 'Alert changes as they happen' });
  const dot = h('span', { class: 'live-dot' });
  const firingPanel = h('section', { class: 'panel firing-panel' },
    h('h2', {}, h('span', {}, 'Firing now'), h('span', { class: 'muted' }, dot, h('span', { class: 'live-state' }, 'connecting…'))),
    firingBox, h('details', { class: 'transitions-box' }, h('summary', { class: 'muted' }, 'Changes since this page opened'), feed));
  root.appendChild(firingPanel);
  const tabBar = tabs(TABS, current, (key) => { location.hash = '#/alerts/' + key; });
  const body = h('div', { class: 'tab-body' });
  root.append(tabBar.el, body);

  const refreshFiring = async () => drawFiring(firingBox, (await api('alerts/firing', {}, signal)).firing || []);
  await refreshFiring().catch((e) => firingBox.replaceChildren(errorBox(e)));
  stream('alerts/stream', (type, data) => {
    if (type === 'lagged') {
      feed.prepend(h('li', {}, h('span'), h('span'), h('span', { class: 'msg muted' }, 'Some changes were missed; the list above is re-read.')));
    } else if (data && typeof data === 'object') {
      feed.prepend(h('li', { class: 'new' },
        h('time', {}, fmtTime(data.time_ms)), badge(data.state),
        h('span', { class: 'msg' }, h('strong', {}, data.rule), data.oname ? ' · ' + data.oname : '', data.target ? ' · ' + data.target : '', ' — ', data.message)));
      while (feed.childElementCount > 200) feed.lastElementChild.remove();
    }
    refreshFiring().catch(() => {});
  }, signal, {
    events: ['transition', 'lagged'],
    onState: (open) => {
      dot.classList.toggle('on', open);
      firingPanel.querySelector('.live-state').textContent = open ? 'live' : 'reconnecting…';
    },
  });

  const views = { rules, history, channels, agents, deliveries, events };
  await views[current](body, signal);
}

function drawFiring(box, list) {
  if (!list.length) {
    box.replaceChildren(h('p', { class: 'all-clear' }, h('span', { class: 'badge badge-ok' }, 'all clear'), ' Nothing is firing.'));
    return;
  }
  box.replaceChildren(h('ul', { class: 'firing-list' }, list.map((a) => h('li', { class: 'firing-item', dataset: { rule: a.rule } },
    badge('firing'),
    h('div', {},
      h('div', {}, h('strong', {}, a.rule), a.oname ? h('span', { class: 'muted' }, ' on ' + a.oname) : null, a.target ? h('span', { class: 'mono muted' }, ' ' + a.target) : null),
      h('div', { class: 'msg' }, a.message)),
    h('div', { class: 'muted small firing-since' },
      'since ' + fmtTime(a.since_ms), h('br'), 'for ' + fmtDuration(Math.max(1000, Date.now() - a.since_ms)),
      a.last_notified_ms == null ? [h('br'), h('span', { class: 'badge badge-paused' }, 'not notified')] : null)))));
}

// ----------------------------------------------------------------- rules

async function rules(body, signal) {
  const [{ rules: list }, { channels: chans }, { agents: agentList }] = await Promise.all([
    api('alerts/rules', {}, signal), api('alerts/channels', {}, signal), api('agents', {}, signal)]);
  const chanName = new Map(chans.map((c) => [c.id, c.name]));
  const formBox = h('div');
  const newButton = h('button', { type: 'button', class: 'primary', onclick: () => openForm(null) }, 'New rule');
  const table = sortableTable([
    { key: 'enabled', label: 'On', cell: (r) => badge(r.enabled ? 'enabled' : 'disabled') },
    { key: 'name', label: 'Name', cell: (r) => h('strong', {}, r.name) },
    { key: 'expr', label: 'Condition', class: 'wrap', cell: (r) => h('code', {}, r.expr) },
    { key: 'scope', label: 'Applies to', sort: (r) => r.agent || r.product || '', cell: (r) => r.agent ? 'agent ' + r.agent : r.product ? 'every ' + r.product + ' agent' : 'every agent' },
    { key: 'severity', label: 'Severity', cell: (r) => badge(r.severity) },
    { key: 'channels', label: 'Tells', sort: (r) => r.channels.length, cell: (r) => r.channels.length ? r.channels.map((id) => chanName.get(id) || '#' + id).join(', ') : h('span', { class: 'muted' }, 'no one') },
    { key: 'renotify', label: 'Again every', cell: (r) => r.renotify || h('span', { class: 'muted' }, 'never') },
    { key: 'actions', label: '', sort: false, cell: (r) => h('span', { class: 'row-actions' },
      h('button', { type: 'button', onclick: () => openForm(r) }, 'Edit'),
      confirmButton('Delete', 'Delete rule ' + r.name + '?', async () => { await del('alerts/rules/' + r.id); await reload(); })) },
  ], { sortKey: 'name', empty: 'No rule yet: add one to be told when something goes wrong.', rowAttrs: (r) => ({ dataset: { rule: r.name } }) });
  const section = panel('Rules', ' ', h('div', { class: 'row' }, newButton), formBox, table.el);
  const note = section.querySelector('h2 .muted');
  const show = (rows) => {
    table.setRows(rows);
    note.textContent = rows.length === 1 ? '1 rule' : rows.length + ' rules';
  };
  show(list);
  body.appendChild(section);

  async function reload() {
    show((await api('alerts/rules', {}, signal)).rules);
  }

  function openForm(rule) {
    const name = h('input', { name: 'name', required: true, maxlength: '200', value: rule?.name || '' });
    const expr = h('input', { name: 'expr', class: 'mono wide', required: true, placeholder: 'mem.used_pct > 90 for 1m', value: rule?.expr || '' });
    const scope = select([['all', 'Every agent'], ['product', 'Every agent of a product'], ['agent', 'One agent']],
      rule?.agent ? 'agent' : rule?.product ? 'product' : 'all', { name: 'scope' });
    const product = select([['infra', 'infra (servers)'], ['db', 'db'], ['log', 'log'], ['url', 'url']], rule?.product || 'infra', { name: 'product' });
    const agent = select(agentList.map((a) => [a.oname, a.oname + ' (' + a.product + ')']), rule?.agent || agentList[0]?.oname || '', { name: 'agent' });
    const severity = select([['info', 'info'], ['warning', 'warning'], ['critical', 'critical']], rule?.severity || 'warning', { name: 'severity' });
    const renotify = h('input', { name: 'renotify', placeholder: 'e.g. 30m (empty: never)', value: rule?.renotify || '' });
    const enabled = h('input', { type: 'checkbox', name: 'enabled', checked: rule ? rule.enabled : true });
    const chanBoxes = chans.map((c) => h('label', { class: 'check' },
      h('input', { type: 'checkbox', value: String(c.id), checked: rule ? rule.channels.includes(c.id) : false }), ' ' + c.name));
    const error = h('div', { class: 'notice error', role: 'alert', hidden: true });
    const productField = field('Product', product);
    const agentField = field('Agent', agent);
    const syncScope = () => { productField.hidden = scope.value !== 'product'; agentField.hidden = scope.value !== 'agent'; };
    scope.addEventListener('change', syncScope);
    syncScope();
    const form = h('form', { class: 'editor', 'aria-label': rule ? 'Edit rule' : 'New rule' },
      h('h3', {}, rule ? 'Edit rule ' + rule.name : 'New rule'),
      h('div', { class: 'form-grid' },
        field('Name', name),
        field('Condition', expr, 'the rule language, one line'),
        field('Applies to', scope), productField, agentField,
        field('Severity', severity),
        field('Tell again every', renotify),
        h('div', { class: 'field' }, h('span', { class: 'field-label' }, 'Channels'),
          chanBoxes.length ? h('div', { class: 'checks' }, chanBoxes) : h('span', { class: 'muted' }, 'No channel yet (add one under Channels).')),
        h('label', { class: 'check' }, enabled, ' Enabled')),
      h('details', { class: 'syntax' }, h('summary', {}, 'Rule syntax'),
        h('table', { class: 'compact' }, h('tbody', {}, SYNTAX.map(([code, what]) => h('tr', {}, h('td', {}, h('code', {}, code)), h('td', { class: 'muted' }, what)))))),
      error,
      h('div', { class: 'row' }, h('button', { type: 'submit', class: 'primary' }, rule ? 'Save' : 'Create rule'),
        h('button', { type: 'button', onclick: () => formBox.replaceChildren() }, 'Cancel')));
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const spec = {
        name: name.value.trim(),
        expr: expr.value.trim(),
        severity: severity.value,
        channels: chanBoxes.map((l) => l.querySelector('input')).filter((i) => i.checked).map((i) => Number(i.value)),
        enabled: enabled.checked,
      };
      if (scope.value === 'product') spec.product = product.value;
      if (scope.value === 'agent') spec.agent = agent.value;
      if (renotify.value.trim()) spec.renotify = renotify.value.trim();
      try {
        if (rule) await put('alerts/rules/' + rule.id, spec);
        else await post('alerts/rules', spec);
        formBox.replaceChildren();
        await reload();
      } catch (err) {
        error.hidden = false;
        error.textContent = err.message;
      }
    });
    formBox.replaceChildren(form);
    name.focus();
  }
}

/** A button that asks again before `action` (no blocking dialog). */
function confirmButton(label, question, action, cls = 'danger') {
  const wrap = h('span', { class: 'confirm' });
  const first = h('button', { type: 'button', class: cls }, label);
  const yes = h('button', { type: 'button', class: 'danger confirm-yes' }, 'Yes, ' + label.toLowerCase());
  const no = h('button', { type: 'button' }, 'Cancel');
  const ask = h('span', { class: 'confirm-ask', hidden: true }, h('span', {}, question + ' '), yes, no);
  const error = h('span', { class: 'error-text', hidden: true });
  first.addEventListener('click', () => { first.hidden = true; ask.hidden = false; yes.focus(); });
  no.addEventListener('click', () => { first.hidden = false; ask.hidden = true; first.focus(); });
  yes.addEventListener('click', async () => {
    yes.disabled = true;
    try {
      await action();
    } catch (e) {
      error.hidden = false;
      error.textContent = e.message;
    } finally {
      yes.disabled = false;
      first.hidden = false;
      ask.hidden = true;
    }
  });
  wrap.append(first, ask, error);
  return wrap;
}

// --------------------------------------------------------------- history

async function history(body, signal) {
  const picker = rangePicker('24h', () => load());
  const table = sortableTable([
    { key: 'time_ms', label: 'Time', cell: (r) => fmtTime(r.time_ms) },
    { key: 'state', label: 'State', cell: (r) => badge(r.state) },
    { key: 'rule', label: 'Rule', cell: (r) => h('strong', {}, r.rule) },
    { key: 'oname', label: 'Agent' },
    { key: 'target', label: 'What', class: 'mono' },
    { key: 'value', label: 'Value', num: true, cell: (r) => fmtNum(r.value, 2) },
    { key: 'message', label: 'Message', class: 'wrap' },
    { key: 'notified', label: 'Told', cell: (r) => (r.notified ? 'yes' : h('span', { class: 'muted' }, 'no')) },
  ], { sortKey: 'time_ms', dir: -1, class: 'compact', empty: 'Nothing fired or resolved in this range.' });
  body.appendChild(panel('History', null, h('div', { class: 'row' }, picker.el), table.el));
  async function load() {
    const { from, to } = picker.current();
    const r = await api('alerts/history', { from, to, limit: 1000 }, signal);
    table.setRows(r.history);
  }
  await load();
}

// -------------------------------------------------------------- channels

function channelTarget(c) {
  if (c.kind === 'webhook') return [h('span', { class: 'mono' }, c.url), ' ', h('span', { class: 'badge' }, c.format === 'slack' ? 'Slack body' : 'JSON')];
  return [h('span', { class: 'mono' }, (c.to || []).join(', ')), h('span', { class: 'muted' }, ' via ' + c.host + ':' + c.port + ' (' + c.tls + ')')];
}

async function channels(body, signal) {
  const formBox = h('div');
  const table = sortableTable([
    { key: 'name', label: 'Name', cell: (c) => h('strong', {}, c.name) },
    { key: 'kind', label: 'Kind', cell: (c) => (c.kind === 'email' ? 'e-mail' : 'webhook') },
    { key: 'target', label: 'Sends to', class: 'wrap', sort: (c) => c.url || (c.to || []).join(','), cell: channelTarget },
    { key: 'actions', label: '', sort: false, cell: (c) => {
      const result = h('span', { class: 'test-result', 'aria-live': 'polite' });
      const test = h('button', { type: 'button', class: 'test' }, 'Send a test');
      test.addEventListener('click', async () => {
        test.disabled = true;
        result.className = 'test-result muted';
        result.textContent = 'sending…';
        try {
          const r = await post('alerts/channels/' + c.id + '/test');
          result.className = 'test-result ' + (r.ok ? 'ok' : 'failed');
          result.textContent = r.ok
            ? 'delivered' + (r.status ? ' (' + r.status + ')' : '') + ' in ' + fmtDuration(r.elapsed_ms)
            : 'failed: ' + (r.error || 'status ' + r.status);
        } catch (e) {
          result.className = 'test-result failed';
          result.textContent = e.message;
        } finally { test.disabled = false; }
      });
      return h('span', { class: 'row-actions' }, test,
        confirmButton('Delete', 'Delete channel ' + c.name + '?', async () => { await del('alerts/channels/' + c.id); await reload(); }), result);
    } },
  ], { sortKey: 'name', empty: 'No channel yet.', rowAttrs: (c) => ({ dataset: { channel: c.name } }) });
  body.appendChild(panel('Notification channels', null,
    h('div', { class: 'row' }, h('button', { type: 'button', class: 'primary', onclick: () => openForm() }, 'New channel')),
    formBox, table.el));
  async function reload() {
    table.setRows((await api('alerts/channels', {}, signal)).channels);
  }
  await reload();

  function openForm() {
    const name = h('input', { name: 'name', required: true });
    const kind = select([['webhook', 'Webhook'], ['email', 'E-mail (SMTP)']], 'webhook', { name: 'kind' });
    const url = h('input', { name: 'url', type: 'url', class: 'wide', placeholder: 'https://hooks.example.com/…' });
    const format = select([['json', 'JSON (the alert)'], ['slack', 'Slack-compatible {"text": …}']], 'json', { name: 'format' });
    const host = h('input', { name: 'host', placeholder: 'smtp.example.com' });
    const port = h('input', { name: 'port', type: 'number', min: '1', max: '65535', value: '587' });
    const tls = select([['starttls', 'STARTTLS'], ['tls', 'TLS (port 465)'], ['none', 'none (loopback relay)']], 'starttls', { name: 'tls' });
    const username = h('input', { name: 'username', autocomplete: 'off' });
    const password = h('input', { name: 'password', type: 'password', autocomplete: 'new-password' });
    const from = h('input', { name: 'from', placeholder: 'sightline@example.com' });
    const to = h('input', { name: 'to', class: 'wide', placeholder: 'ops@example.com, oncall@example.com' });
    const webhookFields = h('div', { class: 'form-grid' }, field('URL', url, 'kept secret: shown masked once saved'), field('Body', format));
    const emailFields = h('div', { class: 'form-grid', hidden: true }, field('SMTP server', host), field('Port', port), field('Security', tls),
      field('Login', username), field('Password', password), field('From', from), field('To', to, 'comma-separated'));
    kind.addEventListener('change', () => { webhookFields.hidden = kind.value !== 'webhook'; emailFields.hidden = kind.value !== 'email'; });
    const error = h('div', { class: 'notice error', role: 'alert', hidden: true });
    const form = h('form', { class: 'editor', 'aria-label': 'New channel' }, h('h3', {}, 'New channel'),
      h('div', { class: 'form-grid' }, field('Name', name), field('Kind', kind)), webhookFields, emailFields, error,
      h('div', { class: 'row' }, h('button', { type: 'submit', class: 'primary' }, 'Create channel'),
        h('button', { type: 'button', onclick: () => formBox.replaceChildren() }, 'Cancel')));
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const spec = { name: name.value.trim(), kind: kind.value };
      if (kind.value === 'webhook') Object.assign(spec, { url: url.value.trim(), format: format.value });
      else {
        Object.assign(spec, {
          host: host.value.trim(), port: Number(port.value) || 587, tls: tls.value, from: from.value.trim(),
          to: to.value.split(',').map((s) => s.trim()).filter(Boolean),
        });
        if (username.value) spec.username = username.value;
        if (password.value) spec.password = password.value;
      }
      try {
        await post('alerts/channels', spec);
        formBox.replaceChildren();
        await reload();
      } catch (err) {
        error.hidden = false;
        error.textContent = err.message;
      }
    });
    formBox.replaceChildren(form);
    name.focus();
  }
}

// ---------------------------------------------------------------- agents

function pauseUntil(choice) {
  const hours = { '1h': 1, '4h': 4, '24h': 24 }[choice];
  return hours ? { until: new Date(Date.now() + hours * 3600e3).toISOString() } : {};
}

async function agents(body, signal) {
  const filter = h('input', { type: 'search', placeholder: 'Filter agents', 'aria-label': 'Filter agents' });
  const count = h('span', { class: 'count' });
  let all = [];
  const table = sortableTable([
    { key: 'status', label: 'Status', sort: (a) => statusOf(a), cell: (a) => [badge(statusOf(a)),
      a.paused && a.paused_until_ms ? h('span', { class: 'muted small' }, ' until ' + fmtTime(a.paused_until_ms)) : null] },
    { key: 'oname', label: 'Agent', cell: (a) => (a.terminated ? a.oname : h('a', { href: agentHref(a.product, a.oid, a.oname) }, a.oname)) },
    { key: 'product', label: 'Product' },
    { key: 'hostname', label: 'Host', class: 'hide-narrow' },
    { key: 'last_seen_ms', label: 'Last seen', cell: (a) => fmtAgo(a.last_seen_ms) },
    { key: 'actions', label: 'Maintenance', sort: false, cell: (a) => actionsFor(a) },
  ], { sortKey: 'oname', empty: 'No agent in this project.', rowAttrs: (a) => ({ dataset: { oid: String(a.oid), oname: a.oname } }) });
  body.appendChild(panel('Agents', 'a paused agent is still collected; its alerts tell no one',
    h('div', { class: 'filters' }, filter, count), table.el));

  function statusOf(a) {
    return a.terminated ? 'terminated' : a.paused ? 'paused' : a.status;
  }

  function actionsFor(a) {
    const error = h('span', { class: 'error-text', role: 'alert' });
    const act = (fn) => async () => {
      error.textContent = '';
      try { await fn(); await reload(); } catch (e) { error.textContent = e.message; }
    };
    if (a.terminated) {
      return h('span', { class: 'row-actions' },
        h('button', { type: 'button', class: 'enable', onclick: act(() => post('agents/' + a.oid + '/enable')) }, 'Enable'), error);
    }
    const until = select([['', 'until resumed'], ['1h', 'for 1 hour'], ['4h', 'for 4 hours'], ['24h', 'for 24 hours']], '', { 'aria-label': 'Pause for' });
    return h('span', { class: 'row-actions' },
      a.paused
        ? h('button', { type: 'button', class: 'resume', onclick: act(() => post('agents/' + a.oid + '/resume')) }, 'Resume alerts')
        : [h('button', { type: 'button', class: 'pause', onclick: act(() => post('agents/' + a.oid + '/pause', pauseUntil(until.value))) }, 'Pause alerts'), until],
      confirmButton('Terminate', 'Delete every stored record of ' + a.oname + ' and refuse it until enabled?',
        async () => { await post('agents/' + a.oid + '/terminate'); await reload(); }),
      error);
  }

  function draw() {
    const f = filter.value.trim().toLowerCase();
    const shown = all.filter((a) => !f || [a.oname, a.product, a.hostname].some((v) => String(v || '').toLowerCase().includes(f)));
    table.setRows(shown);
    const paused = all.filter((a) => a.paused).length;
    count.textContent = all.length + ' agents' + (paused ? ', ' + paused + ' paused' : '');
  }
  async function reload() {
    all = (await api('agents', {}, signal)).agents;
    draw();
  }
  filter.addEventListener('input', draw);
  await reload();
}

// ------------------------------------------------------------ deliveries

async function deliveries(body, signal) {
  const table = sortableTable([
    { key: 'time_ms', label: 'Time', cell: (d) => fmtTime(d.time_ms) },
    { key: 'channel', label: 'Channel', cell: (d) => h('strong', {}, d.channel) },
    { key: 'kind', label: 'Told', cell: (d) => badge(d.kind) },
    { key: 'attempt', label: 'Attempt', num: true },
    { key: 'ok', label: 'Result', cell: (d) => badge(d.ok ? 'delivered' : 'failed') },
    { key: 'status', label: 'Status', num: true, cell: (d) => d.status ?? '–' },
    { key: 'elapsed_ms', label: 'Took', num: true, cell: (d) => fmtDuration(d.elapsed_ms) },
    { key: 'error', label: 'Error', class: 'wrap', cell: (d) => d.error || '' },
    { key: 'state', label: 'Now', cell: (d) => badge(d.state) },
  ], { sortKey: 'time_ms', dir: -1, class: 'compact', empty: 'No notification has been sent yet.' });
  body.appendChild(panel('Delivery attempts', 'every attempt, retries included', table.el));
  table.setRows((await api('alerts/deliveries', { limit: 500 }, signal)).deliveries);
}

// ---------------------------------------------------------------- events

async function events(body, signal) {
  const picker = rangePicker('24h', () => load());
  const kind = h('input', { type: 'search', placeholder: 'Kind, e.g. db.lock_wait', 'aria-label': 'Event kind' });
  const table = sortableTable([
    { key: 'time_ms', label: 'Time', cell: (e) => fmtTime(e.time_ms) },
    { key: 'severity', label: 'Severity', cell: (e) => badge(e.severity || 'info') },
    { key: 'kind', label: 'Kind', class: 'mono' },
    { key: 'oname', label: 'Agent', cell: (e) => e.oname || (e.oid ?? '') },
    { key: 'message', label: 'Message', class: 'wrap' },
  ], { sortKey: 'time_ms', dir: -1, class: 'compact', empty: 'No event in this range.' });
  const form = h('form', { class: 'filters' }, picker.el, kind, h('button', { type: 'submit' }, 'Show'));
  form.addEventListener('submit', (e) => { e.preventDefault(); load(); });
  body.appendChild(panel('Agents\' events', null, form, table.el));
  async function load() {
    const { from, to } = picker.current();
    const r = await api('events', { from, to, kind: kind.value.trim(), limit: 1000 }, signal);
    table.setRows(r.events);
  }
  await load();
}
