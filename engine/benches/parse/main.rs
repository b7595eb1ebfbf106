//! Parsing benchmark (not a test): what a poll does with a body, on real
//! documents, against Python feedparser on the same files.
//!
//! - Feeds: every file of `fixtures/corpus/feeds` (the real-world corpus,
//!   some files deliberately broken; what counts as a feed and the oracle's
//!   reading are taken as `tests/corpus.rs` takes them) through the feed
//!   kind's `Kind::parse` (decode, repairs, feed-rs, items) and
//!   `normalize::plan` (identity, fingerprints, events: a first poll, every
//!   item new) — the two calls the runtime makes for a polled feed.
//! - Pages: every file of `fixtures/corpus/html` through the html kind's
//!   `Kind::parse` three ways: a first poll (extract), a re-poll of the same
//!   page (extract + diff against the remembered snapshot: no change) and a
//!   re-poll of a slightly edited copy (extract + diff: one change).
//! - feedparser: `benches/feedparser_speed.py` parses the same feed files
//!   in-process with `feedparser.parse(bytes)` for the same time, in a venv
//!   under `target/` (feedparser pinned), and the ratios ours/feedparser are
//!   printed.
//!
//! Every file is read into memory first. Each measure runs one untimed pass,
//! then whole passes over all its files until `BENCH_SECS` seconds were
//! timed. Files that fail to parse count (their time is real work) and are
//! listed. MB are 10^6 bytes of input.
//!
//! Run: `cargo bench -p livestrom-engine --bench parse`. Knobs: `BENCH_SECS`
//! (timed seconds per measure, default 2), `BENCH_ITERS` (exactly this many
//! timed passes instead, e.g. 1 under a profiler), `BENCH_FEEDPARSER=0`
//! (ours only), `BENCH_ONLY=feeds|pages` (one measure, e.g. under a
//! profiler), `BENCH_CORPUS` (another folder with `feeds/`, `html/` and
//! `expected/`).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use livestrom_engine::config::{SourceConfig, SourceKind};
use livestrom_engine::normalize;
use livestrom_engine::sources::{self, html, Body, Kind};
use livestrom_engine::Config;
use url::Url;

mod clock;
mod feedparser;

use clock::Clock;

/// The allocator the `livestrom` binary runs with: parsing allocates a lot,
/// so the figures are the shipped binary's.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

type BoxResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// What the edited copy of a page adds (inside its last paragraph).
const EDIT: &str = " This sentence was added to the page after the first poll.";

/// The sources the corpus is polled as, validated like a real sources.toml.
const SOURCES: &str = r#"
[[source]]
id = "corpus.feed"
type = "rss"
url = "https://corpus.test/feed"

[[source]]
id = "corpus.page"
type = "html"
url = "https://corpus.test/page"
"#;

