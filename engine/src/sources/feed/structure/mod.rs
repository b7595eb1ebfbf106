//! Structural repairs on the XML event stream, so feed-rs reads what a feed
//! means rather than failing or finding nothing. Each repair is an edit of a
//! byte range of the document (a start or end tag, or a text run); everything
//! else is passed through byte for byte.
//!
//! - RSS 0.90 and 1.0 (`<rdf:RDF>`): items are siblings of `<channel>`, in
//!   the RSS 0.90 namespace (`http://my.netscape.com/rdf/simple/0.9/`, which
//!   feed-rs does not know, so it reads no item at all) or the RSS 1.0 one
//!   (where feed-rs drops items without a `<link>`). The document is read as
//!   RSS 2.0 instead: the root becomes `<rss version="2.0">` wrapping one
//!   `<channel>`, the original channel's tags are dropped (its children stay)
//!   and each item's `rdf:about` is returned for the caller to use as its id.
//! - RSS 0.9x/2.0 (`<rss>`): a default namespace on the root
//!   (`http://backend.userland.com/rss2`, …) hides every element from feed-rs;
//!   it is replaced by the one feed-rs reads. Items outside `<channel>`, or
//!   spread over several channels, are gathered into one channel.
//! - Atom (`<feed>`, `<entry>`): a default namespace other than Atom 1.0
//!   (Atom 0.3, pre-1.0 drafts) is replaced by Atom 1.0. Text constructs
//!   (`title`, `subtitle`, `summary`, `content`, `rights`) get a `type` feed-rs
//!   accepts: MIME spellings (`text/plain`, `text/html`,
//!   `application/xhtml+xml`), other case, unknown or `+xml` types, Atom 0.3
//!   `mode="escaped"` and `mode="base64"` (decoded) — where feed-rs would fail
//!   the whole feed on one entry. `<content src>` with an inline body keeps
//!   the body; with none it gets a MIME type.
//! - Media RSS (`media:title`, `media:description`, in any document): an
//!   empty one (a YouTube video without a description) failed the whole
//!   feed, and so did a `type` other than `plain`/`html`.
//! - Extension namespaces declared with other case (the iTunes DTD) or not
//!   at all are declared the way feed-rs spells them.
//!
//! Nothing here fails: a document quick-xml cannot read is left as it is
//! (feed-rs then reports why).
//!
//! [`scan`] runs first: a byte scan of the tags that refuses documents
//! nested too deep and tells the caller whether this pass could edit
//! anything at all; most feeds need no repair and skip it.
//!
//! Layout: this file is the pass itself (`Pass` reads events and holds the
//! edits; `run` picks the repair by root element). `rss` and `atom` walk
//! their documents; `constructs` follows the text elements both walks meet
//! (Atom text constructs, Media RSS); `namespaces` and `tags` are helpers.
//! `rss` and `atom` use `constructs`; all use the helpers, which use
//! nothing here. `scan` stands apart: it reads bytes, not quick-xml events,
//! and uses only `namespaces`. Stray ampersands are escaped before this pass runs
//! (`decode::escape_stray_ampersands`).

use std::collections::BTreeSet;
use std::ops::Range;

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

use self::namespaces::{is_rss_family, known_spelling, well_known_prefix, ATOM_03_NS, ATOM_NS};
use self::tags::Attr;

pub(crate) use self::scan::{scan, Scan};

mod atom;
mod constructs;
mod namespaces;
mod rss;
mod scan;
mod tags;
#[cfg(test)]
mod tests;

/// A document with its repairs applied.
#[derive(Debug, Default)]
pub(crate) struct Repaired {
    /// The repaired document; `None` when nothing needed repair.
    pub(crate) text: Option<String>,
    /// RSS 0.90/1.0: each item's `rdf:about` (XML-unescaped), in document
    /// order, one entry per item feed-rs will read.
    pub(crate) rdf_about: Option<Vec<Option<String>>>,
}

