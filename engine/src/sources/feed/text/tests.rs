//! Tests of HTML → text: behaviour, and the oracle that the streaming
//! reader writes exactly what the tree walk wrote before it (the previous
//! implementation, kept here verbatim as [`reference`]) on every text field
//! of the corpus feeds, the corpus pages, hostile inputs and generated tag
//! soups.

use std::path::{Path, PathBuf};

use regex::Regex;
use scraper::{Html, Node};

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
        "<", ">", "/", "a", "br", "B", "1", " ", "é", "\n", "p", "img", "=\"", "<div>", "</div>",
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
fn the_byte_split_on_whitespace_is_the_char_split() {
    // Every character that is whitespace or near it, in and around words.
    let mut chars: Vec<char> = (0u32..0x3100).filter_map(char::from_u32).collect();
    chars.extend(['\u{feff}', '\u{2060}', '\u{1f600}', '\u{10ffff}']);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut cases: Vec<String> = vec![String::new(), " ".into(), "a".into(), "  a  b  ".into()];
    for c in &chars {
        cases.push(format!("a{c}b{c}{c}c{c}"));
    }
    for _ in 0..5_000 {
        let mut s = String::new();
        for _ in 0..x % 24 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            s.push(match x % 4 {
                0 => ' ',
                1 => chars[(x >> 8) as usize % chars.len()],
                2 => {
                    ['\n', '\t', '\u{a0}', '\u{200b}', '\u{3000}', '\u{85}'][(x >> 8) as usize % 6]
                }
                _ => 'w',
            });
        }
        cases.push(s);
    }
    for s in &cases {
        let got: Vec<&str> = SpaceSplit::new(s).collect();
        let want: Vec<&str> = s.split(is_space).collect();
        assert_eq!(got, want, "{s:?}");
    }
    // The tidy fast path of `collapse_whitespace` gives what the split gives,
    // on these and on tidy text built from them.
    let slow = |s: &str| {
        s.split(is_space)
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut tidy_hits = 0;
    for s in &cases {
        let words: Vec<&str> = s.split(is_space).filter(|w| !w.is_empty()).collect();
        let tidy = words
            .iter()
            .enumerate()
            .fold(String::new(), |mut t, (i, w)| {
                if i > 0 {
                    t.push_str([" ", "\n", "\n\n"][i % 3]);
                }
                t.push_str(w);
                t
            });
        // Also past 64 bytes, where the scans are vectorised.
        let long = format!("{}{s}", "x".repeat(70));
        let long_tidy = format!("{}{tidy}", "x y\n".repeat(20));
        for text in [s.as_str(), tidy.as_str(), &long, &long_tidy] {
            if let Some(fast) = collapse_tidy(text) {
                tidy_hits += 1;
                assert_eq!(fast, slow(text), "{text:?}");
            }
            assert_eq!(collapse_whitespace(text), slow(text), "{text:?}");
        }
    }
    assert!(
        tidy_hits > cases.len() / 2,
        "{tidy_hits} tidy of {}",
        2 * cases.len()
    );
}

#[test]
fn plain_titles_keep_angle_brackets_that_are_not_tags() {
    assert_eq!(one_line("a < b  and\n c"), "a < b and c");
    assert_eq!(one_line("Tom &amp; Jerry"), "Tom & Jerry");
    assert_eq!(one_line("<b>Bold</b> move"), "Bold move");
}

#[test]
fn roles_are_the_lists() {
    let named = SKIPPED
        .iter()
        .chain(PARAGRAPHS)
        .chain(LINES)
        .chain(&["img"]);
    for name in named {
        let want = if SKIPPED.contains(name) {
            Role::Skipped
        } else if LINES.contains(name) {
            Role::Line
        } else if PARAGRAPHS.contains(name) {
            Role::Paragraph
        } else {
            Role::Image
        };
        assert_eq!(Role::of(name), want, "{name}");
    }
    for name in [
        "span", "a", "b", "html", "body", "td", "th", "IMG", "P", "math", "",
    ] {
        assert_eq!(Role::of(name), Role::Inline, "{name}");
    }
}

#[test]
fn leading_newlines_of_pre_and_textarea_are_dropped_as_the_tree_does() {
    assert_eq!(html_to_text("a<textarea>\nb</textarea>"), "ab");
    assert_eq!(html_to_text("a<textarea>\n\nb</textarea>"), "a b");
    assert_eq!(html_to_text("<pre>\nx</pre>"), "x");
}

