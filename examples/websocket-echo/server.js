// A WebSocket backend over HTTPS with a self-signed certificate, built on the `ws`
// package. It replies `reply from server : <message>` to every text message and echoes
// binary messages. A text message `close <code> [reason]` makes it close the
// connection with that code, to show close codes travelling through the gateway.
//
// Environment: PORT (default 8443; 0 picks a free port), HOST (default 127.0.0.1),
// CERT_DIR (default ./ssl-cert, holding key.pem and certificate.pem), ECHO=1 for a
// plain echo (what the Autobahn conformance cases expect).
'use strict';
const fs = require('fs');
const https = require('https');
const path = require('path');
const { WebSocketServer } = require('ws');

const certDir = process.env.CERT_DIR || path.join(__dirname, 'ssl-cert');
const server = https.createServer({
  key: fs.readFileSync(path.join(certDir, 'key.pem')),
  cert: fs.readFileSync(path.join(certDir, 'certificate.pem')),
}, (req, res) => {
  // Plain HTTPS requests get a short JSON description of what arrived.
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ method: req.method, url: req.url, headers: req.headers }));
});

const wss = new WebSocketServer({
  server,
  perMessageDeflate: true,
  // Accept the `chat` subprotocol when a client offers it.
  handleProtocols: (protocols) => (protocols.has('chat') ? 'chat' : false),
});

wss.on('error', (err) => console.error('server error:', err.message));
wss.on('connection', (ws, req) => {
  // Without an error handler one malformed frame would kill the process.
  ws.on('error', (err) => console.error('connection error:', err.message));
  ws.on('message', (data, isBinary) => {
    if (process.env.ECHO) {
      // Plain echo (ECHO=1), as conformance suites expect.
      ws.send(data, { binary: isBinary });
      return;
    }
    if (isBinary) {
      ws.send(data, { binary: true });
      return;
    }
    const text = data.toString();
    const close = /^close (\d{4})(?: (.*))?$/.exec(text);
    if (close) {
      ws.close(Number(close[1]), close[2] || '');
      return;
    }
    ws.send(`reply from server : ${text}`);
  });
});

server.listen(Number(process.env.PORT || 8443), process.env.HOST || '127.0.0.1', () => {
  // The first line on stdout says where it listens (tests read it).
  console.log(`listening on ${server.address().port}`);
});

process.on('SIGTERM', () => process.exit(0));
