"""A Livestrom webhook receiver in Python: verifies each delivery's Standard
Webhooks signature with the `standardwebhooks` package and prints the event
as one JSON line. See docs/WEBHOOKS.md.

    python3 -m pip install standardwebhooks==1.1.0
    WEBHOOK_SECRET=whsec_... PORT=8000 python3 webhook_receiver.py

WEBHOOK_SECRET is what `livestrom webhook create` (or `rotate-secret`)
printed. PORT=0 picks a free port; the address is printed on stderr.
"""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

webhook = Webhook(os.environ["WEBHOOK_SECRET"])
# `webhook-id` is the event's id: the same on every retry, after a crash of
# the sender, and on a replay. Remember what was handled to act once.
handled = set()


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        try:
            # Checks the signature (any of the space-separated ones) and
            # that webhook-timestamp is within 5 minutes of now.
            event = webhook.verify(body, dict(self.headers))
        except WebhookVerificationError as e:
            print(f"rejected: {e}", file=sys.stderr, flush=True)
            self.send_response(400)
            self.end_headers()
            return
        event_id = self.headers["webhook-id"]
        duplicate = event_id in handled
        handled.add(event_id)
        # Answer quickly (within the sender's 10 s timeout): hand slow work
        # to a queue. Any 2xx acknowledges; a 410 asks never to be called again.
        print(json.dumps({"webhook_id": event_id, "duplicate": duplicate, "event": event}), flush=True)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


server = HTTPServer(("127.0.0.1", int(os.environ.get("PORT", "8000"))), Receiver)
print(f"listening on http://127.0.0.1:{server.server_address[1]}", file=sys.stderr, flush=True)
server.serve_forever()
