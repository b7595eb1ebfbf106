//! The demo upstream: a live-looking, offline set of sources for `livestrom demo`.
//!
//! Everything is derived from the time since the server started, so every
//! client sees a consistent world without shared mutable state:
//! - `/news/rss.xml`: an RSS 2.0 feed that gains an item every `news_every`;
//! - `/blog/feed.json`: a JSON Feed that gains a post every `blog_every`;
//! - `/town/notices.html`: a page whose notices change every `page_every`, with
//!   noise (a clock and a rotating advert) that changes on every request;
//! - `/firehose/events`: an endless SSE stream, one event per `firehose_every`,
//!   with numeric ids; `Last-Event-ID` resumes after that id.
//!
//! Item text comes from the template list in `fixtures/demo/items.toml`
//! (embedded at compile time, so the binary needs no files at run time).

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::stream::{self, StreamExt};
use serde::Deserialize;

use super::scenario::{ReplayRequest, Reply, Scenario, Step};
use super::server::ReplayServer;

/// Path of the demo RSS feed.
pub const NEWS_PATH: &str = "/news/rss.xml";
/// Path of the demo JSON Feed.
pub const BLOG_PATH: &str = "/blog/feed.json";
/// Path of the demo HTML page.
pub const PAGE_PATH: &str = "/town/notices.html";
/// Path of the demo SSE firehose.
pub const FIREHOSE_PATH: &str = "/firehose/events";

/// Where demo items link to (a reserved, never-resolving domain).
const SITE: &str = "https://demo.livestrom.example";
/// Items kept in each demo feed.
const FEED_WINDOW: u64 = 20;
/// Events a resuming firehose client may be behind before older ones are skipped.
const FIREHOSE_BACKLOG: u64 = 100;

const TEMPLATES: &str = include_str!("../../fixtures/demo/items.toml");

/// Pace of the demo upstream.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// A new RSS item this often (default 4 s).
    pub news_every: Duration,
    /// RSS items present at start (default 5).
    pub news_initial: u64,
    /// A new JSON Feed post this often (default 12 s).
    pub blog_every: Duration,
    /// JSON Feed posts present at start (default 3).
    pub blog_initial: u64,
    /// The HTML page's notices change this often (default 20 s).
    pub page_every: Duration,
    /// One firehose event this often (default 1 s).
    pub firehose_every: Duration,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            news_every: Duration::from_secs(4),
            news_initial: 5,
            blog_every: Duration::from_secs(12),
            blog_initial: 3,
            page_every: Duration::from_secs(20),
            firehose_every: Duration::from_secs(1),
        }
    }
}

/// Starts the demo upstream with the default pace.
pub async fn demo_upstream() -> io::Result<ReplayServer> {
    demo_upstream_with(DemoOptions::default()).await
}

/// Starts the demo upstream with a custom pace (tests use short periods).
pub async fn demo_upstream_with(options: DemoOptions) -> io::Result<ReplayServer> {
    let templates =
        Arc::new(Templates::parse().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?);
    for (name, d) in [
        ("news_every", options.news_every),
        ("blog_every", options.blog_every),
        ("page_every", options.page_every),
        ("firehose_every", options.firehose_every),
    ] {
        if d.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("demo option {name} must be greater than zero"),
            ));
        }
    }
    let clock = Clock {
        epoch: Instant::now(),
        wall: Utc::now(),
    };
    let o = options;

    let (t, c, every, initial) = (templates.clone(), clock, o.news_every, o.news_initial);
    let news = move |_: &ReplayRequest| -> Reply {
        let count = initial + c.ticks(every);
        let dates = Dates {
            clock: c,
            every,
            initial,
        };
        let body = render_news(&t, count, &dates);
        Step::ok(body)
            .content_type("application/rss+xml; charset=utf-8")
            .etag(format!("news-{count}"))
            .last_modified(http_date(dates.of(count)))
            .cache_control("no-cache")
            .into()
    };

    let (t, c, every, initial) = (templates.clone(), clock, o.blog_every, o.blog_initial);
    let blog = move |req: &ReplayRequest| -> Reply {
        let count = initial + c.ticks(every);
        let dates = Dates {
            clock: c,
            every,
            initial,
        };
        let host = req.header("host").unwrap_or("127.0.0.1");
        let body = render_blog(&t, count, &dates, &format!("http://{host}{BLOG_PATH}"));
        Step::ok(body)
            .content_type("application/feed+json")
            .etag(format!("blog-{count}"))
            .cache_control("no-cache")
            .into()
    };

    let (t, c, every) = (templates.clone(), clock, o.page_every);
    let page = move |req: &ReplayRequest| -> Reply {
        let version = c.ticks(every);
        let body = render_page(&t, version, req.hit, c.now());
        Step::ok(body)
            .content_type("text/html; charset=utf-8")
            .cache_control("no-cache")
            .into()
    };

    let (t, c, every) = (templates, clock, o.firehose_every);
    let firehose = move |req: &ReplayRequest| -> Reply {
        firehose_reply(t.clone(), c, every, req.header("last-event-id"))
    };

    let scenario = Scenario::new("demo")
        .describe("live-looking offline upstream for `livestrom demo`")
        .dynamic(NEWS_PATH, news)
        .dynamic(BLOG_PATH, blog)
        .dynamic(PAGE_PATH, page)
        .dynamic(FIREHOSE_PATH, firehose);
    ReplayServer::start(scenario)
}

