// An HTTPS backend that requires a client certificate signed by the authority in
// $CLIENT_CA (Node's own TLS: requestCert + rejectUnauthorized). It answers with the
// subject of the client's certificate. Listens on 127.0.0.1, a port of its choice,
// printed as "listening on PORT".
const https = require('https');
const fs = require('fs');
const server = https.createServer({
  cert: fs.readFileSync(process.env.SERVER_CERT),
  key: fs.readFileSync(process.env.SERVER_KEY),
  ca: fs.readFileSync(process.env.CLIENT_CA),
  requestCert: true,
  rejectUnauthorized: true,
}, (req, res) => {
  const peer = req.socket.getPeerCertificate();
  res.writeHead(200, { 'content-type': 'text/plain' });
  res.end(`client ${peer.subject ? peer.subject.CN : 'none'}`);
});
server.listen(0, '127.0.0.1', () => console.log(`listening on ${server.address().port}`));
