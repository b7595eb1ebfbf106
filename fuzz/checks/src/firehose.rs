//! `firehose_json`: a polled firehose JSON document mapped with JSON
//! pointers, and the same mapping on the streamed path.

use livestrom_engine::config::{FieldMap, FirehoseFormat, FirehoseSettings};
use livestrom_engine::sources::firehose::{self, FirehoseError};
use livestrom_engine::SourceType;
use serde_json::Value;
use url::Url;

/// `items` pointers a control byte chooses from (`None`: the root).
const POINTERS: [Option<&str>; 4] = [None, Some("/items"), Some("/data/items"), Some("/0")];

/// Firehose settings chosen by one control byte: the `items` pointer (bits
/// 0-1) and default or custom field pointers (bit 2).
pub fn settings(control: u8, format: FirehoseFormat) -> FirehoseSettings {
    let fields = if control & 4 == 0 {
        FieldMap::default()
    } else {
        FieldMap {
            id: Some("/id".to_owned()),
            title: Some("/title".to_owned()),
            url: Some("/link".to_owned()),
            content: Some("/summary".to_owned()),
        }
    };
    FirehoseSettings {
        format,
        items: POINTERS[usize::from(control & 3)].map(str::to_owned),
        fields,
    }
}

/// The base URL relative item links resolve against.
pub fn base() -> Url {
    Url::parse("https://firehose.example.test/api/recent")
        .unwrap_or_else(|e| panic!("fixed url: {e}"))
}

/// Input: one control byte ([`settings`]), then the document. Checks that
/// mapping is deterministic, accounts for every array element (kept +
/// skipped), keeps only usable items with http(s) links, agrees with the
/// streamed path's mapping of the same value, and that the items' identities
/// hold ([`crate::normalise::check_items`]).
pub fn check(data: &[u8]) {
    let ([control], body) = crate::split_control::<1>(data);
    let settings = settings(control, FirehoseFormat::Json);
    let base = base();
    let doc = firehose::parse_json_document(body, &settings, &base);
    let again = firehose::parse_json_document(body, &settings, &base);
    let polled = firehose::parse_json(body, &settings, &base);
    let doc = match (doc, again) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b, "two mappings of the same document differ");
            a
        }
        (Err(a), Err(b)) => {
            assert_eq!(
                a.to_string(),
                b.to_string(),
                "two mappings fail differently"
            );
            assert!(
                polled.is_err(),
                "parse_json accepted what the document parse refused"
            );
            return;
        }
        (a, b) => panic!("one mapping failed, the other did not: {a:?} / {b:?}"),
    };
    let items = &doc.parsed.items;

    // Every element is kept or counted as skipped.
    let value: Value =
        serde_json::from_slice(body).unwrap_or_else(|e| panic!("mapped, yet not JSON: {e}"));
    let pointer = settings.items.as_deref().unwrap_or("");
    let Some(Value::Array(elements)) = value.pointer(pointer) else {
        panic!("mapped, yet {pointer:?} is not an array");
    };
    assert_eq!(
        items.len() + doc.skipped,
        elements.len(),
        "elements unaccounted for"
    );

    // `parse_json` refuses exactly the all-skipped case.
    match &polled {
        Err(FirehoseError::NothingKept { seen, .. }) => {
            assert!(
                items.is_empty() && doc.skipped == *seen,
                "NothingKept, yet items were kept"
            );
        }
        Err(e) => panic!("parse_json failed where the document mapped: {e}"),
        Ok(p) => {
            assert!(
                !(items.is_empty() && doc.skipped > 0),
                "all skipped, yet not refused"
            );
            assert_eq!(
                &p.items, items,
                "parse_json and the document mapping differ"
            );
        }
    }

    for item in items {
        assert!(!item.is_blank(), "a blank item was kept: {item:?}");
        if let Some(u) = &item.url {
            let parsed = Url::parse(u).unwrap_or_else(|e| panic!("item url {u:?}: {e}"));
            assert!(
                matches!(parsed.scheme(), "http" | "https"),
                "item url {u:?}"
            );
        }
    }

    // The streamed path maps the same value to the same items.
    let mut streamed = Vec::new();
    match firehose::map_message(&value, &settings, &base, &mut streamed) {
        Ok(skipped) => {
            assert_eq!(&streamed, items, "the streamed mapping differs");
            assert_eq!(
                skipped, doc.skipped,
                "the streamed mapping skips differently"
            );
        }
        Err(e) => panic!("the streamed mapping refused a mapped document: {e}"),
    }

    crate::normalise::check_items(
        &crate::normalise::source(SourceType::Firehose, &base),
        items,
    );
}
