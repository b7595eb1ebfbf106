//! Markup to plain text: HTML → text with paragraph breaks kept as newlines,
//! entities decoded, whitespace collapsed. Shared by the feed parser and the
//! normaliser (which needs the same whitespace rules for fingerprints).

use std::sync::LazyLock;

use regex::Regex;
use scraper::{Html, Node};

/// Elements whose text is never content (code, styling, embedded documents).
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
/// Iterative (no recursion), so hostile nesting cannot overflow the stack.
pub(crate) fn html_to_text(html: &str) -> String {
    if nests_deeper_than(html, MAX_HTML_DEPTH) {
        return strip_tags(html);
    }
    let doc = Html::parse_fragment(html);
    let root = doc.tree.root();
    let mut out = Breaks::default();
    let mut skipping = 0usize;
    let mut next = root.first_child();
    while let Some(node) = next {
        // Open `node`.
        match node.value() {
            Node::Text(t) if skipping == 0 => out.text(&t.text),
            Node::Element(e) => {
                let name = e.name();
                if SKIPPED.contains(&name) {
                    skipping += 1;
                } else if skipping == 0 {
                    if LINES.contains(&name) {
                        out.line();
                    } else if PARAGRAPHS.contains(&name) {
                        out.paragraph();
                    } else if name == "img" {
                        if let Some(alt) = e.attr("alt").filter(|a| !a.trim().is_empty()) {
                            out.text(&format!(" {alt} "));
                        }
                    }
                }
            }
            _ => {}
        }
        if let Some(child) = node.first_child() {
            next = Some(child);
            continue;
        }
        // Close `node` and every ancestor whose last child this is.
        let mut cur = node;
        next = None;
        loop {
            if let Node::Element(e) = cur.value() {
                let name = e.name();
                if SKIPPED.contains(&name) {
                    skipping = skipping.saturating_sub(1);
                } else if skipping == 0 && PARAGRAPHS.contains(&name) {
                    out.paragraph();
                } else if skipping == 0 && LINES.contains(&name) && name != "br" {
                    out.line();
                }
            }
            if let Some(sibling) = cur.next_sibling() {
                next = Some(sibling);
                break;
            }
            match cur.parent() {
                Some(parent) if parent.id() != root.id() => cur = parent,
                _ => break,
            }
        }
    }
    tidy_lines(&out.text)
}

/// Text with pending line/paragraph breaks: consecutive block boundaries
/// merge into the strongest one instead of stacking up blank lines.
#[derive(Default)]
struct Breaks {
    text: String,
    /// 0 = none, 1 = line break, 2 = paragraph break.
    pending: u8,
}

impl Breaks {
    fn line(&mut self) {
        self.pending = self.pending.max(1);
    }

    fn paragraph(&mut self) {
        self.pending = 2;
    }

    /// HTML text: its own newlines are just spaces.
    fn text(&mut self, t: &str) {
        if t.chars().all(is_space) {
            if self.pending == 0 && !t.is_empty() {
                self.text.push(' ');
            }
            return;
        }
        if self.pending > 0 && !self.text.is_empty() {
            self.text
                .push_str(if self.pending == 2 { "\n\n" } else { "\n" });
        }
        self.pending = 0;
        for (i, part) in t.split(is_space).enumerate() {
            if i > 0 {
                self.text.push(' ');
            }
            self.text.push_str(part);
        }
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
    if b.iter().filter(|&&c| c == b'<').count() <= limit {
        return false;
    }
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(off) = b[i..].iter().position(|&c| c == b'<') {
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
        let Some(gt) = b[j..].iter().position(|&c| c == b'>').map(|p| j + p) else {
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
    let mut out = String::with_capacity(s.len());
    for word in s.split(is_space) {
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

/// Whitespace for collapsing purposes: Unicode whitespace except that a
/// newline is handled by [`tidy_lines`]; zero-width characters count too.
fn is_space(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '\u{200b}' | '\u{200c}' | '\u{200d}' | '\u{2060}' | '\u{feff}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_become_blank_lines_and_entities_decode() {
        let t = html_to_text("<p>Hello&nbsp;<b>big</b>\n  world &amp; co</p><p>Second<br>line</p><script>var x;</script>");
        assert_eq!(t, "Hello big world & co\n\nSecond\nline");
    }

    #[test]
    fn text_after_a_block_stays_separate() {
        assert_eq!(html_to_text("<div><p>a</p>b</div>"), "a\n\nb");
        assert_eq!(
            html_to_text("<ul><li>one</li><li>two</li></ul>"),
            "one\ntwo"
        );
    }

    #[test]
    fn deep_nesting_does_not_overflow() {
        let html = "<div>".repeat(100_000) + "deep &amp; <b>deeper</b>" + &"</div>".repeat(100_000);
        assert_eq!(html_to_text(&html), "deep & deeper");
        let unclosed = "<p>a".repeat(300) + "<script>x</script>";
        let text = html_to_text(&unclosed);
        assert!(text.starts_with("a\n\na") && !text.contains('x'), "{text}");
    }

    /// The regex this scan replaced, kept as the reference it must agree with.
    fn nesting_reference(html: &str) -> usize {
        let tag = Regex::new(r"<(/?)([A-Za-z][A-Za-z0-9]*)[^>]*?(/?)>").expect("constant regex");
        let (mut depth, mut max) = (0usize, 0usize);
        for c in tag.captures_iter(html) {
            let name = c[2].to_ascii_lowercase();
            if !c[1].is_empty() {
                depth = depth.saturating_sub(1);
            } else if c[3].is_empty() && !VOID.contains(&name.as_str()) {
                depth += 1;
                max = max.max(depth);
            }
        }
        max
    }

    #[test]
    fn the_nesting_scan_agrees_with_the_tag_regex() {
        let mut cases: Vec<String> = [
            "",
            "<",
            ">",
            "<>",
            "</>",
            "<a",
            "<a>",
            "</a>",
            "<a/>",
            "<a />",
            "<a / >",
            "<br>",
            "<BR>",
            "<Img src=x>",
            "<a<b>",
            "< a>",
            "<//a>",
            "<a1b2>",
            "<1a>",
            "<a href='>'>x",
            "<p>a<p>b<p>c",
            "<div><div></div>",
            "<é>",
            "<aé>",
            "x<a>é</a><b",
            "<a>\n<b\n/>",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        // Pseudo-random strings over the characters that matter.
        let atoms = [
            "<", ">", "/", "a", "br", "B", "1", " ", "é", "\n", "p", "img", "=\"", "<div>",
            "</div>",
        ];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..3000 {
            let mut s = String::new();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            for _ in 0..(x % 40) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                s.push_str(atoms[(x % atoms.len() as u64) as usize]);
            }
            cases.push(s);
        }
        for s in &cases {
            let depth = nesting_reference(s);
            for limit in [0, 1, 2, 3, 5, 256] {
                assert_eq!(
                    nests_deeper_than(s, limit),
                    depth > limit,
                    "{s:?} at limit {limit}"
                );
            }
        }
    }

    #[test]
    fn plain_titles_keep_angle_brackets_that_are_not_tags() {
        assert_eq!(one_line("a < b  and\n c"), "a < b and c");
        assert_eq!(one_line("Tom &amp; Jerry"), "Tom & Jerry");
        assert_eq!(one_line("<b>Bold</b> move"), "Bold move");
    }
}
