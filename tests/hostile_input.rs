//! Integration tests: hostile input. A thousand generated malformed feeds
//! and pages (truncated, binary, wrong encoding, deep nesting, a 1 MB
//! attribute, entity bombs, an external entity naming a local file) through
//! the real parse path of every source kind: no panic, a clear error or a
//! bounded result, nothing read from disk.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;

use livestrom_engine::config::Config;
use livestrom_engine::sources::{self, Body, Kind};
use url::Url;

/// The kind of a one-source config of type `ty`.
fn kind_of(ty: &str) -> Arc<dyn Kind> {
    let toml =
        format!("[[source]]\nid = \"s\"\ntype = \"{ty}\"\nurl = \"https://example.org/x\"\n");
    let config = Config::from_toml(Path::new("sources.toml"), &toml)
        .unwrap_or_else(|e| panic!("config: {e}\n{toml}"));
    let src = config
        .source("s")
        .unwrap_or_else(|| panic!("no source in {toml}"));
    sources::kind(src)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const RSS: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><rss version=\"2.0\"><channel><title>T</title><link>https://example.org/</link><description>d</description><item><guid>g1</guid><title>One</title><link>https://example.org/1</link><description>Body one</description></item><item><guid>g2</guid><title>Two</title><link>https://example.org/2</link></item></channel></rss>";
const ATOM: &str = "<?xml version=\"1.0\"?><feed xmlns=\"http://www.w3.org/2005/Atom\"><title>T</title><id>urn:x</id><updated>2024-01-01T00:00:00Z</updated><entry><id>urn:e1</id><title>E1</title><updated>2024-01-01T00:00:00Z</updated><link href=\"https://example.org/e1\"/><content type=\"html\">&lt;p&gt;hi&lt;/p&gt;</content></entry></feed>";
const JSONFEED: &str = "{\"version\":\"https://jsonfeed.org/version/1.1\",\"title\":\"T\",\"items\":[{\"id\":\"1\",\"url\":\"https://example.org/1\",\"content_text\":\"one\"}]}";

/// What a local file holds that must never come back out of a parse.
const PASSWD_MARK: &str = "root:x:0:0";

/// One malformed document; `family` names the kind of damage.
fn malformed(i: usize, rng: &mut Rng) -> (&'static str, Vec<u8>) {
    let cut = |s: &str, rng: &mut Rng| s.as_bytes()[..1 + rng.below(s.len() - 1)].to_vec();
    match i % 20 {
        0 => ("truncated rss", cut(RSS, rng)),
        1 => ("truncated atom", cut(ATOM, rng)),
        2 => ("truncated json feed", cut(JSONFEED, rng)),
        3 => (
            "binary",
            (0..1 + rng.below(4096)).map(|_| rng.next() as u8).collect(),
        ),
        4 => {
            let mut b =
                b"<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><item><title>".to_vec();
            b.extend((0..rng.below(2048)).map(|_| rng.next() as u8));
            ("xml prolog then binary", b)
        }
        5 => {
            // Declares UTF-16 (or UTF-8) and is Latin-1 / invalid UTF-8 inside.
            let label = ["UTF-16", "UTF-8", "utf-32", "x-nonsense", "ISO-2022-JP"][rng.below(5)];
            let mut b = format!("<?xml version=\"1.0\" encoding=\"{label}\"?><rss version=\"2.0\"><channel><title>T</title><item><guid>g</guid><title>").into_bytes();
            b.extend([
                0xC3, 0x28, 0xA0, 0xA1, 0xE2, 0x28, 0xA1, 0xF0, 0x28, 0x8C, 0xBC, 0xFF, 0xFE,
            ]);
            b.extend(b"</title></item></channel></rss>");
            ("wrong encoding", b)
        }
        6 => {
            let depth = 10_000;
            let mut s = String::from("<rss version=\"2.0\"><channel><item><guid>g</guid><title>");
            s.push_str(&"<a>".repeat(depth));
            s.push_str(&"</a>".repeat(depth));
            s.push_str("</title></item></channel></rss>");
            ("xml nested 10k deep", s.into_bytes())
        }
        7 => {
            let depth = 10_000;
            let mut s = String::from(
                "{\"version\":\"https://jsonfeed.org/version/1\",\"items\":[{\"id\":\"1\",\"x\":",
            );
            s.push_str(&"[".repeat(depth));
            s.push_str(&"]".repeat(depth));
            s.push_str("}]}");
            ("json nested 10k deep", s.into_bytes())
        }
        8 => {
            let big = "A".repeat(1 << 20);
            let s = format!("<rss version=\"2.0\"><channel><title>T</title><item><guid>g</guid><title x=\"{big}\">t</title><link href=\"{big}\">https://example.org/1</link></item></channel></rss>");
            ("1 MB attribute", s.into_bytes())
        }
        9 => {
            let mut s = String::from("<?xml version=\"1.0\"?><!DOCTYPE rss [<!ENTITY lol \"lol\">");
            s.push_str("<!ENTITY lol1 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">");
            for n in 2..10 {
                s.push_str(&format!(
                    "<!ENTITY lol{n} \"{}\">",
                    format!("&lol{};", n - 1).repeat(10)
                ));
            }
            s.push_str("]><rss version=\"2.0\"><channel><title>&lol9;</title><item><guid>g</guid><title>&lol9;</title><description>&lol9;</description></item></channel></rss>");
            ("billion laughs", s.into_bytes())
        }
        10 => {
            let blob = "B".repeat(50_000);
            let refs = "&b;".repeat(50_000);
            let s = format!("<?xml version=\"1.0\"?><!DOCTYPE rss [<!ENTITY b \"{blob}\">]><rss version=\"2.0\"><channel><title>T</title><item><guid>g</guid><title>t</title><description>{refs}</description></item></channel></rss>");
            ("quadratic blow-up", s.into_bytes())
        }
        11 => {
            let decl = [
                "<!ENTITY xxe SYSTEM \"file:///etc/passwd\">",
                "<!ENTITY xxe SYSTEM \"/etc/passwd\">",
                "<!ENTITY % p SYSTEM \"file:///etc/passwd\"> %p;<!ENTITY xxe \"x\">",
                "<!ENTITY xxe PUBLIC \"-//x\" \"file:///etc/passwd\">",
            ][rng.below(4)];
            let root = ["rss", "feed"][rng.below(2)];
            let s = if root == "rss" {
                format!("<?xml version=\"1.0\"?><!DOCTYPE rss [{decl}]><rss version=\"2.0\"><channel><title>&xxe;</title><item><guid>g</guid><title>&xxe;</title><description>&xxe;</description><link>https://example.org/&xxe;</link></item></channel></rss>")
            } else {
                format!("<?xml version=\"1.0\"?><!DOCTYPE feed [{decl}]><feed xmlns=\"http://www.w3.org/2005/Atom\"><title>&xxe;</title><id>urn:x</id><entry><id>urn:&xxe;</id><title>&xxe;</title><content>&xxe;</content><link href=\"https://example.org/1\"/></entry></feed>")
            };
            ("external entity", s.into_bytes())
        }
        12 => {
            let depth = 10_000;
            let mut s = String::from("<!doctype html><html><head><title>t</title></head><body>");
            s.push_str(&"<div>".repeat(depth));
            s.push_str("deep");
            s.push_str(&"</div>".repeat(depth));
            s.push_str("</body></html>");
            ("html nested 10k deep", s.into_bytes())
        }
        13 => {
            let big = "x".repeat(1 << 20);
            let s = format!("<!doctype html><html><body><p data-x=\"{big}\">hi</p><a href=\"{big}\">l</a></body></html>");
            ("html 1 MB attribute", s.into_bytes())
        }
        14 => {
            let mut b = RSS.as_bytes().to_vec();
            let at = rng.below(b.len());
            b.splice(at..at, [0u8; 16]);
            ("nul bytes", b)
        }
        15 => {
            let s = ["<rss version=\"2.0\"><channel><item><description><![CDATA[never closed", "<rss version=\"2.0\"><!-- never closed", "<rss version=\"2.0\"><channel><item><title>t</titl></item>", "<rss version=\"2.0\"><channel><item a=\"unterminated><title>t</title></item></channel></rss>"][rng.below(4)];
            ("unterminated construct", s.as_bytes().to_vec())
        }
        16 => {
            let n = 1 + rng.below(20_000);
            let attrs: String = (0..n).map(|k| format!(" a{k}=\"v\"")).collect();
            (
                "many attributes",
                format!("<rss version=\"2.0\"{attrs}><channel><item><guid>g</guid><title>t</title></item></channel></rss>").into_bytes(),
            )
        }
        17 => {
            let s = [
                "<rss version=\"2.0\"><channel><item><title>a</item></title></channel></rss>",
                "<feed xmlns=\"http://www.w3.org/2005/Atom\"><entry></feed></entry>",
                "<rss><rss><rss>",
                "</rss>",
                "<>",
                "<?xml?>",
            ][rng.below(6)];
            ("mismatched tags", s.as_bytes().to_vec())
        }
        18 => {
            let s = [
                "{\"items\":[{\"id\":1e999999}]}",
                "{\"items\":[{\"id\":\"\\ud800\"}]}",
                "{\"items\":[{\"id\":\"\\u00\"}]}",
                "{\"version\":\"https://jsonfeed.org/version/1\",\"items\":\"nope\"}",
                "{\"items\":[,]}",
                "{\"a\":1,\"a\":2",
            ][rng.below(6)];
            ("bad json", s.as_bytes().to_vec())
        }
        _ => {
            let s: &[u8] = [
                &b""[..],
                b"   \n\t",
                b"\xEF\xBB\xBF",
                b"\xFF\xFE",
                b"\xFE\xFF\x00<",
                b"\x00\x00\xFE\xFF",
            ][rng.below(6)];
            ("empty or bom only", s.to_vec())
        }
    }
}

#[test]
fn a_thousand_malformed_documents_are_clear_errors_or_bounded_results() {
    let url = Url::parse("https://example.org/x").unwrap_or_else(|e| panic!("{e}"));
    let kinds = [
        ("rss", kind_of("rss")),
        ("html", kind_of("html")),
        ("firehose", kind_of("firehose")),
    ];
    let content_types = [
        "application/rss+xml",
        "text/html; charset=utf-8",
        "application/json",
        "application/octet-stream",
    ];
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let mut errors = 0;
    for i in 0..1000 {
        let (family, bytes) = malformed(i, &mut rng);
        let ct = content_types[i % content_types.len()];
        for (ty, kind) in &kinds {
            let body = Body {
                bytes: &bytes,
                content_type: Some(ct),
                url: &url,
            };
            let outcome = catch_unwind(AssertUnwindSafe(|| kind.parse(&body, None)))
                .unwrap_or_else(|_| panic!("case {i} ({family}) panicked in the {ty} kind"));
            match outcome {
                Err(e) => {
                    errors += 1;
                    let msg = e.to_string();
                    assert!(
                        msg.len() > 8,
                        "case {i} ({family}) {ty}: unclear error {msg:?}"
                    );
                    assert!(
                        msg.len() < 4096,
                        "case {i} ({family}) {ty}: {} byte error",
                        msg.len()
                    );
                    assert!(
                        !msg.contains(PASSWD_MARK),
                        "case {i} ({family}) {ty}: {msg}"
                    );
                }
                Ok(parse) => {
                    // Bounded: nothing came out much larger than what went in
                    // (no entity expansion), and nothing from the disk.
                    let out: usize = parse
                        .items
                        .iter()
                        .map(|it| {
                            it.title.len()
                                + it.content.len()
                                + it.url.as_ref().map_or(0, String::len)
                        })
                        .sum::<usize>()
                        + parse.remember.as_ref().map_or(0, String::len);
                    assert!(
                        out <= 2 * bytes.len() + 4096,
                        "case {i} ({family}) {ty}: {} bytes in, {out} out",
                        bytes.len()
                    );
                    for it in &parse.items {
                        for text in [&it.title, &it.content] {
                            assert!(
                                !text.contains(PASSWD_MARK),
                                "case {i} ({family}) {ty}: {text}"
                            );
                            assert!(
                                !text.contains("lollollol"),
                                "case {i} ({family}) {ty}: entities expanded"
                            );
                        }
                    }
                    if let Some(r) = &parse.remember {
                        assert!(!r.contains(PASSWD_MARK), "case {i} ({family}) {ty}");
                    }
                }
            }
        }
    }
    // Every family is malformed for at least one kind: most parses fail.
    assert!(errors > 1500, "only {errors} of 3000 parses failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_sources_fail_with_a_reason_while_a_healthy_one_keeps_polling() {
    use livestrom::replay::{ReplayServer, Scenario, Step};
    use livestrom_engine::{runtime, Bus, EventLog, Store};
    use tokio_util::sync::CancellationToken;

    let mut rng = Rng(7);
    // One document per dangerous family, each served as its source's feed.
    let hostile: Vec<(String, Vec<u8>)> = [3usize, 6, 8, 9, 10, 11]
        .iter()
        .map(|&family| {
            let (name, bytes) = malformed(family, &mut rng);
            (name.replace(' ', "-").to_lowercase(), bytes)
        })
        .collect();
    let mut scenario = Scenario::new("hostile").dynamic("/good.xml", |req| {
        let n = req.hit;
        Step::ok(format!("<rss version=\"2.0\"><channel><title>g</title><item><guid>g{n}</guid><title>Good {n}</title><link>https://example.org/{n}</link></item></channel></rss>"))
            .content_type("application/rss+xml")
            .into()
    });
    for (name, bytes) in &hostile {
        scenario = scenario.route(
            &format!("/{name}.xml"),
            [Step::ok(bytes.clone()).content_type("application/rss+xml")],
        );
    }
    let server = ReplayServer::start(scenario).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let db = dir.path().join("h.db");
    let mut toml = format!(
        "[engine]\ndatabase = {db:?}\nretention = \"7d\"\n[fetch]\nallow_private_networks = true\nper_host_rps = 1000\nper_host_concurrency = 16\n\
         [[source]]\nid = \"good\"\ntype = \"rss\"\nurl = \"{}\"\ninterval = \"1s\"\n",
        server.url("/good.xml")
    );
    for (name, _) in &hostile {
        toml.push_str(&format!(
            "[[source]]\nid = \"{name}\"\ntype = \"rss\"\nurl = \"{}\"\ninterval = \"1h\"\n",
            server.url(&format!("/{name}.xml"))
        ));
    }
    let config = Config::from_toml(Path::new("hostile.toml"), &toml)
        .unwrap_or_else(|e| panic!("{e}\n{toml}"));
    let store = Store::open(&config.engine.database, config.engine.retention, Bus::new())
        .unwrap_or_else(|e| panic!("{e}"));
    let cancel = CancellationToken::new();
    let task = tokio::spawn(runtime::run(
        config,
        store.clone(),
        None,
        None,
        cancel.clone(),
    ));
    for (name, _) in &hostile {
        let state = crate::helpers::wait_for_value(
            &format!("{name} to fail"),
            crate::helpers::WAIT,
            || {
                let store = store.clone();
                let name = name.clone();
                async move {
                    store
                        .source_state(&name)
                        .await
                        .ok()
                        .flatten()
                        .filter(|s| s.last_poll_at.is_some())
                }
            },
        )
        .await;
        match state.last_error {
            Some(why) => {
                assert!(why.len() > 8, "{name}: no reason: {why:?}");
                assert!(!why.contains(PASSWD_MARK), "{name}: {why}");
                assert!(state.consecutive_failures >= 1, "{name}");
            }
            // Well-formed enough to read (the 1 MB attribute is ignored; an
            // undeclared-in-practice entity stays unexpanded): then what was
            // stored holds nothing from the disk and no expansion.
            None => {
                let page = store
                    .read_after(uuid::Uuid::nil(), 10_000, &Default::default())
                    .unwrap_or_else(|e| panic!("{e}"));
                for row in page.iter().filter(|r| r.source_id == *name) {
                    assert!(!row.json.contains(PASSWD_MARK), "{name}: {}", row.json);
                    assert!(!row.json.contains("lollollol"), "{name}: entities expanded");
                    assert!(row.json.len() < 4 << 20, "{name}: {} bytes", row.json.len());
                }
            }
        }
    }
    // The healthy source keeps to its 1 s schedule: three more of its polls
    // are stored after every hostile source has failed.
    let seen = store
        .source_state("good")
        .await
        .ok()
        .flatten()
        .map_or(0, |s| s.event_count);
    crate::helpers::wait_for(
        "the healthy source to keep polling",
        crate::helpers::WAIT,
        || {
            let store = store.clone();
            async move {
                store
                    .source_state("good")
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|s| s.event_count >= seen + 3 && s.last_error.is_none())
            }
        },
    )
    .await;
    cancel.cancel();
    let stopped = tokio::time::timeout(crate::helpers::WAIT, task).await;
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "{stopped:?}");
}
