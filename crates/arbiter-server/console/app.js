// Arbiter's web console: plain ES modules, no framework, no build step. Every piece of data is
// put into the page with textContent (never as HTML): records hold strings that callers chose.
import { verifyBundle } from './verify.js';

const LAYERS = ['applications', 'infrastructure', 'data', 'ai', 'agents'];
const OUTCOMES = ['allow', 'deny', 'require_approval'];
const OUTCOME_WORD = { allow: 'allow', deny: 'deny', require_approval: 'approval required' };
const OUTCOME_SYMBOL = { allow: '✓', deny: '✗', require_approval: '?' };
const STATE_SYMBOL = { enforced: '●', coarse: '◐', ungoverned: '▲', unknown: '○' };
const STATE_HELP = {
  enforced: 'checked at an Arbiter enforcement point',
  coarse: 'reachable, controlled only by a credential scope',
  ungoverned: 'activity from an unregistered identity',
  unknown: 'nothing declared or observed',
};
const MAX_LIVE_ROWS = 500;
// Decisions asked for at a time (newest first; "Older decisions" asks for the next page).
const PAGE_ROWS = 200;

let session = null; // {name, role, csrf, expires_at}
let stream = null; // the decisions page's EventSource
let renderSeq = 0; // drops the answers of a page the user already left

// --- small DOM helpers ------------------------------------------------------------------

/** el('tag', {attr: value, class: '…', on: {click: fn}}, ...children) */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') node.className = v;
      else if (k === 'on') for (const [ev, fn] of Object.entries(v)) node.addEventListener(ev, fn);
      else if (k === 'dataset') Object.assign(node.dataset, v);
      else node.setAttribute(k, v === true ? '' : String(v));
    }
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function clear(node) {
  while (node.firstChild) node.firstChild.remove();
  return node;
}

const main = () => document.getElementById('main');

function announce(text) {
  const a = document.getElementById('announcer');
  a.textContent = '';
  setTimeout(() => {
    a.textContent = text;
  }, 50);
}

function fmtTime(v) {
  if (v === null || v === undefined || v === '') return '—';
  let d;
  if (typeof v === 'number' || (typeof v === 'object' && v !== null)) d = new Date(Number(v) / 1000);
  else d = new Date(v);
  if (Number.isNaN(d.getTime())) return String(v);
  return d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

function short(s, n = 12) {
  s = String(s ?? '');
  return s.length > n + 1 ? s.slice(0, n) + '…' : s;
}

function isAdmin() {
  return session && session.role === 'administrator';
}

function table(caption, headers, rows, opts = {}) {
  const t = el('table', { class: opts.class });
  if (caption) t.append(el('caption', null, caption));
  const tr = el('tr');
  for (const h of headers) {
    const th = el('th', { scope: 'col' }, typeof h === 'string' ? h : h.label);
    if (h.num) th.className = 'num';
    tr.append(th);
  }
  t.append(el('thead', null, tr));
  const body = el('tbody');
  for (const r of rows) body.append(r);
  t.append(body);
  return el('div', { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-label': caption || 'table' }, t);
}

function td(content, cls) {
  return el('td', { class: cls }, content);
}

function outcomeBadge(outcome) {
  const o = String(outcome);
  return el('span', { class: `outcome outcome-${OUTCOMES.includes(o) ? o : 'other'}` },
    `${OUTCOME_SYMBOL[o] || '·'} ${OUTCOME_WORD[o] || o}`);
}

function stateBadge(state) {
  const s = String(state);
  return el('span', { class: `state state-${STATE_SYMBOL[s] ? s : 'unknown'}`, title: STATE_HELP[s] || '' },
    `${STATE_SYMBOL[s] || '·'} ${s}`);
}

function errorNotice(e) {
  return el('div', { class: 'notice error', role: 'alert' }, e instanceof ApiError ? e.describe() : `Error: ${e && e.message ? e.message : e}`);
}

function okNotice(...children) {
  return el('div', { class: 'notice ok', role: 'status' }, ...children);
}

// --- the API ----------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
  describe() {
    return `${this.message}${this.code ? ` (${this.code}, HTTP ${this.status})` : ` (HTTP ${this.status})`}`;
  }
}

async function request(method, path, body, { raw = false } = {}) {
  const headers = { Accept: 'application/json' };
  if (method !== 'GET' && method !== 'HEAD' && session) headers['X-Arbiter-CSRF'] = session.csrf;
  const init = { method, headers, credentials: 'same-origin', cache: 'no-store', redirect: 'error' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, 'network', `the server did not answer: ${e.message}`);
  }
  const text = await res.text();
  if (!res.ok) {
    let code = null;
    let message = text.slice(0, 500) || res.statusText;
    try {
      let j = JSON.parse(text);
      // The API answers {"error": {"code", "message", "field"?}}.
      if (j && typeof j === 'object' && j.error && typeof j.error === 'object') j = j.error;
      if (j && typeof j === 'object') {
        code = typeof j.code === 'string' ? j.code : null;
        if (typeof j.message === 'string') message = j.message;
      }
    } catch {
      /* not JSON: the text itself */
    }
    if (res.status === 401 && session && !path.startsWith('/console/api/')) {
      sessionEnded('Your session has ended (expired or signed out elsewhere). Sign in again.');
    }
    throw new ApiError(res.status, code, message);
  }
  if (raw) return text;
  if (res.status === 204 || text === '') return null;
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError(res.status, 'bad_answer', 'the server answered something that is not JSON');
  }
}

const api = {
  get: (p, opts) => request('GET', p, undefined, opts),
  post: (p, body) => request('POST', p, body),
  del: (p) => request('DELETE', p),
};

const enc = encodeURIComponent;

// --- dialogs ----------------------------------------------------------------------------

/**
 * A modal dialog (native <dialog>: focus stays inside, Escape closes it). `content` is a
 * node or a list; `fields` is a form's children; resolves to the form's values or null.
 */
function dialog({ title, content, fields, confirm = 'Confirm', danger = false, validate }) {
  return new Promise((resolve) => {
    const opener = document.activeElement;
    const id = `dlg-${Math.random().toString(36).slice(2)}`;
    const problem = el('p', { class: 'notice error', role: 'alert', hidden: true });
    const ok = el('button', { type: 'submit', class: danger ? 'danger primary' : 'primary' }, confirm);
    const cancel = el('button', { type: 'button', value: 'cancel' }, 'Cancel');
    const form = el('form', { method: 'dialog' }, content, fields, problem, el('div', { class: 'actions' }, cancel, ok));
    const d = el('dialog', { 'aria-labelledby': id }, el('h2', { id }, title), form);
    let result = null;
    cancel.addEventListener('click', () => d.close());
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const values = Object.fromEntries(new FormData(form).entries());
      const why = validate ? validate(values) : null;
      if (why) {
        problem.textContent = why;
        problem.hidden = false;
        return;
      }
      result = values;
      d.close();
    });
    d.addEventListener('close', () => {
      d.remove();
      if (opener && opener.isConnected && typeof opener.focus === 'function') opener.focus();
      resolve(result);
    });
    document.body.append(d);
    d.showModal();
    const first = form.querySelector('input, select, textarea');
    (first || cancel).focus();
  });
}

function field(label, input, help) {
  const id = input.id || `f-${Math.random().toString(36).slice(2)}`;
  input.id = id;
  const helpId = help ? `${id}-help` : null;
  if (helpId) input.setAttribute('aria-describedby', helpId);
  return el('div', { class: 'field' }, el('label', { for: id }, label), input, help && el('small', { id: helpId, class: 'muted' }, help));
}

