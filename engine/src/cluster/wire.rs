//! What a clustered node writes to and reads from NATS, in one place: the
//! stream's and buckets' names, the subject of a source's events, the
//! message id that de-duplicates a repeated publish, the headers that carry
//! item state beside an event, and how the id a client sees is put into the
//! stored JSON.
//!
//! An event is published as its StreamEvent JSON with the nil id: the id
//! exists only once the stream has given the message a sequence and a
//! timestamp ([`super::cursor::encode`]). Every reader puts it in with
//! [`with_id`] (StreamEvent serialises `id` first, so that is a fixed
//! 36-byte window, no JSON re-encoding).

use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::event::SourceType;

/// Header: the item's significance fingerprint and aliases after this
/// event (JSON `{"fp":…,"aliases":[…]}`), so a new lease holder can rebuild
/// item state from the log.
pub const STATE_HEADER: &str = "Livestrom-Item-State";

/// Start of every published body: `{"id":"` then the nil UUID.
const ID_PREFIX: &str = "{\"id\":\"";
/// Length of a hyphenated UUID.
const UUID_LEN: usize = 36;

/// The names of one cluster's stream, subjects and buckets, all derived
/// from `[cluster] stream` (the prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    prefix: String,
}

/// The key-value buckets of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// Source leases (max age = the lease TTL).
    Leases,
    /// API keys.
    Keys,
    /// Source state (validators, health, snapshot, upstream cursor).
    Sources,
    /// Item state (fingerprint, version, last event) per source and item.
    Items,
    /// Engines and edges seen (heartbeats; max age = the lease TTL).
    Nodes,
}

impl Bucket {
    /// The suffix after the prefix.
    fn suffix(self) -> &'static str {
        match self {
            Self::Leases => "LEASES",
            Self::Keys => "KEYS",
            Self::Sources => "SOURCES",
            Self::Items => "ITEMS",
            Self::Nodes => "NODES",
        }
    }
}

impl Names {
    /// Names under `prefix` (a validated `[cluster] stream`).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// The JetStream stream of events.
    pub fn stream(&self) -> &str {
        &self.prefix
    }

    /// Every event subject: `<prefix>.ev.>`.
    pub fn all_events(&self) -> String {
        format!("{}.ev.>", self.prefix)
    }

    /// The subject of a source's events: `<prefix>.ev.<type>.<source id>`
    /// (the id's dots are subject tokens).
    pub fn subject(&self, source_type: SourceType, source_id: &str) -> String {
        format!("{}.ev.{}.{}", self.prefix, source_type.as_str(), source_id)
    }

    /// The subjects of every source whose id starts with `prefix` (which
    /// ends with a dot, as filters write it), of any type.
    pub fn prefix_subjects(&self, prefix: &str) -> String {
        format!("{}.ev.*.{}>", self.prefix, prefix)
    }

    /// All subjects of one source type.
    pub fn type_subjects(&self, source_type: SourceType) -> String {
        format!("{}.ev.{}.>", self.prefix, source_type.as_str())
    }

    /// A consumer filter: the subjects of `source_type` (any type when None)
    /// whose source id is `ids` — an id, or a prefix ending in a dot
    /// followed by `>` (`kommun.>`).
    pub fn filter(&self, source_type: Option<SourceType>, ids: &str) -> String {
        let ty = source_type.map_or("*", SourceType::as_str);
        format!("{}.ev.{ty}.{ids}", self.prefix)
    }

    /// The source type and id of an event subject, if it is one.
    pub fn parse_subject<'s>(&self, subject: &'s str) -> Option<(SourceType, &'s str)> {
        let rest = subject.strip_prefix(&self.prefix)?.strip_prefix(".ev.")?;
        let (ty, id) = rest.split_once('.')?;
        let ty = SourceType::ALL.into_iter().find(|t| t.as_str() == ty)?;
        (!id.is_empty()).then_some((ty, id))
    }

    /// A bucket's name: `<prefix>_<KIND>`.
    pub fn bucket(&self, bucket: Bucket) -> String {
        format!("{}_{}", self.prefix, bucket.suffix())
    }
}

