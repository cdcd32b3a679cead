// Submit: a job spec form with dataset upload. The coordinator validates
// the spec; a 422 names the field, and its message is shown beside it.

import { api, encPath } from './api.js';
import { Table, errorBox, fill, fmtBytes, fmtTime, h } from './ui.js';

/** A labelled form field with a place for its error; `name` is the spec field. */
function field(name, label, input, hint) {
  input.id = `f-${name.replace('.', '-')}`;
  input.name = name;
  const error = h('p', { class: 'field-error', id: `${input.id}-error`, 'aria-live': 'polite' });
  input.setAttribute('aria-describedby', error.id);
  return {
    name, input, error,
    el: h('div', { class: 'field', dataset: { field: name } },
      h('label', { for: input.id }, label), input, hint ? h('p', { class: 'hint' }, hint) : null, error),
  };
}

const num = (value) => h('input', { type: 'text', inputmode: 'numeric', value: String(value) });

export default async function submitPage(main, { query }, ctx) {
  document.title = 'Submit · Quern';
  const [modules, datasets] = await Promise.all([
    api('/modules', { signal: ctx.signal }),
    api('/datasets', { signal: ctx.signal }),
  ]);
  const wanted = query.get('module');
  const moduleSelect = h('select', {},
    h('option', { value: '' }, modules.length ? 'choose a module' : 'no modules: upload one first'),
    [...modules].sort((a, b) => b.created_at - a.created_at).map((m) => h('option', {
      value: m.sha256, selected: m.sha256 === wanted,
    }, `${m.name} (${m.sha256.slice(0, 12)}, ${m.kind === 'command' ? 'streaming command' : (m.has_combine ? 'with combine' : 'no combine')})`)));
  const inputs = h('textarea', { rows: '3', placeholder: 'books/*.txt\nother/file.txt' });
  const fields = [
    field('name', 'Job name (optional)', h('input', { type: 'text', placeholder: 'for people; not used by Quern' })),
    field('module', 'Module', moduleSelect, h('span', {}, 'Upload modules on the ', h('a', { href: '#/modules' }, 'Modules'), ' page.')),
    field('inputs', 'Inputs', inputs, 'Dataset paths or globs, one per line. Upload files or pick existing ones below.'),
    field('reducers', 'Reducers', num(4), 'Number of reduce tasks (and output files).'),
    field('split_size', 'Split size (bytes)', num(64 << 20), 'Map input per task; at least 4096. 67108864 = 64 MiB.'),
    field('format', 'Input format', h('select', {},
      h('option', { value: 'lines' }, 'lines: one record per line'),
      h('option', { value: 'whole-file' }, 'whole-file: one record per file'))),
    field('combine', 'Combine', h('input', { type: 'checkbox', checked: true }), 'Run the module’s combine on map output, in the guest as it maps and on the host (when it has one).'),
    field('partitioner', 'Partitioner', h('select', {},
      h('option', { value: 'hash' }, 'hash: keys spread evenly'),
      h('option', { value: 'range' }, 'range: key ranges sampled from the input; outputs in order are sorted'))),
    field('backups', 'Backup attempts', h('input', { type: 'checkbox', checked: true }), 'Near the end of a phase, run a second copy of a slow task; the first to finish wins.'),
    field('args', 'Arguments', h('textarea', { rows: '2', placeholder: 'name=value, one per line' }), 'Passed to the module’s init.'),
    field('limits.memory_mib', 'Memory limit (MiB)', num(512)),
    field('limits.timeout_secs', 'Time limit per attempt (s)', num(600)),
    field('limits.log_bytes', 'Log bytes kept', num(64 << 10)),
    field('limits.record_bytes', 'Longest record (bytes)', num(8 << 20), 'A longer input line fails its map task, naming the file and offset. 8388608 = 8 MiB.'),
    field('limits.output_bytes', 'Largest reduce output (bytes)', num(64 * 2 ** 30), 'Per reduce task. 68719476736 = 64 GiB.'),
    field('max_attempts', 'Max attempts per task', num(4), 'Guest failures a task may have before the job fails.'),
  ];
  const byName = new Map(fields.map((f) => [f.name, f]));
  const formError = h('div', { id: 'form-error', 'aria-live': 'polite' });

  function addInputs(paths) {
    const have = new Set(inputs.value.split('\n').map((s) => s.trim()).filter(Boolean));
    for (const p of paths) have.add(p);
    inputs.value = [...have].join('\n');
  }

  // Dataset upload and the existing datasets.
  const files = h('input', { type: 'file', multiple: true, id: 'dataset-files' });
  const prefix = h('input', { type: 'text', id: 'dataset-prefix', placeholder: 'e.g. books' });
  const uploadStatus = h('div', { id: 'dataset-status', 'aria-live': 'polite' });
  const uploadButton = h('button', {
    type: 'button', id: 'dataset-upload',
    onclick: async () => {
      const chosen = [...files.files];
      if (!chosen.length) {
        fill(uploadStatus, h('p', { class: 'field-error' }, 'Choose files first.'));
        return;
      }
      const dir = prefix.value.trim().replace(/^\/+|\/+$/g, '');
      uploadButton.disabled = true;
      try {
        const done = [];
        for (const [i, f] of chosen.entries()) {
          fill(uploadStatus, h('p', { class: 'muted' }, `Uploading ${i + 1}/${chosen.length}: ${f.name} (${fmtBytes(f.size)})…`));
          const path = dir ? `${dir}/${f.name}` : f.name;
          done.push((await api(`/datasets/${encPath(path)}`, { method: 'PUT', body: f, signal: ctx.signal })).path);
        }
        addInputs(dir && done.length > 1 ? [`${dir}/*`] : done);
        fill(uploadStatus, h('p', { class: 'ok' }, `Uploaded ${done.length} file${done.length === 1 ? '' : 's'}; added to the inputs.`));
        files.value = '';
        datasetTable.setRows(await api('/datasets', { signal: ctx.signal }));
      } catch (err) {
        fill(uploadStatus, errorBox('Upload failed', err.message));
      } finally {
        uploadButton.disabled = false;
      }
    },
  }, 'Upload');
  const datasetTable = new Table({
    label: 'Datasets', pageSize: 10, sort: { key: 'path', dir: 1 }, empty: 'No datasets yet.',
    columns: [
      { key: 'path', label: 'Path' },
      { key: 'size', label: 'Size', num: true, cls: 'nowrap', render: (d) => fmtBytes(d.size) },
      { key: 'created_at', label: 'Uploaded', render: (d) => fmtTime(d.created_at) },
      {
        key: 'add', label: '', sortable: false,
        render: (d) => h('button', { type: 'button', class: 'small', onclick: () => addInputs([d.path]) }, 'Add'),
      },
    ],
  });
  datasetTable.setRows(datasets);

  function clearErrors() {
    fill(formError);
    for (const f of fields) {
      fill(f.error);
      f.input.removeAttribute('aria-invalid');
      f.el.classList.remove('invalid');
    }
  }

  function showError(name, message) {
    const f = byName.get(name) ?? byName.get(name?.split('.')[0]);
    if (!f) {
      fill(formError, errorBox('The job was not accepted', message));
      return;
    }
    fill(f.error, message);
    f.input.setAttribute('aria-invalid', 'true');
    f.el.classList.add('invalid');
    f.input.focus();
  }

  /** Builds the spec; numbers are checked here only for being numbers. */
  function spec() {
    const v = (name) => byName.get(name).input.value.trim();
    const whole = (name) => {
      const text = v(name);
      if (!/^\d+$/.test(text)) throw Object.assign(new Error('must be a whole number'), { field: name });
      return Number(text);
    };
    const args = v('args').split('\n').map((l) => l.trim()).filter(Boolean).map((line) => {
      const eq = line.indexOf('=');
      return eq < 0 ? [line, ''] : [line.slice(0, eq).trim(), line.slice(eq + 1).trim()];
    });
    const s = {
      module: v('module'),
      inputs: v('inputs').split('\n').map((l) => l.trim()).filter(Boolean),
      reducers: whole('reducers'),
      split_size: whole('split_size'),
      format: v('format'),
      // A WASI command runs in streaming mode; a job component does not.
      mode: modules.find((m) => m.sha256 === v('module'))?.kind === 'command' ? 'streaming' : 'component',
      combine: byName.get('combine').input.checked,
      partitioner: v('partitioner'),
      backups: byName.get('backups').input.checked,
      args,
      limits: {
        memory_mib: whole('limits.memory_mib'),
        timeout_secs: whole('limits.timeout_secs'),
        log_bytes: whole('limits.log_bytes'),
        record_bytes: whole('limits.record_bytes'),
        output_bytes: whole('limits.output_bytes'),
      },
      max_attempts: whole('max_attempts'),
    };
    if (v('name')) s.name = v('name');
    return s;
  }

  const submitButton = h('button', { type: 'submit', class: 'primary', id: 'submit-job' }, 'Submit job');
  const form = h('form', {
    class: 'card submit', novalidate: true,
    onsubmit: async (e) => {
      e.preventDefault();
      clearErrors();
      let body;
      try {
        body = spec();
      } catch (err) {
        showError(err.field, err.message);
        return;
      }
      submitButton.disabled = true;
      try {
        const job = await api('/jobs', { method: 'POST', json: body, signal: ctx.signal });
        location.hash = `#/jobs/${job.id}`;
      } catch (err) {
        if (err.status === 422) showError(err.field, err.message);
        else fill(formError, errorBox('The job was not accepted', err.message));
      } finally {
        submitButton.disabled = false;
      }
    },
  },
  h('h2', {}, 'Job'),
  formError,
  h('div', { class: 'fields' }, fields.map((f) => f.el)),
  h('div', { class: 'form-actions' }, submitButton));

  fill(main,
    h('div', { class: 'page-head' }, h('h1', {}, 'Submit a job')),
    h('div', { class: 'grid2 submit-grid' },
      form,
      h('section', { class: 'card' },
        h('h2', {}, 'Input files'),
        h('div', { class: 'row' },
          h('label', {}, 'Files', files),
          h('label', {}, 'Folder (optional)', prefix),
          uploadButton),
        uploadStatus,
        h('h3', {}, 'Uploaded datasets'),
        datasetTable.el)));
}
