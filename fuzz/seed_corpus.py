#!/usr/bin/env python3
"""Writes the seed inputs of every fuzz target into fuzz/corpus/<target>/.

Seeds come from the project's own fixtures (fixtures/scenarios, fixtures/
firehose, fixtures/html, sources.toml, the TOML examples in docs/), a sample
of the small third-party feeds in fixtures/corpus (their licenses are in
fixtures/corpus/LICENSES), and hand-written edge cases. Targets that take
control bytes before their payload (see livestrom-checks) get each fixture
under several control bytes. Re-running rewrites the seed-* files only;
inputs a fuzzing run added (named by their hash) are left alone.
"""

import base64
import os
import random
import re
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"
NEXT_VERSION = b"<!--next-version-->"
BASE62 = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    (d / f"seed-{safe}").write_bytes(data)


def clear_seeds():
    for d in CORPUS.glob("*"):
        for f in d.glob("seed-*"):
            f.unlink()


def feeds():
    scen = ROOT / "fixtures" / "scenarios"
    for f in sorted(scen.glob("*/*")):
        if f.suffix in (".xml", ".atom", ".rdf", ".json") and "firehose" not in f.parent.name:
            write("feed", f"{f.parent.name}-{f.name}", f.read_bytes())
    # A sample of the small third-party corpus feeds, every origin.
    rng = random.Random(12)
    corpus = ROOT / "fixtures" / "corpus" / "feeds"
    for origin in sorted(corpus.iterdir()):
        small = sorted(f for f in origin.iterdir() if f.stat().st_size < 3000)
        for f in rng.sample(small, min(6, len(small))):
            write("feed", f"{origin.name}-{f.name}", f.read_bytes())
    for name, doc in {
        "empty-rss": '<rss version="2.0"><channel></channel></rss>',
        "twin-items": '<rss version="2.0"><channel><item><title>a</title></item><item><title>a</title></item>'
        '<item><guid>x</guid></item><item><guid>x</guid><title>b</title></item></channel></rss>',
        "atom-ids": '<feed xmlns="http://www.w3.org/2005/Atom"><entry><id>1</id><link href="/a?utm_source=x#f"/></entry>'
        '<entry><link href="https://E.example/a"/></entry></feed>',
        "jsonfeed": '{"version":"https://jsonfeed.org/version/1.1","items":[{"id":1,"content_text":"x"},'
        '{"url":"/rel","title":["bad"]},{"attachments":[{"url":"a.mp3"}]}]}',
        "utf16": '<?xml version="1.0" encoding="utf-16"?><rss><channel><item><title>å</title></item></channel></rss>',
        "future": '<rss version="2.0"><channel><item><title>t</title><pubDate>Sat, 01 Jan 2999 00:00:00 GMT</pubDate></item></channel></rss>',
    }.items():
        data = doc.encode("utf-16") if name == "utf16" else doc.encode()
        write("feed", f"hand-{name}", data)


def firehose():
    docs = {
        "recent-1": (ROOT / "fixtures/firehose/recent-1.json").read_bytes(),
        "recent-2": (ROOT / "fixtures/firehose/recent-2.json").read_bytes(),
        "root-array": (ROOT / "fixtures/firehose/root-array.json").read_bytes(),
        "scenario-recent1": (ROOT / "fixtures/scenarios/firehose-json/recent1.json").read_bytes(),
        "nested": b'{"data":{"items":[{"id":"a","link":"/x"},1,null,{"guid":2},{"title":{"k":[1]}}]}}',
        "mixed": b'[{"id":1,"url":"javascript:alert(1)"},{"id":"","title":" "},{"url":"//host/p"},[],"s"]',
        "not-array": b'{"items":{"id":1}}',
    }
    for name, body in docs.items():
        for control in range(8):
            write("firehose_json", f"{name}-c{control}", bytes([control]) + body)