/// The message id of version `version` of `item_id` of `source_id`:
/// JetStream drops a second publish with the same id inside the stream's
/// duplicate window, so a poll repeated after a failover stores each
/// version once. The item id is hashed (any length, any characters).
pub fn msg_id(source_id: &str, item_id: &str, version: u32) -> String {
    format!("{source_id}:{version}:{}", short_hash(item_id))
}

/// The key of an item's state in the items bucket:
/// `<source id>.<hash of item id>` (keys allow few characters; the item
/// id itself is inside the value).
pub fn item_key(source_id: &str, item_id: &str) -> String {
    format!("{source_id}.{}", short_hash(item_id))
}

/// The filter matching every item key of a source (one more token).
pub fn item_keys_of(source_id: &str) -> String {
    format!("{source_id}.*")
}

/// 128 bits of SHA-256 in hex.
fn short_hash(s: &str) -> String {
    let d = Sha256::digest(s.as_bytes());
    hex::encode(&d[..16])
}

/// A published body does not start with the id placeholder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stored event does not start with {{\"id\":\"<uuid>\" (got {got:?})")]
pub struct NotAnEvent {
    /// The first bytes, for the log.
    pub got: String,
}

/// `json` (a published StreamEvent) with its id set to `id`.
pub fn with_id(json: &str, id: Uuid) -> Result<String, NotAnEvent> {
    let end = ID_PREFIX.len() + UUID_LEN;
    let fits = json.starts_with(ID_PREFIX)
        && json.len() > end
        && json.as_bytes().get(end) == Some(&b'"')
        && json.is_char_boundary(end);
    if !fits {
        return Err(NotAnEvent {
            got: json.chars().take(48).collect(),
        });
    }
    let mut out = String::with_capacity(json.len());
    out.push_str(ID_PREFIX);
    out.push_str(id.hyphenated().encode_lower(&mut Uuid::encode_buffer()));
    out.push_str(&json[end..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{CommittedEvent, StreamEvent};

    #[test]
    fn subjects_follow_the_interface_and_parse_back() {
        let n = Names::new("LIVESTROM");
        let s = n.subject(SourceType::Rss, "news.bbc.world");
        assert_eq!(s, "LIVESTROM.ev.rss.news.bbc.world");
        assert_eq!(
            n.parse_subject(&s),
            Some((SourceType::Rss, "news.bbc.world"))
        );
        assert_eq!(n.parse_subject("OTHER.ev.rss.a"), None);
        assert_eq!(n.parse_subject("LIVESTROM.ev.nope.a"), None);
        assert_eq!(n.prefix_subjects("news."), "LIVESTROM.ev.*.news.>");
        assert_eq!(n.filter(None, "news.>"), n.prefix_subjects("news."));
        assert_eq!(
            n.filter(Some(SourceType::Html), "a.b"),
            "LIVESTROM.ev.html.a.b"
        );
        assert_eq!(n.bucket(Bucket::Leases), "LIVESTROM_LEASES");
    }

    #[test]
    fn message_ids_name_source_item_and_version() {
        assert_eq!(msg_id("a", "x", 1), msg_id("a", "x", 1));
        assert_ne!(msg_id("a", "x", 1), msg_id("a", "x", 2));
        assert_ne!(msg_id("a", "x", 1), msg_id("b", "x", 1));
        assert_ne!(msg_id("a", "x", 1), msg_id("a", "y", 1));
        assert!(item_key("a.b", "any thing / ü").starts_with("a.b."));
    }

    #[test]
    fn the_id_is_put_into_a_serialised_event() {
        let now = chrono::Utc::now();
        let ev = CommittedEvent::new(StreamEvent {
            id: Uuid::nil(),
            schema_version: 1,
            source_id: "a".into(),
            source_type: SourceType::Rss,
            url: "https://example.com/".into(),
            title: "ü".into(),
            content: String::new(),
            tags: vec![],
            fetched_at: now,
            emitted_at: now,
            item_id: "x".into(),
            version: 1,
            supersedes: None,
            diff: None,
            added: None,
            published_at: None,
        });
        let id = Uuid::now_v7();
        let out = with_id(&ev.json, id).unwrap_or_else(|e| panic!("{e}"));
        let back: StreamEvent = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.id, id);
        assert_eq!(back.title, "ü");
        assert!(with_id("{\"title\":1}", id).is_err());
        assert!(with_id("", id).is_err());
    }
}
