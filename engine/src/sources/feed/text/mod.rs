//! Markup to plain text: HTML → text with paragraph breaks kept as newlines,
//! entities decoded, whitespace collapsed. Shared by the feed parser and the
//! normaliser (which needs the same whitespace rules for fingerprints).

use std::sync::LazyLock;

use regex::Regex;
use scraper::{Html, Node};

mod dom;
mod streaming;
#[cfg(test)]
pub(super) mod tests;

/// Elements whose text is never content (code, styling, embedded documents).
#[cfg_attr(not(test), allow(dead_code))] // `Role::of` is checked against it
const SKIPPED: &[&str] = &[
    "script", "style", "noscript", "template", "head", "iframe", "object", "svg", "select",
];

/// Elements that end a paragraph: a blank line before and after.
const PARAGRAPHS: &[&str] = &[
    "p",
    "div",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "blockquote",
    "pre",
    "ul",
    "ol",
    "dl",
    "table",
    "section",
    "article",
    "header",
    "footer",
    "aside",
    "nav",
    "main",
    "figure",
    "hr",
    "address",
    "details",
    "summary",
    "fieldset",
    "form",
];

/// Elements that end a line.
const LINES: &[&str] = &["br", "li", "tr", "dt", "dd", "figcaption", "caption"];

/// Plain text of a title-like field: one line, markup stripped if there is
/// any, entities decoded, whitespace collapsed to single spaces.
pub(crate) fn one_line(raw: &str) -> String {
    let text = if looks_like_markup(raw) {
        html_to_text(raw)
    } else {
        raw.to_owned()
    };
    collapse_whitespace(&text)
}

/// Plain text of a body-like field: markup stripped if there is any,
/// paragraphs kept as lines separated by one blank line.
pub(crate) fn block(raw: &str, is_html: bool) -> String {
    if is_html || looks_like_markup(raw) {
        html_to_text(raw)
    } else {
        tidy_lines(raw)
    }
}

/// True when the text contains something that looks like an HTML tag or entity.
pub(crate) fn looks_like_markup(s: &str) -> bool {
    static MARKUP: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(
            r"<[A-Za-z!/?]|&(?:#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});",
        )
        .expect("constant regex")
    });
    (s.contains('<') || s.contains('&')) && MARKUP.is_match(s)
}

/// Converts an HTML fragment to text: block elements become line or
/// paragraph breaks, scripts and styles are dropped, entities are decoded.
///
/// Two ways to the same text: [`streaming`] reads the fragment's tokens
/// without building a tree, and stands aside (returns `None`) for markup
/// whose tree HTML's construction rules rearrange (text foster-parented out
/// of a table, SVG and MathML, `<select>`, `<template>`, misnested
/// formatting elements, …); [`dom`] parses the fragment into a tree and
/// walks it. Both are iterative, so hostile nesting cannot overflow the
/// stack.
pub(crate) fn html_to_text(html: &str) -> String {
    if nests_deeper_than(html, MAX_HTML_DEPTH) {
        return strip_tags(html);
    }
    if streaming::stands_aside(html) {
        return dom::html_to_text(html);
    }
    streaming::html_to_text(html).unwrap_or_else(|| dom::html_to_text(html))
}

/// The streaming reader and the tree walk on the same fragment: `Err` with
/// both texts when the reader did not stand aside and wrote other text than
/// the tree (for the fuzz checks; markup nested past [`MAX_HTML_DEPTH`] is
/// stripped flat by both, so it is not compared).
pub(crate) fn paths_agree(html: &str) -> Result<(), String> {
    if nests_deeper_than(html, MAX_HTML_DEPTH) {
        return Ok(());
    }
    let tree = dom::html_to_text(html);
    match streaming::html_to_text(html) {
        Some(streamed) if streamed != tree => Err(format!(
            "the streaming reader wrote {streamed:?}, the tree walk {tree:?}"
        )),
        _ => Ok(()),
    }
}

/// What an element does to the text around it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    /// Nothing: inline markup, or unknown.
    Inline,
    /// Its text is never content ([`SKIPPED`]).
    Skipped,
    /// A paragraph break before and after it ([`PARAGRAPHS`]).
    Paragraph,
    /// A line break before and after it ([`LINES`]; `<br>` only before).
    Line,
    /// `<img>`: its `alt` text stands in for it.
    Image,
}

