//! Feed-less HTML pages: select the watched region, strip noise, normalise to
//! text, and diff against the previous snapshot. Pure.
//!
//! CONTRACT (owned by the html module's owner).
//!
//! [`extract`] is CPU-heavy on big pages (parsing, selector matching): the
//! runtime calls it inside `spawn_blocking`. Neither function does IO.

mod decode;
mod detect;
mod kind;
mod noise;
mod text;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use html5ever::tendril::{StrTendril, TendrilSink};
use scraper::{Html, HtmlTreeSink, Selector};
use similar::{Algorithm, ChangeTag, DiffOp, TextDiff};

use crate::config::HtmlSettings;

pub use kind::HtmlKind;

/// Why a page cannot be used (the source is marked unhealthy with this).
#[derive(Debug, thiserror::Error)]
pub enum HtmlError {
    /// The configured selector matched nothing on the page.
    #[error("selector `{0}` matched nothing on the page")]
    SelectorMatchedNothing(String),
    /// The page is a bot challenge / interstitial, not the content.
    #[error("the page is a bot-challenge interstitial ({0}), not the content")]
    Challenge(String),
    /// The page looks like an error page served with 200.
    #[error("the page looks like an error page served with status 200 ({0})")]
    ErrorPage(String),
    /// Not HTML at all.
    #[error("not an HTML page: {0}")]
    NotHtml(String),
    /// A `selector` or `ignore` entry is not valid CSS (config validation
    /// normally catches this first).
    #[error("`{selector}` is not a CSS selector: {reason}")]
    InvalidSelector {
        /// The selector as configured.
        selector: String,
        /// The parser's message.
        reason: String,
    },
    /// A hostile or broken page that would take too long to parse: elements
    /// nested deeper than any real page, or parsing over its time budget
    /// (html5ever has quadratic corners, e.g. thousands of attributes on one tag).
    #[error("the page is too complex to parse safely: {0}")]
    TooComplex(String),
    /// The watched region holds no text once noise is removed (a page
    /// rendered by JavaScript, or a broken response); reported instead of
    /// diffing to "everything deleted".
    #[error("the watched region `{0}` has no text (is the page rendered by JavaScript?)")]
    EmptyRegion(String),
}

/// The watched region of a page, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The page `<title>`, normalised.
    pub title: String,
    /// The normalised text of the watched region (one block per line).
    pub text: String,
}

/// A meaningful change between two snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Unified diff, old → new.
    pub diff: String,
    /// Lines added by the change.
    pub added: Vec<String>,
}

/// Labels of the two sides in the unified diff header.
pub const DIFF_HEADER: (&str, &str) = ("previous", "current");

/// Context lines around each hunk of the unified diff.
pub const DIFF_CONTEXT: usize = 3;

/// Deepest element nesting accepted (see [`HtmlError::TooComplex`]).
pub const MAX_DEPTH: usize = 512;

/// Wall-clock budget for parsing one page (a 10 MB page of real markup
/// parses in well under a second).
pub const PARSE_BUDGET: Duration = Duration::from_secs(5);

/// Bytes of markup parsed between two depth checks.
const PARSE_SLICE: usize = 16 * 1024;

/// Bound on the time spent diffing one pair of snapshots; past it `similar`
/// returns a coarser (still correct) diff instead of an exact minimal one.
const DIFF_DEADLINE: Duration = Duration::from_secs(2);

/// Changed regions longer than this are counted line-wise rather than by a
/// character diff (which is quadratic in the worst case).
const CHAR_DIFF_MAX: usize = 20_000;