function copyButton(text, label = 'Copy') {
  const b = el('button', { type: 'button' }, label);
  b.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(text);
      b.textContent = 'Copied';
      announce('copied to the clipboard');
    } catch {
      b.textContent = 'Copy failed: select the text';
    }
  });
  return b;
}

// --- session ----------------------------------------------------------------------------

function setChrome(signedIn) {
  document.getElementById('site-nav').hidden = !signedIn;
  document.getElementById('who').hidden = !signedIn;
  document.getElementById('menu-toggle').hidden = !signedIn;
  document.getElementById('who-name').textContent = signedIn ? `${session.name} (${session.role})` : '';
  document.body.dataset.role = signedIn ? session.role : '';
}

function sessionEnded(message) {
  session = null;
  closeStream();
  setChrome(false);
  renderLogin(message);
}

function renderLogin(message) {
  const m = clear(main());
  document.title = 'Sign in · Arbiter console';
  const token = el('input', { type: 'password', name: 'token', id: 'token', autocomplete: 'off', required: true, spellcheck: 'false' });
  const problem = el('div', { role: 'alert' });
  if (message) problem.append(el('p', { class: 'notice error' }, message));
  const form = el('form', { class: 'panel signin', 'aria-labelledby': 'signin-h' },
    el('h1', { id: 'signin-h' }, 'Sign in'),
    el('p', { class: 'muted' }, 'With an administrator or auditor token (arbadm_…), as `arbiter admin token create` prints it. Auditors can read everything and change nothing.'),
    field('Admin token', token),
    problem,
    el('button', { type: 'submit', class: 'primary' }, 'Sign in'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clear(problem);
    try {
      const s = await request('POST', '/console/api/login', { token: token.value });
      token.value = '';
      startSession(s);
      if (!location.hash || location.hash === '#/' || location.hash === '#/login') location.hash = '#/overview';
      route();
    } catch (e) {
      problem.append(errorNotice(e));
      token.focus();
    }
  });
  m.append(form);
  token.focus();
}

function startSession(s) {
  if (!s || typeof s.csrf !== 'string' || typeof s.role !== 'string') throw new Error('the server sent no session');
  session = { name: String(s.name), role: String(s.role), csrf: s.csrf, expires_at: s.expires_at };
  setChrome(true);
}

async function logout() {
  try {
    await request('POST', '/console/api/logout');
  } catch {
    /* the session is gone either way */
  }
  sessionEnded('Signed out.');
  history.replaceState(null, '', '#/login');
}

// --- routing ----------------------------------------------------------------------------

const PAGES = {
  overview: renderOverview,
  agents: renderAgents,
  discovered: renderDiscovered,
  decisions: renderDecisions,
  gap: renderGap,
  'tool-pins': renderToolPins,
  policy: renderPolicy,
  approvals: renderApprovals,
};