// ---------------------------------------------------------------------------
// The oracle.

/// HTML → text as it was before the streaming reader: the tree walk writing
/// breaks as newlines, then a second pass tidying the lines. Kept verbatim.
fn reference(html: &str) -> String {
    if nests_deeper_than(html, MAX_HTML_DEPTH) {
        return strip_tags(html);
    }
    let doc = Html::parse_fragment(html);
    let root = doc.tree.root();
    let mut out = OldBreaks::default();
    let mut skipping = 0usize;
    let mut next = root.first_child();
    while let Some(node) = next {
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

#[derive(Default)]
struct OldBreaks {
    text: String,
    pending: u8,
}

impl OldBreaks {
    fn line(&mut self) {
        self.pending = self.pending.max(1);
    }

    fn paragraph(&mut self) {
        self.pending = 2;
    }

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

/// The start of a long input, for failure messages.
fn shown(html: &str) -> String {
    let mut end = html.len().min(400);
    while !html.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{:?}{}",
        &html[..end],
        if end < html.len() { "…" } else { "" }
    )
}

/// Checks every way to the text against [`reference`]; true when the
/// streaming reader produced it (false: it stood aside for the tree walk).
fn agrees(html: &str) -> bool {
    let want = reference(html);
    assert_eq!(html_to_text(html), want, "html_to_text on {}", shown(html));
    if nests_deeper_than(html, MAX_HTML_DEPTH) {
        return false;
    }
    assert_eq!(
        dom::html_to_text(html),
        want,
        "the tree walk on {}",
        shown(html)
    );
    match streaming::html_to_text(html) {
        Some(got) => {
            assert_eq!(got, want, "the streaming reader on {}", shown(html));
            !streaming::stands_aside(html)
        }
        None => false,
    }
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/corpus")
}

/// Every `<dir>/<origin>/<file>` of the corpus, sorted.
pub(in crate::sources::feed) fn corpus_files(dir: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let root = corpus().join(dir);
    let origins = std::fs::read_dir(&root).unwrap_or_else(|e| panic!("{}: {e}", root.display()));
    for origin in origins {
        let origin = origin.unwrap_or_else(|e| panic!("{e}")).path();
        for file in std::fs::read_dir(&origin).unwrap_or_else(|e| panic!("{e}")) {
            let path = file.unwrap_or_else(|e| panic!("{e}")).path();
            if path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Every text field feed-rs reads from a corpus feed, as the feed parser
/// hands it over (decoded, repaired): feed and entry titles, descriptions,
/// summaries, contents, media titles and descriptions.
fn text_fields(body: &[u8]) -> Vec<String> {
    let doc = super::super::decode::repair_prolog(super::super::decode::to_utf8(body, None).text);
    let input = if doc.trim_start().starts_with('{') {
        match super::super::json::normalise(&doc) {
            Ok(n) => n.text,
            Err(_) => return Vec::new(),
        }
    } else {
        let doc = super::super::decode::escape_stray_ampersands(doc);
        super::super::structure::repair(&doc).text.unwrap_or(doc)
    };
    let parser = feed_rs::parser::Builder::new()
        .sanitize_content(false)
        .build();
    let Ok(feed) = parser.parse(input.as_bytes()) else {
        return Vec::new();
    };
    let mut fields: Vec<String> = Vec::new();
    let text = |t: &Option<feed_rs::model::Text>| t.as_ref().map(|t| t.content.clone());
    fields.extend(text(&feed.title));
    fields.extend(text(&feed.description));
    for e in &feed.entries {
        fields.extend(text(&e.title));
        fields.extend(text(&e.summary));
        fields.extend(e.content.as_ref().and_then(|c| c.body.clone()));
        for m in &e.media {
            fields.extend(text(&m.title));
            fields.extend(text(&m.description));
        }
    }
    fields
}

#[test]
fn the_streaming_reader_agrees_with_the_tree_on_every_corpus_text_field() {
    let (mut fields, mut streamed, mut markup, mut markup_streamed) = (0, 0, 0, 0);
    let files = corpus_files("feeds");
    assert!(files.len() > 150, "only {} corpus feeds", files.len());
    for path in &files {
        let body = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for field in text_fields(&body) {
            let fast = agrees(&field);
            fields += 1;
            streamed += usize::from(fast);
            if looks_like_markup(&field) {
                markup += 1;
                markup_streamed += usize::from(fast);
            }
        }
    }
    eprintln!(
        "corpus feeds: {fields} text fields, {streamed} streamed, {} by the tree walk; \
         of the {markup} with markup (those the feed parser converts), {} by the tree walk",
        fields - streamed,
        markup - markup_streamed
    );
    assert!(fields > 1000, "only {fields} text fields in the corpus");
    // The tree walk is the exception, not the rule.
    assert!(
        streamed * 10 > fields * 9,
        "{streamed} of {fields} streamed"
    );
}

#[test]
fn the_streaming_reader_agrees_with_the_tree_on_the_corpus_pages() {
    let files = corpus_files("html");
    assert!(!files.is_empty());
    let mut streamed = 0;
    for path in &files {
        let body = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        streamed += usize::from(agrees(&String::from_utf8_lossy(&body)));
    }
    eprintln!("corpus pages: {} pages, {streamed} streamed", files.len());
}

#[test]
fn the_streaming_reader_agrees_with_the_tree_on_hostile_markup() {
    let mut cases: Vec<String> = [
        "",
        " ",
        "\n",
        "x",
        "<",
        "&",
        "&amp",
        "&amp;&lt;&gt;&quot;&#39;&#x1F600;&#0;&#xD800;&#1114112;&nosuch;&AMP;&notin;&notit;",
        "a&nbsp;b&#160;c&#8203;d\u{200b}e\u{feff}f",
        "<p>a</p>\r\n<p>b</p>\rc\r\rd",
        "a\0b<p>\0</p>\0",
        "<!-- comment -->a<!-- b --><!---->c<!--",
        "a<!--x-->b",
        "<![CDATA[x]]>y",
        "<?php echo 1; ?>z",
        "<!DOCTYPE html><p>x",
        "<script>var a = '</p>';</script>after",
        "<script>x</scr",
        "<script><!--<script></script>--></script>t",
        "<style>p { }</style>t",
        "<title>T</title>body",
        "<textarea>\nkeep</textarea>",
        "<textarea>\n\nkeep</textarea>",
        "<pre>\n\nx\n</pre>y",
        "<listing>\nx</listing>",
        "<xmp><b>raw</b></xmp>",
        "<iframe><p>x</p></iframe>y",
        "<noscript><p>x</p></noscript>y",
        "<noembed>x</noembed>y",
        "<noframes>x</noframes>y",
        "<plaintext>a<b>c",
        "<p>a<p>b<p>c",
        "<p>a<div>b</div>c</p>d",
        "</p>x</p>",
        "a</br>b<br/>c<br></br>",
        "<li>a<li>b</li>c<li>d",
        "<ul><li>a<ul><li>b</ul><li>c</ul>",
        "<dl><dt>a<dd>b<dt>c<dd>d</dl>",
        "<dd>a</dt>b</dd>",
        "<h1>a<h2>b</h1>c</h2>d",
        "<h3>a</h4>b",
        "<b>a<p>b</b>c</p>",
        "<b><i>a</b>b</i>c",
        "<p><b>a</p>b",
        "<p><b>a</p><p>b</b>c",
        "<a href=1>a<a href=2>b</a>c",
        "<a>a<div>b<a>c</div>d",
        "<nobr>a<nobr>b</nobr>c",
        "<b><b><b><b>x</b></b></b></b>y",
        "<b class=x><b class=x><b class=x><b class=x><p>y</p>z",
        "<font><p>a</font>b",
        "<u>a<u>b</p>c",
        "<em>a<blockquote>b</em>c</blockquote>",
        "<button>a<button>b</button>c",
        "<form><form>a</form>b</form>c",
        "<div><form>a</div>b</form>c",
        "<form><div>a</form>b</div>",
        "<object><p>a</object>b",
        "<applet>a<b>b</applet>c",
        "<marquee><b>a</marquee>b",
        "<table><tr><td>a</td></tr></table>b",
        "a<tr>b<td>c</td>d",
        "<td>a</td>b",
        "<caption>x</caption>",
        "<svg><p>a</p></svg>b",
        "<math><mi>x</mi></math>",
        "<select><option>a<option>b</select>c",
        "<option>a</option>b",
        "<template><p>a</p></template>b",
        "<ruby>a<rb>b<rt>c<rp>d</ruby>",
        "<rt>a</rt>",
        "<image alt=pic>a",
        "<img alt=\"  \">x<img alt=\"a b\">y<img alt='\u{200b}'>z<img>",
        "<img alt=\"one\" alt=\"two\">",
        "<input value=x><hr><wbr><embed><keygen><area>",
        "<head><title>t</title></head><body><p>b</p></body>",
        "<html><body>x</body></html>y",
        "<frameset><frame></frameset>x",
        "<br><br><br>x<br><br>",
        "<p></p><p></p>x<p></p>",
        "<span> </span><b> </b>x <i> </i> y",
        "a<span></span>b",
        "<div>a</span>b</div>",
        "<o:p>word</o:p> <st1:x>y</st1:x>",
        "<p/>x<div/>y",
        "<a href='>'>x</a>",
        "<p title=\"a > b\">x</p>",
        "<<p>>x<</p>>",
        "< p>x",
        "</ p>x",
        "<p",
        "<p x",
        "<p x=\"",
        "</",
        "<figure><img alt=A><figcaption>cap</figcaption></figure>after",
        "<details><summary>s</summary>d</details>",
        "<address>a</address><center>c</center><dialog>d</dialog><search>s</search>",
        "<hgroup><h1>a</h1></hgroup><menu><li>m</menu><dir><li>d</dir>",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    cases.push("<div>".repeat(200) + "deep" + &"</div>".repeat(200));
    cases.push("<b>".repeat(250) + "formatting" + &"<p>x".repeat(3));
    cases.push("<p>".repeat(250) + "unclosed");
    cases.push("<li>".repeat(250) + "items");
    cases.push("<div>".repeat(100_000) + "too deep");
    cases.push(format!(
        "<p title=\"{}\">huge attribute</p>",
        "x".repeat(1 << 20)
    ));
    cases.push(format!("<img alt=\"{}\">", "alt ".repeat(100_000)));
    cases.push("a&amp;".repeat(50_000));
    cases.push("<!--".to_owned() + &"-".repeat(10_000));
    for case in &cases {
        agrees(case);
    }
}

/// A tag soup from a seed: mostly markup the streaming reader handles,
/// with `rare` (per 1000 atoms) of what makes it stand aside.
fn soup(x: &mut u64, rare: u64) -> String {
    const COMMON: &[&str] = &[
        "<p>",
        "</p>",
        "<div>",
        "</div>",
        "<span>",
        "</span>",
        "<b>",
        "</b>",
        "<i>",
        "</i>",
        "<em>",
        "</em>",
        "<strong>",
        "</strong>",
        "<a href=\"x\">",
        "<a>",
        "</a>",
        "<u>",
        "</u>",
        "<s>",
        "</s>",
        "<code>",
        "</code>",
        "<font color=red>",
        "</font>",
        "<nobr>",
        "</nobr>",
        "<pre>",
        "</pre>",
        "<pre>\n",
        "<li>",
        "</li>",
        "<ul>",
        "</ul>",
        "<ol>",
        "</ol>",
        "<dl>",
        "</dl>",
        "<dt>",
        "</dt>",
        "<dd>",
        "</dd>",
        "<h1>",
        "</h1>",
        "<h2>",
        "</h2>",
        "<h3>",
        "</h5>",
        "<blockquote>",
        "</blockquote>",
        "<br>",
        "<br/>",
        "</br>",
        "<hr>",
        "<img>",
        "<img alt=\"pic\">",
        "<img alt=' '>",
        "<image alt=im>",
        "<figure>",
        "</figure>",
        "<figcaption>",
        "</figcaption>",
        "<section>",
        "</section>",
        "<article>",
        "</article>",
        "<address>",
        "</address>",
        "<center>",
        "</center>",
        "<button>",
        "</button>",
        "<form>",
        "</form>",
        "<object>",
        "</object>",
        "<applet>",
        "</applet>",
        "<marquee>",
        "</marquee>",
        "<details>",
        "<summary>",
        "</summary>",
        "</details>",
        "<listing>",
        "</listing>",
        "<textarea>",
        "</textarea>",
        "<textarea>\n",
        "<title>",
        "</title>",
        "<script>",
        "</script>",
        "<style>",
        "</style>",
        "<noscript>",
        "</noscript>",
        "<iframe>",
        "</iframe>",
        "<xmp>",
        "</xmp>",
        "<noembed>",
        "</noembed>",
        "<ruby>",
        "</ruby>",
        "<rb>",
        "<rt>",
        "</rt>",
        "<rp>",
        "<rtc>",
        "<head>",
        "</head>",
        "<body>",
        "</body>",
        "<html>",
        "</html>",
        "<tr>",
        "</tr>",
        "<td>",
        "</td>",
        "<th>",
        "<caption>",
        "</caption>",
        "</table>",
        "<frameset>",
        "<input>",
        "<wbr>",
        "<embed>",
        "<param>",
        "<meta charset=utf-8>",
        "<link>",
        "<o:p>",
        "</o:p>",
        "<custom-el>",
        "</custom-el>",
        "<P>",
        "</DIV>",
        "<B class=\"c\">",
        "<p/>",
        "<div/>",
        "<span/>",
        "<!-- c -->",
        "<!---->",
        "<![CDATA[cd]]>",
        "<?pi?>",
        "<!DOCTYPE html>",
        "&amp;",
        "&nbsp;",
        "&#x41;",
        "&#0;",
        "&lt;p&gt;",
        "&bogus;",
        "&amp",
        "&",
        "<",
        ">",
        "< b>",
        "</ >",
        "<p",
        "word",
        "word",
        "two words",
        "x",
        "é",
        "\u{200b}",
        " ",
        " ",
        "  ",
        "\n",
        "\n\n",
        "\r\n",
        "\r",
        "\t",
        "\u{a0}",
        "\0",
    ];
    const RARE: &[&str] = &[
        "<table>",
        "<svg>",
        "</svg>",
        "<math>",
        "<select>",
        "</select>",
        "<option>",
        "</option>",
        "<optgroup>",
        "<template>",
        "</template>",
        "<plaintext>",
    ];
    let mut next = || {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    };
    let mut s = String::new();
    for _ in 0..next() % 60 {
        let r = next();
        if r % 1000 < rare {
            s.push_str(RARE[(r / 1000 % RARE.len() as u64) as usize]);
        } else {
            s.push_str(COMMON[(r / 1000 % COMMON.len() as u64) as usize]);
        }
    }
    s
}

#[test]
fn the_streaming_reader_agrees_with_the_tree_on_generated_tag_soups() {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let (mut n, mut streamed) = (0usize, 0usize);
    for rare in [0, 0, 5, 30] {
        for _ in 0..1500 {
            let html = soup(&mut x, rare);
            streamed += usize::from(agrees(&html));
            n += 1;
        }
    }
    eprintln!("tag soups: {n}, {streamed} streamed");
    // The soups reach the streaming reader's rules, not just its give-ups.
    assert!(streamed * 2 > n, "{streamed} of {n} streamed");
}

/// Whitespace-heavy strings over ASCII and Unicode spaces, zero-width
/// characters and multi-byte letters.
fn spacey(x: &mut u64) -> String {
    const ATOMS: &[&str] = &[
        " ",
        "\t",
        "\n",
        "\r",
        "\x0B",
        "\x0C",
        "\u{85}",
        "\u{a0}",
        "\u{1680}",
        "\u{2003}",
        "\u{2028}",
        "\u{3000}",
        "\u{200b}",
        "\u{200d}",
        "\u{2060}",
        "\u{feff}",
        "a",
        "bc",
        "é",
        "日本",
        "\u{1F600}",
        "\0",
        "-",
    ];
    let mut s = String::new();
    for _ in 0..*x % 24 {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        s.push_str(ATOMS[(*x % ATOMS.len() as u64) as usize]);
    }
    s
}

#[test]
fn the_one_pass_writer_agrees_with_the_two_pass_reference_on_text() {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..5000 {
        let s = spacey(&mut x);
        // The one-pass writer against the two-pass reference, text alone.
        let mut new = Breaks::default();
        let mut reference = OldBreaks::default();
        for (i, piece) in s.split('-').enumerate() {
            if i % 3 == 1 {
                new.paragraph();
                reference.paragraph();
            } else if i % 3 == 2 {
                new.line();
                reference.line();
            }
            new.text(piece);
            reference.text(piece);
        }
        assert_eq!(new.finish(), tidy_lines(&reference.text), "{s:?}");
    }
}

/// Table soups: table structure (explicit and implied), cells holding
/// blocks, formatting and nested tables, whitespace between the parts, and
/// some of what makes the reader stand aside (text or elements where the
/// tree builder foster-parents them, captions, column groups).
fn table_soup(x: &mut u64) -> String {
    const ATOMS: &[&str] = &[
        "<table>",
        "<table>",
        "</table>",
        "</table>",
        "<tr>",
        "<tr>",
        "</tr>",
        "<td>",
        "<td>",
        "<td>",
        "</td>",
        "</td>",
        "<th>",
        "</th>",
        "<tbody>",
        "</tbody>",
        "<thead>",
        "</thead>",
        "<tfoot>",
        "</tfoot>",
        "\n",
        " ",
        "\n  ",
        "\t",
        "cell",
        "two words",
        "x",
        "<p>",
        "</p>",
        "<div>",
        "</div>",
        "<b>",
        "</b>",
        "<i>",
        "</i>",
        "<a href=\"u\">",
        "</a>",
        "<br>",
        "<li>",
        "<ul>",
        "</ul>",
        "<pre>\n",
        "</pre>",
        "<h2>",
        "</h2>",
        "<img alt=\"pic\">",
        "<span>",
        "</span>",
        "<caption>",
        "<col>",
        "<colgroup>",
        "</body>",
        "</html>",
        "</br>",
        "<script>s</script>",
        "<!-- c -->",
        "&amp;",
        "&nbsp;",
        "<form>",
        "<input>",
    ];
    let mut next = || {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    };
    let mut s = String::new();
    for _ in 0..next() % 50 {
        s.push_str(ATOMS[(next() / 7 % ATOMS.len() as u64) as usize]);
    }
    s
}

/// A table as feeds write them, with end tags and row groups left out at
/// random, cells holding text, formatting, blocks or another table, and
/// now and then a table soup atom where it does not belong.
fn table_doc(x: &mut u64, depth: u32) -> String {
    let mut next = || {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    };
    let mut pick = |n: u64| next() % n;
    const CONTENT: &[&str] = &[
        "text",
        "two words",
        " ",
        "\n",
        "<b>bold</b>",
        "<b>open",
        "</b>",
        "<i>i</i>",
        "<p>para",
        "</p>",
        "<div>block</div>",
        "<br>",
        "<a href=\"u\">link</a>",
        "<img alt=\"pic\">",
        "<ul><li>one<li>two</ul>",
        "&amp;",
        "<span>s</span>",
        "<pre>\ncode</pre>",
        "<h3>head</h3>",
    ];
    const STRAY: &[&str] = &[
        "<caption>",
        "stray",
        "<p>",
        "<colgroup>",
        "<col>",
        "<b>",
        "</td>",
        "</tr>",
        "<td>",
        "</tbody>",
        "</table>",
        "<table>",
    ];
    let ws = ["", " ", "\n", "\n  "];
    let mut s = String::from("<table>");
    let mut x2 = pick(1 << 30);
    for _ in 0..1 + pick(3) {
        s.push_str(ws[pick(4) as usize]);
        match pick(4) {
            0 => s.push_str("<tbody>"),
            1 => s.push_str("<thead>"),
            _ => {}
        }
        for _ in 0..1 + pick(3) {
            s.push_str(ws[pick(4) as usize]);
            if pick(5) != 0 {
                s.push_str("<tr>");
            }
            for _ in 0..1 + pick(3) {
                s.push_str(if pick(4) == 0 { "<th>" } else { "<td>" });
                for _ in 0..pick(4) {
                    if depth < 2 && pick(12) == 0 {
                        s.push_str(&table_doc(&mut x2, depth + 1));
                    } else {
                        s.push_str(CONTENT[pick(CONTENT.len() as u64) as usize]);
                    }
                }
                if pick(3) != 0 {
                    s.push_str("</td>");
                }
                if pick(20) == 0 {
                    s.push_str(STRAY[pick(STRAY.len() as u64) as usize]);
                }
            }
            if pick(2) == 0 {
                s.push_str("</tr>");
            }
        }
        if pick(3) == 0 {
            s.push_str("</tbody>");
        }
    }
    s.push_str(ws[pick(4) as usize]);
    if pick(6) != 0 {
        s.push_str("</table>");
    }
    s.push_str(["", "after", "<p>after</p>", " tail "][pick(4) as usize]);
    s
}

#[test]
fn the_streaming_reader_agrees_with_the_tree_on_generated_tables() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let (mut n, mut streamed) = (0usize, 0usize);
    for i in 0..6000 {
        let html = if i % 3 == 0 {
            table_soup(&mut x)
        } else {
            let before = ["", "intro ", "<p>intro", "<b>", "<div>"][(x % 5) as usize];
            format!("{before}{}", table_doc(&mut x, 0))
        };
        streamed += usize::from(agrees(&html) && html.contains("<table>"));
        n += 1;
    }
    eprintln!("tables: {n}, {streamed} with a table streamed");
    // The tables reach the table rules, not just the give-ups.
    assert!(streamed * 4 > n, "{streamed} of {n} streamed with a table");
}
