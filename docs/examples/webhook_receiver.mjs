// A Livestrom webhook receiver in Node.js (18+), no dependencies: verifies
// each delivery's Standard Webhooks signature with node:crypto and prints
// the event as one JSON line. See docs/WEBHOOKS.md.
//
//   WEBHOOK_SECRET=whsec_... PORT=8000 node webhook_receiver.mjs
//
// (The `standardwebhooks` npm package does the same verification.)
import { createHmac, timingSafeEqual } from "node:crypto";
import { createServer } from "node:http";

// The HMAC key is the base64 after the `whsec_` prefix.
const key = Buffer.from(process.env.WEBHOOK_SECRET.replace(/^whsec_/, ""), "base64");
const TOLERANCE_SECONDS = 5 * 60;

function verify(headers, body) {
  const id = headers["webhook-id"];
  const timestamp = headers["webhook-timestamp"];
  const signatures = headers["webhook-signature"];
  if (!id || !timestamp || !signatures) return false;
  // Refuse stale or future-dated messages (replayed captures).
  if (Math.abs(Date.now() / 1000 - Number(timestamp)) > TOLERANCE_SECONDS) return false;
  const expected = createHmac("sha256", key)
    .update(`${id}.${timestamp}.`)
    .update(body)
    .digest();
  // While a rotated secret still signs there are two: any one may match.
  return signatures.split(" ").some((entry) => {
    const [version, signature] = entry.split(",");
    if (version !== "v1" || !signature) return false;
    const given = Buffer.from(signature, "base64");
    return given.length === expected.length && timingSafeEqual(given, expected);
  });
}

const handled = new Set(); // webhook-id repeats on retries and replays

const server = createServer((req, res) => {
  const chunks = [];
  req.on("data", (chunk) => chunks.push(chunk));
  req.on("end", () => {
    const body = Buffer.concat(chunks); // verify the exact bytes received
    if (req.method !== "POST" || !verify(req.headers, body)) {
      console.error("rejected: bad signature");
      res.writeHead(400).end();
      return;
    }
    const id = req.headers["webhook-id"];
    const duplicate = handled.has(id);
    handled.add(id);
    console.log(JSON.stringify({ webhook_id: id, duplicate, event: JSON.parse(body) }));
    res.writeHead(204).end();
  });
});

server.listen(Number(process.env.PORT ?? 8000), "127.0.0.1", () => {
  console.error(`listening on http://127.0.0.1:${server.address().port}`);
});
