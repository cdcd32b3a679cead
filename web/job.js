// A job: phase progress, its error in plain words, counters, outputs,
// cancel, and tabs for tasks, the timeline and attempts. Follows the job's
// progress stream while it runs; tasks and attempts are refetched at most
// every 1.5 s so a job of thousands of tasks stays cheap to watch.

import { api, download, follow } from './api.js';
import {
  badge, errorBox, fill, fmtBytes, fmtDuration, fmtNum, fmtTime, h, isFinished, jobDuration, jobPercent, phaseBar,
} from './ui.js';
import { moduleNames } from './jobs.js';
import { attemptTable, taskTable } from './tasks.js';
import { Timeline } from './timeline.js';

const TABS = [['tasks', 'Tasks'], ['timeline', 'Timeline'], ['attempts', 'Attempts']];

/** What a failed job's error means, in one sentence before the details. */
function explain(error) {
  const e = error.toLowerCase();
  if (e.includes('crashed')) return 'The module crashed (a WebAssembly trap, such as a Rust panic).';
  if (e.includes('time limit')) return 'A task ran past its time limit and was stopped.';
  if (e.includes('memory limit')) return 'A task tried to use more memory than its limit.';
  if (e.includes('returned an error')) return "The module's code returned an error.";
  if (e.includes('output is invalid')) return 'The module produced output Quern cannot accept.';
  if (e.includes('could not run')) return 'Workers could not run a task (host failures, not the module).';
  if (e.includes('no input') || e.includes('matches no')) return 'The inputs could not be found.';
  return 'The job stopped because of an error.';
}

