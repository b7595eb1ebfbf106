//! HTML → text through a tree: html5ever parses the fragment into a DOM
//! (every tree construction rule applies), then an iterative walk reports
//! each node to [`Breaks`]. The reference for [`super::streaming`], and the
//! way taken whenever that one stands aside.

use scraper::{Html, Node};

use super::{Breaks, Role};

/// The text of an HTML fragment, read from its parsed tree.
pub(super) fn html_to_text(html: &str) -> String {
    let doc = Html::parse_fragment(html);
    let root = doc.tree.root();
    let mut out = Breaks::default();
    let mut next = root.first_child();
    while let Some(node) = next {
        // Open `node`.
        match node.value() {
            Node::Text(t) => out.text_node(&t.text),
            Node::Element(e) => {
                let role = Role::of(e.name());
                let alt = if role == Role::Image {
                    e.attr("alt")
                } else {
                    None
                };
                out.open(role, alt);
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
                out.close(Role::of(name), name == "br");
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
    out.finish()
}
