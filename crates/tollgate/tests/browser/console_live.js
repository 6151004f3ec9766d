// The operator's day in the console, in headless Chromium (Debian's): the dashboard
// following live traffic (real WebSockets from a second browser tab, HTTP requests from
// Node) without a reload; "Try it" explaining each refusal; editing a metric and a
// limit; a save refused with `tollgate check`'s message; the promote diff after a
// certificate upload. Every page is audited with axe-core. Saves screenshots in
// SHOTS_DIR; prints one JSON line with what it saw.
//
// usage: node console_live.js ADMIN_URL TOKEN STAGING_PORT PRODUCTION_PORT CERT_FILE SHOTS_DIR
'use strict';
const { audit, run, screenshot } = require('./common');
const http = require('http');
const path = require('path');
const fs = require('fs');

const [admin, token, stagingPort, productionPort, certFile, shots] = process.argv.slice(2);
fs.mkdirSync(shots, { recursive: true });

// A plain HTTP request to the staging gateway (Node does not resolve *.localhost, so it
// connects to 127.0.0.1 and names the product in Host).
function get(pathAndQuery) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: Number(stagingPort), path: pathAndQuery,
      headers: { host: 'chat-staging.localhost' } }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode)); });
    req.on('error', reject);
    req.end();
  });
}

