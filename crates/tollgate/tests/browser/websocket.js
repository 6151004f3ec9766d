// Opens a page of the gateway's origin in headless Chromium (Debian's), then a
// WebSocket from that page with the browser's own WebSocket API: it sends each
// message given and waits for the reply, then closes. Prints one JSON line:
// {"replies": [...], "close": {"code": N, "reason": "..."}} or {"error": "..."}.
//
// usage: node websocket.js PAGE_URL WS_URL MESSAGE...
const { chromium } = require('playwright-core');

const [pageUrl, wsUrl, ...messages] = process.argv.slice(2);

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  try {
    // The gateway's test certificate is self-signed.
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    const page = await context.newPage();
    await page.goto(pageUrl);
    const result = await page.evaluate(async ({ wsUrl, messages }) => {
      const ws = new WebSocket(wsUrl);
      const replies = [];
      const next = () => new Promise((resolve, reject) => {
        ws.onmessage = (e) => resolve(e.data);
        ws.onclose = (e) => reject(new Error(`closed ${e.code} ${e.reason}`));
      });
      await new Promise((resolve, reject) => {
        ws.onopen = resolve;
        ws.onerror = () => reject(new Error('the WebSocket did not open'));
      });
      for (const m of messages) {
        const reply = next();
        ws.send(m);
        replies.push(await reply);
      }
      const closed = new Promise((resolve) => { ws.onclose = (e) => resolve({ code: e.code, reason: e.reason }); });
      ws.close(1000, 'done');
      return { replies, close: await closed };
    }, { wsUrl, messages });
    console.log(JSON.stringify(result));
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  console.log(JSON.stringify({ error: String(e && e.message || e) }));
  process.exit(1);
});