function parseHash() {
  const h = location.hash.replace(/^#\/?/, '');
  const [path, query = ''] = h.split('?', 2);
  const parts = path.split('/').filter(Boolean).map((p) => {
    try {
      return decodeURIComponent(p);
    } catch {
      return p;
    }
  });
  return { parts, params: new URLSearchParams(query) };
}

async function route(moveFocus = true) {
  if (!session) return;
  closeStream();
  document.body.classList.remove('nav-open');
  document.getElementById('menu-toggle').setAttribute('aria-expanded', 'false');
  const { parts, params } = parseHash();
  const page = parts[0] && PAGES[parts[0]] ? parts[0] : 'overview';
  for (const a of document.querySelectorAll('#site-nav a')) {
    if (a.dataset.page === page) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const seq = ++renderSeq;
  const m = clear(main());
  const live = () => seq === renderSeq;
  try {
    if (page === 'decisions' && parts[1]) await renderDecision(m, parts[1], live);
    else await PAGES[page](m, params, live);
  } catch (e) {
    if (live()) m.append(errorNotice(e));
  }
  if (live()) {
    const h1 = m.querySelector('h1');
    document.title = `${h1 ? h1.textContent : 'Arbiter'} · Arbiter console`;
    if (moveFocus && !document.querySelector('dialog[open]') && !m.contains(document.activeElement)) m.focus({ preventScroll: true });
  }
}

function closeStream() {
  if (stream) {
    stream.close();
    stream = null;
  }
}

// --- overview ---------------------------------------------------------------------------

const SVGNS = 'http://www.w3.org/2000/svg';
function svg(tag, attrs, ...children) {
  const n = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, String(v));
  for (const c of children) n.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return n;
}

/** The patterns that tell outcomes apart without colour: solid, hatched, dotted. */
function patternDefs(prefix) {
  const defs = svg('defs');
  defs.append(svg('pattern', { id: `${prefix}-allow`, width: 6, height: 6, patternUnits: 'userSpaceOnUse' },
    svg('rect', { width: 6, height: 6, fill: '#1d6b3a' })));
  defs.append(svg('pattern', { id: `${prefix}-deny`, width: 6, height: 6, patternUnits: 'userSpaceOnUse', patternTransform: 'rotate(45)' },
    svg('rect', { width: 6, height: 6, fill: '#f3c4c4' }), svg('rect', { width: 3, height: 6, fill: '#a4161a' })));
  defs.append(svg('pattern', { id: `${prefix}-require_approval`, width: 6, height: 6, patternUnits: 'userSpaceOnUse' },
    svg('rect', { width: 6, height: 6, fill: '#fbe3b0' }), svg('circle', { cx: 3, cy: 3, r: 1.6, fill: '#8a5a00' })));
  return defs;
}

function legend(prefix) {
  const ul = el('ul', { class: 'legend', 'aria-label': 'Legend' });
  for (const o of OUTCOMES) {
    const s = svg('svg', { viewBox: '0 0 18 14', 'aria-hidden': 'true' }, patternDefs(`${prefix}-lg-${o}`),
      svg('rect', { x: 0.5, y: 0.5, width: 17, height: 13, fill: `url(#${prefix}-lg-${o}-${o})`, stroke: '#333' }));
    ul.append(el('li', null, s, `${OUTCOME_WORD[o]} (${o === 'allow' ? 'solid' : o === 'deny' ? 'hatched' : 'dotted'})`));
  }
  return ul;
}

function layerChart(layer, buckets, bucketSeconds) {
  const W = 900;
  const H = 200;
  const left = 40;
  const bottom = 24;
  const top = 16;
  const n = Math.max(buckets.length, 1);
  const counts = buckets.map((b) => {
    const c = (b.by_layer && b.by_layer[layer]) || {};
    return OUTCOMES.map((o) => Number(c[o] || 0));
  });
  const max = Math.max(1, ...counts.map((c) => c.reduce((a, b) => a + b, 0)));
  const slot = (W - left - 10) / n;
  const bw = Math.max(2, slot * 0.7);
  const scale = (H - top - bottom) / max;
  const prefix = `p-${layer}`;
  const total = counts.reduce((a, c) => a + c.reduce((x, y) => x + y, 0), 0);
  const s = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': `${layer}: ${total} decisions in ${buckets.length} buckets of ${Math.round(bucketSeconds / 60)} minutes` });
  s.append(svg('title', {}, `Decisions at the ${layer} layer over time, stacked by outcome`));
  s.append(patternDefs(prefix));
  s.append(svg('line', { class: 'axis', x1: left, y1: H - bottom, x2: W - 5, y2: H - bottom }));
  s.append(svg('line', { class: 'axis', x1: left, y1: top, x2: left, y2: H - bottom }));
  s.append(svg('text', { x: left - 4, y: top + 4, 'text-anchor': 'end' }, String(max)));
  s.append(svg('text', { x: left - 4, y: H - bottom, 'text-anchor': 'end' }, '0'));
  buckets.forEach((b, i) => {
    const x = left + 5 + i * slot;
    let y = H - bottom;
    counts[i].forEach((c, k) => {
      if (!c) return;
      const h = c * scale;
      y -= h;
      const r = svg('rect', { x, y, width: bw, height: Math.max(h, 1), fill: `url(#${prefix}-${OUTCOMES[k]})`, stroke: '#222', 'stroke-width': 0.5 });
      r.append(svg('title', {}, `${fmtTime(b.start)}: ${c} ${OUTCOME_WORD[OUTCOMES[k]]}`));
      s.append(r);
    });
    const sum = counts[i].reduce((a, c) => a + c, 0);
    if (sum) s.append(svg('text', { x: x + bw / 2, y: y - 3, 'text-anchor': 'middle' }, String(sum)));
    if (i % Math.ceil(n / 8) === 0) {
      const t = new Date(b.start);
      const label = Number.isNaN(t.getTime()) ? '' : t.toISOString().slice(11, 16);
      s.append(svg('text', { x: x + bw / 2, y: H - 8, 'text-anchor': 'middle' }, label));
    }
  });
  return s;
}

async function renderOverview(m, _params, live) {
  m.append(el('h1', null, 'Overview'));
  const stats = await api.get('/v1/stats/decisions?since=24h&bucket=1h');
  if (!live()) return;
  const buckets = Array.isArray(stats.buckets) ? stats.buckets : [];
  const totals = stats.totals || {};
  const sec = el('section', { class: 'panel chart', 'aria-labelledby': 'chart-h' },
    el('h2', { id: 'chart-h' }, `Decisions per layer and outcome since ${fmtTime(stats.since)}, per ${Math.round(Number(stats.bucket_seconds || 3600) / 60)} minutes`),
    legend('lg'));
  const seen = LAYERS.concat(Object.keys(totals).filter((l) => !LAYERS.includes(l)));
  const rows = [];
  for (const layer of seen) {
    const t = totals[layer] || {};
    const sum = OUTCOMES.reduce((a, o) => a + Number(t[o] || 0), 0);
    rows.push(el('tr', null, el('th', { scope: 'row' }, layer), ...OUTCOMES.map((o) => td(String(Number(t[o] || 0)), 'num')), td(String(sum), 'num')));
    if (!sum) continue;
    sec.append(el('h3', null, `${layer === 'other' ? 'other (direct AuthZEN callers)' : layer}: ${sum} decisions`), layerChart(layer, buckets, Number(stats.bucket_seconds || 3600)));
  }
  if (stats.truncated) sec.append(el('p', { class: 'notice' }, 'The log is too long to count in full for this period: the counts cover its first records only.'));
  if (!sec.querySelector('svg[role="img"]')) sec.append(el('p', { class: 'muted' }, 'No decisions in this period.'));
  sec.append(table('Totals by layer and outcome', ['layer', { label: 'allow', num: true }, { label: 'deny', num: true }, { label: 'approval required', num: true }, { label: 'total', num: true }], rows));
  m.append(sec);

  const log = stats.log || {};
  const cp = log.checkpoint;
  const v = log.verified;
  const health = el('section', { class: 'panel', 'aria-labelledby': 'log-h' }, el('h2', { id: 'log-h' }, 'Decision log health'));
  const dl = el('dl', { class: 'kv' });
  const kv = (k, val) => dl.append(el('dt', null, k), el('dd', null, val));
  kv('records', String(log.records ?? '—'));
  kv('latest checkpoint', cp ? `tree size ${cp.tree_size}, signed ${fmtTime(cp.signed_at)}${cp.key_id ? ` by key ${cp.key_id}` : ''}` : 'none yet');
  if (cp) kv('checkpoint root', el('code', null, String(cp.root)));
  if (v) {
    kv('last verification', `${v.ok ? '✓ verified' : '✗ FAILED'} at ${fmtTime(v.at)}, tree size ${v.tree_size}`);
    if (v.checked) kv('what was checked', String(v.checked));
    if (!v.ok && v.error) kv('verification error', String(v.error));
  } else {
    kv('last verification', 'none recorded (run `arbiter log verify`)');
  }
  health.append(dl);
  m.append(health);
}

// --- agents -----------------------------------------------------------------------------

async function renderAgents(m, _params, live) {
  m.append(el('h1', null, 'Agents'));
  const result = el('div', { 'aria-live': 'polite' });
  m.append(result);
  const { agents } = await api.get('/v1/agents');
  if (!live()) return;
  if (!agents.length) {
    m.append(el('p', { class: 'muted' }, 'No agents are registered. Register one with `arbiter agent register`, or adopt a discovered identity.'));
    return;
  }
  const keyLists = await Promise.all(agents.slice(0, 50).map((a) => api.get(`/v1/agents/${enc(a.id)}/keys`).then((r) => r.keys, (e) => e)));
  if (!live()) return;
  const rerender = () => route();
  const act = async (what, path, method = 'POST') => {
    try {
      const r = method === 'DELETE' ? await api.del(path) : await api.post(path);
      return r;
    } catch (e) {
      clear(result).append(errorNotice(e));
      result.scrollIntoView({ block: 'nearest' });
      throw e;
    }
  };
  agents.forEach((a, i) => {
    const sec = el('section', { class: 'panel', 'aria-labelledby': `agent-${i}`, dataset: { agent: a.id } });
    sec.append(el('h2', { id: `agent-${i}` }, a.name && a.name !== a.id ? `${a.id} — ${a.name}` : a.id, ' ', stateBadgeForStatus(a.status)));
    const dl = el('dl', { class: 'kv' });
    const kv = (k, v) => dl.append(el('dt', null, k), el('dd', null, v));
    kv('owner', a.owner || '—');
    kv('environment', a.environment || '—');
    if (a.purpose) kv('purpose', a.purpose);
    kv('last seen', fmtTime(a.last_seen));
    if (a.attributes && Object.keys(a.attributes).length) kv('attributes', el('code', null, JSON.stringify(a.attributes)));
    sec.append(dl);
    if (isAdmin()) {
      const actions = el('div', { class: 'actions' });
      if (a.status === 'active') {
        actions.append(el('button', { type: 'button', class: 'danger', on: { click: async () => {
          const ok = await dialog({ title: `Suspend ${a.id}?`, content: el('p', null, `Every decision for ${a.id} is denied until it is activated again. Its keys are kept.`), confirm: 'Suspend', danger: true });
          if (!ok) return;
          await act('suspend', `/v1/agents/${enc(a.id)}/suspend`).then(() => { announce(`${a.id} suspended`); rerender(); }, () => {});
        } } }, 'Suspend'));
      } else if (a.status === 'suspended') {
        actions.append(el('button', { type: 'button', on: { click: async () => {
          const ok = await dialog({ title: `Activate ${a.id}?`, content: el('p', null, `Decisions for ${a.id} are evaluated by policy again.`), confirm: 'Activate' });
          if (!ok) return;
          await act('activate', `/v1/agents/${enc(a.id)}/activate`).then(() => { announce(`${a.id} activated`); rerender(); }, () => {});
        } } }, 'Activate'));
      }
      if (actions.childNodes.length) sec.append(actions);
    }
    const keys = keyLists[i];
    if (keys === undefined) {
      sec.append(el('p', { class: 'muted' }, 'Keys of the first 50 agents only.'));
    } else if (keys instanceof Error) {
      sec.append(errorNotice(keys));
    } else if (!keys.length) {
      sec.append(el('p', { class: 'muted' }, 'No keys.'));
    } else {
      const rows = keys.map((k) => {
        const cells = [
          el('th', { scope: 'row' }, el('code', null, k.id), k.name ? ` ${k.name}` : ''),
          td(stateBadgeForKey(k.state)),
          td(fmtTime(k.created)),
          td(k.expires ? fmtTime(k.expires) : 'never'),
          td(fmtTime(k.last_used)),
          td(k.revoked ? `${fmtTime(k.revoked)}${k.revoked_reason ? `: ${k.revoked_reason}` : ''}` : '—'),
        ];
        if (isAdmin()) {
          const acts = el('div', { class: 'actions' });
          if (!k.revoked) {
            acts.append(el('button', { type: 'button', dataset: { action: 'rotate', key: k.id }, on: { click: async () => {
              const vals = await dialog({
                title: `Rotate key ${k.id}?`,
                content: el('p', null, `A new key is issued to ${a.id}; the old one keeps working for the overlap window, then expires.`),
                fields: field('Overlap (e.g. 1h, 10m, 0s)', el('input', { name: 'overlap', value: '1h', required: true })),
                confirm: 'Rotate',
              });
              if (!vals) return;
              try {
                const r = await request('POST', `/v1/agents/${enc(a.id)}/keys/${enc(k.id)}/rotate`, { overlap: vals.overlap });
                showSecret(result, a.id, r);
              } catch (e) {
                clear(result).append(errorNotice(e));
              }
            } } }, 'Rotate'));
            acts.append(el('button', { type: 'button', class: 'danger', dataset: { action: 'revoke', key: k.id }, on: { click: async () => {
              const vals = await dialog({
                title: `Revoke key ${k.id}?`,
                content: el('p', null, `The key stops working at once: the next request ${a.id} makes with it is denied. This cannot be undone.`),
                fields: field('Reason (recorded in the audit trail)', el('input', { name: 'reason', value: 'revoked from the console' })),
                confirm: 'Revoke key',
                danger: true,
              });
              if (!vals) return;
              const reason = vals.reason ? `?reason=${enc(vals.reason)}` : '';
              await act('revoke', `/v1/agents/${enc(a.id)}/keys/${enc(k.id)}${reason}`, 'DELETE').then(() => {
                announce(`key ${k.id} revoked`);
                route().then(() => main().prepend(okNotice(`Key ${k.id} of ${a.id} revoked.`)));
              }, () => {});
            } } }, 'Revoke'));
          }
          cells.push(td(acts));
        }
        return el('tr', { dataset: { key: k.id } }, ...cells);
      });
      const headers = ['key', 'state', 'created', 'expires', 'last used', 'revoked'];
      if (isAdmin()) headers.push('actions');
      sec.append(table(`Keys of ${a.id}`, headers, rows));
    }
    m.append(sec);
  });
}

function stateBadgeForStatus(status) {
  const sym = { active: '●', suspended: '‖', retired: '○' }[status] || '·';
  return el('span', { class: `state state-${status === 'active' ? 'enforced' : status === 'suspended' ? 'coarse' : 'unknown'}` }, `${sym} ${status}`);
}

function stateBadgeForKey(state) {
  const sym = { active: '●', expiring: '◐', expired: '○', revoked: '✗' }[state] || '·';
  return el('span', { class: `state state-${state === 'active' ? 'enforced' : state === 'revoked' ? 'ungoverned' : 'coarse'}` }, `${sym} ${state}`);
}

function showSecret(container, agent, r) {
  const secret = String(r.key);
  clear(container).append(okNotice(
    el('p', null, `New key ${r.credential ? r.credential.id : ''} for ${agent}. `, el('strong', null, 'Shown once: '), r.notice || 'store it now.'),
    el('div', { class: 'secret' }, el('code', { id: 'new-secret' }, secret), copyButton(secret)),
    r.previous ? el('p', null, `The previous key ${r.previous.id} expires ${fmtTime(r.previous.expires)}.`) : null,
  ));
  container.querySelector('button').focus();
}

// --- discovered identities --------------------------------------------------------------

async function renderDiscovered(m, _params, live) {
  m.append(el('h1', null, 'Discovered identities'));
  m.append(el('p', { class: 'muted' }, 'Credentials and callers Arbiter saw but does not know: unknown keys presented to it, and callers found in access logs. Adopting one registers it as an agent.'));
  const result = el('div', { 'aria-live': 'polite' });
  m.append(result);
  const { discovered } = await api.get('/v1/discovered');
  if (!live()) return;
  if (!discovered.length) {
    m.append(el('p', { class: 'muted' }, 'Nothing discovered (or everything adopted).'));
    return;
  }
  const rows = discovered.map((d) => {
    const cells = [
      el('th', { scope: 'row' }, String(d.id)),
      td(d.kind),
      td(el('code', null, String(d.key)), 'wrap'),
      td(d.shape || '—'),
      td(fmtTime(d.first_seen)),
      td(fmtTime(d.last_seen)),
      td(String(d.count), 'num'),
      td((d.sources || []).join(', ') || '—'),
      td((d.enforcement_points || []).join(', ') || '—'),
    ];
    if (isAdmin()) {
      cells.push(td(el('button', { type: 'button', on: { click: async () => {
        const vals = await dialog({
          title: `Adopt discovered identity ${d.id}?`,
          content: el('p', null, 'Registers an agent for this identity. Its owner answers for it.'),
          fields: [
            field('Agent id', el('input', { name: 'id', required: true, pattern: '[A-Za-z0-9._\\-]+' })),
            field('Owner', el('input', { name: 'owner', required: true, type: 'email', placeholder: 'team@example.com' })),
            field('Name (optional)', el('input', { name: 'name' })),
            field('Purpose (optional)', el('input', { name: 'purpose' })),
            field('Environment', el('select', { name: 'environment' }, ['dev', 'staging', 'prod'].map((e) => el('option', { value: e }, e)))),
          ],
          confirm: 'Adopt',
        });
        if (!vals) return;
        const body = { id: vals.id, owner: vals.owner, environment: vals.environment };
        if (vals.name) body.name = vals.name;
        if (vals.purpose) body.purpose = vals.purpose;
        try {
          const agent = await api.post(`/v1/discovered/${enc(d.id)}/adopt`, body);
          await route();
          main().prepend(okNotice(`Adopted as agent ${agent.id}. Issue it a key on the `, el('a', { href: '#/agents' }, 'agents page'), ' or with `arbiter agent key issue`.'));
        } catch (e) {
          clear(result).append(errorNotice(e));
        }
      } } }, 'Adopt…')));
    }
    return el('tr', null, ...cells);
  });
  const headers = ['id', 'kind', 'key', 'shape', 'first seen', 'last seen', { label: 'count', num: true }, 'sources', 'enforcement points'];
  if (isAdmin()) headers.push('actions');
  m.append(table('Discovered identities', headers, rows));
}

/** The layer of an enforcement point, as the server's `layer_of` maps it. */
function layerOf(ep) {
  const kind = ep.includes(':') ? ep.slice(0, ep.indexOf(':')) : '';
  return { http: 'applications', exec: 'infrastructure', sql: 'data', mcp: 'ai', a2a: 'agents' }[kind] || 'other';
}

// --- decisions --------------------------------------------------------------------------

const SEARCH_FIELDS = ['agent', 'action', 'resource', 'outcome', 'layer', 'enforcement_point', 'since', 'until'];

function decisionRow(r, fresh) {
  const id = String(r.decision_id);
  const subject = r.subject || {};
  const agent = subject.agent_id || (subject.kind ? `${subject.kind}::${subject.id}` : '—');
  const res = r.resource ? `${r.resource.kind}::"${r.resource.id}"` : '—';
  return el('tr', { class: fresh ? 'fresh' : undefined, dataset: { decisionId: id } },
    td(fmtTime(r.ts_us ?? r.ts)),
    td(agent),
    td(String(r.action ?? '—'), 'wrap'),
    td(res, 'wrap'),
    td(outcomeBadge(r.outcome)),
    td(`${layerOf(String(r.enforcement_point ?? ''))} · ${r.enforcement_point ?? '—'}`),
    td(el('a', { href: `#/decisions/${enc(id)}`, 'aria-label': `details of decision ${id}` }, short(id, 13))));
}

async function renderDecisions(m, params, live) {
  m.append(el('h1', null, 'Decisions'));
  const inputs = {};
  const mk = (name, label, node) => {
    node.name = name;
    node.value = params.get(name) || '';
    inputs[name] = node;
    return field(label, node);
  };
  const form = el('form', { class: 'search panel', role: 'search', 'aria-label': 'Search decisions' },
    mk('agent', 'Agent', el('input', { placeholder: 'support-bot' })),
    mk('action', 'Action', el('input', { placeholder: 'call_tool' })),
    mk('resource', 'Resource id', el('input')),
    mk('outcome', 'Outcome', el('select', null, el('option', { value: '' }, 'any'), OUTCOMES.map((o) => el('option', { value: o }, OUTCOME_WORD[o])))),
    mk('layer', 'Layer', el('select', null, el('option', { value: '' }, 'any'), LAYERS.map((l) => el('option', { value: l }, l)))),
    mk('enforcement_point', 'Enforcement point', el('input', { placeholder: 'mcp:fs' })),
    mk('since', 'Since', el('input', { placeholder: '24h or 2026-01-01T00:00:00Z' })),
    mk('until', 'Until', el('input', { placeholder: 'RFC 3339 time' })),
    el('div', { class: 'actions' }, el('button', { type: 'submit', class: 'primary' }, 'Search'), el('button', { type: 'reset' }, 'Clear')));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const f of SEARCH_FIELDS) if (inputs[f].value.trim()) q.set(f, inputs[f].value.trim());
    const target = `#/decisions${q.toString() ? `?${q}` : ''}`;
    if (location.hash === target) route();
    else location.hash = target;
  });
  form.addEventListener('reset', (ev) => {
    ev.preventDefault();
    location.hash = '#/decisions';
  });
  m.append(form);

  const status = el('p', { class: 'live', role: 'status', id: 'live-status' }, 'Live: connecting…');
  m.append(status);
  const tbody = el('tbody', { id: 'decision-rows' });
  const t = el('table', null, el('caption', null, 'Decisions, newest first (new ones arrive live)'),
    el('thead', null, el('tr', null, ...['time (UTC)', 'agent', 'action', 'resource', 'outcome', 'layer / enforcement point', 'detail'].map((h) => el('th', { scope: 'col' }, h)))), tbody);
  m.append(el('div', { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-label': 'Decisions' }, t));
  const more = el('div');
  m.append(more);

  const q = new URLSearchParams();
  for (const f of SEARCH_FIELDS) if (params.get(f)) q.set(f, params.get(f));
  q.set('limit', String(PAGE_ROWS));
  const seen = new Set();
  // Live first, so nothing decided while the search runs is missed.
  const sq = new URLSearchParams();
  for (const f of ['agent', 'action', 'resource', 'outcome', 'layer', 'enforcement_point']) if (params.get(f)) sq.set(f, params.get(f));
  const es = new EventSource(`/v1/decisions/stream${sq.toString() ? `?${sq}` : ''}`, { withCredentials: true });
  stream = es;
  let arrived = 0;
  es.addEventListener('open', () => {
    status.textContent = '● Live: new decisions appear at the top';
  });
  es.addEventListener('error', (ev) => {
    // `event: error` from the server carries {code, message}; a lost connection carries nothing.
    if (ev.data) {
      let why = ev.data;
      try {
        const j = JSON.parse(ev.data);
        why = (j.error || j).message || ev.data;
      } catch {
        /* the text itself */
      }
      es.close();
      status.textContent = `○ Live stream stopped by the server: ${why}`;
      return;
    }
    status.textContent = es.readyState === EventSource.CLOSED ? '○ Live stream closed (reload the page to reconnect)' : '◌ Live stream interrupted, reconnecting…';
  });
  es.addEventListener('end', () => {
    // The session ended (expired, signed out, token revoked): the server says so, then stops.
    es.close();
    status.textContent = '○ Live stream ended with the session';
    api.get('/console/api/session').catch((e) => {
      if (e instanceof ApiError && e.status === 401) sessionEnded('Your session has ended (expired, signed out elsewhere, or its token was revoked). Sign in again.');
    });
  });
  es.addEventListener('decision', (ev) => {
    let r;
    try {
      r = JSON.parse(ev.data);
    } catch {
      return;
    }
    if (!r || typeof r !== 'object' || seen.has(String(r.decision_id))) return;
    seen.add(String(r.decision_id));
    tbody.prepend(decisionRow(r, true));
    while (tbody.rows.length > MAX_LIVE_ROWS) tbody.lastElementChild.remove();
    arrived++;
    if (arrived === 1 || arrived % 10 === 0) announce(`${arrived} new decision${arrived === 1 ? '' : 's'}`);
  });

  // The newest first, a page at a time, backwards through the log.
  q.set('order', 'newest');
  const page = await api.get(`/v1/decisions?${q}`);
  if (!live()) return;
  const append = (list) => {
    for (const r of list) {
      if (seen.has(String(r.decision_id))) continue;
      seen.add(String(r.decision_id));
      tbody.append(decisionRow(r, false));
    }
  };
  append(page.decisions || []);
  tbody.dataset.loaded = 'true';
  if (!tbody.rows.length) more.append(el('p', { class: 'muted', id: 'no-decisions' }, 'No decisions match. New ones appear here as they are made.'));
  let next = page.next_after;
  if (next !== null && next !== undefined) {
    const older = el('button', { type: 'button', id: 'older-decisions' }, 'Older decisions');
    older.addEventListener('click', async () => {
      older.disabled = true;
      q.set('before', String(next));
      try {
        const p = await api.get(`/v1/decisions?${q}`);
        if (!live()) return;
        append(p.decisions || []);
        next = p.next_after;
      } catch (e) {
        more.append(errorNotice(e));
        return;
      } finally {
        older.disabled = false;
      }
      if (next === null || next === undefined) {
        older.remove();
        more.append(el('p', { class: 'muted' }, 'That is the start of the log.'));
      }
    });
    more.append(older);
  }
}

// --- a decision -------------------------------------------------------------------------

async function renderDecision(m, id, live) {
  m.append(el('p', null, el('a', { href: '#/decisions' }, '← all decisions')));
  m.append(el('h1', null, `Decision ${id}`));
  const text = await api.get(`/v1/decisions/${enc(id)}`, { raw: true });
  if (!live()) return;
  let bundle;
  try {
    bundle = JSON.parse(text);
  } catch {
    throw new Error('the server answered something that is not JSON');
  }
  const r = bundle.record || {};
  const verdict = el('section', { class: 'panel', 'aria-labelledby': 'proof-h' }, el('h2', { id: 'proof-h' }, 'Inclusion proof, checked in this browser'));
  const verdictLine = el('p', { class: 'verdict', id: 'proof-verdict', role: 'status' }, 'checking the proof…');
  verdict.append(verdictLine);
  const dl = el('dl', { class: 'kv' });
  const kv = (k, v) => dl.append(el('dt', null, k), el('dd', null, v));
  kv('outcome', outcomeBadge(r.outcome));
  kv('time', fmtTime(r.ts_us));
  const s = r.subject || {};
  kv('subject', `${s.kind}::"${s.id}"${s.agent_id ? ` (agent ${s.agent_id})` : ''}${s.credential_id ? `, key ${s.credential_id}` : ''}`);
  if (Array.isArray(r.delegation) && r.delegation.length) kv('acting for', r.delegation.map((d) => `${d.kind}::"${d.id}"`).join(' → '));
  kv('action', String(r.action));
  kv('resource', r.resource ? `${r.resource.kind}::"${r.resource.id}"` : '—');
  kv('reason (shown to the caller)', String(r.reason_user ?? ''));
  kv('reason (for administrators)', String(r.reason_admin ?? ''));
  kv('determining policies', Array.isArray(r.determining_policies) && r.determining_policies.length ? r.determining_policies.join(', ') : 'none (default deny)');
  kv('policy version', el('code', null, String(r.policy_version)));
  kv('enforcement point', String(r.enforcement_point));
  if (Array.isArray(r.errors) && r.errors.length) kv('evaluation errors', r.errors.join('; '));
  if (Array.isArray(r.evaluations) && r.evaluations.length) kv('per principal', r.evaluations.map((e) => JSON.stringify(e)).join('\n'));
  kv('engine', `${r.engine} ${r.engine_version}, ${r.eval_us} µs`);
  kv('log position', `leaf ${bundle.leaf_index} of ${bundle.tree_size}, node ${r.node_id}`);
  if (Array.isArray(r.redacted_paths) && r.redacted_paths.length) kv('redacted', r.redacted_paths.join(', '));
  m.append(el('section', { class: 'panel', 'aria-labelledby': 'dec-h' }, el('h2', { id: 'dec-h' }, 'What was decided'), dl));
  m.append(verdict);
  m.append(el('section', { class: 'panel', 'aria-labelledby': 'req-h' }, el('h2', { id: 'req-h' }, 'Request context (as recorded)'), el('pre', null, JSON.stringify(r.context, null, 2))));
  m.append(el('p', null, el('a', { href: `/v1/decisions/${enc(id)}/evidence`, download: `evidence-${id}.json` }, 'Download the evidence bundle'), ' (for `arbiter evidence verify`).'));

  const v = await verifyBundle(text, id);
  if (!live()) return;
  verdictLine.textContent = v.ok ? '✓ proof verified' : `✗ proof NOT verified: ${v.failed}`;
  verdictLine.className = `verdict ${v.ok ? 'ok' : 'bad'}`;
  const ol = el('ol', { class: 'steps' });
  for (const st of v.steps) ol.append(el('li', { class: st.ok ? 'ok' : 'bad' }, `${st.ok ? '✓' : '✗'} ${st.step}${st.detail ? `: ${st.detail}` : ''}`));
  verdict.append(ol);
  if (!v.ok) verdict.append(el('p', null, el('strong', null, 'The steps after the one that failed were not run. '), 'Do not rely on what this page shows about the decision: the server\'s answer does not match its own signed log.'));
  if (bundle.answered_by && typeof bundle.answered_by === 'object') {
    verdict.append(el('p', null, `This decision is in the log of another node of the fleet (${bundle.answered_by.node_id}, ${bundle.answered_by.url}); the proof is against that node's checkpoint and key.`));
  }
  verdict.append(el('p', { class: 'muted' },
    `Checked here with WebCrypto: the record's leaf hash, its audit path to the checkpoint's root, and the checkpoint's Ed25519 signature. The key is the one this server names (id ${v.keyId || bundle.checkpoint?.key_id || '?'}); compare it with the key id you hold (\`arbiter log pubkey\`) for the proof to mean more than "this server is consistent".`));
}

// --- gap map ----------------------------------------------------------------------------

async function renderGap(m, params, live) {
  m.append(el('h1', null, 'Gap map'));
  m.append(el('p', { class: 'muted' }, 'For each agent and layer: where its actions are checked at request time (enforced), where access exists that only a credential scope controls (coarse), activity by unregistered identities (ungoverned), and what is neither declared nor observed (unknown).'));
  const gap = await api.get('/v1/gap');
  if (!live()) return;
  const layers = Array.isArray(gap.layers) ? gap.layers : LAYERS;
  const summary = gap.summary || {};
  m.append(el('ul', { id: 'gap-summary', class: 'legend', 'aria-label': 'Cells by state' }, ['enforced', 'coarse', 'ungoverned', 'unknown'].map((s) => el('li', null, el('strong', null, String(summary[s] ?? 0)), ' × ', stateBadge(s)))));
  const cells = new Map();
  for (const c of gap.cells || []) cells.set(`${c.agent}\u0000${c.layer}`, c);
  const rows = (gap.rows || []).map((row) => {
    const name = row.registered ? `${row.agent}${row.status ? ` (${row.status})` : ''}` : `${row.agent} (not registered)`;
    const trs = [el('th', { scope: 'row' }, name)];
    for (const layer of layers) {
      const c = cells.get(`${row.agent}\u0000${layer}`) || { state: 'unknown', findings: [] };
      const state = STATE_SYMBOL[c.state] ? c.state : 'unknown';
      const label = `${STATE_SYMBOL[state]} ${state}`;
      let inner;
      const desc = `${row.agent}, ${layer}: ${state}`;
      if (state === 'enforced') {
        inner = el('a', { href: `#/decisions?agent=${enc(row.agent)}&layer=${enc(layer)}`, 'aria-label': `${desc}: see its decisions` }, label);
      } else if (c.findings && c.findings.length) {
        inner = el('a', { href: `#/gap?focus=${enc(row.agent)}/${enc(layer)}`, 'aria-label': `${desc}: see the findings` }, label);
      } else if (state === 'ungoverned') {
        inner = el('a', { href: '#/discovered', 'aria-label': `${desc}: see discovered identities` }, label);
      } else {
        inner = el('span', { class: 'cellword' }, label);
      }
      const extra = [];
      if (c.enforced) extra.push(el('small', null, `${c.enforced.decisions} decisions, ${Math.round(Number(c.enforced.deny_rate || 0) * 100)}% denied`));
      if (c.declared && c.declared.length) extra.push(el('small', null, ` declared: ${c.declared.join(', ')}`));
      trs.push(el('td', { class: `cell-${state}`, dataset: { agent: row.agent, layer, state } }, inner, ...extra));
    }
    return el('tr', null, ...trs);
  });
  m.append(table(`Agents × layers (since ${fmtTime(gap.since)}, generated ${fmtTime(gap.generated_at)})`, ['agent', ...layers], rows, { class: 'heatmap' }));
  const lg = el('ul', { class: 'legend', 'aria-label': 'What the states mean' });
  for (const s of ['enforced', 'coarse', 'ungoverned', 'unknown']) lg.append(el('li', null, stateBadge(s), ` ${STATE_HELP[s]}`));
  m.append(lg);

  const findings = el('section', { class: 'panel', 'aria-labelledby': 'findings-h' }, el('h2', { id: 'findings-h' }, 'Findings and next steps'));
  const list = el('ul');
  let focusTarget = null;
  const focus = params.get('focus');
  for (const c of gap.cells || []) {
    if (!c.findings || !c.findings.length) continue;
    const key = `${c.agent}/${c.layer}`;
    const li = el('li', { tabindex: '-1', id: `finding-${key.replace(/[^A-Za-z0-9_-]/g, '_')}`, dataset: { agent: c.agent, layer: c.layer } },
      el('strong', null, `${c.agent} · ${c.layer}: `), stateBadge(c.state));
    const inner = el('ul');
    for (const f of c.findings) {
      inner.append(el('li', null,
        stateBadge(f.state), ' ',
        `${f.system ? `${f.system} ` : ''}${f.where ? `in ${f.where}` : ''}${f.source ? ` (from ${f.source})` : ''}: ${f.detail || ''}`,
        f.next_step ? el('div', null, el('strong', null, 'Next step: '), el('code', null, f.next_step)) : null));
    }
    li.append(inner);
    if (c.next_step && !c.findings.some((f) => f.next_step === c.next_step)) li.append(el('div', null, el('strong', null, 'Next step for this cell: '), el('code', null, c.next_step)));
    list.append(li);
    if (focus === key) focusTarget = li;
  }
  if (list.childNodes.length) findings.append(list);
  else findings.append(el('p', { class: 'muted' }, 'No findings.'));
  m.append(findings);
  if (Array.isArray(gap.warnings) && gap.warnings.length) {
    m.append(el('section', { class: 'panel', 'aria-labelledby': 'warn-h' }, el('h2', { id: 'warn-h' }, 'Warnings'), el('ul', null, gap.warnings.map((w) => el('li', null, typeof w === 'string' ? w : JSON.stringify(w))))));
  }
  if (focusTarget) {
    setTimeout(() => {
      focusTarget.focus();
      focusTarget.scrollIntoView({ block: 'center' });
    }, 0);
  }
}

// --- tool pins --------------------------------------------------------------------------

async function renderToolPins(m, _params, live) {
  m.append(el('h1', null, 'Tool pins'));
  m.append(el('p', { class: 'muted' }, 'Each MCP tool\'s definition is pinned on first sight. A changed definition is refused until an administrator approves the exact new definition by its hash.'));
  const result = el('div', { 'aria-live': 'polite' });
  m.append(result);
  const { pins } = await api.get('/v1/tool-pins');
  if (!live()) return;
  if (!pins || !pins.length) {
    m.append(el('p', { class: 'muted' }, 'No tools pinned yet.'));
    return;
  }
  const rows = pins.map((p) => {
    const changed = p.pending_hash !== null && p.pending_hash !== undefined;
    const cells = [
      el('th', { scope: 'row' }, String(p.server)),
      td(String(p.tool)),
      td(el('span', { class: `state state-${changed ? 'coarse' : 'enforced'}` }, `${changed ? '◐' : '●'} ${p.state}`)),
      td(el('code', null, String(p.hash ?? '—')), 'wrap'),
      td(changed ? [el('code', null, String(p.pending_hash)), p.pending_since ? ` since ${fmtTime(p.pending_since)}` : ''] : '—', 'wrap'),
      td(`${fmtTime(p.pinned_at)}${p.pinned_by ? ` by ${p.pinned_by}` : ''}`),
    ];
    if (isAdmin()) {
      cells.push(td(changed ? el('button', { type: 'button', on: { click: async () => {
        const input = el('input', { name: 'hash', required: true, autocomplete: 'off', spellcheck: 'false', class: 'mono' });
        const vals = await dialog({
          title: `Approve the changed definition of ${p.server}/${p.tool}?`,
          content: [el('p', null, 'Review the changed definition, then type or paste the hash you reviewed. Approval pins exactly this definition.'),
            el('details', null, el('summary', null, 'Pinned definition'), el('pre', null, JSON.stringify(p.definition ?? null, null, 2))),
            el('details', { open: true }, el('summary', null, 'Changed definition'), el('pre', null, JSON.stringify(p.pending_definition ?? null, null, 2))),
            el('p', null, 'Hash of the changed definition: ', el('code', { id: 'pending-hash' }, String(p.pending_hash)))],
          fields: field('Reviewed hash', input),
          confirm: 'Approve this definition',
          validate: (v) => (v.hash.trim() === String(p.pending_hash) ? null : 'The hash you entered is not the hash of the changed definition.'),
        });
        if (!vals) return;
        try {
          await api.post(`/v1/tool-pins/${enc(p.server)}/${enc(p.tool)}/approve`, { hash: vals.hash.trim() });
          await route();
          main().prepend(okNotice(`Approved ${p.server}/${p.tool} at ${vals.hash.trim()}.`));
        } catch (e) {
          clear(result).append(errorNotice(e));
        }
      } } }, 'Approve…') : '—'));
    }
    return el('tr', { dataset: { server: p.server, tool: p.tool, state: p.state } }, ...cells);
  });
  const headers = ['server', 'tool', 'state', 'pinned hash', 'changed to', 'pinned'];
  if (isAdmin()) headers.push('actions');
  m.append(table('Pinned MCP tools', headers, rows));
}

// --- policy versions --------------------------------------------------------------------

async function renderPolicy(m, params, live) {
  m.append(el('h1', null, 'Policy versions'));
  const result = el('div', { 'aria-live': 'polite' });
  m.append(result);
  const data = await api.get('/v1/policy/versions');
  if (!live()) return;
  m.append(el('p', null, `Active: `, el('code', null, data.active ? short(data.active, 20) : 'none (policies from files)'), `. Approvals required: ${data.approvals_required}.`));
  const versions = data.versions || [];
  const post = async (path, body, what) => {
    try {
      await request('POST', path, body);
      await route();
      main().prepend(okNotice(what));
    } catch (e) {
      clear(result).append(errorNotice(e));
    }
  };
  const rows = versions.map((v) => {
    const cells = [
      el('th', { scope: 'row' }, el('code', { title: v.version }, short(v.version, 20))),
      td(String(v.standing)),
      td(String(v.author)),
      td(String(v.message)),
      td(fmtTime(v.proposed_at)),
      td(`${v.tests?.passed ?? 0} passed, ${v.tests?.failed ?? 0} failed`),
      td(`${(v.approvals || []).map((a) => a.approver).join(', ') || 'none'} (${(v.approvals || []).length}/${v.approvals_required})`),
    ];
    if (isAdmin()) {
      const acts = el('div', { class: 'actions' });
      const approvedBy = (v.approvals || []).map((a) => a.approver);
      // An author cannot approve their own version, nor anyone twice; only an approved
      // version can be activated (the server checks all of this again).
      const mayApprove = (v.standing === 'proposed' || v.standing === 'approved') && v.author !== session.name && !approvedBy.includes(session.name);
      if (mayApprove) acts.append(el('button', { type: 'button', dataset: { action: 'approve' }, on: { click: async () => {
        if (await dialog({ title: `Approve version ${short(v.version, 20)}?`, content: el('p', null, `You approve "${v.message}" by ${v.author}. An author cannot approve their own version.`), confirm: 'Approve' })) {
          post(`/v1/policy/versions/${enc(v.version)}/approve`, undefined, `Approved ${short(v.version, 20)}.`);
        }
      } } }, 'Approve'));
      if (v.standing === 'approved') acts.append(el('button', { type: 'button', class: 'danger', dataset: { action: 'activate' }, on: { click: async () => {
        if (await dialog({ title: `Activate version ${short(v.version, 20)}?`, content: el('p', null, 'Every following decision uses this version.'), confirm: 'Activate', danger: true })) {
          post(`/v1/policy/versions/${enc(v.version)}/activate`, undefined, `Activated ${short(v.version, 20)}.`);
        }
      } } }, 'Activate'));
      cells.push(td(acts.childNodes.length ? acts : '—'));
    }
    return el('tr', { dataset: { version: v.version } }, ...cells);
  });
  const headers = ['version', 'standing', 'author', 'message', 'proposed', 'tests', 'approvals'];
  if (isAdmin()) headers.push('actions');
  if (versions.length) m.append(table('Policy versions, newest first', headers, rows));
  else m.append(el('p', { class: 'muted' }, 'No governed versions. Propose one with `arbiter policy propose` (docs/governance.md).'));

  if (versions.length >= 2) {
    const opt = (sel) => versions.map((v) => el('option', { value: v.version, selected: v.version === sel }, `${short(v.version, 16)} — ${short(v.message, 40)}`));
    const from = el('select', { name: 'from' }, opt(params.get('from') || versions[1].version));
    const to = el('select', { name: 'to' }, opt(params.get('to') || versions[0].version));
    const form = el('form', { class: 'search panel', 'aria-label': 'Compare two versions' }, field('From', from), field('To', to), el('div', { class: 'actions' }, el('button', { type: 'submit' }, 'Show the difference')));
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      location.hash = `#/policy?from=${enc(from.value)}&to=${enc(to.value)}`;
    });
    m.append(el('h2', null, 'Difference'), form);
    if (params.get('from') && params.get('to')) {
      const d = await api.get(`/v1/policy/diff?from=${enc(params.get('from'))}&to=${enc(params.get('to'))}`);
      if (!live()) return;
      const sec = el('section', { class: 'panel', 'aria-label': 'Difference', id: 'policy-diff' });
      const added = d.added && typeof d.added === 'object' ? d.added : {};
      const removed = d.removed && typeof d.removed === 'object' ? d.removed : {};
      const changed = d.changed && typeof d.changed === 'object' ? d.changed : {};
      sec.append(el('h3', null, `From ${short(d.from, 20)} to ${short(d.to, 20)}`));
      sec.append(el('p', null, `${Object.keys(added).length} added, ${Object.keys(removed).length} removed, ${Object.keys(changed).length} changed. Schema changed: ${d.schema_changed ? 'yes' : 'no'}. Entities changed: ${d.entities_changed ? 'yes' : 'no'}.`));
      for (const [pid, text] of Object.entries(added)) sec.append(el('h3', null, `Added: ${pid}`), el('pre', null, String(text)));
      for (const [pid, text] of Object.entries(removed)) sec.append(el('h3', null, `Removed: ${pid}`), el('pre', null, String(text)));
      for (const [pid, ch] of Object.entries(changed)) {
        sec.append(el('h3', null, `Changed: ${pid}`), el('div', { class: 'grid2' },
          el('div', null, el('strong', null, 'before'), el('pre', null, typeof ch.old === 'string' ? ch.old : JSON.stringify(ch.old, null, 2))),
          el('div', null, el('strong', null, 'after'), el('pre', null, typeof ch.new === 'string' ? ch.new : JSON.stringify(ch.new, null, 2)))));
      }
      m.append(sec);
    }
  }
}