run(async (browser, seen) => {
  seen.refusals = {};
  let step = 20;
  {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.setDefaultTimeout(20000);
    const shot = async (name) => {
      step += 1;
      await screenshot(page, path.join(shots, `${step}-${name}.png`), seen);
    };
    const check = async (name) => {
      const found = await audit(page);
      if (found.length) seen.a11y[name] = found;
    };
    const click = (name) => page.getByRole('button', { name, exact: true }).click();
    const tab = (name) => page.locator('nav[aria-label="Product"]').getByRole('link', { name, exact: true });

    // Log in: the dashboard is the first page.
    await page.goto(admin + '/');
    await page.getByLabel('Admin token').fill(token);
    await click('Log in');
    await page.getByRole('heading', { name: 'Dashboard', exact: true }).waitFor();
    await check('dashboard-empty');
    seen.empty_chart = await page.locator('#dashboard figure.chart').first().innerText();
    await page.evaluate(() => { window.sameDocument = true; });

    // Live traffic: three WebSockets from another tab (Chromium's own WebSocket), each
    // sending messages; HTTP requests with and without a key.
    const key = await page.evaluate(async () => (await (await fetch('/applications/live-app')).text()).match(/user_key<\/dt><dd><code>([0-9a-f]+)/)[1]);
    const clients = await browser.newPage();
    await clients.goto(admin + '/console.css');
    const opened = await clients.evaluate(async ({ url }) => {
      window.sockets = [];
      for (let i = 0; i < 3; i++) {
        const ws = new WebSocket(url);
        await new Promise((ok, fail) => { ws.onopen = ok; ws.onerror = () => fail(new Error('refused')); });
        for (let j = 0; j < 5; j++) ws.send('hello ' + j);
        window.sockets.push(ws);
      }
      return window.sockets.length;
    }, { url: `ws://chat-staging.localhost:${stagingPort}/?user_key=${key}` });
    seen.opened = opened;
    const statuses = [];
    for (let i = 0; i < 12; i++) statuses.push(await get(`/?user_key=${key}`));
    for (let i = 0; i < 4; i++) statuses.push(await get('/'));
    seen.statuses = statuses;
    // The panel refreshes by itself; wait until it shows the traffic (no reload).
    await page.waitForFunction(() => {
      const n = (f) => Number((document.querySelector(`[data-figure="${f}"]`) || {}).textContent?.replace(/\D/g, '') || 0);
      return n('staging-open') >= 3 && n('staging-2xx') >= 12 && n('staging-4xx') >= 4 && n('staging-messages') >= 30;
    }, null, { timeout: 60000 });
    seen.same_document = await page.evaluate(() => window.sameDocument === true);
    seen.figures = await page.evaluate(() => Object.fromEntries([...document.querySelectorAll('[data-figure]')].map((e) => [e.dataset.figure, e.textContent])));
    seen.hover = await page.locator('#dashboard svg g.bucket title').last().textContent();
    seen.freshness = await page.locator('.freshness').innerText();
    await shot('dashboard');
    await check('dashboard');

    // Try it explains refusals.
    const refusal = async (label, product, env, app) => {
      await page.goto(`${admin}/products/${product}/try`);
      await page.getByLabel('Gateway').selectOption(env);
      await page.getByLabel('Application').selectOption({ label: app });
      await click('Connect');
      await page.locator('#try-why p').nth(1).waitFor();
      seen.refusals[label] = await page.locator('#try-why').innerText();
    };
    await refusal('not_promoted', 'chat', 'production', 'live-app (basic, live)');
    await refusal('no_credentials', 'chat', 'staging', '(no credentials)');
    await shot('try-it-refused');
    await check('try-it-refused');
    await refusal('suspended', 'chat', 'staging', 'held-app (basic, suspended)');
    await refusal('limit', 'chat', 'staging', 'spent-app (blocked, live)');
    await refusal('websocket_disabled', 'plain', 'staging', 'plain-app (basic, live)');
    seen.closed_line = await page.locator('#try-log').getByText('[closed] code 1006').innerText();

    // Edit a metric and a limit.
    await page.goto(`${admin}/products/chat/metrics`);
    await page.getByRole('link', { name: 'Edit messages' }).click();
    await page.getByLabel('Friendly name').fill('Chat messages');
    await click('Save metric');
    await page.locator('table').getByText('Chat messages').waitFor();
    await check('metrics');
    await page.goto(`${admin}/products/chat/plans/basic`);
    await page.getByRole('link', { name: 'Edit the hits limit per minute' }).click();
    await page.getByLabel('Max value').fill('500');
    await check('limit-edit');
    await click('Save limit');
    await page.locator('table').getByRole('cell', { name: '500', exact: true }).waitFor();
    seen.limit_row = await page.locator('table tbody tr').first().innerText();

    // A save refused with the message `tollgate check` gives.
    await page.goto(`${admin}/backends/echo`);
    await page.getByLabel('CA certificate file', { exact: true }).fill('/nonexistent/ca.pem');
    await page.getByLabel('CA certificate (PEM)', { exact: true }).fill('');
    await click('Save');
    seen.refused_save = await page.getByRole('alert').first().innerText();
    seen.field_error = await page.locator('#f-tls-ca_file-err').innerText().catch(() => '');
    await shot('save-refused');
    await check('save-refused');

    // A certificate uploaded, then the promote diff shows it by subject and fingerprint.
    await page.getByLabel('CA certificate file', { exact: true }).fill('');
    await page.getByLabel('Upload a CA certificate file', { exact: true }).setInputFiles(certFile);
    await page.waitForFunction(() => document.getElementById('f-tls-ca_pem').value.includes('BEGIN CERTIFICATE'));
    await click('Save');
    await page.getByText('Saved.').waitFor();
    seen.backend_certificate = await page.locator('dl.certificate').first().innerText();
    await page.goto(`${admin}/products/chat/integration`);
    const diff = page.locator('.diff[aria-label="Draft against staging"]');
    seen.diff = await diff.innerText();
    seen.diff_has_pem = (await page.content()).includes('BEGIN CERTIFICATE');
    seen.unchanged = await page.locator('details.unchanged summary').first().innerText();
    await shot('promote-diff');
    await check('promote-diff');

    // The WebSockets close normally (the test then reads their analytics).
    await clients.evaluate(() => Promise.all(window.sockets.map((ws) => new Promise((done) => {
      ws.onclose = done;
      ws.close(1000, 'done');
    }))));
    await page.goto(`${admin}/analytics?product=chat&application=live-app&metric=websocket:client_messages&granularity=minute`);
    await check('analytics');
  }
});
