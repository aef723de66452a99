// segdb console. Everything it shows comes from POST /api/sql (the caller's role applies); no
// request leaves the machine, no inline script (the page's CSP forbids it), charts are SVG.
'use strict';

const S = { csrf: null, user: null, role: null };
const SVGNS = 'http://www.w3.org/2000/svg';

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'text') e.textContent = v;
    else if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function sv(tag, attrs, ...children) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

// A SQL string literal.
const q = (s) => "'" + String(s).replace(/'/g, "''") + "'";

class ApiError extends Error {
  constructor(info, status) {
    super(info.message);
    this.info = info;
    this.status = status;
  }
}

async function post(path, body) {
  const r = await fetch(path, {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': S.csrf || '' },
    body: JSON.stringify(body),
  });
  const j = await r.json();
  if (r.status === 401) {
    S.csrf = null;
    showLogin('Your session ended: log in again.');
    throw new ApiError(j.error, r.status);
  }
  if (!r.ok) throw new ApiError(j.error, r.status);
  return j;
}

const sql = (text) => post('/api/sql', { sql: text });

function main() {
  return document.getElementById('main');
}

function page(title, ...children) {
  const m = main();
  m.replaceChildren(el('h1', { text: title }), ...children);
  document.title = title + ' · segdb';
  m.focus();
}

function errorBox(e) {
  return el('p', { class: 'error', role: 'alert', text: e && e.message ? e.message : String(e) });
}

function isNumType(t) {
  return /^(U?Int|Float|Decimal)/.test(t);
}

function resultTable(r, opts) {
  opts = opts || {};
  const head = el('tr', {}, r.columns.map((c) => el('th', { scope: 'col', class: isNumType(c.type) ? 'num' : null, text: c.name })));
  const body = r.rows.map((row) =>
    el('tr', {}, row.map((v, i) => {
      const c = r.columns[i];
      const cell = el('td', { class: isNumType(c.type) ? 'num' : null });
      if (opts.link && opts.link[c.name] && v !== null) {
        cell.append(el('a', { href: opts.link[c.name](v), text: v }));
      } else {
        cell.textContent = v === null ? 'NULL' : typeof v === 'object' ? JSON.stringify(v) : String(v);
      }
      return cell;
    })),
  );
  return el('table', { 'aria-label': opts.label || 'result' }, el('thead', {}, head), el('tbody', {}, body));
}

// ---- charts (SVG) ----

function niceMax(v) {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

// A line chart of points [{x: label, y: number}] with labelled axes.
function lineChart(points, o) {
  const W = 640, H = 240, L = 56, R = 16, T = 28, B = 48;
  const ymax = niceMax(Math.max(1, ...points.map((p) => p.y)));
  const xs = (i) => L + (points.length <= 1 ? (W - L - R) / 2 : (i * (W - L - R)) / (points.length - 1));
  const ys = (y) => T + (H - T - B) * (1 - y / ymax);
  const svg = sv('svg', { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: 'img', 'aria-label': o.title, class: 'chart' });
  svg.append(sv('title', {}, o.title));
  svg.append(sv('text', { x: L, y: 16, 'font-weight': '700' }, o.title));
  for (const f of [0, 0.5, 1]) {
    const y = ys(ymax * f);
    svg.append(sv('line', { x1: L, x2: W - R, y1: y, y2: y, stroke: '#d1d5db' }));
    svg.append(sv('text', { x: L - 6, y: y + 4, 'text-anchor': 'end' }, String(Math.round(ymax * f))));
  }
  svg.append(sv('line', { x1: L, x2: L, y1: T, y2: H - B, stroke: '#1a1a1a' }));
  svg.append(sv('line', { x1: L, x2: W - R, y1: H - B, y2: H - B, stroke: '#1a1a1a' }));
  if (points.length) {
    svg.append(sv('polyline', {
      points: points.map((p, i) => `${xs(i)},${ys(p.y)}`).join(' '),
      fill: 'none', stroke: '#1d4ed8', 'stroke-width': 2,
    }));
    points.forEach((p, i) => {
      const c = sv('circle', { cx: xs(i), cy: ys(p.y), r: 3, fill: '#1d4ed8' });
      c.append(sv('title', {}, `${p.x}: ${p.y}`));
      svg.append(c);
    });
    const first = points[0].x, last = points[points.length - 1].x;
    svg.append(sv('text', { x: L, y: H - B + 16, 'text-anchor': 'start' }, first));
    if (points.length > 1) svg.append(sv('text', { x: W - R, y: H - B + 16, 'text-anchor': 'end' }, last));
  }
  svg.append(sv('text', { x: (L + W - R) / 2, y: H - 8, 'text-anchor': 'middle' }, o.xLabel));
  svg.append(sv('text', { x: 14, y: (T + H - B) / 2, 'text-anchor': 'middle', transform: `rotate(-90 14 ${(T + H - B) / 2})` }, o.yLabel));
  return svg;
}

// Horizontal bars [{label, value}] with a value axis.
function barChart(bars, o) {
  const W = 640, L = 170, R = 60, row = 22, T = 28, B = 34;
  const H = T + B + row * Math.max(1, bars.length);
  const vmax = niceMax(Math.max(1, ...bars.map((b) => b.value)));
  const svg = sv('svg', { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: 'img', 'aria-label': o.title, class: 'chart' });
  svg.append(sv('title', {}, o.title));
  svg.append(sv('text', { x: 0, y: 16, 'font-weight': '700' }, o.title));
  bars.forEach((b, i) => {
    const y = T + i * row;
    const w = ((W - L - R) * b.value) / vmax;
    const label = String(b.label === null ? 'NULL' : b.label);
    svg.append(sv('text', { x: L - 6, y: y + 15, 'text-anchor': 'end' }, label.length > 24 ? label.slice(0, 23) + '…' : label));
    const rect = sv('rect', { x: L, y: y + 3, width: Math.max(1, w), height: row - 6, fill: b.color || '#1d4ed8' });
    rect.append(sv('title', {}, `${label}: ${b.value}`));
    svg.append(rect);
    svg.append(sv('text', { x: L + w + 4, y: y + 15 }, String(b.value)));
  });
  svg.append(sv('line', { x1: L, x2: L, y1: T, y2: H - B, stroke: '#1a1a1a' }));
  svg.append(sv('text', { x: (L + W - R) / 2, y: H - 8, 'text-anchor': 'middle' }, o.xLabel));
  return svg;
}

// The difference in conversion rate (target − holdout) with its 95 % interval (unpooled
// standard error), around zero; the p-value comes from the pooled z-test (DESIGN §11).
function liftChart(rateT, rateH, lo, hi, p) {
  const W = 640, H = 120, L = 40, R = 40;
  if (lo === null || hi === null) return el('p', { text: 'No interval: a group is empty.' });
  const min = Math.min(0, lo), max = Math.max(0, hi);
  const span = max - min || 1;
  const x = (v) => L + ((v - min) * (W - L - R)) / span;
  const title = 'Difference in conversion rate, target − holdout, with its 95 % interval (unpooled standard error)';
  const svg = sv('svg', { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: 'img', 'aria-label': title });
  svg.append(sv('title', {}, title));
  svg.append(sv('text', { x: 0, y: 14, 'font-weight': '700' }, 'Target − holdout conversion rate, 95 % interval (unpooled SE)'));
  svg.append(sv('line', { x1: x(0), x2: x(0), y1: 26, y2: 84, stroke: '#1a1a1a', 'stroke-dasharray': '3 3' }));
  svg.append(sv('text', { x: x(0), y: 98, 'text-anchor': 'middle' }, '0'));
  svg.append(sv('rect', { x: x(lo), y: 46, width: Math.max(1, x(hi) - x(lo)), height: 18, fill: '#bfdbfe', stroke: '#1d4ed8' }));
  const d = rateT - rateH;
  svg.append(sv('circle', { cx: x(d), cy: 55, r: 5, fill: '#1d4ed8' }));
  const pct = (v) => (100 * v).toFixed(2) + ' pts';
  svg.append(sv('text', { x: x(lo), y: 40, 'text-anchor': 'middle' }, pct(lo)));
  svg.append(sv('text', { x: x(hi), y: 80, 'text-anchor': 'middle' }, pct(hi)));
  svg.append(sv('text', { x: W / 2, y: 114, 'text-anchor': 'middle' },
    `difference ${pct(d)}; p = ${p === null ? 'n/a' : Number(p).toPrecision(2)} (pooled two-sided z-test)`));
  return svg;
}

function sparkline(values, label) {
  const W = 110, H = 26;
  const max = Math.max(1, ...values);
  const svg = sv('svg', { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: 'img', 'aria-label': label });
  svg.append(sv('title', {}, label));
  if (values.length > 1) {
    svg.append(sv('polyline', {
      points: values.map((v, i) => `${(i * (W - 4)) / (values.length - 1) + 2},${H - 2 - ((H - 4) * v) / max}`).join(' '),
      fill: 'none', stroke: '#1d4ed8', 'stroke-width': 1.5,
    }));
  }
  return svg;
}

// ---- pages ----

function showLogin(message) {
  document.getElementById('nav').hidden = true;
  document.getElementById('logout').hidden = true;
  document.getElementById('who').textContent = '';
  const user = el('input', { id: 'user', name: 'user', autocomplete: 'username', required: true });
  const password = el('input', { id: 'password', name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const status = el('p', { class: 'error', role: 'alert', text: message || '' });
  const form = el('form', { class: 'login' },
    el('label', { for: 'user', text: 'User' }), user,
    el('label', { for: 'password', text: 'Password' }), password,
    el('p', {}, el('button', { type: 'submit', class: 'primary', text: 'Log in' })),
    status);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    status.textContent = '';
    const r = await fetch('/api/login', {
      method: 'POST', credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ user: user.value, password: password.value }),
    });
    const j = await r.json();
    if (!r.ok) {
      status.textContent = j.error.message;
      password.value = '';
      password.focus();
      return;
    }
    loggedIn(j);
    if (!location.hash || location.hash === '#/login') location.hash = '#/segments';
    else route();
  });
  page('Log in', form);
  user.focus();
}

