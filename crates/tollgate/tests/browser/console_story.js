// The 3scale story in the console, clicked through in headless Chromium (Debian's):
// from an empty store to a WebSocket answering on staging, then production.
// Saves a screenshot of every step in SHOTS_DIR and audits every page with axe-core;
// prints one JSON line with what it saw (`a11y` lists serious violations by page).
//
// usage: node console_story.js ADMIN_URL TOKEN BACKEND_URL CA_FILE STAGING_URL PRODUCTION_URL SHOTS_DIR
const { audit, run, screenshot } = require('./common');
const path = require('path');
const fs = require('fs');

const [admin, token, backendUrl, caFile, stagingUrl, productionUrl, shots] = process.argv.slice(2);
fs.mkdirSync(shots, { recursive: true });

run(async (browser, seen) => {
  let step = 0;
  {
    const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
    page.setDefaultTimeout(15000);
    const shot = async (name) => {
      step += 1;
      await screenshot(page, path.join(shots, `${String(step).padStart(2, '0')}-${name}.png`), seen);
      const found = await audit(page);
      if (found.length) seen.a11y[name] = found;
    };
    const tab = (name) => page.locator('nav[aria-label="Product"]').getByRole('link', { name, exact: true });
    const main = (name) => page.locator('nav[aria-label="Main"]').getByRole('link', { name, exact: true });
    const click = (name) => page.getByRole('button', { name, exact: true }).click();

    // Log in.
    await page.goto(admin + '/backends');
    await page.getByLabel('Admin token').fill(token);
    await shot('login');
    await click('Log in');
    await page.waitForURL('**/backends');

    // Backend: wss with the example's self-signed certificate pinned.
    await page.getByRole('link', { name: 'Create a backend' }).click();
    await page.getByLabel('System name').fill('echo');
    await page.getByLabel('Name', { exact: true }).fill('Echo service');
    await page.getByLabel('Private Base URL').fill(backendUrl);
    // Uploaded through the browser: the certificate is stored as `tls.ca_pem`.
    await page.getByLabel('Upload a CA certificate file').setInputFiles(caFile);
    await page.waitForFunction(() => document.getElementById('f-tls-ca_pem').value.includes('BEGIN CERTIFICATE'));
    await shot('backend');
    await click('Create backend');
    await page.getByText('Saved.').waitFor();

    // Product with its public base URLs.
    await main('Products').click();
    await page.getByRole('link', { name: 'Create a product' }).click();
    await page.getByLabel('System name').fill('chat');
    await page.getByLabel('Name', { exact: true }).fill('Chat API');
    await page.getByLabel('Staging Public Base URL').fill(stagingUrl);
    await page.getByLabel('Production Public Base URL').fill(productionUrl);
    await shot('product');
    await click('Create product');
    await page.getByRole('heading', { name: 'Integration settings' }).waitFor();

    // It uses the backend at /.
    await tab('Backends').click();
    await page.getByLabel('Path').fill('/');
    await click('Add backend');
    await page.locator('table').getByText('echo').waitFor();
    await shot('backend-usage');

    // A metric, and a mapping rule counting upgrades on hits.
    await tab('Metrics & methods').click();
    await page.locator('form[action$="/metrics"]').getByLabel('System name').fill('messages');
    await page.getByLabel('Unit').fill('message');
    await click('Add metric');
    await page.locator('table').getByText('messages').waitFor();
    await shot('metrics');
    await tab('Mapping rules').click();
    await page.getByLabel('Pattern').fill('no-slash');
    seen.pattern_error = await page.locator('.field-error[aria-live]').filter({ hasText: /./ }).innerText();
    await page.getByLabel('Pattern').fill('/');
    await page.locator('[data-validate-pattern] input[aria-invalid="false"]').waitFor();
    await click('Add mapping rule');
    await page.locator('table').getByText('+1').waitFor();
    await shot('mapping-rules');

    // A plan with a limit.
    await tab('Application plans').click();
    await page.getByLabel('System name').fill('basic');
    await page.getByLabel('Max WebSocket connections').fill('5');
    await click('Create application plan');
    await page.getByRole('heading', { name: 'Plan basic' }).waitFor();
    await page.getByLabel('Period').selectOption('minute');
    await page.getByLabel('Max value').fill('100');
    await click('Add limit');
    await page.locator('table').getByText('minute').waitFor();
    await shot('plan');

    // The WebSocket policy.
    await tab('Policies').click();
    await page.getByLabel('Policy').selectOption('websocket');
    await click('Add policy');
    await page.locator('table').getByRole('link', { name: 'websocket' }).waitFor();
    await shot('policies');

    // An account and its application.
    await main('Accounts').click();
    await page.getByLabel('Name').fill('acme');
    await click('Create account');
    await page.getByLabel('Name').fill('acme-chat');
    await page.getByLabel('Product and application plan').selectOption('chat/basic');
    await click('Create application');
    await page.getByRole('heading', { name: 'Application acme-chat' }).waitFor();
    seen.user_key = await page.locator('dt:text("user_key") + dd').innerText();
    await shot('application');

    // Promote to Staging.
    await main('Products').click();
    await page.getByRole('link', { name: 'Chat API' }).click();
    await tab('Integration').click();
    await shot('integration-draft');
    await click('Promote to Staging');
    seen.staging = await page.getByRole('status').innerText();
    await shot('promoted-to-staging');

    // Try it: the browser's own WebSocket to the staging gateway.
    await tab('Try it').click();
    await page.getByLabel('Gateway').selectOption('staging');
    seen.try_url = await page.locator('#try-url').innerText();
    await click('Connect');
    await page.locator('#try-log').getByText('[open]').waitFor();
    await page.getByLabel('Message').fill('hello');
    await click('Send');
    await page.locator('#try-log').getByText('[received] reply from server : hello').waitFor();
    seen.reply = 'reply from server : hello';
    await shot('try-it');
    await click('Close');
    await page.locator('#try-log').getByText('[closed] code 1000').waitFor();

    // Promote to Production and see the version change.
    await tab('Integration').click();
    seen.before = await page.locator('main p').filter({ hasText: 'Staging runs' }).innerText();
    seen.diff_rows = await page.locator('.diff[aria-label="Staging against production"] tbody tr').count();
    page.once('dialog', (d) => d.accept());
    await click('Promote to Production');
    seen.production = await page.getByRole('status').innerText();
    seen.after = await page.locator('main p').filter({ hasText: 'Staging runs' }).innerText();
    await shot('promoted-to-production');
  }
});
