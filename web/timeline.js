// The job timeline: a Gantt chart of every attempt, one row per worker slot,
// drawn on a canvas so that a job of thousands of tasks draws in
// milliseconds. Outcomes have their own colours and backups an outline, so
// stragglers, crashes and lost workers are seen at a glance.

import { fill, fmtDuration, fmtTime, h } from './ui.js';

export const COLOURS = {
  map: '#2563eb',
  reduce: '#0d9488',
  running: '#93c5fd',
  failed: '#dc2626',
  lost: '#f59e0b',
  superseded: '#9ca3af',
  backup: '#7c3aed',
};

const LEGEND = [
  ['map', 'map succeeded'],
  ['reduce', 'reduce succeeded'],
  ['running', 'running'],
  ['failed', 'failed (guest error)'],
  ['lost', 'lost (worker or host failure)'],
  ['superseded', 'superseded (result discarded)'],
  ['backup', 'backup attempt (outline)'],
];

const LABEL_W = 170;
const AXIS_H = 26;
const ROW_H = 22;
const STEPS = [10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 15e3, 3e4, 6e4, 12e4, 3e5, 6e5, 9e5, 18e5, 36e5, 72e5, 216e5, 432e5, 864e5];

function colour(a) {
  if (a.outcome === 'succeeded') return COLOURS[a.kind];
  return COLOURS[a.outcome] ?? COLOURS.superseded;
}

/** Packs attempts into rows: one per worker slot (attempts that overlap on a worker get separate rows). */
export function lanes(attempts, now) {
  const byWorker = new Map();
  const sorted = [...attempts].sort((a, b) => a.started_at - b.started_at || a.id - b.id);
  for (const a of sorted) {
    if (!byWorker.has(a.worker)) byWorker.set(a.worker, []);
    const rows = byWorker.get(a.worker);
    const end = a.ended_at ?? now;
    let row = rows.find((r) => r.end <= a.started_at);
    if (!row) {
      row = { worker: a.worker, slot: rows.length, end: 0, bars: [] };
      rows.push(row);
    }
    row.end = Math.max(end, a.started_at + 1);
    row.bars.push(a);
  }
  return [...byWorker.keys()].sort().flatMap((w) => byWorker.get(w));
}

export class Timeline {
  constructor(onPick) {
    this.onPick = onPick;
    this.canvas = h('canvas', { class: 'timeline', 'aria-label': 'Timeline of attempts per worker slot' });
    this.tip = h('div', { class: 'tip', hidden: true, role: 'tooltip' });
    this.summary = h('p', { class: 'muted timeline-summary' });
    const legend = h('ul', { class: 'legend' }, LEGEND.map(([key, text]) => {
      const sw = h('span', { class: `swatch${key === 'backup' ? ' outline' : ''}` });
      if (key === 'backup') sw.style.borderColor = COLOURS.backup;
      else sw.style.background = COLOURS[key];
      return h('li', {}, sw, text);
    }));
    this.wrap = h('div', { class: 'timeline-wrap' }, this.canvas, this.tip);
    this.el = h('div', { class: 'timeline-box' }, legend, this.summary, this.wrap);
    this.rows = [];
    this.canvas.addEventListener('mousemove', (e) => this.hover(e));
    this.canvas.addEventListener('mouseleave', () => { this.tip.hidden = true; });
    this.canvas.addEventListener('click', (e) => {
      const a = this.pick(e);
      if (a) this.onPick(a);
    });
    // Redraw when the page width changes (not when the canvas grows taller).
    new ResizeObserver(() => {
      if (this.wrap.clientWidth !== this.drawnWidth) this.redraw();
    }).observe(this.wrap);
  }

  /** Draws `attempts` on a time axis starting at `start`. */
  draw(attempts, start) {
    this.attempts = attempts;
    this.start = start;
    this.redraw();
  }

  redraw() {
    if (!this.attempts) return;
    const began = performance.now();
    const now = Date.now();
    const attempts = this.attempts;
    this.rows = lanes(attempts, now);
    let t0 = this.start ?? Infinity;
    let t1 = 0;
    for (const a of attempts) {
      t0 = Math.min(t0, a.started_at);
      t1 = Math.max(t1, a.ended_at ?? now);
    }
    if (!Number.isFinite(t0)) t0 = now;
    t1 = Math.max(t1, t0 + 1000);
    this.drawnWidth = this.wrap.clientWidth;
    const width = Math.max(480, this.wrap.clientWidth || 900);
    const height = AXIS_H + Math.max(1, this.rows.length) * ROW_H + 6;
    const dpr = window.devicePixelRatio || 1;
    this.canvas.width = Math.round(width * dpr);
    this.canvas.height = Math.round(height * dpr);
    this.canvas.style.width = `${width}px`;
    this.canvas.style.height = `${height}px`;
    const g = this.canvas.getContext('2d');
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, width, height);
    const plotW = width - LABEL_W - 12;
    const x = (t) => LABEL_W + ((t - t0) / (t1 - t0)) * plotW;
    this.x = x;