function loggedIn(j) {
  S.csrf = j.csrf;
  S.user = j.user;
  S.role = j.role;
  document.getElementById('nav').hidden = false;
  document.getElementById('logout').hidden = false;
  document.getElementById('who').textContent = `${j.user} (${j.role})`;
}

async function segmentsPage() {
  page('Segments', el('p', { class: 'muted', text: 'Loading…' }));
  let r;
  try {
    r = await sql('SHOW SEGMENTS');
  } catch (e) {
    return page('Segments', errorBox(e));
  }
  const col = (name) => r.columns.findIndex((c) => c.name === name);
  const [iName, iMat, iRefresh, iVersion, iAt] = ['name', 'materialized', 'refresh', 'version', 'refreshed_at'].map(col);
  const rows = await Promise.all(r.rows.map(async (row) => {
    const name = row[iName];
    let size = '', spark = null;
    try {
      size = (await sql(`SELECT segment_size(${q(name)})`)).rows[0][0];
    } catch (e) {
      size = 'error: ' + e.message;
    }
    if (row[iMat]) {
      try {
        const h = await sql(`SELECT size FROM segment_history(${q(name)}) ORDER BY version`);
        spark = sparkline(h.rows.map((x) => Number(x[0])), `size of ${name} over its versions`);
      } catch (e) { /* no history yet */ }
    }
    return el('tr', {},
      el('td', {}, el('a', { href: '#/segment/' + encodeURIComponent(name), text: name })),
      el('td', { class: 'num', text: String(size) }),
      el('td', {}, spark),
      el('td', { text: row[iMat] ? (row[iRefresh] || 'manual') : 'not materialised' }),
      el('td', { text: row[iAt] ? `v${row[iVersion]} at ${row[iAt]}` : '' }));
  }));
  const table = el('table', { 'aria-label': 'segments' },
    el('thead', {}, el('tr', {}, ['Segment', 'Size', 'History', 'Refresh', 'Last refresh'].map((h, i) => el('th', { scope: 'col', class: i === 1 ? 'num' : null, text: h })))),
    el('tbody', {}, rows));
  page('Segments', rows.length ? table : el('p', { text: 'No segments yet: write one in the Editor.' }));
}

