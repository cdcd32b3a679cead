// The job page's tables: tasks (joined with their attempts for worker,
// timings and record counts) and attempts.

import { Table, badge, fill, fmtBytes, fmtDuration, fmtNum, fmtTime, h } from './ui.js';

const IO = {
  map: ['map input bytes', 'map input records', 'map output records', 'map output bytes'],
  reduce: ['reduce shuffle bytes', 'reduce input records', 'reduce output records', 'reduce output bytes'],
};

/** One row per task, with the attempt that speaks for it: the accepted one, else the latest. */
export function taskRows(tasks, attempts, now = Date.now()) {
  const byTask = new Map();
  for (const a of attempts) {
    if (!byTask.has(a.task)) byTask.set(a.task, []);
    byTask.get(a.task).push(a);
  }
  return tasks.map((t) => {
    const list = byTask.get(t.id) ?? [];
    const attempt = list.find((a) => a.outcome === 'succeeded') ?? list[list.length - 1] ?? null;
    const c = attempt?.counters ?? {};
    const [bin, rin, rout, bout] = IO[t.kind].map((name) => c[name]);
    return {
      ...t,
      attempt,
      duration: attempt ? (attempt.ended_at ?? now) - attempt.started_at : null,
      shownWorker: attempt?.worker ?? t.worker ?? '',
      bytesIn: bin, recordsIn: rin, recordsOut: rout, bytesOut: bout,
    };
  });
}

const attemptLink = (jobId, a, text) => h('a', { href: `#/jobs/${jobId}/attempts/${a.id}` }, text);

export function taskTable(jobId) {
  const table = new Table({
    label: 'Tasks', pageSize: 50, empty: 'No tasks match.',
    sort: { key: 'task', dir: 1 },
    columns: [
      {
        key: 'task', label: 'Task', cls: 'nowrap', value: (t) => (t.kind === 'map' ? 0 : 1e9) + t.index,
        render: (t) => (t.attempt ? attemptLink(jobId, t.attempt, `${t.kind} ${t.index}`) : `${t.kind} ${t.index}`),
      },
      { key: 'state', label: 'State', render: (t) => badge(t.state) },
      { key: 'attempts', label: 'Attempts', num: true },
      { key: 'failures', label: 'Failures', num: true, render: (t) => (t.failures ? h('span', { class: 'bad' }, t.failures) : '0') },
      { key: 'shownWorker', label: 'Worker', cls: 'nowrap' },
      { key: 'duration', label: 'Duration', num: true, render: (t) => fmtDuration(t.duration) },
      { key: 'input', label: 'Input', render: (t) => h('span', { class: 'small' }, t.input) },
      { key: 'bytesIn', label: 'Bytes in', num: true, render: (t) => fmtBytes(t.bytesIn) },
      { key: 'recordsIn', label: 'Records in', num: true, render: (t) => fmtNum(t.recordsIn) },
      { key: 'recordsOut', label: 'Records out', num: true, render: (t) => fmtNum(t.recordsOut) },
      { key: 'bytesOut', label: 'Bytes out', num: true, render: (t) => fmtBytes(t.bytesOut) },
    ],
  });
  let rows = [];
  const kind = h('select', { id: 'task-kind', onchange: () => show(true) },
    ['', 'map', 'reduce'].map((k) => h('option', { value: k }, k || 'all kinds')));
  const state = h('select', { id: 'task-state', onchange: () => show(true) },
    ['', 'idle', 'in_progress', 'completed', 'failed'].map((s) => h('option', { value: s }, s ? s.replace('_', ' ') : 'all states')));
  const count = h('span', { class: 'muted' });
  function show(reset) {
    const shown = rows.filter((t) => (!kind.value || t.kind === kind.value) && (!state.value || t.state === state.value));
    if (reset) table.page = 0;
    fill(count, `${fmtNum(shown.length)} of ${fmtNum(rows.length)} tasks`);
    table.setRows(shown);
  }
  return {
    el: h('div', {}, h('div', { class: 'filters' }, h('label', { class: 'inline' }, 'Kind ', kind),
      h('label', { class: 'inline' }, 'State ', state), count), table.el),
    update(tasks, attempts) {
      rows = taskRows(tasks, attempts);
      show(false);
    },
  };
}

export function attemptTable(jobId) {
  const table = new Table({
    label: 'Attempts', pageSize: 50, empty: 'No attempt has started yet.',
    sort: { key: 'id', dir: -1 },
    columns: [
      { key: 'id', label: 'Attempt', num: true, render: (a) => attemptLink(jobId, a, `#${a.id}`) },
      { key: 'task', label: 'Task', cls: 'nowrap', value: (a) => (a.kind === 'map' ? 0 : 1e9) + a.index, render: (a) => `${a.kind} ${a.index}` },
      {
        key: 'outcome', label: 'Outcome',
        render: (a) => h('span', {}, badge(a.outcome), a.backup ? badge('backup') : null),
      },
      { key: 'worker', label: 'Worker', cls: 'nowrap' },
      { key: 'started_at', label: 'Started', render: (a) => fmtTime(a.started_at), cls: 'nowrap' },
      {
        key: 'duration', label: 'Duration', num: true,
        value: (a) => (a.ended_at ?? Date.now()) - a.started_at,
        render: (a) => fmtDuration((a.ended_at ?? Date.now()) - a.started_at),
      },
      { key: 'error', label: 'Error', render: (a) => h('span', { class: 'small bad' }, a.error ?? '') },
    ],
  });
  return { el: table.el, update: (attempts) => table.setRows(attempts) };
}