/// A `sources.toml` watching the demo upstream at `base_url`, storing events
/// in `db_path` and serving the stream on `listen`.
pub fn demo_sources_toml(base_url: &str, db_path: &Path, listen: &str) -> String {
    let base = base_url.trim_end_matches('/');
    let q = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let db = db_path.to_string_lossy();
    format!(
        r#"# Generated by `livestrom demo`: every source below is served offline by the
# built-in demo upstream at {base}.

[engine]
database = {db}
retention = "1d"

[edge]
listen = {listen}
keepalive = "15s"

[fetch]
user_agent = "livestrom-demo (+https://demo.livestrom.example)"
timeout = "10s"
# All demo sources live on one local host; let them poll at their own pace.
per_host_rps = 20
per_host_concurrency = 8
# The demo upstream runs on 127.0.0.1.
allow_private_networks = true

[tiers]
firehose = "2s"
rss = "5s"
json = "5s"
html = "5s"

[[source]]
id = "demo.news"
type = "rss"
url = {news}
tags = ["demo", "news"]
interval = "2s"

[[source]]
id = "demo.blog"
type = "json"
url = {blog}
tags = ["demo", "blog"]
interval = "5s"

[[source]]
id = "demo.page"
type = "html"
url = {page}
tags = ["demo", "town"]
interval = "5s"
selector = "main article"
ignore = [".ad", "time"]

[[source]]
id = "demo.firehose"
type = "firehose"
url = {firehose}
tags = ["demo", "wiki"]
interval = "2s"
format = "sse"
fields = {{ id = "/id", title = "/title", url = "/link", content = "/summary" }}
"#,
        db = q(&db),
        listen = q(listen),
        news = q(&format!("{base}{NEWS_PATH}")),
        blog = q(&format!("{base}{BLOG_PATH}")),
        page = q(&format!("{base}{PAGE_PATH}")),
        firehose = q(&format!("{base}{FIREHOSE_PATH}")),
    )
}