async function segmentPage(name) {
  page('Segment ' + name, el('p', { class: 'muted', text: 'Loading…' }));
  let all;
  try {
    all = await sql('SHOW SEGMENTS');
  } catch (e) {
    return page('Segment ' + name, errorBox(e));
  }
  const c = (n) => all.columns.findIndex((x) => x.name === n);
  const def = all.rows.find((r) => r[c('name')] === name);
  if (!def) return page('Segment ' + name, errorBox(`segment '${name}' does not exist`));
  const parts = [];
  const size = await sql(`SELECT segment_size(${q(name)})`).then((r) => r.rows[0][0]).catch((e) => 'error: ' + e.message);
  parts.push(el('div', { class: 'card' },
    el('p', {}, 'Size now: ', el('span', { class: 'size', id: 'segment-size', text: String(size) })),
    el('p', {}, 'Definition: ', el('code', { text: def[c('definition')] })),
    def[c('purposes')] ? el('p', { text: 'Purposes: ' + def[c('purposes')] }) : null,
    el('p', { text: def[c('materialized')] ? `Materialised, refresh ${def[c('refresh')] || 'manual'}` : 'Not materialised (evaluated when asked)' })));

  if (def[c('materialized')]) {
    parts.push(el('h2', { text: 'Size over time' }));
    try {
      const h = await sql(`SELECT version, as_of, size, entered, exited FROM segment_history(${q(name)}) ORDER BY as_of, version`);
      parts.push(lineChart(h.rows.map((r) => ({ x: String(r[1]).slice(0, 16).replace('T', ' '), y: Number(r[2]) })),
        { title: `Members of ${name} by version`, xLabel: 'as of (UTC)', yLabel: 'members' }));
      parts.push(el('h2', { text: 'Entered and exited per version' }));
      parts.push(resultTable(h, { label: 'entered and exited per version' }));
    } catch (e) {
      parts.push(errorBox(e));
    }
  }

  parts.push(el('h2', { text: 'Plan (EXPLAIN)' }));
  try {
    // A materialised segment explains its snapshot; its definition's tree, with each node's
    // size now, comes from a live evaluation (the session setting is restored at once).
    const lines = [];
    if (def[c('materialized')]) {
      const snap = await sql(`EXPLAIN SEGMENT ${name}`);
      lines.push(...snap.rows.map((r) => r[0]), '', 'definition, evaluated now:');
      // The session's own value is put back afterwards (not the default).
      const before = (await sql('SHOW segdb.materialized')).rows[0];
      await sql("SET segdb.materialized = 'live'");
      try {
        const live = await sql(`EXPLAIN SEGMENT ${name}`);
        lines.push(...live.rows.map((r) => r[0]));
      } finally {
        await sql(`SET segdb.materialized = ${q(before[before.length - 1])}`);
      }
    } else {
      const ex = await sql(`EXPLAIN SEGMENT ${name}`);
      lines.push(...ex.rows.map((r) => r[0]));
    }
    parts.push(el('pre', { class: 'tree', id: 'explain', tabindex: '0', 'aria-label': 'segment plan', text: lines.join('\n') }));
  } catch (e) {
    parts.push(errorBox(e));
  }

  // Overlap with chosen segments.
  const others = all.rows.map((r) => r[c('name')]).filter((n) => n !== name);
  const boxes = others.map((n, i) => {
    const id = 'ov-' + i;
    return el('span', {}, el('input', { type: 'checkbox', id, value: n, checked: i < 3 }), ' ', el('label', { for: id, class: 'inline', text: n }), ' ');
  });
  const overlapOut = el('div', { id: 'overlap' });
  const runOverlap = async () => {
    const chosen = [name, ...boxes.map((b) => b.querySelector('input')).filter((x) => x.checked).map((x) => x.value)];
    if (chosen.length < 2) return overlapOut.replaceChildren(el('p', { text: 'Choose at least one other segment.' }));
    try {
      const r = await sql(`SELECT a, b, size_a, size_b, both, round(jaccard, 3) AS jaccard FROM segment_overlap(${chosen.map(q).join(', ')})`);
      const key = (a, b) => a + '\u0000' + b;
      const cells = new Map(r.rows.map((x) => [key(x[0], x[1]), x]));
      const sizes = new Map(r.rows.flatMap((x) => [[x[0], x[2]], [x[1], x[3]]]));
      const head = el('tr', {}, el('th', { scope: 'col', text: '' }), chosen.map((n) => el('th', { scope: 'col', text: n })));
      const body = chosen.map((a) => el('tr', {}, el('th', { scope: 'row', text: a }), chosen.map((b) => {
        if (a === b) return el('td', { class: 'num', text: String(sizes.get(a) ?? '') });
        const x = cells.get(key(a, b)) || cells.get(key(b, a));
        return el('td', { class: 'num', text: x ? `${x[4]} (J ${x[5]})` : '' });
      })));
      overlapOut.replaceChildren(el('table', { 'aria-label': 'overlap: members in both, and Jaccard' }, el('thead', {}, head), el('tbody', {}, body)),
        el('p', { class: 'muted', text: 'Diagonal: size. Elsewhere: members in both, and the Jaccard index.' }));
    } catch (e) {
      overlapOut.replaceChildren(errorBox(e));
    }
  };
  parts.push(el('h2', { text: 'Overlap' }), el('fieldset', {}, el('legend', { text: 'Compare with' }), boxes),
    el('p', {}, el('button', { type: 'button', id: 'overlap-run', onclick: runOverlap, text: 'Compare' })), overlapOut);

  // Breakdown by a profile column.
  const breakdownOut = el('div', { id: 'breakdown' });
  const colSelect = el('select', { id: 'breakdown-col' });
  try {
    const p = await sql('SELECT * FROM profiles LIMIT 0');
    for (const col of p.columns.map((x) => x.name).filter((n) => !['user_id', 'uid', 'updated_at'].includes(n) && !n.endsWith('_sha256'))) {
      colSelect.append(el('option', { value: col, text: col }));
    }
  } catch (e) { /* no profiles table yet */ }
  const runBreakdown = async () => {
    const col = colSelect.value;
    if (!col) return;
    try {
      const r = await sql(`SELECT "${col.replace(/"/g, '""')}" AS value, count(*) AS members FROM profiles WHERE in_segment(${q(name)}, user_id) GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 20`);
      breakdownOut.replaceChildren(barChart(r.rows.map((x) => ({ label: x[0], value: Number(x[1]) })), { title: `Members of ${name} by ${col}`, xLabel: 'members' }));
    } catch (e) {
      breakdownOut.replaceChildren(errorBox(e));
    }
  };
  parts.push(el('h2', { text: 'Breakdown' }),
    el('div', { class: 'row' }, el('div', {}, el('label', { for: 'breakdown-col', text: 'Profile column' }), colSelect),
      el('button', { type: 'button', id: 'breakdown-run', onclick: runBreakdown, text: 'Break down' })), breakdownOut);

  // Holdout lift, for a segment with a holdout group.
  if (def[c('materialized')]) {
    let holdout = 0;
    try {
      holdout = Number((await sql(`SELECT coalesce(max(holdout), 0) FROM segment_history(${q(name)})`)).rows[0][0]);
    } catch (e) { /* no history */ }
    if (holdout > 0) {
      const evSelect = el('select', { id: 'lift-event' });
      try {
        const evs = await sql('SELECT DISTINCT event FROM events ORDER BY 1 LIMIT 200');
        for (const [ev] of evs.rows) evSelect.append(el('option', { value: ev, text: ev }));
      } catch (e) { /* no events */ }
      const days = el('input', { id: 'lift-days', type: 'number', min: '1', value: '14' });
      const liftOut = el('div', { id: 'lift' });
      const runLift = async () => {
        try {
          const r = await sql(`SELECT * FROM segment_lift(${q(name)}, ${q(evSelect.value)}, ${Number(days.value) || 14})`);
          const col = (n) => r.columns.findIndex((x) => x.name === n);
          const t = r.rows[0];
          liftOut.replaceChildren(resultTable(r, { label: 'lift' }), liftChart(t[col('rate')], r.rows[1][col('rate')], t[col('ci_low')], t[col('ci_high')], t[col('p_value')]));
        } catch (e) {
          liftOut.replaceChildren(errorBox(e));
        }
      };
      parts.push(el('h2', { text: 'Holdout lift' }),
        el('div', { class: 'row' },
          el('div', {}, el('label', { for: 'lift-event', text: 'Conversion event' }), evSelect),
          el('div', {}, el('label', { for: 'lift-days', text: 'Days after the snapshot' }), days),
          el('button', { type: 'button', id: 'lift-run', onclick: runLift, text: 'Measure' })),
        liftOut);
    }
  }

  // What sets the members apart (by lift).
  try {
    const rec = await sql(`SELECT feature, in_segment, overall, round(jaccard, 3) AS jaccard, round(lift, 2) AS lift FROM segment_recommendations(${q(name)}, 10)`);
    parts.push(el('h2', { text: 'What sets its members apart' }),
      rec.rows.length
        ? el('div', { id: 'recommendations' }, barChart(rec.rows.map((x) => ({ label: x[0], value: Number(x[4]) })), { title: `Lift of the top features of ${name} (share among members / share among all)`, xLabel: 'lift' }),
          resultTable(rec, { label: 'recommendations' }))
        : el('p', { text: 'No feature has 30 members yet.' }));
  } catch (e) {
    parts.push(el('h2', { text: 'What sets its members apart' }), errorBox(e));
  }

  // Exports.
  try {
    const ex = await sql('SHOW EXPORTS');
    const si = ex.columns.findIndex((x) => x.name === 'segment');
    const mine = { columns: ex.columns, rows: ex.rows.filter((r) => r[si] === name) };
    parts.push(el('h2', { text: 'Exports' }), mine.rows.length ? resultTable(mine, { label: 'exports' }) : el('p', { text: 'No standing exports.' }));
  } catch (e) {
    parts.push(el('h2', { text: 'Exports' }), errorBox(e));
  }

  // Why is this user in it.
  const idInput = el('input', { id: 'why-id', autocomplete: 'off' });
  const whyOut = el('div', { id: 'why' });
  const runWhy = async (ev) => {
    ev.preventDefault();
    try {
      const r = await sql(`EXPLAIN SEGMENT ${name} FOR USER ${q(idInput.value)}`);
      const ni = r.columns.findIndex((x) => x.name === 'node');
      const hi = r.columns.findIndex((x) => x.name === 'holds');
      const zi = r.columns.findIndex((x) => x.name === 'size');
      whyOut.replaceChildren(el('table', { 'aria-label': 'why' },
        el('thead', {}, el('tr', {}, ['Node', 'Holds', 'Size'].map((h) => el('th', { scope: 'col', text: h })))),
        el('tbody', {}, r.rows.map((x) => el('tr', {},
          el('td', { class: 'node', text: x[ni] }),
          el('td', { class: x[hi] ? 'holds-true' : 'holds-false', text: x[hi] ? 'true' : 'false' }),
          el('td', { class: 'num', text: String(x[zi]) }))))));
    } catch (e) {
      whyOut.replaceChildren(errorBox(e));
    }
  };
  parts.push(el('h2', { text: 'Why is this user in it?' }),
    el('form', { id: 'why-form', onsubmit: runWhy }, el('label', { for: 'why-id', text: 'User id (raw or pseudonym)' }), idInput, ' ',
      el('button', { type: 'submit', text: 'Explain' })), whyOut);

  page('Segment ' + name, ...parts);
  runOverlap();
  runBreakdown();
}