def streams():
    sse = (ROOT / "fixtures/scenarios/firehose-sse/events.sse").read_bytes()
    ndjson = (ROOT / "fixtures/scenarios/firehose-ndjson/stream.ndjson").read_bytes()
    hand_sse = {
        "crlf-cr-bom": b"\xef\xbb\xbfid: 1\r\ndata: {\"id\":\"a\",\"title\":\"x\"}\r\n\r\nid: 2\rdata: {\"id\":\"b\"}\r\r",
        "id-only-then-multi": b"id: 1\ndata: {\"id\":\"a\"}\n\nid: 2\n\nid: 3\ndata: [{\"id\":\"b\"},{\"id\":\"c\"}]\n\n",
        "multiline-retry": b"retry: 1500\nevent: update\ndata: {\"id\":\n data: 1,\ndata: \"title\": \"t\"}\n\n: comment\nid\ndata:{\"title\":\"no id\"}\n\n",
        "nul-id-long": b"id: a\x00b\ndata: {\"id\":\"x\"}\n\ndata: " + b"{\"title\":\"" + b"y" * 100 + b"\"}\n\n",
        "unterminated": b"id: 9\ndata: {\"id\":\"last\"}\n",
        "items-pointer": b"id: 7\ndata: {\"items\":[{\"id\":\"p\"},{\"id\":\"q\"}]}\n\n",
    }
    hand_ndjson = {
        "mixed-lines": b"{\"id\":1}\r\nnot json\n\n[{\"id\":2},{\"title\":\"t\"}]\r{\"items\":[{\"id\":3}]}\n{\"url\":\"/a\"}",
        "long-line": b"{\"title\":\"" + b"z" * 80 + b"\"}\n{\"id\":\"short\"}\n",
    }
    seeds = [b"", bytes([1, 7, 0, 3]), bytes([2, 2, 2]), bytes([63, 1, 0, 17, 5])]
    # control: bit 0 ndjson, bits 1-2 line limit, bits 3-5 fields, bit 6 resume.
    for name, body in {"fixture": sse, **hand_sse}.items():
        for i, control in enumerate([0b0100000, 0b0100010, 0b1100100, 0b0000110]):
            seed = seeds[i % len(seeds)]
            write("stream_decoders", f"sse-{name}-{i}", bytes([control, len(seed)]) + seed + body)
    for name, body in {"fixture": ndjson, **hand_ndjson}.items():
        for i, control in enumerate([0b0100001, 0b0100011, 0b0001101, 0b0100111]):
            seed = seeds[i % len(seeds)]
            write("stream_decoders", f"ndjson-{name}-{i}", bytes([control, len(seed)]) + seed + body)


def html():
    pages = sorted((ROOT / "fixtures/html").glob("*/*.html"))
    for i, f in enumerate(pages):
        if f.stat().st_size < 12000:
            write("html", f.name, bytes([i % 64]) + f.read_bytes())
    scen = ROOT / "fixtures/scenarios/html-page"
    v1, v2, v3 = [(scen / n).read_bytes() for n in ("v1.html", "v2-noise.html", "v3-changed.html")]
    for control in (0, 1, 0x12, 0x0c, 0x31):
        write("html", f"scenario-v1-v2-c{control}", bytes([control]) + v1 + NEXT_VERSION + v2)
        write("html", f"scenario-v2-v3-c{control}", bytes([control]) + v2 + NEXT_VERSION + v3)
    write("html", "hand-lines", b"\x00<html><head><title>T</title></head><body><p>a</p><p>b</p><p>c</p></body></html>"
          + NEXT_VERSION + b"<html><body><p>a</p><p>B</p><div>c<br>d</div></body></html>")


def queries():
    for i, q in enumerate([
        "",
        "source=kommun.stockholm&source=kommun.*&source_type=rss&tag=nyheter&keyword=Stra%C3%9Fe",
        "keyword=%CE%90&keyword=%E1%BA%9E&keyword=%EF%AC%81&keyword=%C3%85ngstr%C3%B6m",
        "since=018f9c2e-1a2b-7c3d-8e4f-5a6b7c8d9e0f&limit=1000&api_key=x",
        "source=a..b&tag=%20",
        "source=a.*&source=a.b.*&source=a&source_type=html&source_type=html",
        "limit=0&limit=5",
        "tag=a+b&keyword=%00",
        "sources=x",
        "keyword=" + "%C3%9F" * 128,
        "source=" + "a" * 129,
        "keyword=K%C3%A9&keyword=ke%CC%81",
    ]):
        write("filter_query", f"hand-{i}", q)


