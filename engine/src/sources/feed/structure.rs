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

use std::collections::BTreeSet;
use std::ops::Range;

use base64::Engine as _;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::{NsReader, XmlVersion};

/// The namespace feed-rs reads RSS elements in.
const RSS_NS: &str = "http://purl.org/rss/1.0/";
/// The namespace feed-rs reads Atom elements in.
const ATOM_NS: &str = "http://www.w3.org/2005/Atom";
/// Dublin Core's namespace, as feed-rs spells it.
const DC_NS: &str = "http://purl.org/dc/elements/1.1/";
/// Media RSS's namespace, as feed-rs spells it.
const MRSS_NS: &str = "http://search.yahoo.com/mrss/";
/// Atom 0.3's namespace.
const ATOM_03_NS: &str = "http://purl.org/atom/ns#";

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

/// A raw attribute: qualified name and value exactly as written (still escaped).
type Attr = (String, String);

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

/// Text elements feed-rs is strict about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    /// Atom text constructs: `title`, `subtitle`, `summary`, `content`, `rights`.
    Atom,
    /// Media RSS `media:title`, `media:description`: feed-rs accepts only
    /// `type="plain"`/`"html"` and fails the feed on an empty one (a YouTube
    /// video without a description).
    Media,
}

/// A text element being read (its start tag seen, its end not yet).
#[derive(Debug)]
struct Construct {
    /// Which vocabulary's rules apply.
    family: Family,
    /// Local name (`content`, `title`, …).
    local: String,
    /// Qualified name as written, to rebuild the start tag.
    qname: String,
    attrs: Vec<Attr>,
    /// The start tag's byte range.
    tag: Range<usize>,
    /// Where the body starts (right after the start tag).
    body_start: usize,
    /// Element depth of the construct itself.
    depth: usize,
    /// It has child elements (inline XHTML/XML).
    has_children: bool,
    /// Its own text, unescaped (entities and CDATA resolved).
    text: String,
}

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

    /// RSS 0.90/1.0 → RSS 2.0 shape; RSS 0.9x/2.0: the root's namespace and
    /// items outside one channel.
    fn rss(
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

    /// Atom: the root's namespace and every text construct's type.
    fn atom(&mut self, root_tag: &BytesStart<'d>, root_span: Range<usize>) -> Option<()> {
        let attrs = attrs_of(root_tag)?;
        let root_default = attrs
            .iter()
            .find(|(k, _)| k == "xmlns")
            .map(|(_, v)| v.trim().to_owned());
        // Atom elements: no namespace (feed-rs defaults to Atom), Atom 1.0 or
        // 0.3, or whatever the root declared as default (rewritten to Atom).
        let is_atom = |ns: Option<&str>| {
            ns.is_none_or(|ns| {
                ns == ATOM_NS || ns == ATOM_03_NS || Some(ns) == root_default.as_deref()
            })
        };
        let mut depth = 1usize;
        let mut open: Option<Construct> = None;
        loop {
            let (ns, ev, span) = self.next()?;
            let family = match &ev {
                Event::Start(e) | Event::Empty(e) => {
                    let local = e.local_name();
                    if is_atom(ns.as_deref()) && is_text_construct(local.as_ref()) {
                        Some(Family::Atom)
                    } else {
                        media_text(ns.as_deref(), local.as_ref())
                    }
                }
                _ => None,
            };
            match ev {
                Event::Start(_) | Event::Empty(_) => {
                    let is_empty = matches!(ev, Event::Empty(_));
                    self.text_element(&mut open, family, &ev, &span, depth);
                    if !is_empty {
                        depth += 1;
                    }
                }
                Event::End(_) => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                    self.text_element(&mut open, None, &ev, &span, depth);
                }
                Event::Eof => return None,
                _ => self.text_element(&mut open, None, &ev, &span, depth),
            }
        }
        let (fixed, changed) = self.root_attrs(attrs, ATOM_NS);
        if changed {
            self.edits.push(Edit {
                range: root_span,
                with: start_tag(&qname_of(root_tag), &fixed, false),
            });
        }
        Some(())
    }

    /// Follows the text elements of `family` through the event stream:
    /// `depth` is the depth of the element an event starts (before it) or
    /// ends (after it). A text element's edits are made at its end.
    fn text_element(
        &mut self,
        open: &mut Option<Construct>,
        family: Option<Family>,
        ev: &Event<'d>,
        span: &Range<usize>,
        depth: usize,
    ) {
        match ev {
            Event::Start(e) | Event::Empty(e) => {
                if let Some(c) = open.as_mut() {
                    c.has_children = true;
                    return;
                }
                let Some(family) = family else {
                    return;
                };
                // Malformed attributes: that element is left as it is.
                let Some(attrs) = attrs_of(e) else {
                    return;
                };
                let c = Construct {
                    family,
                    local: e.local_name().as_ref().to_owned(),
                    qname: qname_of(e),
                    attrs,
                    tag: span.clone(),
                    body_start: span.end,
                    depth,
                    has_children: false,
                    text: String::new(),
                };
                if matches!(ev, Event::Empty(_)) {
                    self.finish(c, None, span.clone());
                } else {
                    *open = Some(c);
                }
            }
            Event::End(_) if open.as_ref().is_some_and(|c| c.depth == depth) => {
                if let Some(c) = open.take() {
                    let body = c.body_start..span.start;
                    let whole = c.tag.start..span.end;
                    self.finish(c, Some(body), whole);
                }
            }
            Event::Text(t) => {
                if let Some(c) = open.as_mut().filter(|c| c.depth + 1 == depth) {
                    c.text.push_str(t);
                }
            }
            Event::CData(t) => {
                if let Some(c) = open.as_mut().filter(|c| c.depth + 1 == depth) {
                    c.text.push_str(t);
                }
            }
            Event::GeneralRef(r) => {
                if let Some(c) = open.as_mut().filter(|c| c.depth + 1 == depth) {
                    match r.resolve_char_ref() {
                        Ok(Some(ch)) => c.text.push(ch),
                        _ => {
                            let name: &str = r;
                            match quick_xml::escape::resolve_predefined_entity(name) {
                                Some(s) => c.text.push_str(s),
                                None => {
                                    c.text.push('&');
                                    c.text.push_str(name);
                                    c.text.push(';');
                                }
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Media RSS `media:title`/`media:description`: an empty one is removed
    /// (feed-rs fails the feed on it); a `type` other than `plain`/`html`
    /// becomes the one it means.
    fn finish_media(&mut self, c: Construct, whole: Range<usize>) {
        if c.text.trim().is_empty() && !c.has_children {
            self.edits.push(Edit {
                range: whole,
                with: String::new(),
            });
            return;
        }
        let ty = c
            .attrs
            .iter()
            .find(|(k, _)| k == "type")
            .map(|(_, v)| v.as_str());
        let Some(ty) = ty else {
            return;
        };
        let wanted = match Kind::of(Some(ty)) {
            Kind::Html | Kind::Xhtml => "html",
            _ => "plain",
        };
        if ty != wanted {
            let mut attrs = c.attrs.clone();
            set_attr(&mut attrs, "type", wanted);
            self.retag(&c, attrs);
        }
    }

    /// The edits one text element needs, if any. `body` is the byte range
    /// between its tags (`None` for `<x/>`), `whole` the element's.
    fn finish(&mut self, c: Construct, body: Option<Range<usize>>, whole: Range<usize>) {
        if c.family == Family::Media {
            self.finish_media(c, whole);
            return;
        }
        let attr = |name: &str| {
            c.attrs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let is_content = c.local == "content";
        let has_text = !c.text.trim().is_empty();
        let inline = has_text || c.has_children;
        let kind = Kind::of(attr("type"));
        let mode = attr("mode").map(|m| m.trim().to_ascii_lowercase());
        let mut attrs = c.attrs.clone();

        if is_content && attr("src").is_some() {
            if inline {
                // Both a body and `src` (feed-rs refuses that): keep the body.
                attrs.retain(|(k, _)| k != "src");
            } else {
                // Out-of-line content: feed-rs wants a MIME type, or none.
                match kind.mime() {
                    Some(m) if attr("type").is_some() => set_attr(&mut attrs, "type", &m),
                    Some(_) => {}
                    None => attrs.retain(|(k, _)| k != "type"),
                }
                if attrs != c.attrs {
                    self.retag(&c, attrs);
                }
                return;
            }
        }

        let mut kind = kind;
        if mode.as_deref() == Some("base64") && has_text && !c.has_children && kind.is_textual() {
            if let (Some(decoded), Some(body)) = (decode_base64(&c.text), body) {
                kind = if matches!(kind, Kind::Text) {
                    Kind::Text
                } else {
                    Kind::Html
                };
                self.edits.push(Edit {
                    range: body,
                    with: quick_xml::escape::escape(decoded.as_str()).into_owned(),
                });
            }
        }
        let new_type = match kind {
            Kind::Text => "text".to_owned(),
            Kind::Html => "html".to_owned(),
            // Inline markup of any declared type: feed-rs serialises it as XHTML.
            _ if c.has_children => "xhtml".to_owned(),
            // Escaped XHTML (Atom 0.3 `mode="escaped"`) is HTML text.
            Kind::Xhtml => "html".to_owned(),
            // Inline text of another type (`text/markdown`, base64 media).
            Kind::Mime(m) if is_content && has_text => m,
            Kind::Xml | Kind::Mime(_) | Kind::Other => "text".to_owned(),
        };
        if attr("type") != Some(new_type.as_str())
            && !(attr("type").is_none() && new_type == "text")
        {
            set_attr(&mut attrs, "type", &new_type);
        }
        if attrs != c.attrs {
            self.retag(&c, attrs);
        }
    }

    /// Replaces a construct's start tag by one with `attrs`.
    fn retag(&mut self, c: &Construct, attrs: Vec<Attr>) {
        let empty = self.doc[c.tag.clone()].ends_with("/>");
        self.edits.push(Edit {
            range: c.tag.clone(),
            with: start_tag(&c.qname, &attrs, empty),
        });
    }
}

/// What a text construct's `type` says its body is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// `text`, `text/plain`, or no type.
    Text,
    /// `html`, `text/html`.
    Html,
    /// `xhtml`, `application/xhtml+xml`.
    Xhtml,
    /// Another XML type (`…/xml`, `…+xml`).
    Xml,
    /// Another valid MIME type (lowercased, parameters dropped).
    Mime(String),
    /// Not a type at all.
    Other,
}

impl Kind {
    fn of(ty: Option<&str>) -> Kind {
        let Some(ty) = ty else {
            return Kind::Text;
        };
        let ty = ty
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match ty.as_str() {
            "" | "text" | "text/plain" | "plain" => Kind::Text,
            "html" | "text/html" => Kind::Html,
            "xhtml" | "application/xhtml+xml" | "text/xhtml" => Kind::Xhtml,
            t if t.ends_with("/xml") || t.ends_with("+xml") => Kind::Xml,
            t if is_mime(t) => Kind::Mime(t.to_owned()),
            _ => Kind::Other,
        }
    }

    /// A body of this kind is text (worth base64-decoding into text).
    fn is_textual(&self) -> bool {
        matches!(self, Kind::Text | Kind::Html | Kind::Xhtml | Kind::Xml)
    }

    /// The MIME spelling (for `<content src>`), `None` if there is none.
    fn mime(&self) -> Option<String> {
        match self {
            Kind::Text => Some("text/plain".into()),
            Kind::Html => Some("text/html".into()),
            Kind::Xhtml => Some("application/xhtml+xml".into()),
            Kind::Xml => Some("application/xml".into()),
            Kind::Mime(m) => Some(m.clone()),
            Kind::Other => None,
        }
    }
}

fn is_mime(t: &str) -> bool {
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    t.split_once('/').is_some_and(|(a, b)| token(a) && token(b))
}

/// A Media RSS text element feed-rs parses strictly.
fn media_text(ns: Option<&str>, local: &str) -> Option<Family> {
    let media = ns.and_then(known_spelling) == Some(MRSS_NS);
    (media && matches!(local, "title" | "description")).then_some(Family::Media)
}

fn is_text_construct(local: &str) -> bool {
    matches!(
        local,
        "title" | "subtitle" | "summary" | "content" | "rights"
    )
}

/// The RSS namespaces seen in the wild (RSS 0.90, 0.91 module, UserLand,
/// Harvard, RSS 1.0 with or without its trailing slash).
fn is_rss_family(ns: &str) -> bool {
    matches!(
        ns.trim(),
        "http://purl.org/rss/1.0/"
            | "http://purl.org/rss/1.0"
            | "http://my.netscape.com/rdf/simple/0.9/"
            | "http://channel.netscape.com/rdf/simple/0.9/"
            | "http://purl.org/rss/1.0/modules/rss091#"
            | "http://backend.userland.com/rss2"
            | "http://backend.userland.com/rss"
            | "http://blogs.law.harvard.edu/tech/rss"
    )
}

/// Namespaces feed-rs reads, as it spells them, for a declaration that
/// names one with other case or without its trailing slash (the iTunes DTD
/// is often declared as `http://www.itunes.com/DTDs/Podcast-1.0.dtd`).
fn known_spelling(ns: &str) -> Option<&'static str> {
    const KNOWN: &[&str] = &[
        "http://www.itunes.com/dtds/podcast-1.0.dtd",
        "http://purl.org/rss/1.0/modules/content/",
        DC_NS,
        MRSS_NS,
        "https://podcastindex.org/namespace/1.0",
        "http://wellformedweb.org/CommentAPI/",
        "http://www.w3.org/2005/Atom",
    ];
    let ns = ns.trim();
    let bare = |s: &str| s.trim_end_matches('/').to_ascii_lowercase();
    KNOWN.iter().copied().find(|k| bare(k) == bare(ns))
}

/// The namespace of a prefix feeds use without declaring it.
fn well_known_prefix(prefix: &str) -> Option<&'static str> {
    Some(match prefix {
        "itunes" => "http://www.itunes.com/dtds/podcast-1.0.dtd",
        "content" => "http://purl.org/rss/1.0/modules/content/",
        "dc" => DC_NS,
        "media" => "http://search.yahoo.com/mrss/",
        "podcast" => "https://podcastindex.org/namespace/1.0",
        "wfw" => "http://wellformedweb.org/CommentAPI/",
        "atom" => ATOM_NS,
        "rdf" => "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
        _ => return None,
    })
}

fn decode_base64(text: &str) -> Option<String> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .ok()?;
    String::from_utf8(bytes).ok()
}

fn qname_of(e: &BytesStart<'_>) -> String {
    e.name().as_ref().to_owned()
}

/// The attributes as written; `None` if they are malformed (then the tag is
/// left alone).
fn attrs_of(e: &BytesStart<'_>) -> Option<Vec<Attr>> {
    e.attributes()
        .map(|a| {
            let a = a.ok()?;
            Some((a.key.as_ref().to_owned(), a.value.into_owned()))
        })
        .collect()
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

fn set_attr(attrs: &mut Vec<Attr>, name: &str, value: &str) {
    match attrs.iter_mut().find(|(k, _)| k == name) {
        Some((_, v)) => *v = value.to_owned(),
        None => attrs.push((name.to_owned(), value.to_owned())),
    }
}

/// A start tag; values are written as they were read (already escaped), in
/// double quotes unless the value holds one.
fn start_tag(qname: &str, attrs: &[Attr], empty: bool) -> String {
    let mut s = format!("<{qname}");
    for (k, v) in attrs {
        let q = if v.contains('"') { '\'' } else { '"' };
        s.push_str(&format!(" {k}={q}{v}{q}"));
    }
    s.push_str(if empty { "/>" } else { ">" });
    s
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(doc: &str) -> String {
        repair(doc).text.unwrap_or_else(|| doc.to_owned())
    }

    #[test]
    fn rss_090_becomes_rss_2_with_one_channel_and_about_ids() {
        let doc = r#"<?xml version="1.0"?>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://my.netscape.com/rdf/simple/0.9/">
<channel><title>t</title><link>https://example.org/</link></channel>
<item rdf:about="https://example.org/1?a=1&amp;b=2"><title>one</title><link>https://example.org/1</link></item>
<item><title>two</title></item>
<item rdf:about="x"/>
</rdf:RDF>"#;
        let r = repair(doc);
        let text = r.text.unwrap_or_default();
        assert!(
            text.contains(r#"<rss version="2.0" xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/"><channel>"#),
            "{text}"
        );
        assert!(
            text.contains("\n<title>t</title><link>https://example.org/</link>\n"),
            "{text}"
        );
        assert!(text.contains(r#"<item rdf:about="x"/>"#), "{text}");
        assert!(text.trim_end().ends_with("</channel></rss>"), "{text}");
        assert_eq!(
            r.rdf_about,
            Some(vec![
                Some("https://example.org/1?a=1&b=2".to_owned()),
                None,
                Some("x".to_owned())
            ])
        );
    }

    #[test]
    fn an_rss_10_item_without_description_reads_its_dc_description() {
        let doc = r#"<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/"><item><title>a</title><dc:description xml:lang="en">only dc</dc:description></item><item><description>own</description><dc:description>dc</dc:description></item></rdf:RDF>"#;
        let text = fixed(doc);
        assert!(
            text.contains(
                r#"<item><title>a</title><description xml:lang="en">only dc</description></item>"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "<item><description>own</description><dc:description>dc</dc:description></item>"
            ),
            "{text}"
        );
    }

    #[test]
    fn rss_with_a_foreign_default_namespace_or_stray_items_is_regrouped() {
        let doc = r#"<rss version="2.0" xmlns="http://backend.userland.com/rss2"><channel><title>t</title><item><title>a</title></item></channel></rss>"#;
        assert_eq!(
            fixed(doc),
            r#"<rss version="2.0" xmlns="http://purl.org/rss/1.0/"><channel><title>t</title><item><title>a</title></item></channel></rss>"#
        );
        let doc = r#"<rss version="2.0"><channel><title>t</title></channel><item><title>a</title></item></rss>"#;
        assert_eq!(
            fixed(doc),
            r#"<rss version="2.0"><channel><title>t</title><item><title>a</title></item></channel></rss>"#
        );
        // A plain RSS 2.0 document is left byte for byte.
        let doc = r#"<rss version="2.0"><channel><item><title>a</title></item></channel></rss>"#;
        assert!(repair(doc).text.is_none());
    }

    #[test]
    fn atom_text_construct_types_become_what_feed_rs_accepts() {
        let doc = r#"<feed xmlns="http://www.w3.org/2005/Atom"><entry>
<title type="text/plain">a</title>
<summary type="application/xhtml+xml"><div xmlns="http://www.w3.org/1999/xhtml">s</div></summary>
<content type="application/xhtml+xml">&lt;p&gt;escaped&lt;/p&gt;</content>
<rights type="TEXT/HTML">r</rights>
<link type="text/plain" href="x"/>
</entry></feed>"#;
        let text = fixed(doc);
        assert!(text.contains(r#"<title type="text">a</title>"#), "{text}");
        assert!(text.contains(r#"<summary type="xhtml"><div"#), "{text}");
        assert!(text.contains(r#"<content type="html">&lt;p&gt;"#), "{text}");
        assert!(text.contains(r#"<rights type="html">"#), "{text}");
        assert!(
            text.contains(r#"<link type="text/plain" href="x"/>"#),
            "{text}"
        );
    }

    #[test]
    fn atom_03_namespace_modes_and_content_src() {
        let doc = r#"<feed version="0.3" xmlns="http://purl.org/atom/ns#"><entry>
<title mode="base64" type="text/html">PGI+Ym9sZDwvYj4gJmFtcDsgbW9yZQ==</title>
<content type="text/html" mode="escaped">&lt;b&gt;x&lt;/b&gt;</content>
<summary type="image/png" src="https://example.org/i.png">body</summary>
</entry><entry><content src="/a.html" type="html"/><content src="/b.html" type="not a type"/></entry></feed>"#;
        let text = fixed(doc);
        assert!(
            text.starts_with(r#"<feed version="0.3" xmlns="http://www.w3.org/2005/Atom">"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"<title mode="base64" type="html">&lt;b&gt;bold&lt;/b&gt; &amp;amp; more</title>"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"<content type="html" mode="escaped">"#),
            "{text}"
        );
        assert!(text.contains(r#"<summary type="text" src="#), "{text}");
        assert!(
            text.contains(r#"<content src="/a.html" type="text/html"/>"#),
            "{text}"
        );
        assert!(text.contains(r#"<content src="/b.html"/>"#), "{text}");
    }

    #[test]
    fn empty_or_oddly_typed_media_rss_texts_are_repaired() {
        // A YouTube-style entry whose video has no description.
        let doc = r#"<feed xmlns="http://www.w3.org/2005/Atom" xmlns:media="http://search.yahoo.com/mrss/"><entry><media:group><media:title type="text/html">t</media:title><media:description></media:description></media:group></entry></feed>"#;
        assert_eq!(
            fixed(doc),
            r#"<feed xmlns="http://www.w3.org/2005/Atom" xmlns:media="http://search.yahoo.com/mrss/"><entry><media:group><media:title type="html">t</media:title></media:group></entry></feed>"#
        );
        let doc = r#"<rss version="2.0" xmlns:media="http://search.yahoo.com/mrss"><channel><item><media:description type="text"> </media:description><media:title type="plain">ok</media:title><media:description/></item></channel></rss>"#;
        assert_eq!(
            fixed(doc),
            r#"<rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/"><channel><item><media:title type="plain">ok</media:title></item></channel></rss>"#
        );
        let doc = r#"<rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/"><channel><item><title>a</title><media:description/></item></channel></rss>"#;
        assert_eq!(
            fixed(doc),
            r#"<rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/"><channel><item><title>a</title></item></channel></rss>"#
        );
    }

    #[test]
    fn unreadable_xml_is_left_alone_and_items_are_counted_on_the_xml() {
        assert!(repair("<rdf:RDF><item></rdf:RDF>").text.is_none());
        assert!(repair("<feed><entry><title type='x'>").text.is_none());
        assert_eq!(
            count_items("<rss><channel><item/><x:item xmlns:x='u'/></channel><item></item></rss>"),
            Some((2, "item"))
        );
        assert_eq!(
            count_items("<feed xmlns='u'><entry/><entry></entry><x:entry xmlns:x='v'/></feed>"),
            Some((2, "entry"))
        );
        assert_eq!(count_items("<entry/>"), Some((1, "entry")));
        assert_eq!(
            count_items("<rss><channel><item/></channel></rss><br>PHP warning"),
            Some((1, "item"))
        );
        assert_eq!(count_items("<html/>"), None);
    }
}