/// Applies the repairs the document's root calls for.
pub(crate) fn repair(doc: &str) -> Repaired {
    let mut pass = Pass::new(doc);
    let outcome = pass.run();
    if outcome.is_none() || pass.edits.is_empty() {
        return Repaired {
            text: None,
            rdf_about: pass.rdf_about,
        };
    }
    Repaired {
        text: Some(apply(doc, &mut pass.edits)),
        rdf_about: pass.rdf_about,
    }
}

/// How many items (RSS `<item>`, Atom `<entry>`) the document has, counted
/// on the XML itself whatever feed-rs made of them, and the element name;
/// `None` if it is not readable XML with a feed root. Only elements in the
/// feed's own namespace count (an extension's `<x:item>` is not an item).
pub(crate) fn count_items(doc: &str) -> Option<(usize, &'static str)> {
    let mut r = NsReader::from_str(doc);
    let mut root: Option<(Root, Option<String>)> = None;
    let mut n = 0usize;
    // Open elements; the count ends with the root (whatever trails it).
    let mut depth = 0usize;
    loop {
        let (ns, ev) = r.read_resolved_event().ok()?;
        let ns = match ns {
            ResolveResult::Bound(ns) => Some(ns.as_ref().to_owned()),
            ResolveResult::Unbound | ResolveResult::Unknown(_) => None,
        };
        if matches!(ev, Event::Start(_)) {
            depth += 1;
        }
        match ev {
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    break;
                }
            }
            Event::Start(e) | Event::Empty(e) => match &root {
                None => {
                    let rt = Root::of(e.local_name().as_ref())?;
                    if rt == Root::Entry {
                        // A lone-entry document is one item.
                        return Some((1, "entry"));
                    }
                    root = Some((rt, ns));
                }
                Some((rt, root_ns)) => {
                    let own =
                        ns.is_none() || ns == *root_ns || ns.as_deref().is_some_and(|n| rt.owns(n));
                    if own && e.local_name().as_ref() == rt.item_name() {
                        n += 1;
                    }
                }
            },
            Event::Eof => break,
            _ => {}
        }
    }
    root.map(|(rt, _)| (n, rt.item_name()))
}

/// Why quick-xml cannot read the document (with namespaces resolved), if
/// it cannot: the first error on the way to its end.
pub(crate) fn xml_error(doc: &str) -> Option<String> {
    let mut r = NsReader::from_str(doc);
    loop {
        match r.read_resolved_event() {
            Err(e) => return Some(e.to_string()),
            Ok((_, Event::Eof)) => return None,
            Ok(_) => {}
        }
    }
}

/// The document kinds this module repairs, by root element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Root {
    /// `<rss>`: RSS 0.9x/2.0.
    Rss,
    /// `<rdf:RDF>`: RSS 0.90/1.0.
    Rdf,
    /// `<feed>`: Atom.
    Feed,
    /// `<entry>`: a lone Atom entry.
    Entry,
}

impl Root {
    fn of(local: &str) -> Option<Root> {
        match local {
            "rss" => Some(Root::Rss),
            "RDF" => Some(Root::Rdf),
            "feed" => Some(Root::Feed),
            "entry" => Some(Root::Entry),
            _ => None,
        }
    }

    /// `ns` is this format's own namespace.
    fn owns(self, ns: &str) -> bool {
        match self {
            Root::Rss | Root::Rdf => is_rss_family(ns),
            Root::Feed | Root::Entry => ns == ATOM_NS || ns == ATOM_03_NS,
        }
    }

    fn item_name(self) -> &'static str {
        match self {
            Root::Rss | Root::Rdf => "item",
            Root::Feed | Root::Entry => "entry",
        }
    }
}

/// One replacement of a byte range of the document.
#[derive(Debug)]
struct Edit {
    range: Range<usize>,
    with: String,
}

