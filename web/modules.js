// Modules: the uploaded WebAssembly modules and an upload form (the
// coordinator checks that a module compiles and is a job component or a
// WASI command for streaming mode).

import { api } from './api.js';
import { Table, errorBox, fill, fmtBytes, fmtTime, h } from './ui.js';

export default async function modulesPage(main, _params, ctx) {
  document.title = 'Modules · Quern';
  const table = new Table({
    label: 'Modules', pageSize: 25, sort: { key: 'created_at', dir: -1 },
    empty: 'No module yet: upload one below.',
    columns: [
      { key: 'name', label: 'Name', render: (m) => h('strong', {}, m.name) },
      { key: 'sha256', label: 'sha256', render: (m) => h('code', { title: m.sha256, class: 'small' }, `${m.sha256.slice(0, 16)}…`) },
      { key: 'size', label: 'Size', num: true, render: (m) => fmtBytes(m.size) },
      {
        key: 'has_combine', label: 'Exports',
        render: (m) => (m.kind === 'command' ? 'WASI command (streaming mode)' : (m.has_combine ? 'map, reduce, combine, finish' : 'map, reduce, finish')),
      },
      { key: 'created_at', label: 'Uploaded', render: (m) => fmtTime(m.created_at) },
      {
        key: 'actions', label: '', sortable: false,
        render: (m) => h('span', { class: 'actions' },
          h('a', { class: 'button small', href: `#/submit?module=${m.sha256}` }, 'Submit a job'),
          h('button', {
            type: 'button', class: 'small danger',
            onclick: async () => {
              if (!window.confirm(`Delete module ${m.name}?`)) return;
              try {
                await api(`/modules/${m.sha256}`, { method: 'DELETE', signal: ctx.signal });
                await load();
              } catch (err) {
                fill(status, errorBox('Could not delete', err.message));
              }
            },
          }, 'Delete')),
      },
    ],
  });
  async function load() {
    table.setRows(await api('/modules', { signal: ctx.signal }));
  }

  const file = h('input', { type: 'file', id: 'module-file', accept: '.wasm,application/wasm', required: true });
  const name = h('input', { type: 'text', id: 'module-name', placeholder: 'defaults to the file name' });
  const status = h('div', { 'aria-live': 'polite', id: 'module-status' });
  const button = h('button', { type: 'submit', class: 'primary' }, 'Upload');
  file.addEventListener('change', () => {
    if (file.files[0] && !name.value) name.placeholder = file.files[0].name;
  });
  const form = h('form', {
    class: 'card upload',
    onsubmit: async (e) => {
      e.preventDefault();
      const f = file.files[0];
      if (!f) {
        fill(status, h('p', { class: 'field-error' }, 'Choose a .wasm file first.'));
        return;
      }
      button.disabled = true;
      fill(status, h('p', { class: 'muted' }, `Uploading and checking ${f.name}…`));
      try {
        const label = name.value.trim() || f.name;
        const m = await api(`/modules?name=${encodeURIComponent(label)}`, { method: 'POST', body: f, signal: ctx.signal });
        fill(status, h('p', { class: 'ok' }, `Uploaded ${m.name} (${m.sha256.slice(0, 12)}…).`));
        form.reset();
        await load();
      } catch (err) {
        fill(status, errorBox('Upload refused', err.message));
      } finally {
        button.disabled = false;
      }
    },
  },
  h('h2', {}, 'Upload a module'),
  h('div', { class: 'row' },
    h('label', {}, 'WebAssembly component', file),
    h('label', {}, 'Name', name),
    button),
  status);

  await load();
  fill(main, h('div', { class: 'page-head' }, h('h1', {}, 'Modules')), table.el, form);
}
