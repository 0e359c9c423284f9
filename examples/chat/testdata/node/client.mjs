// A third-party client (the npm "ws" package) against a wsloop server.
// Usage: node client.mjs URL echo|echo-deflate|chat
// It exchanges text and binary, pings, closes with 4000, and exits 0 only if
// every step behaved and no protocol error was seen. interop_test.go runs it.
import { createRequire } from "node:module";

// The ws package from where the test found it ($WS_MODULE: npm's
// node_modules here, or Debian's node-ws in /usr/share/nodejs, which an ES
// module's import would not search).
const WebSocket = createRequire(import.meta.url)(process.env.WS_MODULE || "ws");

const [url, mode] = process.argv.slice(2);
const fail = (why) => { console.error("FAIL: " + why); process.exit(1); };
setTimeout(() => fail("timed out"), 10000).unref();

// wss:// to a test server with a self-signed certificate.
const ws = new WebSocket(url, url.startsWith("wss:") ? { rejectUnauthorized: false } : {});
const inbox = [];
let waiter = null;
ws.on("error", (err) => fail("error event: " + err.message));
ws.on("unexpected-response", (_, res) => fail("handshake refused: " + res.statusCode));
ws.on("message", (data, isBinary) => { inbox.push({ data, isBinary }); if (waiter) waiter(); });

function next(what) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error("no " + what)), 5000);
    const take = () => {
      if (inbox.length === 0) return;
      waiter = null; clearTimeout(t); resolve(inbox.shift());
    };
    waiter = take; take();
  });
}

async function nextJSON(type) {
  for (;;) {
    const m = await next(type);
    if (m.isBinary) fail("chat server sent a binary frame");
    const obj = JSON.parse(m.data.toString("utf8"));
    if (obj.type === type) return obj;
  }
}

const pong = (payload) => new Promise((resolve) => {
  ws.once("pong", (data) => resolve(data.toString()));
  ws.ping(Buffer.from(payload));
});

const closed = () => new Promise((resolve) => ws.once("close", (code, reason) => resolve({ code, reason: reason.toString() })));

ws.on("open", async () => {
  try {
    const bin = Buffer.from([0, 1, 2, 0xfe, 0xff]);
    if (mode === "echo-deflate" && !String(ws.extensions).includes("permessage-deflate")) {
      fail("permessage-deflate was not negotiated: " + JSON.stringify(ws.extensions));
    }
    if (mode === "echo" || mode === "echo-deflate") {
      ws.send("hello from node ✓");
      let m = await next("text echo");
      if (m.isBinary || m.data.toString() !== "hello from node ✓") fail("bad text echo: " + m.data);
      ws.send(bin);
      m = await next("binary echo");
      if (!m.isBinary || !Buffer.from(m.data).equals(bin)) fail("bad binary echo");
      const big = Buffer.alloc(200000, 7);
      ws.send(big);
      m = await next("large echo");
      if (!Buffer.from(m.data).equals(big)) fail("bad large echo");
    } else {
      const h = await nextJSON("history");
      if (!Array.isArray(h.messages)) fail("history without messages");
      await nextJSON("members");
      ws.send(JSON.stringify({ type: "message", text: "hello from node ✓" }));
      const msg = await nextJSON("message");
      if (msg.text !== "hello from node ✓" || msg.from !== "node") fail("bad chat message: " + JSON.stringify(msg));
      ws.send(bin);
      const e = await nextJSON("error");
      if (!e.text.includes("binary")) fail("unexpected error text: " + e.text);
    }
    if ((await pong("node-ping")) !== "node-ping") fail("pong payload differs");
    const c = closed();
    ws.close(4000, "done");
    const { code } = await c;
    if (code !== 4000) fail("server answered the close with " + code);
    console.log("ok " + mode);
    process.exit(0);
  } catch (err) {
    fail(err.message);
  }
});