function editorPage() {
  const text = el('textarea', { id: 'expr', spellcheck: 'false', 'aria-describedby': 'expr-status' });
  text.value = "DID 'purchase' IN THE LAST 30 DAYS";
  const status = el('div', { id: 'expr-status', 'aria-live': 'polite' });
  const name = el('input', { id: 'seg-name', autocomplete: 'off' });
  const mat = el('input', { id: 'seg-mat', type: 'checkbox' });
  const schedule = el('input', { id: 'seg-schedule', placeholder: "CRON '0 6 * * *'", autocomplete: 'off' });
  const saveStatus = el('p', { id: 'save-status', role: 'status' });
  let timer = null, seq = 0;
  const size = async () => {
    const mine = ++seq;
    const expr = text.value;
    if (!expr.trim()) return status.replaceChildren();
    try {
      const r = await sql(`SELECT segment_size_of(${q(expr)})`);
      if (mine !== seq) return;
      status.replaceChildren(el('p', {}, 'Size: ', el('span', { class: 'size', id: 'expr-size', text: String(r.rows[0][0]) })));
    } catch (e) {
      if (mine !== seq) return;
      const info = e.info || {};
      const out = [];
      if (info.line && info.column) {
        const line = expr.split('\n')[info.line - 1] || '';
        out.push(el('pre', { class: 'marker', id: 'expr-marker', 'aria-hidden': 'true', text: line + '\n' + ' '.repeat(Math.max(0, info.column - 1)) + '^' }));
      }
      out.push(el('p', { class: 'error', id: 'expr-error', text: e.message }));
      status.replaceChildren(...out);
    }
  };
  text.addEventListener('input', () => {
    clearTimeout(timer);
    timer = setTimeout(size, 200);
  });
  const save = async (ev) => {
    ev.preventDefault();
    const n = name.value.trim();
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(n)) {
      saveStatus.className = 'error';
      saveStatus.textContent = 'A name is letters, digits and _ (not starting with a digit).';
      return;
    }
    const refresh = mat.checked && schedule.value.trim() ? ` REFRESH ${schedule.value.trim()}` : '';
    const stmt = `CREATE OR REPLACE ${mat.checked ? 'MATERIALIZED ' : ''}SEGMENT ${n}${refresh} AS ${text.value}`;
    try {
      await sql(stmt);
      location.hash = '#/segment/' + encodeURIComponent(n);
    } catch (e) {
      saveStatus.className = 'error';
      saveStatus.textContent = e.message;
    }
  };
  page('Editor',
    el('label', { for: 'expr', text: 'Segment expression' }), text, status,
    el('form', { id: 'save-form', onsubmit: save },
      el('h2', { text: 'Save' }),
      el('label', { for: 'seg-name', text: 'Name' }), name,
      el('p', {}, mat, ' ', el('label', { for: 'seg-mat', class: 'inline', text: 'Materialised (versions, history, exports)' })),
      el('label', { for: 'seg-schedule', text: 'Refresh (for a materialised segment): CRON …, EVERY …, LIVE' }), schedule,
      el('p', {}, el('button', { type: 'submit', class: 'primary', text: 'Save segment' })),
      saveStatus));
  size();
  text.focus();
}

