//! Integration tests: the status page at `GET /`, in headless Chromium
//! against the real engine and edge, a fixture upstream whose feed grows,
//! and a source on a closed port.
//!
//! Chromium is found through `LIVESTROM_CHROMIUM` or on the `PATH`
//! (`chromium`, Debian's package). Without it the browser test prints a
//! notice and passes, unless `LIVESTROM_REQUIRE_CHROMIUM=1` (`.ci/run` sets
//! it and installs Chromium). `LIVESTROM_STATUS_SCREENSHOT=<file.png>` saves
//! a screenshot of the filled page (docs/status-page.png is made this way).

use std::path::{Path, PathBuf};
use std::time::Duration;

use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::cdp::browser_protocol::emulation::SetDeviceMetricsOverrideParams;
use chromiumoxide::page::ScreenshotParams;
use chromiumoxide::Page;
use futures::StreamExt;
use livestrom::replay::{ReplayServer, Scenario, Step};
use livestrom_edge::{AppState, Settings};
use livestrom_engine::keys::{self, NewKey, Scope};
use livestrom_engine::runtime::{self, EngineHandle};
use livestrom_engine::{Bus, Config, Store};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::helpers::{wait_for_value, WAIT};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// The status page's own responses: the page and its two files, with a
/// policy that allows this origin only. (No browser needed.)
#[tokio::test]
async fn status_page_files_are_served_with_a_same_origin_policy() -> TestResult {
    let app = App::start().await?;
    let http = reqwest::Client::builder().no_proxy().build()?;
    for (path, kind) in [
        ("/", "text/html"),
        ("/status/app.js", "text/javascript"),
        ("/status/style.css", "text/css"),
    ] {
        let res = http.get(format!("{}{path}", app.base)).send().await?;
        assert_eq!(res.status(), 200, "{path}");
        let header = |name: &str| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert!(header("content-type").starts_with(kind), "{path}");
        let csp = header("content-security-policy");
        assert!(csp.contains("default-src 'none'"), "{path}: {csp}");
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("connect-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(header("x-content-type-options"), "nosniff");
        let body = res.text().await?;
        // Nothing from another origin: no absolute URL in a src/href.
        assert!(!body.contains("src=\"http"), "{path}");
        assert!(!body.contains("href=\"http"), "{path}");
    }
    app.stop().await;
    Ok(())
}

/// The page in a real browser: a wrong key and a key without `admin` are
/// refused with a message naming why; an admin key fills the source table
/// (with the failing source's error), the stream's state and the chart; a
/// live event appears when the upstream feed grows; pausing holds events
/// back and resuming delivers them.
#[tokio::test]
async fn status_page_in_chromium_shows_sources_errors_and_live_events() -> TestResult {
    let Some(chromium) = chromium() else {
        return Ok(());
    };
    let app = App::start().await?;
    let profile = tempfile::tempdir()?;
    let config = BrowserConfig::builder()
        .chrome_executable(&chromium)
        .user_data_dir(profile.path())
        // Root in CI containers: Chromium refuses to start sandboxed.
        .no_sandbox()
        .arg("--disable-gpu")
        .arg("--disable-dev-shm-usage")
        .window_size(1280, 1000)
        .viewport(None)
        .launch_timeout(Duration::from_secs(60))
        .request_timeout(Duration::from_secs(60))
        .build()?;
    let (mut browser, mut handler) = Browser::launch(config).await?;
    let events = tokio::spawn(async move { while handler.next().await.is_some() {} });
    let outcome = drive(&browser, &app).await;
    let _ = browser.close().await;
    let _ = browser.wait().await;
    events.abort();
    app.stop().await;
    outcome
}

async fn drive(browser: &Browser, app: &App) -> TestResult {
    let page = browser.new_page(app.base.as_str()).await?;
    page.wait_for_navigation().await?;

    // A key that does not exist: 401, said as such.
    enter_key(&page, "lstr_thisIsNotAKeyThisIsNotAKeyThisIsNotAKey1").await?;
    let msg = wait_text(&page, "#key-status", |t| t.contains("401")).await?;
    assert!(msg.contains("not accepted"), "{msg}");
    // A valid key without the admin scope: 403, said as such.
    enter_key(&page, &app.reader_key).await?;
    let msg = wait_text(&page, "#key-status", |t| t.contains("403")).await?;
    assert!(msg.contains("admin"), "{msg}");

    enter_key(&page, &app.admin_key).await?;
    wait_text(&page, "#key-status", |t| t.contains("accepted")).await?;
    // The key is in the tab's session storage, not in the URL.
    let stored: Option<String> =
        eval(&page, "sessionStorage.getItem('livestrom.adminKey')").await?;
    assert_eq!(stored.as_deref(), Some(app.admin_key.as_str()));
    let href: String = eval(&page, "location.href").await?;
    assert!(!href.contains("lstr_"), "{href}");

    // The source table: the healthy feed and the failing one with its error.
    let news = wait_text(&page, r#"tr[data-source="news.test"]"#, |t| {
        t.contains("ok")
    })
    .await?;
    assert!(
        news.contains("rss") && news.contains("alpha, beta"),
        "{news}"
    );
    let down_error = wait_text(&page, r#"tr[data-source="down.test"] .last-error"#, |t| {
        !t.is_empty()
    })
    .await?;
    assert!(down_error.contains("connect"), "{down_error}");
    let down_health: String = eval(
        &page,
        r#"document.querySelector('tr[data-source="down.test"]').dataset.health"#,
    )
    .await?;
    assert_eq!(down_health, "failing");
    // The stream's state and the chart (the first poll's event is counted).
    wait_text(&page, "#st-head", |t| t.len() == 36).await?;
    let chart_label: String = wait_value(
        &page,
        "the chart",
        "document.querySelector('#chart svg')?.getAttribute('aria-label') ?? null",
    )
    .await?;
    assert!(chart_label.contains("rss 1"), "{chart_label}");

    // Live: the upstream feed grows; the new item appears at the top.
    wait_text(&page, "#live-status", |t| t.starts_with("Live")).await?;
    app.engine.poll_now("news.test").await?;
    let top = wait_text(&page, "#live-list li", |t| t.contains("Second story")).await?;
    assert!(top.contains("news.test"), "{top}");

    // Paused, nothing arrives; resumed, what came meanwhile is delivered
    // (the stream resumes from the last event shown).
    click(&page, "#live-toggle").await?;
    // The click handler marks the button and aborts the stream in one go.
    wait_value::<bool>(
        &page,
        "the pause button to be pressed",
        "document.querySelector('#live-toggle').getAttribute('aria-pressed') === 'true' || null",
    )
    .await?;
    app.engine.poll_now("news.test").await?;
    let shown: String = eval(&page, "document.querySelector('#live-list').textContent").await?;
    assert!(
        !shown.contains("Third story"),
        "an event arrived while paused"
    );
    click(&page, "#live-toggle").await?;
    wait_text(&page, "#live-list li", |t| t.contains("Third story")).await?;
    let count: u64 = eval(&page, "document.querySelectorAll('#live-list li').length").await?;
    assert_eq!(count, 2, "each event once");

    // The next refresh counts the three events and the open stream.
    wait_value::<bool>(
        &page,
        "the refreshed chart and state",
        "(document.querySelector('#chart svg')?.getAttribute('aria-label') ?? '').includes('rss 3') \
         && document.querySelector('#st-subscribers').textContent === '1' || null",
    )
    .await?;

    // Everything the page loaded came from this origin.
    let foreign: Vec<String> = eval(
        &page,
        "performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith(location.origin))",
    )
    .await?;
    assert!(foreign.is_empty(), "{foreign:?}");

    if let Some(path) = std::env::var_os("LIVESTROM_STATUS_SCREENSHOT") {
        page.save_screenshot(
            ScreenshotParams::builder().full_page(true).build(),
            PathBuf::from(path),
        )
        .await?;
    }

    // On a phone-sized screen nothing makes the page scroll sideways (the
    // table scrolls inside its own box).
    page.execute(SetDeviceMetricsOverrideParams::new(390, 844, 2.0, true))
        .await?;
    let fits: bool = wait_value(
        &page,
        "the page to fit a phone's width",
        "document.documentElement.scrollWidth <= window.innerWidth ? true : null",
    )
    .await?;
    assert!(fits);
    Ok(())
}

