// One instance of a backend fleet: Node's http server and `ws`. Every HTTP answer
// carries `x-endpoint: NAME`; `/health` answers 200; WebSocket messages are echoed as
// `NAME: message`. Listens on HOST (default 127.0.0.1):PORT (0: any) and prints its port on the first
// line of stdout.
'use strict';
const http = require('http');
const { WebSocketServer } = require(process.env.WS_MODULE);
const name = process.env.NAME;
const server = http.createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    res.writeHead(200, { 'content-type': 'text/plain', 'x-endpoint': name });
    res.end(name);
  });
});
const wss = new WebSocketServer({ server });
wss.on('connection', (ws) => {
  ws.on('error', () => {});
  ws.on('message', (data) => ws.send(`${name}: ${data}`));
});
server.listen(Number(process.env.PORT || 0), process.env.HOST || '127.0.0.1', () => {
  console.log(`listening on ${server.address().port}`);
});
