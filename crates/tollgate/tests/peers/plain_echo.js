// A plain WebSocket echo server (Node `ws`, permessage-deflate on) for the Autobahn
// conformance cases. Prints its port on the first line of stdout.
'use strict';
const { WebSocketServer } = require(process.env.WS_MODULE);
// ws 8.23 caps a message at 16,384 fragments by default (a DoS guard), which Autobahn's
// 9.3.1 and 9.4.1 (4 MiB in 64-byte fragments) exceed: lift the cap for conformance.
const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', perMessageDeflate: true, maxFragments: 0 });
wss.on('error', (e) => console.error(e.message));
wss.on('listening', () => console.log(`listening on ${wss.address().port}`));
wss.on('connection', (ws) => {
  ws.on('error', () => {});
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
});