// ---------- the browser side ----------

/// Chromium's path, or None (after a notice) when it is not installed and
/// not required.
fn chromium() -> Option<PathBuf> {
    let found = std::env::var_os("LIVESTROM_CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| {
            ["chromium", "chromium-browser", "google-chrome"]
                .iter()
                .find_map(|name| on_path(name))
        });
    let required = std::env::var("LIVESTROM_REQUIRE_CHROMIUM").is_ok_and(|v| v == "1");
    match found {
        Some(p) if p.is_file() => Some(p),
        _ if required => panic!(
            "LIVESTROM_REQUIRE_CHROMIUM=1 but no Chromium: set LIVESTROM_CHROMIUM or install `chromium`"
        ),
        _ => {
            eprintln!(
                "notice: Chromium not found (LIVESTROM_CHROMIUM, or `chromium` on PATH); skipping the status page browser test"
            );
            None
        }
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

async fn enter_key(page: &Page, key: &str) -> TestResult {
    page.find_element("#key")
        .await?
        .click()
        .await?
        .type_str(key)
        .await?;
    click(page, "#key-form button[type=submit]").await
}

async fn click(page: &Page, selector: &str) -> TestResult {
    page.find_element(selector).await?.click().await?;
    Ok(())
}

async fn eval<T: serde::de::DeserializeOwned>(
    page: &Page,
    js: &str,
) -> Result<T, Box<dyn std::error::Error + Send + Sync>> {
    Ok(page.evaluate(js).await?.into_value()?)
}

/// Waits until the JS expression `js` is not null, and returns it.
async fn wait_value<T: serde::de::DeserializeOwned>(
    page: &Page,
    what: &str,
    js: &str,
) -> Result<T, Box<dyn std::error::Error + Send + Sync>> {
    let value = wait_for_value(what, WAIT, || async {
        page.evaluate(js)
            .await
            .ok()
            .and_then(|v| v.into_value::<Option<serde_json::Value>>().ok())
            .flatten()
    })
    .await;
    Ok(serde_json::from_value(value)?)
}

/// Waits until the first element matching `selector` has text for which
/// `ok` holds; returns that text.
async fn wait_text(
    page: &Page,
    selector: &str,
    ok: impl Fn(&str) -> bool,
) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let js = format!(
        "document.querySelector({})?.textContent ?? null",
        serde_json::to_string(selector)?
    );
    let text = wait_for_value(&format!("text of {selector}"), WAIT, || async {
        let text: Option<String> = page.evaluate(js.as_str()).await.ok()?.into_value().ok()?;
        text.filter(|t| ok(t))
    })
    .await;
    Ok(text)
}

