//! One byte scan of the document's tags before anything reads it as XML:
//! the depth guard, and whether the structure pass could edit anything.
//!
//! Most feeds need no repair, and the pass costs a whole namespace-resolving
//! quick-xml reading of the document to find that out. The scan reads only
//! tags (comments, CDATA, processing instructions and doctypes are skipped
//! the way quick-xml skips them; quoted attribute values may hold `>`) and
//! answers "clean" only when no tag is one the pass edits:
//!
//! - the root is `<rss>`, `<feed>` or `<entry>` without a prefix (RSS 0.90
//!   and 1.0 roots are always rewritten), or not a feed root at all (the
//!   pass then leaves the document alone);
//! - the root declares no default namespace (RSS), or exactly Atom 1.0's
//!   (Atom); no other element declares one but XHTML's; every extension
//!   namespace the root declares is spelled the way feed-rs reads it;
//! - every element prefix is declared in scope;
//! - RSS: one `<channel>` under the root, no `<item>` beside it, no
//!   prefixed `channel` or `item`;
//! - Atom: text constructs (`title`, `subtitle`, `summary`, `content`,
//!   `rights`, any prefix) typed `text`, `html` or (with a child element)
//!   `xhtml`, or untyped, with no `mode` or `src`;
//! - any prefixed `title` or `description` (Media RSS, whatever the prefix
//!   is bound to) typed `plain` or `html` or untyped, and starting with
//!   literal text.
//!
//! Anything else — including whatever the scan cannot read — answers "run
//! the pass": a wrong "run the pass" costs time, a wrong "clean" would skip
//! a repair, so every doubt goes one way. `structure::tests` holds the scan
//! to the pass: on every corpus feed, and on generated variants of them,
//! "clean" means the pass makes no edit.

use memchr::{memchr, memchr3, memmem};

use super::namespaces::{known_spelling, ATOM_NS};

/// Prefix declarations in scope beyond which the scan stops looking.
const MAX_SCOPE: usize = 256;

/// XHTML's namespace, declared on the `<div>` of inline Atom content.
const XHTML_NS: &str = "http://www.w3.org/1999/xhtml";

/// What the scan found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scan {
    /// Elements nest deeper than the limit.
    TooDeep,
    /// The structure pass may have something to repair: run it.
    NeedsPass,
    /// No tag is one the structure pass would edit.
    Clean,
}

/// What the root element makes the document, for the pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `<rss>`: RSS 0.9x/2.0.
    Rss,
    /// `<feed>` or `<entry>`: Atom.
    Atom,
    /// Not a root the pass repairs: it edits nothing.
    Untouched,
}

/// Scans `doc`'s tags: [`Scan::TooDeep`] as soon as elements nest deeper
/// than `max_depth`, else whether the structure pass needs to run.
pub(crate) fn scan(doc: &str, max_depth: usize) -> Scan {
    let b = doc.as_bytes();
    let mut s = Scanner::default();
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(off) = memchr(b'<', &b[i..]) {
        i += off;
        let rest = &b[i..];
        // Each region ends where quick-xml ends it, so that the scan never
        // sees a tag quick-xml reads as text, or the other way round.
        if rest.starts_with(b"<!--") {
            // `<!-->` and `<!--->` do not end a comment.
            i += 4 + skip_past(&rest[4..], b"-->");
            continue;
        }
        if rest.starts_with(b"<![") {
            // CDATA, in any case (or malformed: quick-xml then fails).
            i += skip_past(rest, b"]]>");
            continue;
        }
        if rest.starts_with(b"<?") {
            i += skip_past(rest, b"?>");
            continue;
        }
        if rest.starts_with(b"<!") {
            // A doctype: its first `>` ends it unless it holds quotes or an
            // internal subset (which may also declare entities); those the
            // scan leaves to the pass.
            let end = memchr(b'>', rest).map_or(rest.len(), |p| p + 1);
            s.needs |= memchr3(b'[', b'"', b'\'', &rest[..end]).is_some()
                || memchr(b'<', &rest[1..end]).is_some();
            i += end;
            continue;
        }
        let Some(close) = tag_end(rest) else {
            // A tag that never ends: not XML quick-xml reads past; only the
            // depth so far counts.
            s.needs = true;
            if rest.get(1) != Some(&b'/') {
                depth += 1;
            }
            break;
        };
        let tag = &rest[..=close];
        i += close + 1;
        if tag.get(1) == Some(&b'/') {
            s.end(depth);
            depth = depth.saturating_sub(1);
            continue;
        }
        let empty = tag.ends_with(b"/>");
        // The depth of the element this tag starts (the root's is 1).
        let at = depth + 1;
        if !empty {
            depth += 1;
            if depth > max_depth {
                return Scan::TooDeep;
            }
        }
        if !s.needs {
            s.start(tag, at, empty, &b[i..]);
        }
    }
    if depth > max_depth {
        return Scan::TooDeep;
    }
    if s.needs {
        Scan::NeedsPass
    } else {
        Scan::Clean
    }
}