fn main() -> BoxResult<()> {
    let root = workspace_root();
    let corpus = std::env::var_os("BENCH_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("fixtures/corpus"));
    let budget = Budget::from_env();
    let config = Config::from_toml(Path::new("bench-sources.toml"), SOURCES)?;
    let feed_src = config.source("corpus.feed").ok_or("no feed source")?;
    let page_src = config.source("corpus.page").ok_or("no page source")?;

    let feeds = load_feeds(&corpus)?;
    let page_kind = sources::kind(page_src);
    let pages = load_pages(&corpus, page_kind.as_ref(), &page_src.url)?;
    let feed_bytes: usize = feeds.iter().map(|f| f.body.len()).sum();
    let page_bytes: usize = pages.iter().map(|p| p.body.len()).sum();
    println!(
        "corpus {}: {} feeds ({:.2} MB), {} pages ({:.2} MB); {}; {} cores, load average {}",
        corpus.display(),
        feeds.len(),
        mb(feed_bytes),
        pages.len(),
        mb(page_bytes),
        budget,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
    if cfg!(debug_assertions) {
        println!("note: built without optimisations (debug assertions on): not representative");
    }

    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    if only == "pages" {
        bench_pages(page_src, &pages, &budget)?;
        return Ok(());
    }
    let ours = bench_feeds(feed_src, &feeds, &budget);
    println!();
    if only != "feeds" {
        println!("pages: load average {}", load_average());
        bench_pages(page_src, &pages, &budget)?;
        println!();
    }
    match std::env::var("BENCH_FEEDPARSER").as_deref() {
        Ok("0") => println!("feedparser: skipped (BENCH_FEEDPARSER=0)"),
        _ => match feedparser::feedparser(&root, &corpus, &feeds, &budget) {
            Ok(fp) => feedparser::compare(&ours, &fp),
            Err(e) => println!("feedparser: not measured ({e}); ours only"),
        },
    }
    Ok(())
}

/// How long each measure runs.
struct Budget {
    secs: f64,
    iters: Option<u32>,
}

impl Budget {
    fn from_env() -> Self {
        let num = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<f64>().ok());
        Self {
            secs: num("BENCH_SECS").filter(|s| *s > 0.0).unwrap_or(2.0),
            iters: num("BENCH_ITERS")
                .filter(|n| *n >= 1.0)
                .map(|n| n.min(f64::from(u32::MAX)) as u32),
        }
    }

    fn done(&self, passes: u32, timed: Duration) -> bool {
        match self.iters {
            Some(n) => passes >= n,
            None => timed.as_secs_f64() >= self.secs,
        }
    }
}

impl std::fmt::Display for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.iters {
            Some(n) => write!(f, "BENCH_ITERS={n} timed passes per measure"),
            None => write!(
                f,
                "BENCH_SECS={} (timed seconds per measure, at least)",
                self.secs
            ),
        }
    }
}

/// One corpus feed: `origin/file`, where it is, what the oracle made of it.
struct FeedFile {
    name: String,
    path: PathBuf,
    body: Vec<u8>,
    /// The oracle (feedparser 6.0.14) flagged it as broken.
    bozo: bool,
    /// The base URL it is pretended to be served from (as tests/corpus.rs).
    base: Url,
}

/// One corpus page and its edited copy.
struct PageFile {
    name: String,
    body: Vec<u8>,
    /// The page with [`EDIT`] inserted where it is seen ([`edits`]).
    edited: Vec<u8>,
}

/// Every `feeds/<origin>/<file>`, sorted, as tests/corpus.rs walks them,
/// with the oracle's `bozo` from `expected/<origin>/<file>.json`.
fn load_feeds(corpus: &Path) -> BoxResult<Vec<FeedFile>> {
    let mut out = Vec::new();
    for (name, path) in walk(&corpus.join("feeds"))? {
        let body = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let expected = corpus.join("expected").join(format!("{name}.json"));
        let bozo = match std::fs::read(&expected) {
            Ok(text) => {
                serde_json::from_slice::<serde_json::Value>(&text)
                    .map_err(|e| format!("{}: {e}", expected.display()))?["bozo"]
                    .as_bool()
                    != Some(false)
            }
            Err(_) => true,
        };
        let base = Url::parse(&format!("https://corpus.test/{name}"))?;
        out.push(FeedFile {
            name,
            path,
            body,
            bozo,
            base,
        });
    }
    if out.is_empty() {
        return Err(format!("no feed files under {}", corpus.join("feeds").display()).into());
    }
    Ok(out)
}

/// Every `html/<origin>/<file>`, sorted, with its edited copy: the first of
/// [`edits`] that the page kind reports as a change.
fn load_pages(corpus: &Path, kind: &dyn Kind, url: &Url) -> BoxResult<Vec<PageFile>> {
    let mut out = Vec::new();
    for (name, path) in walk(&corpus.join("html"))? {
        let body = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let (_, snap, _) = page_poll(kind, &body, url, None);
        let mut candidates = edits(&body);
        let seen = candidates
            .iter()
            .position(|e| page_poll(kind, e, url, snap.as_deref()).0 == PageOutcome::Item)
            .unwrap_or(0);
        let edited = candidates.swap_remove(seen);
        out.push(PageFile { name, body, edited });
    }
    Ok(out)
}

