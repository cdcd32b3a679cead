// One attempt: the guest's captured stdout and stderr, its error, worker,
// timings and counters, and the task's other attempts. Refreshes while it
// runs.

import { api } from './api.js';
import { badge, errorBox, fill, fmtDuration, fmtNum, fmtTime, h } from './ui.js';

function logBlock(name, text) {
  return h('section', { class: 'card' },
    h('h2', {}, name, h('span', { class: 'muted small' }, text ? ` ${fmtNum(text.length)} characters` : ' (empty)')),
    h('pre', { class: 'log', id: name }, text || '(nothing written)'));
}

export default async function attemptPage(main, { match }, ctx) {
  const [, jobId, attemptId] = match;
  document.title = `Attempt ${attemptId} · Quern`;

  async function load() {
    const [attempts, logs] = await Promise.all([
      api(`/jobs/${jobId}/attempts`, { signal: ctx.signal }),
      api(`/jobs/${jobId}/attempts/${attemptId}/logs`, { signal: ctx.signal }),
    ]);
    const a = attempts.find((x) => String(x.id) === attemptId);
    if (!a) {
      fill(main, errorBox('No such attempt', `Job ${jobId} has no attempt ${attemptId}.`));
      return true;
    }
    const siblings = attempts.filter((x) => x.task === a.task);
    const ended = a.ended_at ?? Date.now();
    const item = (k, v) => [h('dt', {}, k), h('dd', {}, v)];
    const counters = Object.entries(a.counters);
    fill(main,
      h('p', { class: 'crumbs' }, h('a', { href: `#/jobs/${jobId}` }, `Job #${jobId}`), ' › ',
        h('a', { href: `#/jobs/${jobId}/attempts` }, 'attempts'), ` › #${a.id}`),
      h('div', { class: 'page-head' },
        h('h1', {}, `Attempt #${a.id}: ${a.kind} ${a.index}`), badge(a.outcome), a.backup ? badge('backup') : null),
      a.error ? h('div', { class: 'error-box', role: 'alert', id: 'attempt-error' },
        h('strong', {}, a.outcome === 'failed' ? 'The guest failed:' : 'This attempt did not count:'),
        h('p', { class: 'error-text' }, a.error)) : null,
      h('div', { class: 'grid2' },
        h('section', { class: 'card' }, h('h2', {}, 'Attempt'), h('dl', { class: 'meta' },
          item('Task', `${a.kind} ${a.index} (task ${a.task})`),
          item('Worker', a.worker),
          item('Started', fmtTime(a.started_at)),
          item('Ended', a.ended_at ? fmtTime(a.ended_at) : 'still running'),
          item('Duration', fmtDuration(ended - a.started_at)),
          item('Backup', a.backup ? 'yes: a second copy of a slow attempt' : 'no'),
          item('Other attempts', siblings.length > 1
            ? siblings.filter((x) => x.id !== a.id).map((x) => h('a', { href: `#/jobs/${jobId}/attempts/${x.id}`, class: 'sib' }, `#${x.id} (${x.outcome})`))
            : 'none'))),
        h('section', { class: 'card' }, h('h2', {}, 'Counters'), counters.length
          ? h('table', { class: 'data counters' }, h('tbody', {}, counters.map(([k, v]) => h('tr', {}, h('td', {}, k), h('td', { class: 'num' }, fmtNum(v))))))
          : h('p', { class: 'muted' }, 'No counters (yet).'))),
      logBlock('stdout', logs.stdout),
      logBlock('stderr', logs.stderr));
    return a.outcome !== 'running';
  }

  const done = await load();
  if (!done) {
    let finished = false;
    ctx.every(1000, async () => {
      if (!finished) finished = await load();
    });
  }
}