/// Length of `rest` up to and including the end of `end` (all of `rest` if
/// it never comes).
fn skip_past(rest: &[u8], end: &[u8]) -> usize {
    memmem::find(rest, end).map_or(rest.len(), |p| p + end.len())
}

/// Index of the `>` closing the tag `rest` starts with; quoted attribute
/// values may hold `>`. `None` if the tag or a quote never closes.
fn tag_end(rest: &[u8]) -> Option<usize> {
    let mut i = 1;
    loop {
        i += memchr3(b'>', b'"', b'\'', &rest[i..])?;
        let q = rest[i];
        if q == b'>' {
            return Some(i);
        }
        i += 1;
        i += memchr(q, &rest[i..])? + 1;
    }
}

/// What the scan remembers between tags.
#[derive(Default)]
struct Scanner<'d> {
    /// Set once any tag may need the pass; the rest is only counted.
    needs: bool,
    /// `None` until the root is seen.
    mode: Option<Mode>,
    /// Prefixes declared by open elements: (element depth, prefix).
    scope: Vec<(usize, &'d [u8])>,
    /// RSS: `<channel>` elements directly under the root.
    channels: usize,
}

impl<'d> Scanner<'d> {
    /// The end tag of the element at `depth`: its declarations go out of scope.
    fn end(&mut self, depth: usize) {
        while self.scope.last().is_some_and(|(d, _)| *d >= depth) {
            self.scope.pop();
        }
    }

