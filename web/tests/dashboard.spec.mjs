// Browser test of the dashboard: starts a real local cluster (`quern up`),
// drives headless Chromium through login, module and dataset upload, a
// word-count job watched live to 100%, its timeline, an attempt's log, an
// output download checked against a word count done here, and a failing job
// whose error must be shown. Screenshots of every page go to
// target/dashboard-screenshots/.
//
// Run: node web/tests/dashboard.spec.mjs (after `cargo build -p quern -p
// examples-wasm`); scripts/test-dashboard does everything.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const quern = process.env.QUERN_BIN ?? path.join(root, 'target/debug/quern');
const guests = path.join(root, 'target/guests');
const dataDir = path.join(root, 'examples/data');
const shots = path.join(root, 'target/dashboard-screenshots');
const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';

const texts = fs.readdirSync(dataDir).filter((f) => f.endsWith('.txt')).sort().map((f) => path.join(dataDir, f));

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Starts `quern up` and resolves with the login link it prints. */
function startCluster(port, dir) {
  const child = spawn(quern, ['up', '--workers', '2', '--listen', `127.0.0.1:${port}`, '--data-dir', dir], {
    cwd: dir, stdio: ['ignore', 'inherit', 'pipe'],
  });
  let log = '';
  const link = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`quern up printed no dashboard link in 60 s:\n${log}`)), 60_000);
    child.stderr.on('data', (chunk) => {
      log += chunk;
      const m = log.match(/dashboard: (http:\/\/\S+#token=\S+)/);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    child.on('exit', (code) => reject(new Error(`quern up exited with ${code}:\n${log}`)));
  });
  return { child, link, log: () => log };
}

/** Word count as the wordcount guest does it: maximal runs of letters. */
function expectedCounts() {
  const counts = new Map();
  for (const file of texts) {
    for (const word of fs.readFileSync(file, 'utf8').split(/[^\p{Alphabetic}]+/u)) {
      if (word) counts.set(word, (counts.get(word) ?? 0) + 1);
    }
  }
  return counts;
}

let step = 0;
async function shot(page, name) {
  step += 1;
  const file = path.join(shots, `${String(step).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  console.log(`  screenshot ${path.relative(root, file)}`);
}

function log(message) {
  console.log(`- ${message}`);
}

async function main() {
  for (const f of [quern, chromiumPath, path.join(guests, 'wordcount.wasm'), path.join(guests, 'misbehave.wasm')]) {
    assert.ok(fs.existsSync(f), `${f} is missing (build with cargo build -p quern -p examples-wasm)`);
  }
  fs.rmSync(shots, { recursive: true, force: true });
  fs.mkdirSync(shots, { recursive: true });
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'quern-dashboard-'));
  const downloads = path.join(tmp, 'downloads');
  fs.mkdirSync(downloads);
  const port = await freePort();
  fs.mkdirSync(path.join(tmp, 'data'));
  const cluster = startCluster(port, path.join(tmp, 'data'));
  let browser;
  let page;
  try {
    const link = await cluster.link;
    const base = `http://127.0.0.1:${port}`;
    const token = new URL(link).hash.slice('#token='.length);
    log(`cluster up at ${base}`);

    browser = await chromium.launch({
      executablePath: chromiumPath,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    const context = await browser.newContext({ viewport: { width: 1360, height: 900 }, acceptDownloads: true });
    page = await context.newPage();
    page.setDefaultTimeout(30_000);
    const problems = [];
    page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
    page.on('console', (msg) => {
      // A 401 from the wrong-token login attempt is expected; anything else
      // (a script error, a CSP violation) is a failure.
      // 401 (the wrong-token login) and 422 (the submit form's validation
      // check) are answers the test provokes on purpose; Chromium logs every
      // non-2xx response as a console error.
      if (msg.type() === 'error' && !/\b(401|422)\b/.test(msg.text())) problems.push(`console: ${msg.text()}`);
    });

    // Login: a wrong token is refused, the printed link logs in and leaves the address bar.
    await page.goto(`${base}/`);
    await page.fill('#token', 'qrn_wrong');
    await page.click('form.login button[type=submit]');
    await page.getByText('That token was not accepted.').waitFor();
    await shot(page, 'login');
    await page.goto(link);
    await page.locator('h1', { hasText: 'Overview' }).waitFor();
    assert.ok(!page.url().includes('token='), `the token stays in the address bar: ${page.url()}`);
    assert.equal(await page.evaluate(() => localStorage.getItem('quern.token')), token);
    await page.locator('table[aria-label=Workers] tbody tr', { hasText: 'alive' }).nth(1).waitFor();
    log('logged in through the printed link; 2 workers alive');
    await shot(page, 'overview');

    // Modules: upload word count, and a module whose name is markup.
    await page.click('#nav a[data-page=modules]');
    await page.locator('h1', { hasText: 'Modules' }).waitFor();
    await page.setInputFiles('#module-file', path.join(guests, 'wordcount.wasm'));
    await page.fill('#module-name', 'wordcount');
    await page.click('form.upload button[type=submit]');
    await page.locator('#module-status', { hasText: 'Uploaded wordcount' }).waitFor();
    const evil = '<script>alert(1)</script>misbehave';
    await page.setInputFiles('#module-file', path.join(guests, 'misbehave.wasm'));
    await page.fill('#module-name', evil);
    await page.click('form.upload button[type=submit]');
    await page.locator('#module-status', { hasText: 'Uploaded <script>' }).waitFor();
    const cell = page.locator('table[aria-label=Modules] td strong', { hasText: evil });
    assert.equal(await cell.textContent(), evil, 'a module named like markup shows as text');
    assert.equal(await page.locator('main script').count(), 0, 'no script element was injected');
    log('uploaded wordcount and a module named <script>…, shown as text');
    await shot(page, 'modules');

    // Submit: upload the texts, see a 422 beside its field, then submit.
    await page.click('#nav a[data-page=submit]');
    await page.locator('h1', { hasText: 'Submit a job' }).waitFor();
    await page.setInputFiles('#dataset-files', texts);
    await page.fill('#dataset-prefix', 'books');
    await page.click('#dataset-upload');
    await page.locator('#dataset-status', { hasText: `Uploaded ${texts.length} files` }).waitFor({ timeout: 60_000 });
    assert.equal(await page.inputValue('#f-inputs'), 'books/*');
    const moduleValue = async (prefix) => page.locator('#f-module option').evaluateAll(
      (opts, p) => opts.find((o) => o.textContent.startsWith(p))?.value, prefix);
    await page.selectOption('#f-module', await moduleValue('wordcount ('));
    await page.fill('#f-name', 'word count of the books');
    await page.fill('#f-reducers', '0');
    await page.click('#submit-job');
    const reducersError = page.locator('[data-field=reducers] .field-error');
    await reducersError.waitFor();
    assert.match(await reducersError.textContent(), /between 1 and/);
    log(`422 shown beside reducers: "${await reducersError.textContent()}"`);
    await shot(page, 'submit-validation');
    await page.fill('#f-reducers', '3');
    await page.fill('#f-split_size', '131072');
    await page.click('#submit-job');

    // Job: progress reaches 100% live, without a reload.
    await page.waitForURL(/#\/jobs\/\d+$/);
    const jobId = page.url().match(/#\/jobs\/(\d+)/)[1];
    await page.locator('#overall').waitFor();
    await page.evaluate(() => { window.notReloaded = true; });
    const firstSeen = await page.textContent('#overall');
    await page.locator('#overall', { hasText: '100%' }).waitFor({ timeout: 180_000 });
    await page.locator('.page-head .badge', { hasText: 'succeeded' }).waitFor();
    assert.equal(await page.evaluate(() => window.notReloaded), true, 'the page reloaded');
    await page.locator('ul.outputs button').nth(2).waitFor();
    log(`job ${jobId}: progress went from ${firstSeen.trim()} to 100% without a reload`);
    await shot(page, 'job');

    // Timeline.
    await page.click('#tab-timeline');
    await page.waitForFunction(() => Number(document.querySelector('canvas.timeline')?.dataset.drawn) > 0);
    assert.ok(page.url().endsWith(`#/jobs/${jobId}/timeline`));
    log(`timeline: ${await page.textContent('.timeline-summary')}`);
    await shot(page, 'timeline');

    // Downloads: every output file through the dashboard, summed, equals a word count done here.
    const names = await page.locator('ul.outputs button').evaluateAll((bs) => bs.map((b) => b.dataset.output));
    assert.deepEqual(names, ['part-r-00000', 'part-r-00001', 'part-r-00002']);
    const got = new Map();
    for (const name of names) {
      const [download] = await Promise.all([
        page.waitForEvent('download'),
        page.click(`button[data-output="${name}"]`),
      ]);
      assert.equal(download.suggestedFilename(), `job-${jobId}-${name}`);
      const file = path.join(downloads, name);
      await download.saveAs(file);
      for (const line of fs.readFileSync(file, 'utf8').split('\n').filter(Boolean)) {
        const [word, count] = line.split('\t');
        assert.ok(!got.has(word), `${word} is in two partitions`);
        got.set(word, Number(count));
      }
    }
    const want = expectedCounts();
    assert.equal(got.size, want.size, 'distinct words');
    for (const [word, count] of want) assert.equal(got.get(word), count, `count of ${word}`);
    log(`downloaded ${names.length} output files: ${got.size} words, counts match`);

    // An attempt's log, reached from the task table.
    await page.click('#tab-tasks');
    await page.locator('table[aria-label=Tasks] tbody a', { hasText: 'map 0' }).click();
    await page.waitForURL(/attempts\/\d+$/);
    await page.locator('pre#stderr').waitFor();
    assert.match(await page.textContent('h1'), /Attempt #\d+: map 0/);
    await page.locator('.page-head .badge', { hasText: 'succeeded' }).waitFor();
    log('opened the log of map 0');
    await shot(page, 'attempt');

    // The jobs list, filtered by state, and the overview with the finished job.
    await page.click('#nav a[data-page=jobs]');
    await page.locator('table[aria-label=Jobs] tbody tr .badge', { hasText: 'succeeded' }).waitFor();
    await page.selectOption('#state-filter', 'failed');
    await page.locator('table[aria-label=Jobs] td.empty', { hasText: 'No jobs match.' }).waitFor();
    assert.ok(page.url().endsWith('#/jobs?state=failed'));
    await page.selectOption('#state-filter', '');
    assert.equal(await page.locator('table[aria-label=Jobs] tbody tr').count(), 1);
    await shot(page, 'jobs');
    await page.click('#nav a[data-page=overview]');
    await page.locator('table[aria-label="Recent jobs"] tbody tr .badge', { hasText: 'succeeded' }).waitFor();
    log('jobs list filters by state; the overview lists the finished job');

    // A failing job: misbehave panics; with one attempt the job fails and says why.
    await page.click('#nav a[data-page=submit]');
    await page.locator('h1', { hasText: 'Submit a job' }).waitFor();
    await page.selectOption('#f-module', await moduleValue('<script>'));
    await page.fill('#f-inputs', 'books/pg-grimm.txt');
    await page.fill('#f-args', 'mode=panic');
    await page.fill('#f-max_attempts', '1');
    await page.fill('#f-reducers', '1');
    await page.click('#submit-job');
    await page.waitForURL(/#\/jobs\/\d+$/);
    const error = page.locator('#job-error');
    try {
      await error.waitFor({ timeout: 90_000 });
    } catch (err) {
      const failedId = page.url().match(/#\/jobs\/(\d+)/)[1];
      const auth = { headers: { Authorization: `Bearer ${token}` } };
      const job = await (await fetch(`${base}/api/v1/jobs/${failedId}`, auth)).json();
      const attempts = await (await fetch(`${base}/api/v1/jobs/${failedId}/attempts`, auth)).json();
      throw new Error(`job ${failedId} should have failed but is ${job.state}; attempts: `
        + `${attempts.map((a) => `${a.kind} ${a.index} ${a.outcome}`).join(', ')}`, { cause: err });
    }
    const errorText = await error.textContent();
    assert.match(errorText, /This job failed\. The module crashed/);
    assert.match(errorText, /deliberate panic/);
    log(`failed job shows: "${await page.textContent('#job-error .error-text')}"`);
    await shot(page, 'failed-job');
    await page.locator('#job-error a').click();
    await page.locator('#attempt-error').waitFor();
    assert.match(await page.textContent('#attempt-error'), /deliberate panic/);
    assert.match(await page.textContent('pre#stderr'), /deliberate panic/);
    log('the failed attempt shows the panic and its stderr');
    await shot(page, 'failed-attempt');

    // The failed job is listed under its state, and on the overview.
    await page.click('#nav a[data-page=jobs]');
    await page.locator('table[aria-label=Jobs] tbody tr').nth(1).waitFor();
    await page.selectOption('#state-filter', 'failed');
    assert.equal(await page.locator('table[aria-label=Jobs] tbody tr').count(), 1);
    await page.locator('table[aria-label=Jobs] tbody tr .badge', { hasText: 'failed' }).waitFor();
    await shot(page, 'jobs-failed');
    await page.click('#nav a[data-page=overview]');
    await page.locator('table[aria-label="Recent jobs"] tbody tr').nth(1).waitFor();
    await shot(page, 'overview-after');

    assert.deepEqual(problems, [], 'the browser reported errors');
    console.log(`dashboard test passed; screenshots in ${path.relative(root, shots)}/`);
  } catch (err) {
    await page?.screenshot({ path: path.join(shots, 'failure.png'), fullPage: true }).catch(() => {});
    console.error(`quern up log:\n${cluster.log()}`);
    throw err;
  } finally {
    await browser?.close();
    cluster.child.kill('SIGTERM');
    await new Promise((resolve) => {
      if (cluster.child.exitCode !== null) resolve();
      else cluster.child.on('exit', resolve);
    });
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
