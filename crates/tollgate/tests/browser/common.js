// What the browser tests share: Debian's Chromium launched headless (never a
// downloaded browser), and an accessibility audit of the page with axe-core.
'use strict';
const { chromium } = require('playwright-core');
const path = require('path');

async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

// axe-core's serious and critical violations on the page as it is now (WCAG 2.1 A and
// AA rules), as "rule: target" strings; an empty list when there is none.
async function audit(page) {
  if (!(await page.evaluate(() => typeof window.axe !== 'undefined'))) {
    await page.addScriptTag({ path: path.join(__dirname, 'node_modules/axe-core/axe.min.js') });
  }
  const violations = await page.evaluate(async () => {
    const r = await window.axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, targets: v.nodes.map((n) => n.target.join(' ')) }));
  });
  return violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => `${v.id}: ${v.targets.slice(0, 3).join(', ')}`);
}

// Saves a full-page screenshot of `page` in `file`. Chromium's full-page capture now and
// then refuses ("Page.captureScreenshot: Unable to capture screenshot", an upstream
// Chromium fault, microsoft/playwright#32144) on a page that it captured a moment
// before; a screenshot is a record of the step, not what the test checks, so a refused
// capture is tried again and then taken of the viewport only. Counts the fallbacks in
// `seen.screenshot_fallbacks`; any other error is thrown.
async function screenshot(page, file, seen) {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await page.screenshot({ path: file, fullPage: true });
      return;
    } catch (e) {
      if (!/Unable to capture screenshot/.test(String(e && e.message))) throw e;
    }
  }
  seen.screenshot_fallbacks = (seen.screenshot_fallbacks || 0) + 1;
  await page.screenshot({ path: file });
}

// Runs `body(browser, seen)` in a fresh browser and prints one JSON line: what it saw,
// or the error with what it had seen until then (and a failing exit status).
async function run(body) {
  const browser = await launch();
  const seen = { a11y: {} };
  try {
    await body(browser, seen);
    console.log(JSON.stringify(seen));
  } catch (e) {
    console.log(JSON.stringify({ error: String((e && e.message) || e), seen }));
    process.exitCode = 1;
  } finally {
    await browser.close();
  }
}

module.exports = { launch, audit, run, screenshot };