// --- approvals --------------------------------------------------------------------------

async function renderApprovals(m, params, live) {
  m.append(el('h1', null, 'Approvals queue'));
  const which = params.get('state') || 'pending';
  const sel = el('select', { name: 'state' }, ['pending', 'approved', 'denied', 'used', 'all'].map((s) => el('option', { value: s, selected: s === which }, s)));
  const form = el('form', { class: 'search panel', 'aria-label': 'Which approvals' }, field('Show', sel), el('div', { class: 'actions' }, el('button', { type: 'submit' }, 'Show')));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    location.hash = `#/approvals?state=${enc(sel.value)}`;
  });
  m.append(form);
  const result = el('div', { 'aria-live': 'polite' });
  m.append(result);
  const { approvals } = await api.get(`/v1/approvals?state=${enc(which)}`);
  if (!live()) return;
  if (!approvals.length) {
    m.append(el('p', { class: 'muted' }, `No ${which === 'all' ? '' : `${which} `}approvals.`));
    return;
  }
  const decide = async (a, approve) => {
    const vals = await dialog({
      title: `${approve ? 'Approve' : 'Deny'} ${a.agent_id}: ${a.action} on ${a.resource}?`,
      content: el('p', null, approve ? 'The agent may then retry this exact request once.' : 'The request stays denied.'),
      fields: field('Reason (required, recorded)', el('input', { name: 'reason', required: true })),
      confirm: approve ? 'Approve' : 'Deny',
      danger: !approve,
    });
    if (!vals) return;
    try {
      await api.post(`/v1/approvals/${enc(a.id)}/${approve ? 'approve' : 'deny'}`, { reason: vals.reason });
      await route();
      main().prepend(okNotice(`${approve ? 'Approved' : 'Denied'} ${a.id}.`));
    } catch (e) {
      clear(result).append(errorNotice(e));
    }
  };
  const rows = approvals.map((a) => {
    const cells = [
      el('th', { scope: 'row' }, el('code', null, short(a.id, 14))),
      td(String(a.agent_id)),
      td(String(a.action)),
      td(String(a.resource), 'wrap'),
      td(String(a.state)),
      td(fmtTime(a.created_us)),
      td(fmtTime(a.expires_us)),
      td(el('a', { href: `#/decisions/${enc(a.decision_id)}` }, short(a.decision_id, 13))),
      td(a.decided_by ? `${a.decided_by}: ${a.reason || ''}` : '—'),
    ];
    if (isAdmin()) {
      cells.push(td(a.state === 'pending'
        ? el('div', { class: 'actions' },
          el('button', { type: 'button', on: { click: () => decide(a, true) } }, 'Approve…'),
          el('button', { type: 'button', class: 'danger', on: { click: () => decide(a, false) } }, 'Deny…'))
        : '—'));
    }
    return el('tr', { dataset: { approval: a.id, state: a.state } }, ...cells);
  });
  const headers = ['id', 'agent', 'action', 'resource', 'state', 'asked', 'expires', 'decision', 'decided'];
  if (isAdmin()) headers.push('actions');
  m.append(table('Approvals', headers, rows));
}