    // Time axis and grid.
    const step = STEPS.find((s) => (t1 - t0) / s <= 10) ?? STEPS[STEPS.length - 1];
    g.font = '12px system-ui, sans-serif';
    g.textBaseline = 'middle';
    for (let t = 0; t <= t1 - t0; t += step) {
      const px = Math.round(x(t0 + t)) + 0.5;
      g.strokeStyle = '#e5e7eb';
      g.beginPath();
      g.moveTo(px, AXIS_H - 6);
      g.lineTo(px, height);
      g.stroke();
      const label = `+${fmtDuration(t)}`;
      if (px + 3 + g.measureText(label).width < width) {
        g.fillStyle = '#4b5563';
        g.fillText(label, px + 3, AXIS_H / 2 - 2);
      }
    }

    // Rows: a label and the attempts that ran in that slot.
    this.rows.forEach((row, i) => {
      const y = AXIS_H + i * ROW_H;
      if (i % 2 === 0) {
        g.fillStyle = '#f9fafb';
        g.fillRect(0, y, width, ROW_H);
      }
      g.fillStyle = '#111827';
      const showSlot = i > 0 && this.rows[i - 1].worker === row.worker;
      const label = showSlot ? `  ↳ slot ${row.slot + 1}` : row.worker;
      g.fillText(label.length > 24 ? `${label.slice(0, 23)}…` : label, 6, y + ROW_H / 2);
      for (const a of row.bars) {
        const x0 = x(a.started_at);
        const full = x(a.ended_at ?? now) - x0;
        // A hairline gap keeps back-to-back attempts apart.
        const w = Math.max(2, full > 4 ? full - 1 : full);
        g.fillStyle = colour(a);
        g.fillRect(x0, y + 3, w, ROW_H - 6);
        if (a.backup) {
          g.strokeStyle = COLOURS.backup;
          g.lineWidth = 2;
          g.strokeRect(x0 + 1, y + 2, Math.max(1, w - 2), ROW_H - 4);
          g.lineWidth = 1;
        }
        const text = `${a.kind === 'map' ? 'm' : 'r'}${a.index}`;
        if (w > g.measureText(text).width + 6) {
          g.fillStyle = a.outcome === 'running' || a.outcome === 'lost' ? '#111827' : '#ffffff';
          g.fillText(text, x0 + 3, y + ROW_H / 2);
        }
      }
    });
    if (!this.rows.length) {
      g.fillStyle = '#6b7280';
      g.fillText('No attempt has started yet.', LABEL_W, AXIS_H + ROW_H / 2);
    }
    const workers = new Set(attempts.map((a) => a.worker)).size;
    fill(this.summary, `${attempts.length} attempts on ${workers} workers (${this.rows.length} slots) over ${fmtDuration(t1 - t0)}; drawn in ${Math.round(performance.now() - began)} ms. Click a bar for its log.`);
    this.canvas.dataset.drawn = String(attempts.length);
  }

  pick(e) {
    const rect = this.canvas.getBoundingClientRect();
    const px = e.clientX - rect.left;
    const row = this.rows[Math.floor((e.clientY - rect.top - AXIS_H) / ROW_H)];
    if (!row || !this.x) return null;
    const now = Date.now();
    return row.bars.find((a) => px >= this.x(a.started_at) - 1
      && px <= Math.max(this.x(a.started_at) + 2, this.x(a.ended_at ?? now)) + 1) ?? null;
  }

  hover(e) {
    const a = this.pick(e);
    this.canvas.style.cursor = a ? 'pointer' : 'default';
    if (!a) {
      this.tip.hidden = true;
      return;
    }
    const ended = a.ended_at ?? Date.now();
    fill(this.tip,
      h('strong', {}, `${a.kind} ${a.index} · attempt ${a.id}${a.backup ? ' (backup)' : ''}`),
      h('div', {}, `${a.outcome} on ${a.worker}`),
      h('div', {}, `started ${fmtTime(a.started_at)}, ${a.ended_at ? 'ran' : 'running for'} ${fmtDuration(ended - a.started_at)}`),
      a.error ? h('div', { class: 'tip-error' }, a.error) : null);
    const rect = this.wrap.getBoundingClientRect();
    this.tip.hidden = false;
    this.tip.style.left = `${Math.min(e.clientX - rect.left + 12, rect.width - 320)}px`;
    this.tip.style.top = `${e.clientY - rect.top + 12}px`;
  }
}
