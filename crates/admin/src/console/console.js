// Tollgate console: progressive enhancement only; every page works without it.
'use strict';
document.addEventListener('submit', (e) => {
  const form = e.target.closest('form[data-confirm]');
  if (form && !window.confirm(form.dataset.confirm)) e.preventDefault();
});

// A select that changes what the page shows (the dashboard's product) applies at once.
document.addEventListener('change', (e) => {
  if (e.target.matches && e.target.matches('select[data-autosubmit]')) e.target.form.submit();
});

// "Try it": a WebSocket client on the product's gateway, with the browser's own API.
// A browser hides why an upgrade was refused (it only reports close code 1006), so
// when the connection fails before it opens, the page asks the console, which sends
// the same upgrade to the gateway and reports its status, error and the fix.
function tryIt(root) {
  const $ = (id) => document.getElementById(id);
  const meanings = JSON.parse(root.dataset.closeCodes || '{}');
  const meaning = (code) => meanings[code]
    || (code >= 4000 && code <= 4999 ? meanings['4000'] : code >= 3000 && code <= 3999 ? meanings['3000'] : 'not a standard code');
  let ws = null;
  let opened = 0;
  const parts = () => {
    let path = $('try-path').value || '/';
    if (!path.startsWith('/')) path = '/' + path;
    return { env: $('try-env').value, path, query: $('try-app').value };
  };
  const url = () => {
    const { env, path, query } = parts();
    return root.dataset[env] + path + (query ? (path.includes('?') ? '&' : '?') + query : '');
  };
  const show = () => { $('try-url').textContent = url(); };
  const log = (kind, text) => {
    const line = document.createElement('div');
    const t = (performance.now() - opened).toFixed(0);
    line.textContent = `[${kind}] ${text}` + (opened ? ` (+${t} ms)` : '');
    line.className = 'log-' + kind;
    $('try-log').appendChild(line);
    $('try-log').scrollTop = $('try-log').scrollHeight;
  };
  const connected = (yes) => {
    $('try-send').disabled = !yes;
    $('try-close').disabled = !yes;
    $('try-connect').disabled = yes;
  };
  const why = async () => {
    const { env, path, query } = parts();
    const box = $('try-why');
    box.hidden = false;
    box.className = 'error';
    box.textContent = 'The connection was refused; asking the gateway why…';
    try {
      const r = await fetch(root.dataset.probe + '?' + new URLSearchParams({ env, path, query }));
      const v = await r.json();
      box.textContent = '';
      if (v.error) { box.textContent = v.error; return; }
      const head = document.createElement('p');
      const strong = document.createElement('strong');
      strong.textContent = `The ${v.environment} gateway answered ${v.status}` + (v.code ? ` ${v.code}` : '');
      head.appendChild(strong);
      if (v.message) head.appendChild(document.createTextNode(': ' + v.message));
      const fix = document.createElement('p');
      fix.textContent = v.fix;
      box.append(head, fix);
      log('refused', `${v.status}${v.code ? ' ' + v.code : ''}: ${v.fix}`);
    } catch (err) {
      box.textContent = 'The console could not ask the gateway: ' + err;
    }
  };
  ['try-app', 'try-env', 'try-path'].forEach((id) => $(id).addEventListener('input', show));
  show();
  $('try-connect').addEventListener('click', () => {
    const started = performance.now();
    let open = false;
    opened = 0;
    $('try-why').hidden = true;
    log('info', 'connecting to ' + url());
    ws = new WebSocket(url());
    ws.onopen = () => { open = true; opened = performance.now(); log('open', `connected in ${(opened - started).toFixed(0)} ms`); connected(true); };
    ws.onmessage = (e) => log('received', typeof e.data === 'string' ? e.data : '(binary)');
    ws.onclose = (e) => {
      log('closed', `code ${e.code} (${meaning(e.code)})${e.reason ? ': ' + e.reason : ''}`);
      connected(false);
      ws = null;
      if (!open) why();
    };
  });
  $('try-send').addEventListener('click', () => {
    if (!ws) return;
    ws.send($('try-message').value);
    log('sent', $('try-message').value);
  });
  $('try-message').addEventListener('keydown', (e) => { if (e.key === 'Enter') $('try-send').click(); });
  $('try-close').addEventListener('click', () => ws && ws.close(1000, 'closed from the console'));
}

// Mapping rule patterns are checked with the server's own rules as they are typed.
function checkPatterns() {
  document.querySelectorAll('[data-validate-pattern] input').forEach((input) => {
    const note = document.createElement('span');
    note.className = 'field-error';
    note.id = input.id + '-live';
    note.setAttribute('aria-live', 'polite');
    input.after(note);
    const described = (input.getAttribute('aria-describedby') || '').split(' ').filter(Boolean);
    input.setAttribute('aria-describedby', described.concat(note.id).join(' '));
    let timer = null;
    input.addEventListener('input', () => {
      clearTimeout(timer);
      timer = setTimeout(async () => {
        const r = await fetch('/check/pattern?pattern=' + encodeURIComponent(input.value));
        if (!r.ok) return;
        const v = await r.json();
        note.textContent = v.ok ? '' : v.error;
        input.setAttribute('aria-invalid', v.ok ? 'false' : 'true');
      }, 150);
    });
  });
}

// The dashboard follows live traffic: its panel is fetched again every few seconds
// while the page is visible (the server renders it; nothing is drawn here).
function dashboard(root) {
  const every = Number(root.dataset.refreshMs) || 5000;
  const refresh = async () => {
    if (document.visibilityState !== 'visible') return;
    try {
      const r = await fetch(root.dataset.src, { headers: { Accept: 'text/html' } });
      if (r.ok) {
        // Keep open "The numbers" tables open across refreshes.
        const open = [...root.querySelectorAll('details[open] summary')].map((s) => s.textContent);
        root.innerHTML = await r.text();
        root.querySelectorAll('details summary').forEach((s) => { if (open.includes(s.textContent)) s.parentElement.open = true; });
        root.dataset.updated = String(Date.now());
      }
    } catch (err) { /* the next round tries again */ }
  };
  setInterval(refresh, every);
  document.addEventListener('visibilitychange', refresh);
}

// A file input fills the text area it names (certificate uploads stay text).
document.addEventListener('change', (e) => {
  const input = e.target;
  if (!input.dataset || !input.dataset.fills || !input.files || !input.files[0]) return;
  const reader = new FileReader();
  reader.onload = () => { document.getElementById(input.dataset.fills).value = reader.result; };
  reader.readAsText(input.files[0]);
});

document.addEventListener('DOMContentLoaded', () => {
  const root = document.getElementById('try');
  if (root) tryIt(root);
  const board = document.getElementById('dashboard');
  if (board) dashboard(board);
  checkPatterns();
});