// --- start ------------------------------------------------------------------------------

async function start() {
  document.getElementById('logout').addEventListener('click', logout);
  // The skip link must not change the route (the hash is the router's).
  document.querySelector('.skip-link').addEventListener('click', (ev) => {
    ev.preventDefault();
    main().focus();
    main().scrollIntoView();
  });
  const toggle = document.getElementById('menu-toggle');
  toggle.addEventListener('click', () => {
    const open = document.body.classList.toggle('nav-open');
    toggle.setAttribute('aria-expanded', String(open));
    if (open) document.querySelector('#site-nav a').focus();
  });
  document.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape' && document.body.classList.contains('nav-open')) {
      document.body.classList.remove('nav-open');
      toggle.setAttribute('aria-expanded', 'false');
      toggle.focus();
    }
  });
  window.addEventListener('hashchange', () => {
    if (session) route();
  });
  try {
    startSession(await request('GET', '/console/api/session'));
  } catch (e) {
    setChrome(false);
    renderLogin(e instanceof ApiError && e.status === 401 ? null : `The server could not be asked about the session: ${e.message}`);
    return;
  }
  if (!location.hash || location.hash === '#/login') history.replaceState(null, '', '#/overview');
  // On a fresh load focus stays at the top (Tab reaches the skip link first).
  route(false);
}

start();
