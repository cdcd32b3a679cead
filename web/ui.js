// DOM helpers shared by the pages. Every piece of data reaches the page as
// a text node or an attribute value set through the DOM, never as HTML, so
// a module or dataset named `<script>` shows as text.

/** Builds an element: h('a', {href: '#/', class: 'x', onclick: f}, 'text', child). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on')) el.addEventListener(name.slice(2), value);
    else if (name === 'class') el.className = value;
    else if (name === 'dataset') Object.assign(el.dataset, value);
    else if (name in el && typeof value !== 'string') el[name] = value;
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

/** Replaces the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function fmtBytes(n) {
  if (n === undefined || n === null) return '';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

export function fmtNum(n) {
  return n === undefined || n === null ? '' : Number(n).toLocaleString('en-US');
}

export function fmtDuration(ms) {
  if (ms === undefined || ms === null || Number.isNaN(ms)) return '';
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function fmtTime(ms) {
  if (!ms) return '';
  const d = new Date(ms);
  const pad = (x) => String(x).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function fmtAgo(ms) {
  if (!ms) return '';
  const d = Date.now() - ms;
  if (d < 1500) return 'just now';
  return `${fmtDuration(d)} ago`;
}

/** A state badge; the class picks its colour. */
export function badge(text, kind = text) {
  return h('span', { class: `badge s-${kind}` }, text.replaceAll('_', ' '));
}

/** A progress bar for one phase: completed (and failed, in progress) out of total. */
export function phaseBar(label, p) {
  const total = p.total || 0;
  const pct = (n) => (total ? (100 * n) / total : 0);
  const done = pct(p.completed);
  const bar = h('div', {
    class: 'bar',
    role: 'progressbar',
    'aria-label': `${label} progress`,
    'aria-valuemin': '0',
    'aria-valuemax': '100',
    'aria-valuenow': String(Math.floor(done)),
  });
  const seg = (cls, w) => {
    const s = h('div', { class: `seg ${cls}` });
    s.style.width = `${w}%`;
    return s;
  };
  bar.append(seg('done', done), seg('failed', pct(p.failed)), seg('running', pct(p.in_progress)));
  const text = `${p.completed}/${total}${p.in_progress ? `, ${p.in_progress} running` : ''}${p.failed ? `, ${p.failed} failed` : ''}`;
  return h('div', { class: 'phase', dataset: { phase: label } },
    h('span', { class: 'phase-label' }, label),
    bar,
    h('span', { class: 'phase-text' }, `${Math.floor(done)}% `, h('small', {}, `(${text})`)));
}

/** Whole-job progress in percent: maps and reduces weigh the same per task. */
export function jobPercent(job) {
  const total = job.map.total + job.reduce.total;
  if (job.state === 'succeeded') return 100;
  return total ? Math.floor((100 * (job.map.completed + job.reduce.completed)) / total) : 0;
}

export function miniBar(job) {
  const pct = jobPercent(job);
  const bar = h('div', { class: 'bar mini', title: `${pct}%` });
  const s = h('div', { class: `seg ${job.state === 'failed' ? 'failed' : 'done'}` });
  s.style.width = `${pct}%`;
  bar.append(s);
  return h('div', { class: 'mini-wrap' }, bar, h('span', { class: 'phase-text' }, `${pct}%`));
}

export function jobDuration(job) {
  return (job.finished_at ?? Date.now()) - job.created_at;
}

export function isFinished(state) {
  return state === 'succeeded' || state === 'failed' || state === 'cancelled';
}

export function errorBox(title, message) {
  return h('div', { class: 'error-box', role: 'alert' }, h('strong', {}, title), h('p', {}, message));
}

/**
 * A sortable, paginated table. `columns`: {key, label, value(row) for sorting,
 * render(row) -> node or text, num, cls}. `setRows` keeps the sort and page, so a
 * live refresh does not move the reader.
 */
export class Table {
  constructor({ columns, pageSize = 50, sort = null, empty = 'Nothing yet.', label = '' }) {
    this.columns = columns;
    this.pageSize = pageSize;
    this.sort = sort; // {key, dir: 1 | -1}
    this.page = 0;
    this.rows = [];
    this.empty = empty;
    this.table = h('table', { class: 'data', 'aria-label': label });
    this.pager = h('div', { class: 'pager' });
    this.el = h('div', { class: 'table-wrap' }, this.table, this.pager);
  }

  setRows(rows) {
    this.rows = rows;
    this.render();
  }

  sorted() {
    if (!this.sort) return this.rows;
    const col = this.columns.find((c) => c.key === this.sort.key);
    const value = col.value ?? ((r) => r[col.key]);
    const dir = this.sort.dir;
    return this.rows
      .map((row, i) => ({ row, v: value(row), i }))
      .sort((a, b) => {
        if (a.v === b.v) return a.i - b.i;
        if (a.v === undefined || a.v === null) return 1;
        if (b.v === undefined || b.v === null) return -1;
        return (a.v < b.v ? -1 : 1) * dir;
      })
      .map((x) => x.row);
  }

  render() {
    const pages = Math.max(1, Math.ceil(this.rows.length / this.pageSize));
    this.page = Math.min(this.page, pages - 1);
    const head = h('tr', {}, this.columns.map((c) => {
      const sorted = this.sort?.key === c.key;
      const th = h('th', {
        class: c.num ? 'num' : '',
        'aria-sort': sorted ? (this.sort.dir > 0 ? 'ascending' : 'descending') : 'none',
      });
      if (c.sortable === false) th.append(c.label);
      else {
        th.append(h('button', {
          class: 'sort',
          type: 'button',
          onclick: () => {
            this.sort = { key: c.key, dir: sorted ? -this.sort.dir : (c.num ? -1 : 1) };
            this.page = 0;
            this.render();
          },
        }, c.label, sorted ? (this.sort.dir > 0 ? ' ▲' : ' ▼') : ''));
      }
      return th;
    }));
    const start = this.page * this.pageSize;
    const visible = this.sorted().slice(start, start + this.pageSize);
    const body = h('tbody');
    for (const row of visible) {
      body.append(h('tr', {}, this.columns.map((c) => h('td', { class: `${c.num ? 'num' : ''} ${c.cls ?? ''}`.trim() },
        c.render ? c.render(row) : String(row[c.key] ?? '')))));
    }
    if (!this.rows.length) {
      body.append(h('tr', {}, h('td', { class: 'empty', colspan: String(this.columns.length) }, this.empty)));
    }
    fill(this.table, h('thead', {}, head), body);
    const go = (p) => () => {
      this.page = p;
      this.render();
    };
    fill(this.pager,
      h('button', { type: 'button', disabled: this.page === 0, onclick: go(this.page - 1) }, '‹ Prev'),
      h('span', { class: 'pager-text' },
        `Page ${this.page + 1} of ${pages} · ${fmtNum(this.rows.length)} rows`),
      h('button', { type: 'button', disabled: this.page >= pages - 1, onclick: go(this.page + 1) }, 'Next ›'));
    this.pager.hidden = this.rows.length <= this.pageSize;
  }
}
