// The jobs list: every job the coordinator returns (newest 1,000), filtered
// by state and paginated in the browser.

import { api } from './api.js';
import {
  Table, badge, fill, fmtBytes, fmtDuration, fmtTime, h, isFinished, jobDuration, miniBar,
} from './ui.js';

const STATES = ['mapping', 'reducing', 'succeeded', 'failed', 'cancelled'];

/** sha256 -> module name, for showing jobs by name. */
export async function moduleNames(signal) {
  const names = new Map();
  for (const m of await api('/modules', { signal })) names.set(m.sha256, m.name);
  return names;
}

function phaseCell(p) {
  return `${p.completed}/${p.total}${p.failed ? ` (${p.failed} failed)` : ''}`;
}

/** Columns of a job table. */
export function jobColumns(names) {
  return [
    {
      key: 'id', label: 'Job', num: true, value: (j) => j.id,
      render: (j) => h('a', { href: `#/jobs/${j.id}` }, `#${j.id}`),
    },
    {
      key: 'name', label: 'Name / module',
      value: (j) => j.spec.name ?? names.get(j.spec.module) ?? j.spec.module,
      render: (j) => h('span', {},
        j.spec.name ? h('span', {}, j.spec.name, ' ') : null,
        h('span', { class: j.spec.name ? 'muted' : '' }, names.get(j.spec.module) ?? j.spec.module.slice(0, 12))),
    },
    { key: 'state', label: 'State', render: (j) => badge(j.state) },
    { key: 'progress', label: 'Progress', value: (j) => j.map.completed + j.reduce.completed, render: miniBar },
    { key: 'map', label: 'Map', num: true, value: (j) => j.map.completed, render: (j) => phaseCell(j.map) },
    { key: 'reduce', label: 'Reduce', num: true, value: (j) => j.reduce.completed, render: (j) => phaseCell(j.reduce) },
    {
      key: 'input', label: 'Input read', num: true,
      value: (j) => j.counters['map input bytes'] ?? 0,
      render: (j) => fmtBytes(j.counters['map input bytes'] ?? 0),
    },
    { key: 'created', label: 'Submitted', value: (j) => j.created_at, render: (j) => fmtTime(j.created_at), cls: 'nowrap' },
    {
      key: 'duration', label: 'Duration', num: true, value: jobDuration,
      render: (j) => `${fmtDuration(jobDuration(j))}${isFinished(j.state) ? '' : ' …'}`,
    },
  ];
}

export default async function jobsPage(main, { query }, ctx) {
  document.title = 'Jobs · Quern';
  let filter = query.get('state') ?? '';
  const names = await moduleNames(ctx.signal);
  const table = new Table({
    columns: jobColumns(names), pageSize: 50, label: 'Jobs',
    sort: { key: 'id', dir: -1 }, empty: 'No jobs match.',
  });
  let all = [];
  const counts = h('span', { class: 'muted' });
  const select = h('select', {
    id: 'state-filter',
    onchange: () => {
      filter = select.value;
      history.replaceState(null, '', filter ? `#/jobs?state=${filter}` : '#/jobs');
      table.page = 0;
      show();
    },
  },
  h('option', { value: '' }, 'all states'),
  STATES.map((s) => h('option', { value: s, selected: s === filter }, s)));
  function show() {
    const rows = filter ? all.filter((j) => j.state === filter) : all;
    fill(counts, `${rows.length} of ${all.length} jobs`);
    table.setRows(rows);
  }
  let loadedAt = 0;
  async function load() {
    all = await api('/jobs?limit=1000', { signal: ctx.signal });
    loadedAt = Date.now();
    show();
  }
  await load();
  fill(main,
    h('div', { class: 'page-head' },
      h('h1', {}, 'Jobs'),
      h('label', { class: 'inline' }, 'State ', select), counts,
      h('a', { class: 'button primary', href: '#/submit' }, 'Submit a job')),
    table.el);
  // Every 3 s while a job runs; every 15 s (for new jobs) when all are done.
  ctx.every(3000, async () => {
    if (all.some((j) => !isFinished(j.state)) || Date.now() - loadedAt > 15_000) await load();
  });
}
