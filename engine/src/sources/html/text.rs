//! The document tree → normalised lines: one block element per line,
//! whitespace collapsed, invisible and ignored subtrees skipped. Iterative, so
//! a hostile page nested a million levels deep cannot overflow the stack.

use std::collections::HashSet;

use ego_tree::iter::Edge;
use ego_tree::NodeId;
use scraper::node::Element;
use scraper::{Html, Node};

/// What one walk over the document yields.
pub(crate) struct Walk {
    /// Lines of the watched region, in document order.
    pub(crate) lines: Vec<String>,
    /// Non-whitespace characters of visible text in the whole document
    /// (interstitials are small; this tells a challenge page from an article).
    pub(crate) visible_chars: usize,
}

/// Walks `doc`, collecting the text under the elements in `region` and
/// skipping the subtrees in `skip` (plus invisible elements).
pub(crate) fn walk(doc: &Html, region: &HashSet<NodeId>, skip: &HashSet<NodeId>) -> Walk {
    let mut out = Lines::default();
    let mut visible_chars = 0;
    // The root of the subtree being skipped / of the region being collected.
    let mut skipping: Option<NodeId> = None;
    let mut in_region: Option<NodeId> = None;
    let mut pre_depth = 0usize;
    for edge in doc.tree.root().traverse() {
        match edge {
            Edge::Open(node) => {
                if skipping.is_some() {
                    continue;
                }
                match node.value() {
                    Node::Element(el) => {
                        if skip.contains(&node.id()) || is_invisible(el) {
                            skipping = Some(node.id());
                            continue;
                        }
                        if in_region.is_none() && region.contains(&node.id()) {
                            in_region = Some(node.id());
                            out.break_line();
                        }
                        if in_region.is_some() {
                            let name = el.name();
                            if name == "pre" {
                                pre_depth += 1;
                            }
                            if is_block(name) || name == "br" {
                                out.break_line();
                            } else if matches!(name, "td" | "th") {
                                out.cell();
                            }
                        }
                    }
                    Node::Text(t) => {
                        visible_chars += t.chars().filter(|c| !c.is_whitespace()).count();
                        if in_region.is_some() {
                            out.text(t, pre_depth > 0);
                        }
                    }
                    _ => {}
                }
            }
            Edge::Close(node) => {
                if let Some(root) = skipping {
                    if root == node.id() {
                        skipping = None;
                    }
                    continue;
                }
                let Node::Element(el) = node.value() else {
                    continue;
                };
                if in_region.is_some() {
                    let name = el.name();
                    if name == "pre" {
                        pre_depth = pre_depth.saturating_sub(1);
                    }
                    if is_block(name) {
                        out.break_line();
                    }
                }
                if in_region == Some(node.id()) {
                    in_region = None;
                    out.break_line();
                }
            }
        }
    }
    out.break_line();
    Walk {
        lines: out.lines,
        visible_chars,
    }
}

/// Collapses whitespace of a piece of text (titles, headings).
pub(crate) fn collapse(text: &str) -> String {
    let mut l = Lines::default();
    l.text(text, false);
    l.break_line();
    l.lines.join(" ")
}

/// Builds lines out of text runs.
#[derive(Default)]
struct Lines {
    lines: Vec<String>,
    current: String,
    pending_space: bool,
}

impl Lines {
    fn text(&mut self, text: &str, preformatted: bool) {
        for c in text.chars() {
            if preformatted && c == '\n' {
                self.break_line();
            } else if c.is_whitespace() {
                self.pending_space = !self.current.is_empty();
            } else if is_invisible_char(c) {
                continue;
            } else {
                if self.pending_space {
                    self.current.push(' ');
                    self.pending_space = false;
                }
                self.current.push(c);
            }
        }
    }

    fn cell(&mut self) {
        if !self.current.is_empty() {
            self.current.push_str(" | ");
            self.pending_space = false;
        }
    }

    fn break_line(&mut self) {
        let line = std::mem::take(&mut self.current);
        let line = line.trim_end_matches([' ', '|']).trim_end();
        if !line.is_empty() {
            self.lines.push(line.to_owned());
        }
        self.pending_space = false;
    }
}

/// Zero-width characters and soft hyphens: invisible, but they differ between renders.
fn is_invisible_char(c: char) -> bool {
    matches!(
        c,
        '\u{200B}' | '\u{200C}' | '\u{200D}' | '\u{2060}' | '\u{FEFF}' | '\u{00AD}'
    )
}

/// Elements whose content is never visible text.
fn is_invisible(el: &Element) -> bool {
    matches!(
        el.name(),
        "head"
            | "script"
            | "style"
            | "noscript"
            | "template"
            | "svg"
            | "math"
            | "iframe"
            | "object"
            | "embed"
            | "canvas"
            | "textarea"
            | "audio"
            | "video"
    ) || el.attr("hidden").is_some()
        || el.attr("style").is_some_and(|s| {
            let s: String = s
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect::<String>()
                .to_ascii_lowercase();
            s.contains("display:none") || s.contains("visibility:hidden")
        })
}

/// Elements that start and end a line.
fn is_block(name: &str) -> bool {
    matches!(
        name,
        "address"
            | "article"
            | "aside"
            | "blockquote"
            | "body"
            | "caption"
            | "center"
            | "dd"
            | "details"
            | "dialog"
            | "dir"
            | "div"
            | "dl"
            | "dt"
            | "fieldset"
            | "figcaption"
            | "figure"
            | "footer"
            | "form"
            | "h1"
            | "h2"
            | "h3"
            | "h4"
            | "h5"
            | "h6"
            | "header"
            | "hgroup"
            | "hr"
            | "html"
            | "legend"
            | "li"
            | "main"
            | "menu"
            | "nav"
            | "ol"
            | "option"
            | "p"
            | "pre"
            | "section"
            | "summary"
            | "table"
            | "tbody"
            | "tfoot"
            | "thead"
            | "tr"
            | "ul"
    )
}