impl Role {
    /// The role of an element by name: [`SKIPPED`], [`LINES`], [`PARAGRAPHS`]
    /// (as one `match`: this runs for every element of every field).
    fn of(name: &str) -> Role {
        match name {
            "script" | "style" | "noscript" | "template" | "head" | "iframe" | "object" | "svg"
            | "select" => Role::Skipped,
            "br" | "li" | "tr" | "dt" | "dd" | "figcaption" | "caption" => Role::Line,
            "p" | "div" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "blockquote" | "pre" | "ul"
            | "ol" | "dl" | "table" | "section" | "article" | "header" | "footer" | "aside"
            | "nav" | "main" | "figure" | "hr" | "address" | "details" | "summary" | "fieldset"
            | "form" => Role::Paragraph,
            "img" => Role::Image,
            _ => Role::Inline,
        }
    }
}

/// Text being written in its final form: words separated by one space,
/// block boundaries as line or paragraph breaks. Consecutive block
/// boundaries merge into the strongest one instead of stacking up blank
/// lines; no break or space leads or trails.
///
/// It writes what [`tidy_lines`] would make of the text with the breaks
/// spelled out as newlines, in one pass.
#[derive(Default)]
struct Breaks {
    out: String,
    /// Block boundary since the last text: 0 = none, 1 = line, 2 = paragraph.
    pending: u8,
    /// What separates the next word from the last one written: 0 = nothing
    /// (the same word goes on), 1 = a space, 2 = a line break, 3 = a blank line.
    gap: u8,
    /// Elements whose text is dropped that are open.
    skipping: usize,
}

impl Breaks {
    /// An element opens (`alt` is an image's alt text).
    fn open(&mut self, role: Role, alt: Option<&str>) {
        match role {
            Role::Skipped => self.skipping += 1,
            _ if self.skipping > 0 => {}
            Role::Line => self.line(),
            Role::Paragraph => self.paragraph(),
            Role::Image => {
                if let Some(alt) = alt.filter(|a| !a.trim().is_empty()) {
                    self.text(&format!(" {alt} "));
                }
            }
            Role::Inline => {}
        }
    }

    /// An element closes (`br` is whether it is a `<br>`).
    fn close(&mut self, role: Role, br: bool) {
        match role {
            Role::Skipped => self.skipping = self.skipping.saturating_sub(1),
            _ if self.skipping > 0 => {}
            Role::Paragraph => self.paragraph(),
            Role::Line if !br => self.line(),
            _ => {}
        }
    }

    /// A text node (skipped inside [`SKIPPED`] elements).
    fn text_node(&mut self, t: &str) {
        if self.skipping == 0 {
            self.text(t);
        }
    }

    fn line(&mut self) {
        self.pending = self.pending.max(1);
    }

    fn paragraph(&mut self) {
        self.pending = 2;
    }

    /// HTML text: its own newlines are just spaces. Text given in pieces
    /// is written as the same text given at once.
    fn text(&mut self, t: &str) {
        // Words with single spaces between them (most text inside an
        // element), with at most one space before and after: written at once.
        let lead = t.starts_with(' ');
        let core = t.strip_prefix(' ').unwrap_or(t);
        let trail = core.ends_with(' ');
        let core = core.strip_suffix(' ').unwrap_or(core);
        if !core.is_empty() && tidy(core.as_bytes(), false) {
            if lead {
                self.gap = self.gap.max(1);
            }
            self.word(core);
            if trail {
                self.gap = 1;
            }
            return;
        }
        // One pass: the pending break is settled at the first word; text
        // that is all whitespace only marks a gap.
        let mut words = false;
        for (i, word) in SpaceSplit::new(t).enumerate() {
            if i > 0 {
                self.gap = self.gap.max(1);
            }
            if word.is_empty() {
                continue;
            }
            if words {
                self.push(word);
            } else {
                words = true;
                self.word(word);
            }
        }
    }

    /// The first word of a text: the pending break is settled, then it is
    /// written.
    fn word(&mut self, word: &str) {
        if self.pending > 0 && !self.out.is_empty() {
            // A break is only written before a word, so at most one comes
            // between two words.
            self.gap = if self.pending == 2 { 3 } else { 2 };
        }
        self.pending = 0;
        self.push(word);
    }

    /// A word (or words with single spaces) after the gap before it.
    fn push(&mut self, word: &str) {
        if !self.out.is_empty() {
            self.out.push_str(match self.gap {
                0 => "",
                1 => " ",
                2 => "\n",
                _ => "\n\n",
            });
        }
        self.gap = 0;
        self.out.push_str(word);
    }

    fn finish(self) -> String {
        self.out
    }
}

/// Above this (estimated) nesting, markup is stripped with a flat scan
/// instead of an HTML parse: html5ever's tree building is quadratic in the
/// depth of open elements, so 100k nested `<div>`s would take minutes.
const MAX_HTML_DEPTH: usize = 256;

/// Void elements: never closed, never nest.
const VOID: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
    "track", "wbr",
];