/// Extracts and normalises the watched region.
pub fn extract(
    body: &[u8],
    content_type: Option<&str>,
    settings: &HtmlSettings,
) -> Result<Snapshot, HtmlError> {
    decode::check_html(body, content_type).map_err(HtmlError::NotHtml)?;
    let source = decode::decode(body, content_type);
    let region_css = settings.selector.as_deref().unwrap_or("body");
    let region_sel = parse_selector(region_css)?;
    let ignore = settings
        .ignore
        .iter()
        .map(|s| parse_selector(s))
        .collect::<Result<Vec<_>, _>>()?;

    let doc = parse(&source)?;
    let h1 = first_text(&doc, "h1");
    let title = first_text(&doc, "head title")
        .or_else(|| first_text(&doc, "title"))
        .or_else(|| h1.clone())
        .unwrap_or_default();
    let skip: HashSet<_> = ignore
        .iter()
        .flat_map(|sel| doc.select(sel).map(|e| e.id()))
        .collect();
    let mut region: HashSet<_> = doc.select(&region_sel).map(|e| e.id()).collect();
    if region.is_empty() && settings.selector.is_none() {
        region.insert(doc.root_element().id());
    }
    let walk = text::walk(&doc, &region, &skip);

    if let Some(why) = detect::challenge(&source, &title, walk.visible_chars) {
        return Err(HtmlError::Challenge(why));
    }
    if let Some(why) = detect::error_page(&title, h1.as_deref()) {
        return Err(HtmlError::ErrorPage(why));
    }
    if region.is_empty() {
        return Err(HtmlError::SelectorMatchedNothing(region_css.to_owned()));
    }
    let lines: Vec<String> = walk
        .lines
        .iter()
        .filter_map(|l| clean(l, settings))
        .collect();
    if lines.is_empty() {
        return Err(HtmlError::EmptyRegion(region_css.to_owned()));
    }
    Ok(Snapshot {
        title: clean(&title, settings).unwrap_or_default(),
        text: lines.join("\n"),
    })
}

