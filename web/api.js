// The REST API as the dashboard uses it. The user token lives in the
// browser's localStorage and goes out only as an `Authorization: Bearer`
// header set by this code. The API accepts no cookies, so a page on another
// site cannot make the browser send an authenticated request to it: there is
// no ambient credential for cross-site request forgery to ride on.

const KEY = 'quern.token';

export function token() {
  return localStorage.getItem(KEY);
}

export function setToken(value) {
  localStorage.setItem(KEY, value.trim());
}

export function clearToken() {
  localStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, message, code, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

function headers(extra = {}) {
  return { Authorization: `Bearer ${token() ?? ''}`, ...extra };
}

async function failure(res) {
  let detail = null;
  try {
    detail = (await res.json()).error;
  } catch {
    // Not our JSON error body (a proxy, a crash): fall back to the status.
  }
  if (res.status === 401) {
    clearToken();
    window.dispatchEvent(new Event('quern:logged-out'));
  }
  return new ApiError(res.status, detail?.message ?? `${res.status} ${res.statusText}`,
    detail?.code, detail?.field);
}

/** Calls `/api/v1{path}`; JSON in and out unless `body` is a Blob/File. */
export async function api(path, { method = 'GET', body, json, signal } = {}) {
  const extra = {};
  if (json !== undefined) {
    extra['Content-Type'] = 'application/json';
    body = JSON.stringify(json);
  } else if (body !== undefined) {
    extra['Content-Type'] = 'application/octet-stream';
  }
  const res = await fetch(`/api/v1${path}`, {
    method, body, signal, headers: headers(extra), cache: 'no-store',
  });
  if (!res.ok) throw await failure(res);
  if (res.status === 204) return null;
  return res.json();
}

/** Percent-encodes each segment of a dataset path, keeping the slashes. */
export function encPath(path) {
  return path.split('/').map(encodeURIComponent).join('/');
}

/**
 * Downloads an authenticated file: a plain link cannot carry the bearer
 * header, so fetch it as a blob and save it through an object URL.
 */
export async function download(path, filename) {
  const res = await fetch(`/api/v1${path}`, { headers: headers(), cache: 'no-store' });
  if (!res.ok) throw await failure(res);
  const blob = await res.blob();
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

const finished = (state) => state === 'succeeded' || state === 'failed' || state === 'cancelled';

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(t);
      resolve();
    }, { once: true });
  });
}

/** Splits a server-sent-events text stream into {event, data} messages. */
async function* sseMessages(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    buf = buf.replace(/\r\n/g, '\n');
    let end;
    while ((end = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      let event = 'message';
      const data = [];
      for (const line of block.split('\n')) {
        if (!line || line.startsWith(':')) continue;
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let v = colon < 0 ? '' : line.slice(colon + 1);
        if (v.startsWith(' ')) v = v.slice(1);
        if (field === 'event') event = v;
        else if (field === 'data') data.push(v);
      }
      if (data.length) yield { event, data: data.join('\n') };
    }
  }
}

/**
 * Calls `onJob(job)` whenever job `id` changes, until it finishes or
 * `signal` aborts. EventSource cannot send an Authorization header, so the
 * progress stream is read with fetch; if the stream fails or ends early it
 * polls once a second instead.
 */
export async function follow(id, onJob, signal) {
  try {
    const res = await fetch(`/api/v1/jobs/${id}/events`, {
      headers: headers({ Accept: 'text/event-stream' }), signal, cache: 'no-store',
    });
    if (!res.ok || !res.body) throw await failure(res);
    for await (const msg of sseMessages(res.body)) {
      if (msg.event !== 'progress') continue;
      const job = JSON.parse(msg.data);
      onJob(job);
      if (finished(job.state)) return;
    }
  } catch (err) {
    if (signal.aborted || err.status === 401 || err.status === 404) return;
  }
  while (!signal.aborted) {
    try {
      const job = await api(`/jobs/${id}`, { signal });
      onJob(job);
      if (finished(job.state)) return;
    } catch (err) {
      if (signal.aborted || err.status === 401 || err.status === 404) return;
    }
    await sleep(1000, signal);
  }
}

export { sleep };