/// Whether the markup nests deeper than `limit`, counting opening tags
/// minus closing tags (void and self-closing tags excluded; over-estimates
/// for unclosed `<p>`/`<li>`, never under). A tag is `<`, an optional `/`,
/// an ASCII letter and then letters or digits, and runs to the next `>`; it
/// closes itself when that `>` follows a `/`.
///
/// This guards every HTML field of every feed item, so it is a plain byte
/// scan (a regex with captures here cost more than the HTML parse it
/// guards), and a text with no more than `limit` `<` is not scanned at all:
/// it cannot open more elements than that.
fn nests_deeper_than(html: &str, limit: usize) -> bool {
    let b = html.as_bytes();
    if memchr::memchr_iter(b'<', b).count() <= limit {
        return false;
    }
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(off) = memchr::memchr(b'<', &b[i..]) {
        let lt = i + off;
        let mut j = lt + 1;
        let closing = b.get(j) == Some(&b'/');
        if closing {
            j += 1;
        }
        if !b.get(j).is_some_and(u8::is_ascii_alphabetic) {
            i = lt + 1;
            continue;
        }
        let name_start = j;
        while b.get(j).is_some_and(u8::is_ascii_alphanumeric) {
            j += 1;
        }
        let name = &b[name_start..j];
        // No `>` after the name: no later `<` has one either.
        let Some(gt) = memchr::memchr(b'>', &b[j..]).map(|p| j + p) else {
            break;
        };
        let self_closing = gt > j && b[gt - 1] == b'/';
        if closing {
            depth = depth.saturating_sub(1);
        } else if !self_closing && !VOID.iter().any(|v| v.as_bytes().eq_ignore_ascii_case(name)) {
            depth += 1;
            if depth > limit {
                return true;
            }
        }
        i = gt + 1;
    }
    false
}

/// Flat fallback of [`html_to_text`]: tags removed (block tags become line
/// breaks), then entities decoded by parsing the now tag-free text.
fn strip_tags(html: &str) -> String {
    static TAG: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(?is)<!--.*?-->|<script\b.*?</script\s*>|<style\b.*?</style\s*>|<(/?)([A-Za-z][A-Za-z0-9]*)[^>]*>").expect("constant regex")
    });
    let flat = TAG.replace_all(html, |c: &regex::Captures<'_>| {
        let name = c
            .get(2)
            .map(|m| m.as_str().to_ascii_lowercase())
            .unwrap_or_default();
        if PARAGRAPHS.contains(&name.as_str()) {
            "\n\n"
        } else if LINES.contains(&name.as_str()) {
            "\n"
        } else {
            " "
        }
    });
    let escaped = flat.replace('<', "&lt;");
    let doc = Html::parse_fragment(&escaped);
    let text: String = doc
        .tree
        .root()
        .descendants()
        .filter_map(|n| match n.value() {
            Node::Text(t) => Some(t.text.to_string()),
            _ => None,
        })
        .collect();
    tidy_lines(&text)
}

