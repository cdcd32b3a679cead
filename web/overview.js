// The overview: workers, running and recent jobs, and cluster totals,
// refreshed every two seconds.

import { api } from './api.js';
import { Table, badge, fill, fmtAgo, fmtNum, h, isFinished } from './ui.js';
import { jobColumns, moduleNames } from './jobs.js';

// Job totals cover the newest jobs only, so that the overview stays cheap
// to refresh on a coordinator with a long history.
const RECENT = 200;

function stat(label, value, cls = '') {
  return h('div', { class: `stat ${cls}` }, h('div', { class: 'stat-value' }, value), h('div', { class: 'stat-label' }, label));
}

export default async function overviewPage(main, _params, ctx) {
  document.title = 'Overview · Quern';
  const names = await moduleNames(ctx.signal);
  const workers = new Table({
    label: 'Workers', pageSize: 25, empty: 'No workers have registered.',
    columns: [
      { key: 'id', label: 'Worker', cls: 'nowrap' },
      { key: 'address', label: 'Address' },
      { key: 'state', label: 'State', render: (w) => badge(w.state) },
      { key: 'slots', label: 'Slots', num: true },
      { key: 'running', label: 'Running tasks', num: true },
      { key: 'last_heartbeat', label: 'Last heartbeat', render: (w) => fmtAgo(w.last_heartbeat) },
    ],
  });
  const running = new Table({
    label: 'Running jobs', columns: jobColumns(names), pageSize: 10,
    sort: { key: 'id', dir: -1 }, empty: 'No job is running.',
  });
  const recent = new Table({
    label: 'Recent jobs', columns: jobColumns(names), pageSize: 10,
    sort: { key: 'id', dir: -1 }, empty: 'No job has finished yet.',
  });
  const totals = h('div', { class: 'stats' });
  const totalsNote = h('p', { class: 'muted small' });

  async function load() {
    const [ws, jobs] = await Promise.all([
      api('/workers', { signal: ctx.signal }),
      api(`/jobs?limit=${RECENT}`, { signal: ctx.signal }),
    ]);
    for (const j of jobs) {
      if (!names.has(j.spec.module)) {
        for (const m of await api('/modules', { signal: ctx.signal })) names.set(m.sha256, m.name);
        break;
      }
    }
    workers.setRows(ws);
    running.setRows(jobs.filter((j) => !isFinished(j.state)));
    recent.setRows(jobs.filter((j) => isFinished(j.state)).slice(0, 10));
    const alive = ws.filter((w) => w.state === 'alive');
    const count = (s) => jobs.filter((j) => j.state === s).length;
    fill(totals,
      stat('workers alive', `${alive.length}/${ws.length}`, alive.length ? '' : 'warn'),
      stat('task slots', fmtNum(alive.reduce((n, w) => n + w.slots, 0))),
      stat('tasks running', fmtNum(ws.reduce((n, w) => n + w.running, 0))),
      stat('jobs running', fmtNum(jobs.length - count('succeeded') - count('failed') - count('cancelled'))),
      stat('jobs succeeded', fmtNum(count('succeeded'))),
      stat('jobs failed', fmtNum(count('failed')), count('failed') ? 'bad' : ''));
    fill(totalsNote, jobs.length === RECENT ? `Job totals are over the newest ${RECENT} jobs.` : '');
  }
  await load();
  fill(main,
    h('div', { class: 'page-head' }, h('h1', {}, 'Overview'),
      h('a', { class: 'button primary', href: '#/submit' }, 'Submit a job')),
    totals, totalsNote,
    h('h2', {}, 'Workers'), workers.el,
    h('h2', {}, 'Running jobs'), running.el,
    h('h2', {}, 'Recently finished'), recent.el,
    h('p', {}, h('a', { href: '#/jobs' }, 'All jobs →')));
  ctx.every(2000, load);
}
