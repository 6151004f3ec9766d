// Tollgate console: progressive enhancement only; every page works without it.
'use strict';
document.addEventListener('submit', (e) => {
  const form = e.target.closest('form[data-confirm]');
  if (form && !window.confirm(form.dataset.confirm)) e.preventDefault();
});

// "Try it": a WebSocket client on the product's gateway, with the browser's own API.
function tryIt(root) {
  const $ = (id) => document.getElementById(id);
  let ws = null;
  let opened = 0;
  const url = () => {
    const base = root.dataset[$('try-env').value];
    let path = $('try-path').value || '/';
    if (!path.startsWith('/')) path = '/' + path;
    return base + path + (path.includes('?') ? '&' : '?') + $('try-app').value;
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
  ['try-app', 'try-env', 'try-path'].forEach((id) => $(id).addEventListener('input', show));
  show();
  $('try-connect').addEventListener('click', () => {
    const started = performance.now();
    opened = 0;
    log('info', 'connecting to ' + url());
    ws = new WebSocket(url());
    ws.onopen = () => { opened = performance.now(); log('open', `connected in ${(opened - started).toFixed(0)} ms`); connected(true); };
    ws.onmessage = (e) => log('received', typeof e.data === 'string' ? e.data : '(binary)');
    ws.onerror = () => log('error', 'the connection failed (refused upgrades show as a close with code 1006)');
    ws.onclose = (e) => { log('closed', `code ${e.code}${e.reason ? ' ' + e.reason : ''}`); connected(false); ws = null; };
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
  document.querySelectorAll('input[data-validate-pattern]').forEach((input) => {
    const note = document.createElement('span');
    note.className = 'field-error';
    note.id = input.id + '-live';
    note.setAttribute('aria-live', 'polite');
    input.after(note);
    input.setAttribute('aria-describedby', note.id);
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
  checkPatterns();
});