function csvOf(r) {
  const cell = (v, text) => {
    let s = v === null ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v);
    // Text that a spreadsheet would run as a formula (collected data is anyone's) gets a
    // leading apostrophe; numbers are left as they are.
    if (text && /^[=+\-@\t\r]/.test(s)) s = "'" + s;
    return /[",\n\r]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  };
  const text = r.columns.map((c) => !isNumType(c.type));
  return [r.columns.map((c) => cell(c.name, true)).join(','), ...r.rows.map((row) => row.map((v, i) => cell(v, text[i])).join(','))].join('\n') + '\n';
}

function sqlPage() {
  const text = el('textarea', { id: 'sql', spellcheck: 'false' });
  text.value = 'SELECT event, count(*) AS events FROM events GROUP BY 1 ORDER BY 2 DESC';
  const out = el('div', { id: 'sql-out', class: 'grid' });
  const dl = el('a', { id: 'csv', href: '#', hidden: true, download: 'segdb-result.csv', text: 'Download CSV' });
  const run = async () => {
    out.replaceChildren(el('p', { class: 'muted', text: 'Running…' }));
    try {
      const r = await sql(text.value);
      out.replaceChildren(resultTable(r, { label: 'query result' }),
        el('p', { class: 'muted', text: `${r.rows.length} rows${r.truncated ? ' (truncated: the server sends at most this many)' : ''}` }));
      if (dl.href.startsWith('blob:')) URL.revokeObjectURL(dl.href);
      dl.href = URL.createObjectURL(new Blob([csvOf(r)], { type: 'text/csv' }));
      dl.hidden = false;
    } catch (e) {
      out.replaceChildren(errorBox(e));
      dl.hidden = true;
    }
  };
  text.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) {
      ev.preventDefault();
      run();
    }
  });
  page('SQL',
    el('label', { for: 'sql', text: 'Statement (Ctrl+Enter runs it)' }), text,
    el('p', {}, el('button', { type: 'button', id: 'sql-run', class: 'primary', onclick: run, text: 'Run' }), ' ', dl),
    out);
  text.focus();
}