export default async function jobPage(main, { match }, ctx) {
  const id = match[1];
  let tab = match[2] ?? 'tasks';
  document.title = `Job ${id} · Quern`;
  let [job, names] = await Promise.all([api(`/jobs/${id}`, { signal: ctx.signal }), moduleNames(ctx.signal)]);
  let tasks = [];
  let attempts = [];

  const title = h('h1', {});
  const stateEl = h('span', {});
  const cancel = h('button', {
    type: 'button', class: 'danger', id: 'cancel',
    onclick: async () => {
      if (!window.confirm(`Cancel job ${id}? Running tasks are stopped and no output is kept.`)) return;
      cancel.disabled = true;
      try {
        showJob(await api(`/jobs/${id}/cancel`, { method: 'POST', signal: ctx.signal }));
      } catch (err) {
        fill(notice, errorBox('Could not cancel', err.message));
        cancel.disabled = false;
      }
    },
  }, 'Cancel job');
  const meta = h('dl', { class: 'meta' });
  const notice = h('div', {});
  const progress = h('div', { class: 'progress card' });
  const counters = h('div', {});
  const outputs = h('div', {});
  const tasksView = taskTable(id);
  const attemptsView = attemptTable(id);
  const timeline = new Timeline((a) => { location.hash = `#/jobs/${id}/attempts/${a.id}`; });
  const panes = {
    tasks: tasksView.el,
    timeline: timeline.el,
    attempts: attemptsView.el,
  };
  const tabBar = h('nav', { class: 'tabs', role: 'tablist' });
  const pane = h('section', { class: 'pane' });

  function showTab(name) {
    tab = name;
    fill(tabBar, TABS.map(([key, label]) => h('a', {
      href: `#/jobs/${id}/${key}`, role: 'tab', id: `tab-${key}`,
      class: key === tab ? 'active' : '', 'aria-selected': String(key === tab),
      onclick: (e) => {
        // Switch in place (no reload of the page's data or table state).
        e.preventDefault();
        history.replaceState(null, '', `#/jobs/${id}/${key}`);
        showTab(key);
      },
    }, label)));
    fill(pane, panes[tab]);
    if (tab === 'timeline') timeline.draw(attempts, job.created_at);
  }

  function showJob(j) {
    job = j;
    const module = names.get(j.spec.module) ?? j.spec.module.slice(0, 12);
    fill(title, `Job #${j.id}`, j.spec.name ? h('span', { class: 'muted' }, ` ${j.spec.name}`) : null);
    fill(stateEl, badge(j.state));
    cancel.hidden = isFinished(j.state);
    const item = (k, v) => [h('dt', {}, k), h('dd', {}, v)];
    fill(meta,
      item('Module', h('span', {}, module, ' ', h('code', { class: 'small' }, j.spec.module.slice(0, 16)))),
      item('Inputs', j.spec.inputs.join(', ')),
      item('Reducers', String(j.spec.reducers)),
      item('Split size', fmtBytes(j.spec.split_size)),
      item('Format', j.spec.format),
      item('Combine', j.spec.combine ? 'yes' : 'no'),
      item('Partitioner', j.spec.partitioner || 'hash'),
      item('Backups', j.spec.backups === false ? 'off' : 'on'),
      item('Arguments', j.spec.args.length ? j.spec.args.map(([k, v]) => `${k}=${v}`).join(' ') : '—'),
      item('Limits', `${j.spec.limits.memory_mib} MiB, ${j.spec.limits.timeout_secs} s, max ${j.spec.max_attempts} attempts`),
      item('Submitted', fmtTime(j.created_at)),
      item('Duration', `${fmtDuration(jobDuration(j))}${isFinished(j.state) ? '' : ' so far'}`));
    if (j.state === 'failed' && j.error) {
      const failed = [...attempts].reverse().find((a) => a.outcome === 'failed');
      fill(notice, h('div', { class: 'error-box', role: 'alert', id: 'job-error' },
        h('strong', {}, `This job failed. ${explain(j.error)}`),
        h('p', { class: 'error-text' }, j.error),
        failed ? h('p', {}, h('a', { href: `#/jobs/${id}/attempts/${failed.id}` }, `Open the failed attempt (${failed.kind} ${failed.index}, attempt #${failed.id}) and its log →`)) : null));
    } else if (j.state === 'cancelled') {
      fill(notice, h('div', { class: 'info-box' }, 'This job was cancelled.'));
    } else {
      fill(notice);
    }
    fill(progress,
      h('div', { class: 'overall', id: 'overall' }, `${jobPercent(j)}%`, h('small', {}, ' complete')),
      phaseBar('Map', j.map), phaseBar('Reduce', j.reduce));
    const counterNames = Object.keys(j.counters);
    fill(counters, counterNames.length
      ? h('table', { class: 'data counters', 'aria-label': 'Counters' }, h('tbody', {}, counterNames.map((n) => h('tr', {}, h('td', {}, n), h('td', { class: 'num' }, fmtNum(j.counters[n]))))))
      : h('p', { class: 'muted' }, 'No task has completed yet.'));
  }

  async function loadOutputs() {
    const files = await api(`/jobs/${id}/outputs`, { signal: ctx.signal });
    fill(outputs, files.length
      ? h('ul', { class: 'outputs' }, files.map((f) => h('li', {},
        h('button', {
          type: 'button', class: 'link', dataset: { output: f.name },
          onclick: async () => {
            try {
              await download(`/jobs/${id}/outputs/${encodeURIComponent(f.name)}`, `job-${id}-${f.name}`);
            } catch (err) {
              fill(notice, errorBox(`Could not download ${f.name}`, err.message));
            }
          },
        }, `⤓ ${f.name}`), h('span', { class: 'muted' }, ` ${fmtBytes(f.size)}`))))
      : h('p', { class: 'muted' }, job.state === 'succeeded' ? 'No output files.' : 'Outputs appear as reduce tasks commit.'));
  }

  async function loadDetail() {
    [tasks, attempts] = await Promise.all([
      api(`/jobs/${id}/tasks`, { signal: ctx.signal }),
      api(`/jobs/${id}/attempts`, { signal: ctx.signal }),
    ]);
    tasksView.update(tasks, attempts);
    attemptsView.update(attempts);
    if (tab === 'timeline') timeline.draw(attempts, job.created_at);
    showJob(job);
    await loadOutputs();
  }

  await loadDetail();
  fill(main,
    h('div', { class: 'page-head' }, title, stateEl, cancel),
    notice,
    progress,
    h('div', { class: 'grid2' },
      h('section', { class: 'card' }, h('h2', {}, 'Job'), meta),
      h('div', {},
        h('section', { class: 'card' }, h('h2', {}, 'Outputs'), outputs),
        h('section', { class: 'card' }, h('h2', {}, 'Counters'), counters))),
    tabBar, pane);
  showTab(tab);

  // Live: the progress stream drives the header; details follow, throttled.
  // A change that arrives while details load schedules one more load, so
  // the last state (the finished job) is always shown.
  let timer = null;
  let loading = false;
  let again = false;
  let last = Date.now();
  const refresh = () => {
    if (loading) {
      again = true;
      return;
    }
    if (timer) return;
    timer = setTimeout(async () => {
      timer = null;
      loading = true;
      last = Date.now();
      try {
        if (!ctx.signal.aborted) await loadDetail();
      } catch (err) {
        if (!ctx.signal.aborted) console.warn(err);
      } finally {
        loading = false;
      }
      if (again) {
        again = false;
        refresh();
      }
    }, Math.max(0, 1500 - (Date.now() - last)));
  };
  if (!isFinished(job.state)) {
    follow(id, (j) => {
      showJob(j);
      refresh();
    }, ctx.signal);
    // Running attempts grow with the clock even when nothing else changes.
    ctx.every(1000, () => {
      if (tab === 'timeline' && !isFinished(job.state)) timeline.redraw();
    });
  }
}
