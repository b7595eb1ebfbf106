//! Integration tests: html. Page versions from `fixtures/html/` are served on
//! 127.0.0.1, fetched over HTTP, extracted off the runtime (as the engine
//! does) and diffed against the previous poll.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::IntoResponse;
use livestrom_engine::config::{HtmlSettings, SourceKind};
use livestrom_engine::sources::html::{self, HtmlError, Snapshot};
use livestrom_engine::Config;

/// Path → (content type, body) currently served; tests swap versions between polls.
type Pages = Arc<Mutex<HashMap<String, (String, Vec<u8>)>>>;

fn fixture(rel: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/html")
        .join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

async fn page(State(pages): State<Pages>, uri: Uri) -> axum::response::Response {
    let found = pages
        .lock()
        .map(|p| p.get(uri.path()).cloned())
        .unwrap_or(None);
    match found {
        Some((ct, body)) => ([(header::CONTENT_TYPE, ct)], body).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// A fixture server on 127.0.0.1:0; returns its base URL and the page table.
async fn serve() -> (String, Pages) {
    let pages: Pages = Arc::default();
    let app = axum::Router::new().fallback(page).with_state(pages.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), pages)
}

fn put(pages: &Pages, path: &str, content_type: &str, body: Vec<u8>) {
    pages
        .lock()
        .expect("page table")
        .insert(path.to_owned(), (content_type.to_owned(), body));
}

/// One poll: GET over HTTP, then extract on the blocking pool.
async fn poll(url: &str, settings: &HtmlSettings) -> Result<Snapshot, HtmlError> {
    let resp = reqwest::get(url).await.expect("GET fixture");
    assert!(
        resp.status().is_success(),
        "fixture server answered {}",
        resp.status()
    );
    let ct = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp.bytes().await.expect("fixture body");
    let settings = settings.clone();
    tokio::task::spawn_blocking(move || html::extract(&body, ct.as_deref(), &settings))
        .await
        .expect("extract task")
}

/// Html settings as a user writes them in sources.toml (validated by the config loader).
fn settings(extra: &str) -> HtmlSettings {
    let toml = format!(
        "[[source]]\nid = \"page\"\ntype = \"html\"\nurl = \"https://example.se/press\"\n{extra}\n"
    );
    let cfg = Config::from_toml(Path::new("sources.toml"), &toml)
        .unwrap_or_else(|e| panic!("config: {e}"));
    match &cfg.source("page").expect("source").kind {
        SourceKind::Html(h) => h.clone(),
        other => panic!("not an html source: {other:?}"),
    }
}

const PRESS: &str = "selector = \"main\"\nignore = [\".ad\", \"time\"]";
const HTML: &str = "text/html; charset=utf-8";

#[tokio::test]
async fn noise_only_changes_emit_nothing() {
    let (base, pages) = serve().await;
    let url = format!("{base}/press");
    for config in [PRESS, "ignore = [\".ad\", \"time\"]"] {
        let s = settings(config);
        put(&pages, "/press", HTML, fixture("press/v1.html"));
        let first = poll(&url, &s).await.expect("v1 extracts");
        put(&pages, "/press", HTML, fixture("press/v2-noise.html"));
        let second = poll(&url, &s).await.expect("v2 extracts");
        assert_eq!(
            html::diff(&first.text, &second.text, 0),
            None,
            "{config}: noise made a change:\n{}\n---\n{}",
            first.text,
            second.text
        );
        assert_eq!(first, second);
    }
}

#[tokio::test]
async fn normalised_text_is_one_block_per_line_without_noise() {
    let (base, pages) = serve().await;
    put(&pages, "/press", HTML, fixture("press/v1.html"));
    let snap = poll(&format!("{base}/press"), &settings(PRESS))
        .await
        .expect("v1 extracts");
    assert_eq!(snap.title, "Pressmeddelanden | Exempel kommun");
    let expected = "Pressmeddelanden\n\
        Senast uppdaterad ·\n\
        Budget 2025 antagen\n\
        Kommunfullmäktige antog budgeten för 2025 med röstsiffrorna 41–20.\n\
        Publicerad\n\
        Skolstart den 19 augusti\n\
        Alla grundskolor börjar höstterminen måndagen den 19 augusti. Läs mer på https://example.se/skola?id=7.\n\
        Sök\n\
        csrf_token:\n\
        Nämnd | Sammanträde\n\
        Kommunstyrelsen | 3 september";
    assert_eq!(snap.text, expected);
}

#[tokio::test]
async fn a_real_change_is_one_change_with_unified_diff_and_added_lines() {
    let (base, pages) = serve().await;
    let url = format!("{base}/press");
    let s = settings(PRESS);
    put(&pages, "/press", HTML, fixture("press/v1.html"));
    let old = poll(&url, &s).await.expect("v1 extracts");
    put(&pages, "/press", HTML, fixture("press/v3-change.html"));
    let new = poll(&url, &s).await.expect("v3 extracts");
    let change = html::diff(&old.text, &new.text, 0).expect("a real change");
    let golden = String::from_utf8(fixture("press/v1-v3.diff")).expect("utf-8 golden diff");
    assert_eq!(change.diff, golden);
    assert_eq!(
        change.added,
        vec![
            "Ny badplats vid Norrsjön".to_owned(),
            "Den nya badplatsen öppnar den 1 juli.".to_owned(),
            "Kommunfullmäktige antog budgeten för 2025 med röstsiffrorna 42–19.".to_owned(),
        ]
    );
    // Unchanged since: nothing more.
    let again = poll(&url, &s).await.expect("v3 extracts again");
    assert_eq!(html::diff(&new.text, &again.text, 0), None);
}

#[tokio::test]
async fn min_change_and_ignore_text_suppress_small_or_matching_edits() {
    let (base, pages) = serve().await;
    let url = format!("{base}/press");
    put(
        &pages,
        "/press",
        HTML,
        b"<html><body><main><p>Visitors: 1041</p><p>Opening hours 8-16</p></main></body></html>"
            .to_vec(),
    );
    let plain = settings("selector = \"main\"");
    let v1 = poll(&url, &plain).await.expect("extracts");
    put(
        &pages,
        "/press",
        HTML,
        b"<html><body><main><p>Visitors: 1042</p><p>Opening hours 8-16</p></main></body></html>"
            .to_vec(),
    );
    let v2 = poll(&url, &plain).await.expect("extracts");
    let change = html::diff(&v1.text, &v2.text, 0).expect("one character changed");
    assert_eq!(change.added, vec!["Visitors: 1042".to_owned()]);
    assert_eq!(
        html::diff(&v1.text, &v2.text, 2),
        Some(change.clone()),
        "two characters changed (one deleted, one inserted)"
    );
    assert_eq!(html::diff(&v1.text, &v2.text, 3), None, "below min_change");

    let filtered = settings("selector = \"main\"\nignore_text = ['Visitors: \\d+']");
    let f1 = poll(&url, &filtered).await.expect("extracts");
    assert_eq!(f1.text, "Opening hours 8-16");
    assert_eq!(
        html::diff(&v1.text.replace("Visitors: 1041\n", ""), &f1.text, 0),
        None
    );
}

#[tokio::test]
async fn ignore_selectors_remove_their_subtrees() {
    let (base, pages) = serve().await;
    put(&pages, "/p", HTML, fixture("press/v1.html"));
    let url = format!("{base}/p");
    let with = poll(
        &url,
        &settings("selector = \"main\"\nignore = [\"table\", \"article p\"]"),
    )
    .await
    .expect("extracts");
    assert!(!with.text.contains("Kommunstyrelsen"), "{}", with.text);
    assert!(!with.text.contains("Kommunfullmäktige"), "{}", with.text);
    assert!(with.text.contains("Budget 2025 antagen"), "{}", with.text);
    let without = poll(&url, &settings("selector = \"main\""))
        .await
        .expect("extracts");
    assert!(
        without.text.contains("Annons: Semester i Grekland"),
        "{}",
        without.text
    );
}

#[tokio::test]
async fn a_selector_that_matches_nothing_is_an_error() {
    let (base, pages) = serve().await;
    put(&pages, "/press", HTML, fixture("press/v1.html"));
    let err = poll(
        &format!("{base}/press"),
        &settings("selector = \"#no-such-region\""),
    )
    .await
    .expect_err("nothing matched");
    assert!(
        matches!(&err, HtmlError::SelectorMatchedNothing(s) if s == "#no-such-region"),
        "{err}"
    );
}

#[tokio::test]
async fn challenge_and_error_pages_served_with_200_are_errors() {
    let (base, pages) = serve().await;
    let s = settings(PRESS);
    for (file, challenge) in [
        ("cloudflare-challenge.html", true),
        ("cloudflare-attention.html", true),
        ("ddos-guard.html", true),
        ("perimeterx.html", true),
        ("error-404.html", false),
        ("error-503.html", false),
        ("error-page-not-found.html", false),
    ] {
        put(&pages, "/x", HTML, fixture(&format!("pages/{file}")));
        let err = poll(&format!("{base}/x"), &s).await.expect_err(file);
        if challenge {
            assert!(matches!(err, HtmlError::Challenge(_)), "{file}: {err}");
        } else {
            assert!(matches!(err, HtmlError::ErrorPage(_)), "{file}: {err}");
        }
    }
}

#[tokio::test]
async fn not_html_and_empty_regions_are_errors() {
    let (base, pages) = serve().await;
    let s = settings("");
    put(
        &pages,
        "/j",
        "application/json",
        br#"{"items":[]}"#.to_vec(),
    );
    put(
        &pages,
        "/f",
        "application/octet-stream",
        b"<?xml version=\"1.0\"?><rss version=\"2.0\"><channel></channel></rss>".to_vec(),
    );
    put(
        &pages,
        "/b",
        "image/png",
        vec![0x89, b'P', b'N', b'G', 0, 0, 0, 0],
    );
    for path in ["/j", "/f", "/b"] {
        let err = poll(&format!("{base}{path}"), &s).await.expect_err(path);
        assert!(matches!(err, HtmlError::NotHtml(_)), "{path}: {err}");
    }
    put(&pages, "/app", HTML, fixture("pages/empty-region.html"));
    let err = poll(&format!("{base}/app"), &settings("selector = \"#root\""))
        .await
        .expect_err("empty region");
    assert!(matches!(err, HtmlError::EmptyRegion(_)), "{err}");
}

#[tokio::test]
async fn declared_charsets_are_decoded() {
    let (base, pages) = serve().await;
    put(
        &pages,
        "/meta",
        "text/html",
        fixture("pages/windows-1252.html"),
    );
    put(
        &pages,
        "/header",
        "text/html; charset=windows-1252",
        fixture("pages/windows-1252.html"),
    );
    for path in ["/meta", "/header"] {
        let snap = poll(&format!("{base}{path}"), &settings(""))
            .await
            .expect("extracts");
        assert_eq!(snap.title, "Räksmörgås");
        assert_eq!(snap.text, "Café – “citat”");
    }
}

#[tokio::test]
async fn real_pages_extract_and_are_stable() {
    let (base, pages) = serve().await;
    let s = settings("ignore = [\"nav\", \"footer\"]");
    // Real third-party pages from the shared corpus (fixtures/corpus/html,
    // attribution in fixtures/corpus/SOURCES.md).
    for file in [
        "readability/lwn-1.html",
        "readability/mercurial.html",
        "readability/lemonde-1.html",
        "readability/bbc-1.html",
        "netnewswire-rsparser/DaringFireball.html",
        "miniflux/encoding__utf8-meta-after-1024.html",
    ] {
        put(
            &pages,
            "/real",
            HTML,
            fixture(&format!("../corpus/html/{file}")),
        );
        let url = format!("{base}/real");
        let first = poll(&url, &s)
            .await
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let second = poll(&url, &s)
            .await
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(first, second, "{file}: extraction is not stable");
        let min_lines = if file.contains("encoding__") { 1 } else { 20 };
        assert!(
            first.text.lines().count() >= min_lines,
            "{file}: too little text:\n{}",
            first.text
        );
        assert!(
            first
                .text
                .lines()
                .all(|l| !l.trim().is_empty() && l.trim() == l),
            "{file}: lines are not normalised"
        );
        assert!(
            !first.text.contains("function("),
            "{file}: script text leaked"
        );
    }
    put(
        &pages,
        "/utf8",
        HTML,
        fixture("../corpus/html/miniflux/encoding__utf8-meta-after-1024.html"),
    );
    let snap = poll(&format!("{base}/utf8"), &settings(""))
        .await
        .expect("extracts");
    assert_eq!(
        (snap.title.as_str(), snap.text.as_str()),
        ("Frédéric", "Café")
    );
}

/// Hostile pages finish (with a snapshot or an error) instead of blowing the
/// stack, the memory or the CPU: 5 MB of nesting, unclosed inline tags, 5 MB
/// of flat blocks, nested tables, a huge attribute list.
#[tokio::test]
async fn hostile_pages_do_not_blow_up() {
    let depth = 1_000_000;
    let deep = format!(
        "<html><body>{}deep{}</body></html>",
        "<div>".repeat(depth),
        "</div>".repeat(depth)
    );
    let unclosed = format!(
        "<html><body><main>{}text</main></body></html>",
        "<b><i><font>".repeat(400_000)
    );
    let tables = format!(
        "<html><body>{}cell</body></html>",
        "<table><tr><td>".repeat(300_000)
    );
    let flat = format!(
        "<html><body>{}</body></html>",
        "<p>Lorem ipsum dolor sit amet, consectetur adipiscing.</p>\n".repeat(90_000)
    );
    let attrs = format!(
        "<html><body><p {}>x</p></body></html>",
        (0..600_000).map(|i| format!("a{i}=1 ")).collect::<String>()
    );
    let cases = [
        ("deep", deep, "div div", false),
        ("unclosed", unclosed, "main b", false),
        ("tables", tables, "td", false),
        ("flat", flat, "body p", true),
        ("attrs", attrs, "p", false),
    ];
    for (name, page, selector, usable) in cases {
        assert!(page.len() >= 4 << 20, "{name} is only {} bytes", page.len());
        let s = settings(&format!("selector = \"{selector}\""));
        let result =
            tokio::task::spawn_blocking(move || html::extract(page.as_bytes(), Some(HTML), &s))
                .await
                .unwrap_or_else(|e| panic!("{name}: extract panicked: {e}"));
        match result {
            Ok(snap) if usable => assert!(!snap.text.is_empty(), "{name}"),
            Err(HtmlError::TooComplex(_)) if !usable => {}
            other => panic!("{name}: unexpected {other:?}"),
        }
    }
}