let tailTimer = null;

async function sourcesPage() {
  const out = el('div', { id: 'sources' });
  const created = el('div', { id: 'source-created', role: 'status' });
  const tail = el('div', { id: 'tail' });
  const rejects = el('div', { id: 'rejects' });
  const name = el('input', { id: 'source-name', autocomplete: 'off' });
  const keyNote = (r) => {
    const k = r.columns.findIndex((x) => x.name === 'write_key');
    const n = r.columns.findIndex((x) => x.name === 'name');
    return el('div', { class: 'card' },
      el('p', {}, 'Write key of ', el('strong', { text: r.rows[0][n] }), ' (shown only now; only its hash is stored):'),
      el('p', {}, el('code', { id: 'write-key', text: r.rows[0][k] })));
  };
  const list = async () => {
    try {
      const r = await sql('SHOW SOURCES');
      const ni = r.columns.findIndex((x) => x.name === 'name');
      const table = resultTable(r, { label: 'sources' });
      // A rotate button per source.
      table.querySelector('thead tr').append(el('th', { scope: 'col', text: 'Key' }));
      table.querySelectorAll('tbody tr').forEach((tr, i) => {
        const src = r.rows[i][ni];
        tr.append(el('td', {}, el('button', {
          type: 'button', class: 'rotate', 'aria-label': `rotate the write key of ${src}`, text: 'Rotate',
          onclick: async () => {
            try {
              created.replaceChildren(keyNote(await sql(`ALTER SOURCE ${src} ROTATE KEY`)));
              list();
            } catch (e) {
              created.replaceChildren(errorBox(e));
            }
          },
        })));
      });
      out.replaceChildren(r.rows.length ? table : el('p', { text: 'No sources yet.' }));
    } catch (e) {
      out.replaceChildren(errorBox(e));
    }
  };
  const create = async (ev) => {
    ev.preventDefault();
    try {
      created.replaceChildren(keyNote(await sql(`CREATE SOURCE ${name.value.trim()}`)));
      name.value = '';
      list();
    } catch (e) {
      created.replaceChildren(errorBox(e));
    }
  };
  const refresh = async () => {
    if (location.hash !== '#/sources') return clearInterval(tailTimer);
    try {
      const ev = await sql(
        'SELECT received_at, source, event, user_id FROM events WHERE source IS NOT NULL ORDER BY received_at DESC LIMIT 20');
      tail.replaceChildren(resultTable(ev, { label: 'last events received' }));
    } catch (e) {
      tail.replaceChildren(el('p', { class: 'muted', text: 'No collected events yet.' }));
    }
    try {
      const rj = await sql('SELECT * FROM collector_rejects() ORDER BY at DESC LIMIT 20');
      rejects.replaceChildren(rj.rows.length ? resultTable(rj, { label: 'last rejects' }) : el('p', { text: 'No rejects.' }));
    } catch (e) {
      rejects.replaceChildren(errorBox(e));
    }
  };
  page('Sources',
    el('p', { class: 'muted', text: 'Write keys of the collector (POST /v1/… on this listener), and what arrives: ids pseudonymised, refreshed every 2 s.' }),
    out,
    el('form', { id: 'source-form', onsubmit: create },
      el('label', { for: 'source-name', text: 'New source name' }), name, ' ',
      el('button', { type: 'submit', text: 'Create source' })),
    created,
    el('h2', { text: 'Last events received' }), tail,
    el('h2', { text: 'Last rejects' }), rejects);
  await list();
  await refresh();
  clearInterval(tailTimer);
  tailTimer = setInterval(refresh, 2000);
}

async function route() {
  if (!S.csrf) {
    const r = await fetch('/api/me', { credentials: 'same-origin' });
    const j = await r.json();
    if (!r.ok) return showLogin();
    loggedIn(j);
  }
  const h = location.hash || '#/segments';
  if (h.startsWith('#/segment/')) return segmentPage(decodeURIComponent(h.slice('#/segment/'.length)));
  if (h === '#/editor') return editorPage();
  if (h === '#/sql') return sqlPage();
  if (h === '#/sources') return sourcesPage();
  return segmentsPage();
}

document.addEventListener('DOMContentLoaded', () => {
  document.getElementById('logout').addEventListener('click', async () => {
    try {
      await post('/api/logout', {});
    } catch (e) { /* already out */ }
    S.csrf = null;
    location.hash = '#/login';
    showLogin('Logged out.');
  });
  window.addEventListener('hashchange', route);
  route();
});