/// `None` when the change is not meaningful (noise only, or below `min_change` characters).
pub fn diff(old: &str, new: &str, min_change: usize) -> Option<Change> {
    if old == new {
        return None;
    }
    let old_nl = with_newline(old);
    let new_nl = with_newline(new);
    // One deadline for the whole comparison, line diff and per-block
    // character counts together (a page with many changed blocks would
    // otherwise get the budget once per block).
    let deadline = Instant::now() + DIFF_DEADLINE;
    let td = TextDiff::configure()
        .algorithm(Algorithm::Patience)
        .deadline(deadline)
        .diff_lines(old_nl.as_str(), new_nl.as_str());
    if changed_chars(&td, deadline) < min_change.max(1) {
        return None;
    }
    let diff = td
        .unified_diff()
        .context_radius(DIFF_CONTEXT)
        .header(DIFF_HEADER.0, DIFF_HEADER.1)
        .missing_newline_hint(false)
        .to_string();
    let added = td
        .iter_all_changes()
        .filter(|c| c.tag() == ChangeTag::Insert)
        .map(|c| c.value().trim_end_matches('\n').to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    Some(Change { diff, added })
}

/// Characters inserted plus characters deleted, counted within changed lines.
fn changed_chars(td: &TextDiff<'_, '_, '_, str>, deadline: Instant) -> usize {
    let old = td.old_slices();
    let new = td.new_slices();
    let join = |lines: &[&str]| lines.concat();
    td.ops()
        .iter()
        .map(|op| match *op {
            DiffOp::Equal { .. } => 0,
            DiffOp::Delete {
                old_index, old_len, ..
            } => chars(&join(&old[old_index..old_index + old_len])),
            DiffOp::Insert {
                new_index, new_len, ..
            } => chars(&join(&new[new_index..new_index + new_len])),
            DiffOp::Replace {
                old_index,
                old_len,
                new_index,
                new_len,
            } => char_distance(
                &join(&old[old_index..old_index + old_len]),
                &join(&new[new_index..new_index + new_len]),
                deadline,
            ),
        })
        .sum()
}

/// Inserted + deleted characters between two blocks of text (exact while
/// the deadline allows, else counted outside the common prefix and suffix).
fn char_distance(a: &str, b: &str, deadline: Instant) -> usize {
    if a.len() + b.len() > CHAR_DIFF_MAX || Instant::now() >= deadline {
        let prefix = a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
        let suffix = a
            .chars()
            .rev()
            .zip(b.chars().rev())
            .take_while(|(x, y)| x == y)
            .count();
        let common = (prefix + suffix).min(chars(a)).min(chars(b));
        return chars(a) + chars(b) - 2 * common;
    }
    let cd = TextDiff::configure().deadline(deadline).diff_chars(a, b);
    cd.iter_all_changes()
        .filter(|c| c.tag() != ChangeTag::Equal)
        .count()
}

fn chars(s: &str) -> usize {
    s.chars().filter(|c| *c != '\n').count()
}

fn with_newline(s: &str) -> String {
    let mut s = s.to_owned();
    if !s.is_empty() && !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// Applies the user's `ignore_text` and the built-in noise rules to one line;
/// `None` when nothing is left.
fn clean(line: &str, settings: &HtmlSettings) -> Option<String> {
    let mut s = line.to_owned();
    for re in &settings.ignore_text {
        if re.is_match(&s) {
            s = re.replace_all(&s, "").into_owned();
        }
    }
    let s = noise::strip_builtin(&s);
    let s = text::collapse(&s);
    (!s.is_empty()).then_some(s)
}

/// Parses like `Html::parse_document`, but in slices, checking the nesting
/// depth between them: html5ever's tree builder scans the stack of open
/// elements for many tags, so a hostile page of 100 000 nested `<div>`s
/// would take minutes. Browsers cap the depth too (Chromium at 512). The time
/// budget catches the other quadratic corners.
fn parse(source: &str) -> Result<Html, HtmlError> {
    let started = Instant::now();
    let mut parser = html5ever::driver::parse_document(
        HtmlTreeSink::new(Html::new_document()),
        Default::default(),
    );
    let mut rest = source;
    while !rest.is_empty() {
        let mut cut = rest.len().min(PARSE_SLICE);
        while !rest.is_char_boundary(cut) {
            cut += 1;
        }
        let (slice, tail) = rest.split_at(cut);
        parser.process(StrTendril::from_slice(slice));
        rest = tail;
        let depth = {
            let html = parser.tokenizer.sink.sink.0.borrow();
            html.tree
                .nodes()
                .next_back()
                .map_or(0, |n| n.ancestors().count())
        };
        if depth > MAX_DEPTH {
            return Err(HtmlError::TooComplex(format!(
                "elements nest more than {MAX_DEPTH} levels deep"
            )));
        }
        if started.elapsed() > PARSE_BUDGET {
            return Err(HtmlError::TooComplex(format!(
                "parsing took longer than {}s",
                PARSE_BUDGET.as_secs()
            )));
        }
    }
    Ok(parser.finish())
}

fn parse_selector(css: &str) -> Result<Selector, HtmlError> {
    Selector::parse(css).map_err(|e| HtmlError::InvalidSelector {
        selector: css.to_owned(),
        reason: e.to_string(),
    })
}

fn first_text(doc: &Html, css: &str) -> Option<String> {
    let sel = Selector::parse(css).ok()?;
    let el = doc.select(&sel).next()?;
    let t = text::collapse(&el.text().collect::<String>());
    (!t.is_empty()).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn character_counts_fall_back_to_prefix_and_suffix_once_the_deadline_passed() {
        let (a, b) = ("axbxc", "aybyc");
        let later = Instant::now() + Duration::from_secs(60);
        assert_eq!(char_distance(a, b, later), 4, "exact while there is time");
        let passed = Instant::now()
            .checked_sub(Duration::from_secs(1))
            .unwrap_or_else(Instant::now);
        assert_eq!(
            char_distance(a, b, passed),
            6,
            "outside prefix/suffix after it"
        );
    }
}