    /// A start (or empty-element) tag of an element at `depth` (the root is
    /// at 1); `after` is the document after the tag.
    fn start(&mut self, tag: &'d [u8], depth: usize, empty: bool, after: &[u8]) {
        let body = tag
            .strip_suffix(b"/>")
            .or_else(|| tag.strip_suffix(b">"))
            .unwrap_or(tag);
        let body = &body[1..];
        let name_len = body
            .iter()
            .position(|c| c.is_ascii_whitespace())
            .unwrap_or(body.len());
        let (name, attrs) = body.split_at(name_len);
        let (prefix, local) = match memchr(b':', name) {
            Some(p) => (Some(&name[..p]), &name[p + 1..]),
            None => (None, name),
        };
        if name.is_empty() || local.is_empty() || memchr(b':', local).is_some() {
            self.needs = true;
            return;
        }
        let mode = match self.mode {
            Some(Mode::Untouched) => return,
            Some(m) => m,
            None => {
                let mode = match (prefix, local) {
                    (None, b"rss") => Mode::Rss,
                    (None, b"feed" | b"entry") => Mode::Atom,
                    (None, _) if !matches!(local, b"RDF") => Mode::Untouched,
                    _ => {
                        self.needs = true;
                        return;
                    }
                };
                // An empty root is read as a start event with no end by
                // nothing: the pass stops there.
                let mode = if empty { Mode::Untouched } else { mode };
                self.mode = Some(mode);
                if mode == Mode::Untouched {
                    return;
                }
                mode
            }
        };
        let is_root = depth == 1;
        let construct = mode == Mode::Atom
            && matches!(
                local,
                b"title" | b"subtitle" | b"summary" | b"content" | b"rights"
            );
        let media = prefix.is_some() && matches!(local, b"title" | b"description");
        let mut own: Vec<&'d [u8]> = Vec::new();
        if is_root || construct || media || memmem::find(attrs, b"xmlns").is_some() {
            let Some(list) = attributes(attrs) else {
                self.needs = true;
                return;
            };
            let value = |key: &[u8]| list.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
            for (k, v) in &list {
                if *k == b"xmlns" {
                    // A default namespace: the Atom root's own, or XHTML's
                    // below the root (inline Atom content), change nothing.
                    self.needs |= !if is_root {
                        mode == Mode::Atom && *v == ATOM_NS.as_bytes()
                    } else {
                        *v == XHTML_NS.as_bytes()
                    };
                } else if let Some(p) = k.strip_prefix(b"xmlns:") {
                    let Ok(v) = std::str::from_utf8(v) else {
                        self.needs = true;
                        return;
                    };
                    self.needs |= v.is_empty()
                        || (is_root && known_spelling(v).is_some_and(|known| known != v));
                    own.push(p);
                }
            }
            if construct {
                let ty = value(b"type");
                let xhtml_with_children =
                    ty == Some(b"xhtml") && starts_with_element(skip_space(after));
                self.needs |= value(b"mode").is_some()
                    || value(b"src").is_some()
                    || !(matches!(ty, None | Some(b"text" | b"html")) || xhtml_with_children);
            }
            if media {
                let ty = value(b"type");
                self.needs |= empty
                    || !matches!(ty, None | Some(b"plain" | b"html"))
                    || !starts_with_literal_text(skip_space(after));
            }
        }
        if let Some(p) = prefix {
            let declared =
                p == b"xml" || own.contains(&p) || self.scope.iter().rev().any(|(_, q)| *q == p);
            self.needs |= !declared;
        }
        if mode == Mode::Rss {
            match local {
                b"channel" | b"item" if prefix.is_some() => self.needs = true,
                b"channel" if depth == 2 => {
                    self.channels += 1;
                    self.needs |= self.channels > 1;
                }
                b"item" if depth == 2 => self.needs = true,
                _ => {}
            }
        }
        if !empty {
            self.scope.extend(own.into_iter().map(|p| (depth, p)));
            // Real feeds declare a few dozen prefixes; thousands would make
            // every prefixed tag a long search: that document goes to the pass.
            self.needs |= self.scope.len() > MAX_SCOPE;
        }
    }
}

fn skip_space(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    &b[n..]
}

/// A child element starts here (`<` and a name).
fn starts_with_element(b: &[u8]) -> bool {
    b.first() == Some(&b'<')
        && b.get(1)
            .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_')
}

/// Literal text that is not whitespace once read starts here: an ASCII
/// character that is neither markup nor an entity (which may stand for a
/// space).
fn starts_with_literal_text(b: &[u8]) -> bool {
    b.first()
        .is_some_and(|c| c.is_ascii_graphic() && *c != b'<' && *c != b'&')
}

/// The attributes of a start tag as written (`name="value"`, either quote,
/// whitespace around `=`); `None` if they are not that.
fn attributes(mut s: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    let mut out = Vec::new();
    loop {
        s = skip_space(s);
        if s.is_empty() {
            return Some(out);
        }
        let name_len = s
            .iter()
            .position(|c| c.is_ascii_whitespace() || *c == b'=')
            .unwrap_or(s.len());
        let (name, rest) = s.split_at(name_len);
        let rest = skip_space(rest).strip_prefix(b"=")?;
        let rest = skip_space(rest);
        let q = *rest.first()?;
        if q != b'"' && q != b'\'' {
            return None;
        }
        let len = memchr(q, &rest[1..])?;
        if name.is_empty() {
            return None;
        }
        out.push((name, &rest[1..1 + len]));
        s = &rest[len + 2..];
    }
}