def cursors():
    for i, c in enumerate([
        "018f9c2e-1a2b-7c3d-8e4f-5a6b7c8d9e0f",
        "{018F9C2E-1A2B-7C3D-8E4F-5A6B7C8D9E0F}",
        "urn:uuid:018f9c2e-1a2b-7c3d-8e4f-5a6b7c8d9e0f",
        "018f9c2e1a2b7c3d8e4f5a6b7c8d9e0f",
        " 018f9c2e-1a2b-7c3d-8e4f-5a6b7c8d9e0f\t",
        "018f9c2e-1a2b-4c3d-8e4f-5a6b7c8d9e0f",
        "018f9c2e-1a2b-7c3d-ce4f-5a6b7c8d9e0f",
        "00000000-0000-0000-0000-000000000000",
        "018f9c2e-1a2b-7000-8000-000000000000",
        "not a cursor",
        "",
    ]):
        write("cursor", f"hand-{i}", c)
    write("cursor", "raw-v7-bytes", bytes.fromhex("018f9c2e1a2b7c3d8e4f5a6b7c8d9e0f"))
    write("cursor", "raw-nonascii", b"\xff\xfe018f9c2e")


def keys():
    rng = random.Random(7)
    for i in range(4):
        random_part = bytes(rng.choice(BASE62) for _ in range(38))
        n = zlib.crc32(random_part)
        tail = bytearray(b"0" * 6)
        for j in range(5, -1, -1):
            tail[j] = BASE62[n % 62]
            n //= 62
        key = b"lstr_" + random_part + bytes(tail)
        write("api_key", f"valid-{i}", key)
        write("api_key", f"carriers-agree-{i}", key + b"\n" + key + b"\n" + key)
        write("api_key", f"carriers-differ-{i}", key + b"\n " + key[:-1] + b"x\n")
    for i, s in enumerate(["lstr_", "LSTR_abc", "stream:read,admin, admin", "admin,,", "2.5/s", "30/m",
                           "1e9", "NaN", "0.0001/s", "my-key.1", "\n\nquery%20key", "\t\n\t", "é\nü\nö"]):
        write("api_key", f"hand-{i}", s)


def configs():
    write("sources_toml", "sources.toml", (ROOT / "sources.toml").read_bytes())
    for doc in sorted((ROOT / "docs").glob("*.md")):
        blocks = re.findall(r"```toml\n(.*?)```", doc.read_text(), re.S)
        for i, block in enumerate(blocks):
            write("sources_toml", f"{doc.stem}-{i}", block)
    for i, s in enumerate([
        "",
        "[[source]]\nid = \"a\"\ntype = \"rss\"\nurl = \"https://example.com/feed\"\n",
        "[[source]]\nid = \"A..b\"\ntype = \"html\"\nurl = \"ftp://x\"\nselector = \"p[\"\n[[source]]\nid = \"A..b\"\n",
        "[engine]\nretention = \"7x\"\n[edge]\nlisten = \"nope\"\n[fetch]\nmax_body = \"-1MB\"\n",
        "[[source]]\nid = \"f\"\ntype = \"firehose\"\nformat = \"sse\"\nurl = \"https://e.test/s\"\nfields = { id = \"id\" }\nschedule = \"* * *\"\n",
        "a = [1,\n",
    ]):
        write("sources_toml", f"hand-{i}", s)


def heads():
    seeds = [b"", bytes([1, 1, 1]), bytes([5, 0, 13, 2])]
    reqs = [
        b"GET /v1/stream?source=a.*&tag=x HTTP/1.1\r\nHost: h\r\nX-API-Key: k\r\nLast-Event-ID: 1\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.0\r\nConnection: Keep-Alive, upgrade\r\n\r\n",
        b"HEAD /v1/events HTTP/1.1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
        b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"CONNECT h:443 HTTP/1.1\r\n\r\n",
        b"GET / HTTP/2.0\r\n\r\n",
        b"GET / HTTP/1.1\nHost: lf-only\n\n",
        b"GET /\xff HTTP/1.1\r\nX: \x80\r\n\r\n",
        b"GET http://h/abs?q HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(70)) + b"\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\n",
        b"\r\n\r\nGET / HTTP/1.1\r\n\r\n",
    ]
    for i, r in enumerate(reqs):
        seed = seeds[i % len(seeds)]
        write("request_head", f"hand-{i}", bytes([len(seed)]) + seed + r)


def main():
    clear_seeds()
    feeds()
    firehose()
    streams()
    html()
    queries()
    cursors()
    keys()
    configs()
    heads()


if __name__ == "__main__":
    main()