/// One reading of the document: the namespace-resolving reader, the edits
/// made so far and the item ids the caller gets back.
struct Pass<'d> {
    doc: &'d str,
    reader: NsReader<&'d [u8]>,
    edits: Vec<Edit>,
    rdf_about: Option<Vec<Option<String>>>,
    /// Element prefixes used without a declaration (`<itunes:summary>` in a
    /// feed that never binds `itunes`): feed-rs would not see those elements.
    undeclared: BTreeSet<String>,
}

impl<'d> Pass<'d> {
    fn new(doc: &'d str) -> Self {
        let mut reader = NsReader::from_str(doc);
        reader.config_mut().trim_markup_names_in_closing_tags = true;
        Pass {
            doc,
            reader,
            edits: Vec::new(),
            rdf_about: None,
            undeclared: BTreeSet::new(),
        }
    }

    /// Reads the next event with its resolved namespace (`None`: no
    /// namespace or an undeclared prefix) and its byte range.
    fn next(&mut self) -> Option<(Option<String>, Event<'d>, Range<usize>)> {
        let start = self.reader.buffer_position() as usize;
        let (ns, ev) = self.reader.read_resolved_event().ok()?;
        let ns = match ns {
            ResolveResult::Bound(ns) => Some(ns.as_ref().to_owned()),
            ResolveResult::Unknown(prefix) => {
                if matches!(ev, Event::Start(_) | Event::Empty(_)) {
                    self.undeclared.insert(prefix);
                }
                None
            }
            ResolveResult::Unbound => None,
        };
        let end = self.reader.buffer_position() as usize;
        Some((ns, ev, start..end))
    }

    /// `None` when the document is not readable XML (edits are then dropped).
    fn run(&mut self) -> Option<()> {
        let outcome = loop {
            let (_, ev, span) = self.next()?;
            match ev {
                Event::Empty(_) => break Some(()),
                Event::Start(e) => {
                    let Some(root) = Root::of(e.local_name().as_ref()) else {
                        break Some(());
                    };
                    break match root {
                        Root::Rss | Root::Rdf => self.rss(root, &e, span),
                        Root::Feed | Root::Entry => self.atom(&e, span),
                    };
                }
                Event::Eof => break Some(()),
                _ => {}
            }
        };
        if outcome.is_none() {
            self.edits.clear();
            self.rdf_about = None;
        }
        outcome
    }

    /// The root's attributes as feed-rs needs them: its default namespace
    /// (if any) is `default_ns`, namespace declarations of the extensions
    /// feed-rs reads are spelled its way, and prefixes the document uses
    /// without declaring them are declared when they are well known. True
    /// if anything changed.
    fn root_attrs(&self, attrs: Vec<Attr>, default_ns: &str) -> (Vec<Attr>, bool) {
        let mut changed = false;
        let mut out: Vec<Attr> = attrs
            .into_iter()
            .map(|(k, v)| {
                let fixed = if k == "xmlns" {
                    Some(default_ns.to_owned())
                } else if k.starts_with("xmlns:") {
                    known_spelling(&v).map(str::to_owned)
                } else {
                    None
                };
                match fixed {
                    Some(f) if f != v => {
                        changed = true;
                        (k, f)
                    }
                    _ => (k, v),
                }
            })
            .collect();
        for prefix in &self.undeclared {
            let Some(ns) = well_known_prefix(prefix) else {
                continue;
            };
            let key = format!("xmlns:{prefix}");
            if !out.iter().any(|(k, _)| *k == key) {
                out.push((key, ns.to_owned()));
                changed = true;
            }
        }
        (out, changed)
    }
}

fn apply(doc: &str, edits: &mut [Edit]) -> String {
    edits.sort_by_key(|e| e.range.start);
    let mut out = String::with_capacity(doc.len() + edits.len() * 16);
    let mut at = 0;
    for e in edits.iter() {
        if e.range.start < at {
            // Overlapping edits cannot happen (each covers one distinct
            // event); if they did, the later one is skipped.
            continue;
        }
        out.push_str(&doc[at..e.range.start]);
        out.push_str(&e.with);
        at = e.range.end;
    }
    out.push_str(&doc[at..]);
    out
}