// ---------- the server side ----------

/// The engine and the edge on one database, a growing feed, a closed port.
struct App {
    base: String,
    admin_key: String,
    reader_key: String,
    engine: EngineHandle,
    cancel: CancellationToken,
    engine_task: tokio::task::JoinHandle<Result<(), runtime::RuntimeError>>,
    _upstream: ReplayServer,
    _dir: tempfile::TempDir,
}

impl App {
    async fn start() -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let feed = |titles: &[&str]| {
            let items: String = titles
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    format!("<item><guid>story-{i}</guid><title>{t}</title><link>https://example.com/{i}</link><description>{t}.</description></item>")
                })
                .collect();
            format!("<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>News</title><link>https://example.com/</link><description>d</description>{items}</channel></rss>")
        };
        let upstream = ReplayServer::start(
            Scenario::new("status-page").route(
                "/news.xml",
                [
                    Step::ok(feed(&["First story"])).content_type("application/rss+xml"),
                    Step::ok(feed(&["First story", "Second story"]))
                        .content_type("application/rss+xml"),
                    Step::ok(feed(&["First story", "Second story", "Third story"]))
                        .content_type("application/rss+xml"),
                ],
            ),
        )?;
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?.port()
        };
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("status.db");
        let (admin_key, reader_key) = {
            let conn = livestrom_engine::store::open_and_migrate(&db)?;
            let mut admin = NewKey::new("ops");
            // What the page asks for: admin for the views, stream:read for the live view.
            admin.scopes = vec![Scope::Admin, Scope::StreamRead];
            admin.rate = 1000.0;
            let reader = NewKey::new("reader");
            (keys::create(&conn, &admin)?, keys::create(&conn, &reader)?)
        };
        let toml = format!(
            "[engine]\ndatabase = {db:?}\nretention = \"7d\"\n\
             [fetch]\nallow_private_networks = true\nper_host_rps = 1000\nper_host_concurrency = 16\ntimeout = \"10s\"\n\
             [[source]]\nid = \"news.test\"\ntype = \"rss\"\nurl = \"{}\"\ntags = [\"alpha\", \"beta\"]\ninterval = \"1h\"\n\
             [[source]]\nid = \"down.test\"\ntype = \"rss\"\nurl = \"http://127.0.0.1:{closed}/feed.xml\"\ninterval = \"1h\"\n",
            upstream.url("/news.xml")
        );
        let config = Config::from_toml(Path::new("status-page.toml"), &toml)?;
        let store = Store::open(&db, config.engine.retention, Bus::new())?;
        let cancel = CancellationToken::new();
        let state = AppState::new(
            livestrom_engine::Backend::sqlite(&store),
            Settings {
                keepalive: Duration::from_secs(25),
                cors_origins: vec![],
                metrics_token: None,
            },
            cancel.clone(),
        )
        .await?;
        state.catalog.set(&config.sources);
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        tokio::spawn(livestrom_edge::serve(listener, state, cancel.clone()));
        let (engine, commands) = runtime::handle();
        let engine_task = tokio::spawn(runtime::run(
            config,
            store.clone(),
            None,
            Some(commands),
            cancel.clone(),
        ));
        // Both first polls are stored before the page looks.
        for id in ["news.test", "down.test"] {
            wait_for_value(&format!("the first poll of {id}"), WAIT, || async {
                store.source_state(id).await.ok().flatten()
            })
            .await;
        }
        Ok(Self {
            base,
            admin_key,
            reader_key,
            engine,
            cancel,
            engine_task,
            _upstream: upstream,
            _dir: dir,
        })
    }

    async fn stop(self) {
        self.cancel.cancel();
        match tokio::time::timeout(Duration::from_secs(30), self.engine_task).await {
            Ok(Ok(Ok(()))) => {}
            other => panic!("engine did not stop cleanly: {other:?}"),
        }
    }
}

