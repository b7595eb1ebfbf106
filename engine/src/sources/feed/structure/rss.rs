//! RSS documents: RSS 0.90 and 1.0 (`<rdf:RDF>`) read as RSS 2.0 with each
//! item's `rdf:about` kept, RSS 1.0 items without `<description>` given
//! their `dc:description`, and RSS 0.9x/2.0 with a foreign default namespace
//! or items outside one channel regrouped.

use std::ops::Range;

use quick_xml::events::{BytesStart, Event};
use quick_xml::XmlVersion;

use super::constructs::{media_text, Construct};
use super::namespaces::{is_rss_family, known_spelling, DC_NS, RSS_NS};
use super::tags::{attrs_of, qname_of, start_tag};
use super::{Edit, Pass, Root};

/// What an open element is to the RSS pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    /// A top-level `<channel>`: its tags are dropped when items are regrouped.
    Channel,
    /// An RSS 0.90/1.0 `<item>`.
    Item,
    /// A `dc:description` directly inside such an item.
    DcDescription,
    /// Anything else.
    Other,
}

/// What the RSS pass remembers of the RSS 1.0 item it is reading.
#[derive(Debug, Default)]
struct RdfItem {
    /// It has its own `<description>`.
    has_description: bool,
    /// Its first `dc:description`: start tag range and qualified name.
    dc_start: Option<(Range<usize>, String)>,
    /// That element's end tag range.
    dc_end: Option<Range<usize>>,
}

impl<'d> Pass<'d> {
    /// RSS 0.90/1.0 → RSS 2.0 shape; RSS 0.9x/2.0: the root's namespace and
    /// items outside one channel.
    pub(super) fn rss(
        &mut self,
        root: Root,
        root_tag: &BytesStart<'d>,
        root_span: Range<usize>,
    ) -> Option<()> {
        let attrs = attrs_of(root_tag)?;
        let root_name = if root == Root::Rdf {
            "rss".to_owned()
        } else {
            qname_of(root_tag)
        };

        let root_default = attrs
            .iter()
            .find(|(k, _)| k == "xmlns")
            .map(|(_, v)| v.trim().to_owned());
        let is_rss = |ns: Option<&str>| {
            ns.is_none_or(|ns| is_rss_family(ns) || Some(ns) == root_default.as_deref())
        };
        // Open elements below the root, and what each is to this pass.
        let mut path: Vec<Open> = Vec::new();
        let mut channel_tags: Vec<Range<usize>> = Vec::new();
        let mut channels = 0usize;
        let mut items_outside = false;
        let mut abouts: Vec<Option<String>> = Vec::new();
        let mut root_end: Option<Range<usize>> = None;
        let mut open: Option<Construct> = None;
        // RSS 1.0 item being read: feed-rs's RSS 1.0 reader took
        // `dc:description` when an item had no `<description>`; RSS 2.0's
        // does not, so such an item's `dc:description` is renamed.
        let mut item = RdfItem::default();
        while root_end.is_none() {
            let (ns, ev, span) = self.next()?;
            let is_empty = matches!(ev, Event::Empty(_));
            // Depth of the element this event starts, or of the open element
            // text belongs to (the root is at 0).
            let depth = path.len() + 1;
            match &ev {
                Event::Start(e) | Event::Empty(e) => {
                    let family = media_text(ns.as_deref(), e.local_name().as_ref());
                    self.text_element(&mut open, family, &ev, &span, depth);
                    let local = e.local_name();
                    let local = local.as_ref();
                    let own = is_rss(ns.as_deref());
                    let at_top = path.is_empty();
                    let in_channel = matches!(path.as_slice(), [Open::Channel]);
                    let mut kind = Open::Other;
                    if at_top && own && local == "channel" {
                        channels += 1;
                        channel_tags.push(span.clone());
                        kind = Open::Channel;
                    } else if own && local == "item" && (at_top || in_channel) {
                        items_outside |= at_top;
                        if root == Root::Rdf {
                            // (`<item …/>` is an item too: feed-rs expands empty elements.)
                            abouts.push(about_of(e));
                            item = RdfItem::default();
                            kind = Open::Item;
                        }
                    } else if matches!(path.last(), Some(Open::Item)) && local == "description" {
                        if own {
                            item.has_description = true;
                        } else if !is_empty
                            && item.dc_start.is_none()
                            && ns.as_deref().and_then(known_spelling) == Some(DC_NS)
                        {
                            item.dc_start = Some((span.clone(), qname_of(e)));
                            kind = Open::DcDescription;
                        }
                    }
                    if !is_empty {
                        path.push(kind);
                    }
                }
                Event::End(_) => match path.pop() {
                    None => root_end = Some(span),
                    Some(kind) => {
                        match kind {
                            Open::Channel => channel_tags.push(span.clone()),
                            Open::DcDescription => item.dc_end = Some(span.clone()),
                            Open::Item => self.rename_dc_description(&mut item),
                            Open::Other => {}
                        }
                        self.text_element(&mut open, None, &ev, &span, path.len() + 1);
                    }
                },
                Event::Eof => return None,
                _ => self.text_element(&mut open, None, &ev, &span, depth),
            }
        }
        let root_end = root_end?;
        let restructure = root == Root::Rdf || items_outside || channels > 1;
        let (mut root_attrs, fixed) = self.root_attrs(attrs, RSS_NS);
        if root == Root::Rdf {
            root_attrs.retain(|(k, _)| k != "version");
            root_attrs.insert(0, ("version".into(), "2.0".into()));
        }
        if !restructure && !fixed {
            return Some(());
        }
        let mut open = start_tag(&root_name, &root_attrs, false);
        if restructure {
            open.push_str("<channel>");
            for range in channel_tags {
                // `<channel …/>` or a channel start/end tag: its children stay.
                self.edits.push(Edit {
                    range,
                    with: String::new(),
                });
            }
            self.edits.push(Edit {
                range: root_end,
                with: format!("</channel></{root_name}>"),
            });
        }
        self.edits.push(Edit {
            range: root_span,
            with: open,
        });
        if root == Root::Rdf {
            self.rdf_about = Some(abouts);
        }
        Some(())
    }

    /// At the end of an RSS 1.0 item: its `dc:description` becomes its
    /// `<description>` when it has none.
    fn rename_dc_description(&mut self, item: &mut RdfItem) {
        let item = std::mem::take(item);
        let (Some((start, qname)), Some(end), false) =
            (item.dc_start, item.dc_end, item.has_description)
        else {
            return;
        };
        let tag = &self.doc[start.clone()];
        let rest = tag.get(1 + qname.len()..).unwrap_or(">");
        self.edits.push(Edit {
            range: start,
            with: format!("<description{rest}"),
        });
        self.edits.push(Edit {
            range: end,
            with: "</description>".into(),
        });
    }
}

/// `rdf:about` (any prefix) of an item, XML-unescaped.
fn about_of(e: &BytesStart<'_>) -> Option<String> {
    e.attributes().flatten().find_map(|a| {
        (a.key.local_name().as_ref() == "about")
            .then(|| {
                a.normalized_value(XmlVersion::Implicit1_0)
                    .ok()
                    .map(|v| v.trim().to_owned())
            })
            .flatten()
            .filter(|v| !v.is_empty())
    })
}