/// The embedded template lists.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Templates {
    news: Vec<NewsTemplate>,
    blog: Vec<BlogTemplate>,
    notices: Vec<NoticeTemplate>,
    firehose: Vec<EditTemplate>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewsTemplate {
    slug: String,
    title: String,
    summary: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BlogTemplate {
    slug: String,
    title: String,
    content: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoticeTemplate {
    title: String,
    text: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EditTemplate {
    page: String,
    user: String,
}

impl Templates {
    fn parse() -> Result<Self, String> {
        let t: Templates =
            toml::from_str(TEMPLATES).map_err(|e| format!("fixtures/demo/items.toml: {e}"))?;
        if t.news.is_empty() || t.blog.is_empty() || t.notices.is_empty() || t.firehose.is_empty() {
            return Err("fixtures/demo/items.toml: every list (news, blog, notices, firehose) needs at least one entry".into());
        }
        Ok(t)
    }
}

/// The template for the 1-based item `k` of a list, and the wrap-around round (0 first).
fn nth<T>(list: &[T], k: u64) -> (&T, u64) {
    let len = list.len().max(1) as u64;
    let i = (k.saturating_sub(1) % len) as usize;
    (
        &list[i.min(list.len().saturating_sub(1))],
        k.saturating_sub(1) / len,
    )
}

fn with_round(title: &str, round: u64) -> String {
    if round == 0 {
        title.to_owned()
    } else {
        format!("{title} (update {round})")
    }
}

/// The server's start, in monotonic and wall-clock time.
#[derive(Debug, Clone, Copy)]
struct Clock {
    epoch: Instant,
    wall: DateTime<Utc>,
}

impl Clock {
    /// Whole periods of `every` since start.
    fn ticks(&self, every: Duration) -> u64 {
        let every = every.as_millis().max(1);
        u64::try_from(self.epoch.elapsed().as_millis() / every).unwrap_or(u64::MAX)
    }

    fn now(&self) -> DateTime<Utc> {
        self.wall + chrono::Duration::from_std(self.epoch.elapsed()).unwrap_or_default()
    }
}

/// Publication dates of a growing feed: the initial items are back-dated one
/// period apart, later ones appear on the tick that created them.
#[derive(Debug, Clone, Copy)]
struct Dates {
    clock: Clock,
    every: Duration,
    initial: u64,
}

impl Dates {
    fn of(&self, k: u64) -> DateTime<Utc> {
        let step = chrono::Duration::from_std(self.every).unwrap_or_default();
        let offset = i32::try_from(k as i64 - self.initial as i64).unwrap_or(0);
        self.clock.wall + step * offset
    }
}

fn http_date(d: DateTime<Utc>) -> String {
    d.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The newest `FEED_WINDOW` of items `1..=count`, newest first.
fn window(count: u64) -> impl Iterator<Item = u64> {
    let oldest = count.saturating_sub(FEED_WINDOW - 1).max(1);
    (oldest..=count).rev()
}

fn render_news(t: &Templates, count: u64, dates: &Dates) -> String {
    let mut items = String::new();
    for k in window(count) {
        let (tpl, round) = nth(&t.news, k);
        let link = format!("{SITE}/news/{k}-{}", tpl.slug);
        items.push_str(&format!(
            "    <item>\n      <title>{}</title>\n      <link>{link}</link>\n      <guid isPermaLink=\"true\">{link}</guid>\n      <pubDate>{}</pubDate>\n      <description>{}</description>\n    </item>\n",
            xml_escape(&with_round(&tpl.title, round)),
            dates.of(k).to_rfc2822(),
            xml_escape(&tpl.summary),
        ));
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<rss version=\"2.0\">\n  <channel>\n    <title>Demo City News</title>\n    <link>{SITE}/news/</link>\n    <description>Offline demo feed served by `livestrom demo`: a new item every few seconds.</description>\n    <language>en</language>\n    <lastBuildDate>{}</lastBuildDate>\n{items}  </channel>\n</rss>\n",
        dates.of(count).to_rfc2822(),
    )
}

fn render_blog(t: &Templates, count: u64, dates: &Dates, feed_url: &str) -> String {
    let items: Vec<serde_json::Value> = window(count)
        .map(|k| {
            let (tpl, round) = nth(&t.blog, k);
            let url = format!("{SITE}/blog/{k}-{}", tpl.slug);
            serde_json::json!({
                "id": url,
                "url": url,
                "title": with_round(&tpl.title, round),
                "content_text": tpl.content,
                "date_published": dates.of(k).to_rfc3339_opts(SecondsFormat::Secs, true),
                "authors": [{ "name": "Livestrom demo" }],
                "tags": ["demo"],
            })
        })
        .collect();
    let feed = serde_json::json!({
        "version": "https://jsonfeed.org/version/1.1",
        "title": "Demo Engineering Blog",
        "home_page_url": format!("{SITE}/blog/"),
        "feed_url": feed_url,
        "description": "Offline demo JSON Feed served by `livestrom demo`.",
        "language": "en",
        "items": items,
    });
    let mut s = serde_json::to_string_pretty(&feed).unwrap_or_else(|_| "{}".to_owned());
    s.push('\n');
    s
}

/// The notices page at `version`; `hit` and `now` only feed the noise that the
/// demo's `ignore` selectors strip (a clock and a rotating advert).
fn render_page(t: &Templates, version: u64, hit: usize, now: DateTime<Utc>) -> String {
    // Version v shows notices v+1 ..= v+4, newest first: each change adds one and drops one.
    let mut notices = String::new();
    for k in (version + 1..=version + 4).rev() {
        let (tpl, round) = nth(&t.notices, k);
        notices.push_str(&format!(
            "        <li id=\"notice-{k}\"><h2>{}</h2><p>{}</p></li>\n",
            xml_escape(&with_round(&tpl.title, round)),
            xml_escape(&tpl.text),
        ));
    }
    let adverts = [
        "Visit the harbour market this weekend",
        "Join the summer reading challenge",
        "Try the new ferry timetable app",
    ];
    let advert = adverts[hit % adverts.len()];
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n  <meta charset=\"utf-8\">\n  <title>Town notices — Livestrom demo</title>\n</head>\n<body>\n  <header><nav><a href=\"/\">Home</a> · <a href=\"/town/\">Town hall</a></nav></header>\n  <div class=\"ad\">{advert}</div>\n  <main>\n    <article>\n      <h1>Public notices</h1>\n      <p class=\"updated\">Page generated <time datetime=\"{iso}\">{clock}</time></p>\n      <ul class=\"notices\">\n{notices}      </ul>\n    </article>\n  </main>\n  <footer>Served offline by <code>livestrom demo</code>.</footer>\n</body>\n</html>\n",
        iso = now.to_rfc3339_opts(SecondsFormat::Secs, true),
        clock = now.format("%H:%M:%S"),
    )
}

/// The SSE event with id `n` (1-based).
fn firehose_event(t: &Templates, n: u64, at: DateTime<Utc>) -> Bytes {
    let (tpl, _) = nth(&t.firehose, n);
    let changed = 10 + (n * 37) % 400;
    let data = serde_json::json!({
        "id": format!("edit-{n}"),
        "title": format!("{} edited by {}", tpl.page.replace('_', " "), tpl.user),
        "link": format!("{SITE}/wiki/{}?oldid={n}", tpl.page),
        "summary": format!("Revision {n}: {} changed {changed} bytes on {}.", tpl.user, tpl.page.replace('_', " ")),
        "user": tpl.user,
        "timestamp": at.to_rfc3339_opts(SecondsFormat::Secs, true),
    });
    Bytes::from(format!("id: {n}\ndata: {data}\n\n"))
}

/// An endless SSE stream: event n is due `(n - 1) * every` after start. A new
/// client starts at the latest due event; a resuming one right after its
/// `Last-Event-ID` (at most `FIREHOSE_BACKLOG` behind).
fn firehose_reply(
    t: Arc<Templates>,
    clock: Clock,
    every: Duration,
    last_event_id: Option<&str>,
) -> Reply {
    let latest = clock.ticks(every) + 1;
    let first = match last_event_id.and_then(|s| s.trim().parse::<u64>().ok()) {
        Some(last) => (last + 1).max(latest.saturating_sub(FIREHOSE_BACKLOG)),
        None => latest,
    };
    let body = stream::unfold(first, move |n| {
        let t = t.clone();
        async move {
            let offset = every.saturating_mul(u32::try_from(n - 1).unwrap_or(u32::MAX));
            let due = clock.epoch + offset;
            tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
            let at = clock.wall + chrono::Duration::from_std(offset).unwrap_or_default();
            Some((Ok(firehose_event(&t, n, at)), n + 1))
        }
    })
    .boxed();
    Reply::Stream {
        status: 200,
        headers: vec![
            ("content-type".to_owned(), "text/event-stream".to_owned()),
            ("cache-control".to_owned(), "no-cache".to_owned()),
        ],
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dates(initial: u64) -> Dates {
        Dates {
            clock: Clock {
                epoch: Instant::now(),
                wall: DateTime::from_timestamp(1_782_892_800, 0).unwrap_or_default(),
            },
            every: Duration::from_secs(4),
            initial,
        }
    }

    #[test]
    fn templates_parse() -> Result<(), String> {
        let t = Templates::parse()?;
        assert!(
            t.news.len() >= 10,
            "enough news templates for a varied demo"
        );
        Ok(())
    }

    #[test]
    fn news_grows_by_one_item_per_tick_and_is_deterministic() -> Result<(), String> {
        let t = Templates::parse()?;
        let d = dates(5);
        let a = render_news(&t, 5, &d);
        let b = render_news(&t, 6, &d);
        assert_eq!(a, render_news(&t, 5, &d), "same count, same document");
        assert_eq!(a.matches("<item>").count(), 5);
        assert_eq!(b.matches("<item>").count(), 6);
        assert!(b.contains("/news/6-"), "item 6 appears at count 6");
        assert!(!a.contains("/news/6-"));
        // Past the template list the titles stay unique.
        let many = render_news(&t, 30, &d);
        assert_eq!(many.matches("<item>").count(), FEED_WINDOW as usize);
        assert!(many.contains("(update 2)"));
        Ok(())
    }

    #[test]
    fn page_changes_only_in_noise_within_a_version() -> Result<(), String> {
        let t = Templates::parse()?;
        let now = Utc::now();
        let v0a = render_page(&t, 0, 1, now);
        let v0b = render_page(&t, 0, 2, now + chrono::Duration::seconds(3));
        let v1 = render_page(&t, 1, 3, now);
        let notices = |s: &str| s.split("<ul class=\"notices\">").nth(1).map(str::to_owned);
        assert_ne!(v0a, v0b, "noise changes on every request");
        assert_eq!(notices(&v0a), notices(&v0b), "the watched list does not");
        assert_ne!(
            notices(&v0a),
            notices(&v1),
            "a new version changes the list"
        );
        Ok(())
    }

    #[test]
    fn sources_toml_escapes_paths() {
        let toml = demo_sources_toml(
            "http://127.0.0.1:9/",
            Path::new("C:\\tmp\\a \"b\".db"),
            "127.0.0.1:0",
        );
        let v: toml::Table = match toml.parse() {
            Ok(v) => v,
            Err(e) => panic!("demo sources.toml does not parse: {e}\n{toml}"),
        };
        let db = v
            .get("engine")
            .and_then(|e| e.get("database"))
            .and_then(|d| d.as_str());
        assert_eq!(db, Some("C:\\tmp\\a \"b\".db"));
        assert!(toml.contains("url = \"http://127.0.0.1:9/news/rss.xml\""));
    }
}