/// What the page reads, over HTTP without a browser: the sources carry
/// their type and tags from the config, a configured source that was never
/// polled is listed as `new`, and the activity endpoint is admin-only with
/// a checked window.
#[tokio::test]
async fn admin_views_carry_type_and_tags_and_list_never_polled_sources() -> TestResult {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("admin.db");
    let (admin, reader) = {
        let conn = livestrom_engine::store::open_and_migrate(&db)?;
        let mut nk = NewKey::new("ops");
        nk.scopes = vec![Scope::Admin];
        (
            keys::create(&conn, &nk)?,
            keys::create(&conn, &NewKey::new("r"))?,
        )
    };
    let toml = format!(
        "[engine]\ndatabase = {db:?}\n\
         [[source]]\nid = \"later.page\"\ntype = \"html\"\nurl = \"http://127.0.0.1:9/\"\ntags = [\"kommun\", \"press\"]\ninterval = \"1h\"\nselector = \"main\"\n"
    );
    let config = Config::from_toml(Path::new("admin.toml"), &toml)?;
    let store = Store::open(&db, Duration::from_secs(3600), Bus::new())?;
    let cancel = CancellationToken::new();
    let state = AppState::new(
        livestrom_engine::Backend::sqlite(&store),
        Settings {
            keepalive: Duration::from_secs(25),
            cors_origins: vec![],
            metrics_token: None,
        },
        cancel.clone(),
    )
    .await?;
    state.catalog.set(&config.sources);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(livestrom_edge::serve(listener, state, cancel.clone()));
    let http = reqwest::Client::builder().no_proxy().build()?;
    let get = |path: &str, key: &str| {
        http.get(format!("{base}{path}"))
            .header("X-API-Key", key)
            .send()
    };

    let body: serde_json::Value = get("/v1/admin/sources", &admin).await?.json().await?;
    assert_eq!(
        body["sources"],
        serde_json::json!([{
            "source_id": "later.page", "source_type": "html", "tags": ["kommun", "press"],
            "health": "new", "last_poll_at": null, "last_success_at": null,
            "next_poll_at": null, "last_error": null, "consecutive_failures": 0,
            "events": 0, "items": 0
        }])
    );

    let res = get("/v1/admin/activity?minutes=5", &admin).await?;
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await?;
    assert_eq!(body["minutes"], 5);
    assert_eq!(body["per_minute"].as_array().map(Vec::len), Some(5));
    assert_eq!(body["events"], 0);
    assert_eq!(body["truncated"], false);
    let res = get("/v1/admin/activity?minutes=0", &admin).await?;
    assert_eq!(res.status(), 400);
    let res = get("/v1/admin/activity", &reader).await?;
    assert_eq!(res.status(), 403);
    cancel.cancel();
    Ok(())
}