/// `<origin>/<file>` under `dir`, sorted.
fn walk(dir: &Path) -> BoxResult<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for origin in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let origin = origin?;
        if !origin.file_type()?.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(origin.path())? {
            let f = f?;
            if !f.file_type()?.is_file() {
                continue;
            }
            let name = format!(
                "{}/{}",
                origin.file_name().to_string_lossy(),
                f.file_name().to_string_lossy()
            );
            out.push((name, f.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Copies of the page with [`EDIT`] inserted, in the order they are tried:
/// inside its last paragraph, its first, before `</body>`, at the end. The
/// first one whose re-poll reports a change is the page's edited copy (a
/// paragraph may sit in a region the extractor skips).
fn edits(page: &[u8]) -> Vec<Vec<u8>> {
    let lower = page.to_ascii_lowercase();
    let find = |needle: &[u8], last: bool| {
        let mut w = lower.windows(needle.len());
        if last {
            w.rposition(|w| w == needle)
        } else {
            w.position(|w| w == needle)
        }
    };
    let insert = |at: usize, text: &str| {
        let mut out = Vec::with_capacity(page.len() + text.len());
        out.extend_from_slice(&page[..at]);
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(&page[at..]);
        out
    };
    let mut out: Vec<Vec<u8>> = [
        find(b"</p>", true),
        find(b"</p>", false),
        find(b"</body>", true),
    ]
    .into_iter()
    .flatten()
    .map(|at| insert(at, EDIT))
    .collect();
    out.push(insert(page.len(), &format!("<p>{EDIT}</p>")));
    out
}

/// What the feed measure found, for the comparison.
struct FeedFigures {
    mb_per_s: f64,
    items_per_s: f64,
    files_per_s: f64,
    /// MB and items per second on the CPU (the box is shared: wall time
    /// includes time this thread waited for a core).
    cpu_mb_per_s: Option<f64>,
    cpu_items_per_s: Option<f64>,
    items_per_pass: usize,
    errors: usize,
}

/// One feed poll's work: `Kind::parse`, then `normalize::plan` of a first
/// poll. Returns (items, events, error) and the time of each half.
fn poll_feed(
    kind: &dyn Kind,
    src: &SourceConfig,
    f: &FeedFile,
) -> (usize, usize, Option<String>, Duration, Duration) {
    let body = Body {
        bytes: &f.body,
        content_type: None,
        url: &f.base,
    };
    let t0 = Instant::now();
    let parsed = kind.parse(&body, None);
    let t1 = Instant::now();
    let (items, events, error) = match parsed {
        Ok(p) => {
            let items = p.items.len();
            let plan = normalize::plan(src, p.items, &[], true, Utc::now());
            let events = plan.events.len();
            black_box(plan);
            (items, events, None)
        }
        Err(e) => (0, 0, Some(black_box(e).to_string())),
    };
    let t2 = Instant::now();
    (items, events, error, t1 - t0, t2 - t1)
}

fn bench_feeds(src: &SourceConfig, feeds: &[FeedFile], budget: &Budget) -> FeedFigures {
    let kind: Arc<dyn Kind> = sources::kind(src);
    // Untimed pass: counts (the same on every pass) and errors.
    let mut items_per_pass = 0;
    let mut events_per_pass = 0;
    let mut errors: Vec<(&str, bool, String)> = Vec::new();
    for f in feeds {
        let (items, events, error, _, _) = poll_feed(kind.as_ref(), src, f);
        items_per_pass += items;
        events_per_pass += events;
        if let Some(e) = error {
            errors.push((&f.name, f.bozo, e));
        }
    }
    let mut parse_time = vec![Duration::ZERO; feeds.len()];
    let mut plan_time = vec![Duration::ZERO; feeds.len()];
    let mut passes = 0u32;
    let mut timed = Duration::ZERO;
    let clock = Clock::start();
    while !budget.done(passes, timed) {
        for (i, f) in feeds.iter().enumerate() {
            let (_, _, _, parse, plan) = poll_feed(kind.as_ref(), src, f);
            parse_time[i] += parse;
            plan_time[i] += plan;
        }
        passes += 1;
        timed = parse_time.iter().chain(&plan_time).sum();
    }
    let on_cpu = clock.on_cpu();
    let secs = timed.as_secs_f64();
    let bytes: usize = feeds.iter().map(|f| f.body.len()).sum();
    let parse_secs: f64 = parse_time.iter().map(Duration::as_secs_f64).sum();
    let n = f64::from(passes);
    let figures = FeedFigures {
        mb_per_s: mb(bytes) * n / secs,
        items_per_s: items_per_pass as f64 * n / secs,
        files_per_s: feeds.len() as f64 * n / secs,
        cpu_mb_per_s: on_cpu.map(|(cpu, _)| mb(bytes) * n / cpu),
        cpu_items_per_s: on_cpu.map(|(cpu, _)| items_per_pass as f64 * n / cpu),
        items_per_pass,
        errors: errors.len(),
    };
    println!(
        "feeds: Kind::parse + normalize::plan (first poll), {} files, {:.2} MB, {passes} passes in {secs:.2} s",
        feeds.len(),
        mb(bytes)
    );
    println!(
        "  {:.1} MB/s   {:.0} items/s   {:.0} files/s   ({items_per_pass} items and {events_per_pass} events per pass)",
        figures.mb_per_s, figures.items_per_s, figures.files_per_s
    );
    if let (Some((cpu, wall)), Some(mbs), Some(items)) =
        (on_cpu, figures.cpu_mb_per_s, figures.cpu_items_per_s)
    {
        println!(
            "  per CPU-second: {mbs:.1} MB/s   {items:.0} items/s   (on a core {cpu:.2} s of {wall:.2} s, {:.0} %)",
            100.0 * cpu / wall
        );
    }
    println!(
        "  time: parse {:.1} %, normalise {:.1} %",
        100.0 * parse_secs / secs,
        100.0 * (secs - parse_secs) / secs
    );
    let bozo = errors.iter().filter(|e| e.1).count();
    println!(
        "  errored: {} of {} files ({bozo} of them flagged bozo by the oracle; {} bozo in all)",
        errors.len(),
        feeds.len(),
        feeds.iter().filter(|f| f.bozo).count()
    );
    for (name, bozo, e) in &errors {
        let mut e = e.clone();
        if e.len() > 100 {
            let mut cut = 100;
            while !e.is_char_boundary(cut) {
                cut -= 1;
            }
            e.truncate(cut);
            e.push('…');
        }
        println!("    {name}{}: {e}", if *bozo { " (bozo)" } else { "" });
    }
    let total: Vec<Duration> = parse_time
        .iter()
        .zip(&plan_time)
        .map(|(a, b)| *a + *b)
        .collect();
    let rows: Vec<Row> = feeds
        .iter()
        .enumerate()
        .map(|(i, f)| Row {
            name: &f.name,
            bytes: f.body.len(),
            processed: f.body.len(),
            time: total[i],
            parse: Some(parse_time[i]),
        })
        .collect();
    print_top(&rows, passes, timed);
    figures
}

/// One file's accumulated time, for the top-5 tables.
struct Row<'a> {
    name: &'a str,
    /// The file's size.
    bytes: usize,
    /// Bytes of input one pass reads for this file (pages: three polls).
    processed: usize,
    time: Duration,
    /// The part spent in `Kind::parse` (feeds; the rest is `normalize::plan`).
    parse: Option<Duration>,
}

fn print_top(rows: &[Row<'_>], passes: u32, timed: Duration) {
    let passes = f64::from(passes.max(1));
    let print = |title: &str, idx: &[usize]| {
        println!("  {title}:");
        println!(
            "    {:<58} {:>9} {:>9} {:>10} {:>7} {:>7}",
            "file", "KB", "MB/s", "µs/pass", "share", "parse"
        );
        for &i in idx {
            let r = &rows[i];
            let secs = r.time.as_secs_f64();
            let parse = r.parse.map_or_else(
                || "-".to_owned(),
                |p| format!("{:.0}%", 100.0 * p.as_secs_f64() / secs.max(1e-12)),
            );
            println!(
                "    {:<58} {:>9.1} {:>9.2} {:>10.1} {:>6.1}% {:>7}",
                r.name,
                r.bytes as f64 / 1e3,
                mb(r.processed) * passes / secs.max(1e-12),
                secs * 1e6 / passes,
                100.0 * secs / timed.as_secs_f64().max(1e-12),
                parse
            );
        }
    };
    let mut by_rate: Vec<usize> = (0..rows.len()).collect();
    by_rate.sort_by(|&a, &b| {
        let per_byte = |r: &Row<'_>| r.time.as_secs_f64() / r.processed.max(1) as f64;
        per_byte(&rows[b]).total_cmp(&per_byte(&rows[a]))
    });
    print("slowest 5 by time per MB", &by_rate[..by_rate.len().min(5)]);
    let mut by_share: Vec<usize> = (0..rows.len()).collect();
    by_share.sort_by(|&a, &b| rows[b].time.cmp(&rows[a].time));
    print(
        "largest 5 shares of the time",
        &by_share[..by_share.len().min(5)],
    );
}

/// Outcome of a page poll, for the counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PageOutcome {
    Item,
    Unchanged,
    Error,
}

/// One page poll as the runtime makes it: what it yielded, what it asks to
/// remember, and its error.
fn page_poll(
    kind: &dyn Kind,
    body: &[u8],
    url: &Url,
    memory: Option<&str>,
) -> (PageOutcome, Option<String>, Option<String>) {
    let body = Body {
        bytes: body,
        content_type: Some("text/html"),
        url,
    };
    match kind.parse(&body, memory) {
        Ok(p) if p.unchanged => (PageOutcome::Unchanged, None, None),
        Ok(p) => (PageOutcome::Item, black_box(p).remember, None),
        Err(e) => (PageOutcome::Error, None, Some(e.to_string())),
    }
}

fn bench_pages(src: &SourceConfig, pages: &[PageFile], budget: &Budget) -> BoxResult<()> {
    let kind: Arc<dyn Kind> = sources::kind(src);
    let SourceKind::Html(settings) = &src.kind else {
        return Err("the page source is not an html source".into());
    };
    let url = src.url.clone();
    // Untimed pass: each page's snapshot (what the runtime remembers after
    // the first poll) and what each step yields.
    let mut snapshots: Vec<Option<String>> = Vec::with_capacity(pages.len());
    let mut counts = [[0usize; 3]; 3];
    let slot = |o: PageOutcome| match o {
        PageOutcome::Item => 0,
        PageOutcome::Unchanged => 1,
        PageOutcome::Error => 2,
    };
    let mut failed: Vec<String> = Vec::new();
    for p in pages {
        let (first, snap, error) = page_poll(kind.as_ref(), &p.body, &url, None);
        counts[0][slot(first)] += 1;
        if let Some(e) = error {
            failed.push(format!("{}: {e}", p.name));
        }
        let same = page_poll(kind.as_ref(), &p.body, &url, snap.as_deref()).0;
        let edited = page_poll(kind.as_ref(), &p.edited, &url, snap.as_deref()).0;
        counts[1][slot(same)] += 1;
        counts[2][slot(edited)] += 1;
        snapshots.push(snap);
    }

    // Three steps per page and pass: first poll, re-poll unchanged,
    // re-poll of the edited copy.
    let mut step_time = [
        vec![Duration::ZERO; pages.len()],
        vec![Duration::ZERO; pages.len()],
        vec![Duration::ZERO; pages.len()],
    ];
    let mut passes = 0u32;
    let mut timed = Duration::ZERO;
    let clock = Clock::start();
    while !budget.done(passes, timed) {
        for (i, p) in pages.iter().enumerate() {
            let memory = snapshots[i].as_deref();
            for (step, (body, memory)) in [(&p.body, None), (&p.body, memory), (&p.edited, memory)]
                .into_iter()
                .enumerate()
            {
                let t = Instant::now();
                black_box(page_poll(kind.as_ref(), body, &url, memory));
                step_time[step][i] += t.elapsed();
            }
        }
        passes += 1;
        timed = step_time.iter().flatten().sum();
    }
    let on_cpu = clock.on_cpu();

    // The diff alone, on the snapshots the steps above compared.
    let mut diff_time = Duration::ZERO;
    let mut diff_passes = 0u32;
    let edited_snaps: Vec<Option<String>> = pages
        .iter()
        .map(|p| {
            html::extract(&p.edited, Some("text/html"), settings)
                .ok()
                .map(|s| s.text)
        })
        .collect();
    while !budget.done(diff_passes, diff_time) {
        for (old, new) in snapshots.iter().zip(&edited_snaps) {
            if let (Some(old), Some(new)) = (old, new) {
                let t = Instant::now();
                black_box(html::diff(old, new, settings.min_change));
                black_box(html::diff(old, old, settings.min_change));
                diff_time += t.elapsed();
            }
        }
        diff_passes += 1;
        if diff_time.is_zero() {
            break;
        }
    }

    let bytes: usize = pages.iter().map(|p| p.body.len()).sum();
    let edited_bytes: usize = pages.iter().map(|p| p.edited.len()).sum();
    let secs = timed.as_secs_f64();
    let n = f64::from(passes);
    println!(
        "pages: html Kind::parse (extract, + diff against the remembered snapshot), {} pages, {:.2} MB, {passes} passes in {secs:.2} s",
        pages.len(),
        mb(bytes)
    );
    let names = [
        "first poll (extract)",
        "re-poll, same page (extract + diff with itself)",
        "re-poll, edited copy (extract + diff)",
    ];
    for (step, name) in names.iter().enumerate() {
        let s: f64 = step_time[step].iter().map(Duration::as_secs_f64).sum();
        let b = if step == 2 { edited_bytes } else { bytes };
        let [item, unchanged, error] = counts[step];
        println!(
            "  {name:<50} {:>7.1} MB/s {:>7.0} pages/s   ({item} items, {unchanged} unchanged, {error} errors)",
            mb(b) * n / s,
            pages.len() as f64 * n / s
        );
    }
    println!(
        "  all three steps: {:.1} MB/s of HTML",
        mb(2 * bytes + edited_bytes) * n / secs
    );
    if let Some((cpu, wall)) = on_cpu {
        println!(
            "  per CPU-second: {:.1} MB/s of HTML   (on a core {cpu:.2} s of {wall:.2} s, {:.0} %)",
            mb(2 * bytes + edited_bytes) * n / cpu,
            100.0 * cpu / wall
        );
    }
    if !diff_time.is_zero() {
        let pairs = snapshots
            .iter()
            .zip(&edited_snaps)
            .filter(|(a, b)| a.is_some() && b.is_some())
            .count();
        let text: usize = snapshots.iter().flatten().map(String::len).sum();
        println!(
            "  html::diff alone (snapshot vs edited snapshot, and vs itself): {:.0} µs per page pair, {:.1} MB/s of snapshot text ({pairs} pairs, {:.2} MB of text)",
            diff_time.as_secs_f64() * 1e6 / (f64::from(diff_passes) * pairs.max(1) as f64),
            mb(2 * text) * f64::from(diff_passes) / diff_time.as_secs_f64(),
            mb(text)
        );
    }
    for f in &failed {
        println!("    refused {f}");
    }
    let rows: Vec<Row> = pages
        .iter()
        .enumerate()
        .map(|(i, p)| Row {
            name: &p.name,
            bytes: p.body.len(),
            processed: p.body.len() * 2 + p.edited.len(),
            time: step_time[0][i] + step_time[1][i] + step_time[2][i],
            parse: None,
        })
        .collect();
    print_top(&rows, passes, timed);
    Ok(())
}

fn workspace_root() -> PathBuf {
    let engine = Path::new(env!("CARGO_MANIFEST_DIR"));
    engine.parent().unwrap_or(engine).to_owned()
}

fn mb(bytes: usize) -> f64 {
    bytes as f64 / 1e6
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}