/// Collapses every run of whitespace (newlines included) to one space and trims.
pub(crate) fn collapse_whitespace(s: &str) -> String {
    if let Some(out) = collapse_tidy(s) {
        return out;
    }
    let mut out = String::with_capacity(s.len());
    for word in SpaceSplit::new(s) {
        if word.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// [`collapse_whitespace`] of text that is already tidy — words separated
/// by one space or by line breaks, nothing leading or trailing, no other
/// whitespace: what this module writes, and what fingerprints are taken of.
/// Its line breaks become spaces. Found out with a few vectorised scans
/// ([`other_space`]) instead of a look at every character; `None` when the
/// text is not tidy.
fn collapse_tidy(s: &str) -> Option<String> {
    let b = s.as_bytes();
    if !tidy(b, true) {
        return None;
    }
    let mut out = String::with_capacity(s.len());
    let mut at = 0;
    for i in memchr::memchr_iter(b'\n', b) {
        if i > at {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(&s[at..i]);
        }
        at = i + 1;
    }
    if !out.is_empty() {
        out.push(' ');
    }
    out.push_str(&s[at..]);
    Some(out)
}

/// `b` is words separated by single spaces (and, when `lines`, by line
/// breaks), with no whitespace leading or trailing: text whose whitespace
/// needs no collapsing but for its line breaks.
fn tidy(b: &[u8], lines: bool) -> bool {
    use memchr::memmem;
    let edge = |c: Option<&u8>| matches!(c, Some(b' ' | b'\n'));
    !edge(b.first())
        && !edge(b.last())
        && !other_space(b, lines)
        && memmem::find(b, b"  ").is_none()
        && !(lines && (memmem::find(b, b" \n").is_some() || memmem::find(b, b"\n ").is_some()))
}

/// `b` holds whitespace other than the space (and the line break, when
/// `lines`): any other character [`is_space`] is true of. A few vectorised
/// scans; the lead bytes of non-ASCII whitespace — C2 (U+0085, U+00A0), E1
/// (U+1680), E2 (U+2000–U+200D, U+2028, U+2029, U+202F, U+205F, U+2060),
/// E3 (U+3000), EF (U+FEFF) — are looked at only where they occur.
fn other_space(b: &[u8], lines: bool) -> bool {
    use memchr::memmem;
    if b.len() < 64 {
        // Short text (most text nodes, titles): one look at each byte costs
        // less than starting the scans.
        return b.iter().enumerate().any(|(i, &c)| match c {
            b' ' => false,
            b'\n' => !lines,
            c if c.is_ascii() => ascii_space(c),
            _ => non_ascii_space_len(b, i).is_some(),
        });
    }
    if memchr::memchr3(b'\t', 0x0b, 0x0c, b).is_some()
        || memchr::memchr(b'\r', b).is_some()
        || (!lines && memchr::memchr(b'\n', b).is_some())
    {
        return true;
    }
    memchr::memchr3_iter(0xc2, 0xe2, 0xef, b).any(|i| non_ascii_space_len(b, i).is_some())
        || memmem::find(b, b"\xe1\x9a\x80").is_some()
        || memmem::find(b, b"\xe3\x80\x80").is_some()
}

/// An ASCII byte [`is_space`] is true of.
fn ascii_space(c: u8) -> bool {
    matches!(c, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ')
}

/// The length of the non-ASCII character [`is_space`] is true of that
/// starts at `i`, if one does: its UTF-8 form, so that byte scans need not
/// decode characters.
fn non_ascii_space_len(b: &[u8], i: usize) -> Option<usize> {
    let next = (b.get(i + 1).copied(), b.get(i + 2).copied());
    let space = match b.get(i)? {
        0xc2 => return matches!(next.0, Some(0x85 | 0xa0)).then_some(2),
        0xe1 => next == (Some(0x9a), Some(0x80)),
        0xe2 => matches!(
            next,
            (Some(0x80), Some(0x80..=0x8d | 0xa8 | 0xa9 | 0xaf)) | (Some(0x81), Some(0x9f | 0xa0))
        ),
        0xe3 => next == (Some(0x80), Some(0x80)),
        0xef => next == (Some(0xbb), Some(0xbf)),
        _ => false,
    };
    space.then_some(3)
}

/// Collapses whitespace within each line, drops leading/trailing blank lines
/// and keeps at most one blank line between paragraphs.
pub(crate) fn tidy_lines(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut blank_pending = false;
    for line in s.split('\n') {
        let line = collapse_whitespace(line);
        if line.is_empty() {
            blank_pending = !out.is_empty();
            continue;
        }
        if !out.is_empty() {
            out.push('\n');
            if blank_pending {
                out.push('\n');
            }
        }
        blank_pending = false;
        out.push_str(&line);
    }
    out
}

/// `s.split(is_space)`, read a byte at a time (every field of every item
/// goes through it, and the `char` predicate decodes each character):
/// whitespace is found in its UTF-8 form ([`ascii_space`],
/// [`non_ascii_space_len`]).
struct SpaceSplit<'a> {
    s: &'a str,
    /// Where the next piece starts; `None` once the last one was given.
    at: Option<usize>,
}

impl<'a> SpaceSplit<'a> {
    fn new(s: &'a str) -> Self {
        SpaceSplit { s, at: Some(0) }
    }
}

impl<'a> Iterator for SpaceSplit<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let from = self.at?;
        let b = self.s.as_bytes();
        let mut i = from;
        while let Some(&c) = b.get(i) {
            let space = if c.is_ascii() {
                ascii_space(c).then_some(1)
            } else {
                non_ascii_space_len(b, i)
            };
            let Some(len) = space else {
                // A continuation byte never starts whitespace: stepping
                // byte by byte stays on character boundaries where it stops.
                i += 1;
                continue;
            };
            self.at = Some(i + len);
            return Some(&self.s[from..i]);
        }
        self.at = None;
        Some(&self.s[from..])
    }
}

/// Whitespace for collapsing purposes: Unicode whitespace except that a
/// newline is handled by [`tidy_lines`]; zero-width characters count too.
/// The definition: the code reads it in its UTF-8 form ([`ascii_space`],
/// [`non_ascii_space_len`]), and the tests hold that form to this, on every
/// character up to U+30FF and the rest of the set.
#[cfg_attr(not(test), allow(dead_code))]
fn is_space(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '\u{200b}' | '\u{200c}' | '\u{200d}' | '\u{2060}' | '\u{feff}'
        )
}
