// A third-party server (the npm "ws" package) for wsloop's client to dial.
// Usage: node server.mjs plain|deflate|tls [CERT.pem KEY.pem]
// It prints "listening PORT" once it listens, then one line per event:
// "close CODE" when a connection ends (the code the client's close
// carried, or 1006), "error MESSAGE" for every protocol error it sees in
// what the client sent. It echoes every message with its type, and answers
// the text "close-4001" by closing with 4001 "bye". dial_test.go runs it.
import { createRequire } from "node:module";
import https from "node:https";
import fs from "node:fs";

// The ws package from where the test found it ($WS_MODULE: npm's
// node_modules here, or Debian's node-ws in /usr/share/nodejs, which an ES
// module's import would not search).
const { WebSocketServer } = createRequire(import.meta.url)(process.env.WS_MODULE || "ws");

const [mode, certFile, keyFile] = process.argv.slice(2);
const say = (line) => process.stdout.write(line + "\n");
const opts = { maxPayload: 64 << 20, perMessageDeflate: mode === "deflate" ? { threshold: 0 } : false };

let wss;
if (mode === "tls") {
  const server = https.createServer({ cert: fs.readFileSync(certFile), key: fs.readFileSync(keyFile) });
  wss = new WebSocketServer({ ...opts, server });
  server.listen(0, "127.0.0.1", () => say("listening " + server.address().port));
} else {
  wss = new WebSocketServer({ ...opts, host: "127.0.0.1", port: 0 }, () => say("listening " + wss.address().port));
}

wss.on("connection", (ws, req) => {
  say("open " + (req.headers["sec-websocket-extensions"] || "-"));
  ws.on("error", (err) => say("error " + err.message));
  ws.on("message", (data, isBinary) => {
    if (!isBinary && data.toString() === "close-4001") {
      ws.close(4001, "bye");
      return;
    }
    ws.send(data, { binary: isBinary });
  });
  ws.on("close", (code) => say("close " + code));
});
process.stdin.on("end", () => process.exit(0)); // the test ends: so do we
process.stdin.resume();
