//! How a read's scope (sources, prefixes, types) becomes the filter
//! subjects of a JetStream consumer, and the same scope checked in process
//! for what the subjects cannot express.

use super::wire::Names;
use crate::event::SourceType;
use crate::log::ReadScope;

/// Most filter subjects one read consumer gets; a scope that needs more is
/// pushed down coarser (by source only, or by type only) and filtered here.
pub const MAX_FILTER_SUBJECTS: usize = 64;

/// The consumer filter of a read: subjects, and whether they express the
/// scope exactly (every message they let through is a row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Filter {
    /// Filter subjects; empty = the whole stream.
    pub(crate) subjects: Vec<String>,
    /// Whether the subjects are the scope.
    pub(crate) exact: bool,
}

impl Filter {
    /// The finest filter of at most [`MAX_FILTER_SUBJECTS`] subjects for
    /// `scope`: types × sources, else sources of any type, else types, else
    /// everything. Subjects never overlap (JetStream refuses that): a source
    /// or prefix inside another prefix is left out.
    pub(crate) fn of(names: &Names, scope: &ReadScope) -> Self {
        let mut types: Vec<SourceType> = Vec::new();
        for t in &scope.types {
            if !types.contains(t) {
                types.push(*t);
            }
        }
        let ids = id_patterns(scope);
        let by_ids = !scope.sources.is_empty() || !scope.prefixes.is_empty();
        let all_types = types.is_empty() || types.len() == SourceType::ALL.len();
        if by_ids {
            if let Some(ids) = &ids {
                if !all_types && types.len() * ids.len() <= MAX_FILTER_SUBJECTS {
                    let subjects = types
                        .iter()
                        .flat_map(|t| ids.iter().map(|i| names.filter(Some(*t), i)))
                        .collect();
                    return Self {
                        subjects,
                        exact: true,
                    };
                }
                if ids.len() <= MAX_FILTER_SUBJECTS {
                    return Self {
                        subjects: ids.iter().map(|i| names.filter(None, i)).collect(),
                        exact: all_types,
                    };
                }
            }
        }
        if !all_types {
            return Self {
                subjects: types.iter().map(|t| names.type_subjects(*t)).collect(),
                exact: !by_ids,
            };
        }
        Self {
            subjects: Vec::new(),
            exact: !by_ids,
        }
    }
}

/// The source-id part of the filter subjects of `scope`: exact ids and
/// `prefix.>`, none inside another; None when one cannot be a subject
/// (an empty token — no event subject has one, the in-process check then
/// decides).
fn id_patterns(scope: &ReadScope) -> Option<Vec<String>> {
    let mut prefixes: Vec<&str> = scope.prefixes.iter().map(String::as_str).collect();
    prefixes.sort_by_key(|p| p.len());
    let mut kept: Vec<&str> = Vec::new();
    for p in prefixes {
        let stem = p.strip_suffix('.')?;
        if !is_subject_tokens(stem) {
            return None;
        }
        if !kept.iter().any(|k| p.starts_with(k)) {
            kept.push(p);
        }
    }
    let mut out: Vec<String> = kept.iter().map(|p| format!("{p}>")).collect();
    for s in &scope.sources {
        if !is_subject_tokens(s) {
            return None;
        }
        if !kept.iter().any(|k| s.starts_with(k)) && !out.contains(s) {
            out.push(s.clone());
        }
    }
    Some(out)
}

/// Dot-separated tokens, none empty, no wildcard or space.
fn is_subject_tokens(s: &str) -> bool {
    s.split('.').all(|t| {
        !t.is_empty()
            && !t
                .bytes()
                .any(|b| matches!(b, b'*' | b'>' | b' ' | b'\t' | b'\r' | b'\n'))
    })
}

/// The scope, checked in process (what the SQL of one node does).
pub(crate) fn in_scope(scope: &ReadScope, source_id: &str, source_type: SourceType) -> bool {
    (scope.types.is_empty() || scope.types.contains(&source_type))
        && ((scope.sources.is_empty() && scope.prefixes.is_empty())
            || scope.sources.iter().any(|s| s == source_id)
            || scope
                .prefixes
                .iter()
                .any(|p| source_id.starts_with(p.as_str())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(sources: &[&str], prefixes: &[&str], types: &[SourceType]) -> ReadScope {
        ReadScope {
            sources: sources.iter().map(|s| s.to_string()).collect(),
            prefixes: prefixes.iter().map(|s| s.to_string()).collect(),
            types: types.to_vec(),
        }
    }

    #[test]
    fn scopes_map_to_non_overlapping_filter_subjects() {
        let n = Names::new("L");
        let all = Filter::of(&n, &ReadScope::default());
        assert_eq!(all.subjects, Vec::<String>::new());
        assert!(all.exact);

        let f = Filter::of(&n, &scope(&["a.b", "c", "c"], &["a."], &[]));
        assert_eq!(f.subjects, vec!["L.ev.*.a.>", "L.ev.*.c"]);
        assert!(f.exact);

        let f = Filter::of(
            &n,
            &scope(
                &["c"],
                &["k.s.", "k."],
                &[SourceType::Rss, SourceType::Html],
            ),
        );
        assert_eq!(
            f.subjects,
            vec!["L.ev.rss.k.>", "L.ev.rss.c", "L.ev.html.k.>", "L.ev.html.c"]
        );
        assert!(f.exact);

        let f = Filter::of(&n, &scope(&[], &[], &[SourceType::Json]));
        assert_eq!(f.subjects, vec!["L.ev.json.>"]);
        assert!(f.exact);
    }

    #[test]
    fn a_scope_too_wide_for_subjects_is_pushed_down_coarser() {
        let n = Names::new("L");
        let many: Vec<String> = (0..40).map(|i| format!("s{i}")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        // 2 types × 40 sources > 64: by source only, types checked here.
        let f = Filter::of(&n, &scope(&refs, &[], &[SourceType::Rss, SourceType::Json]));
        assert_eq!(f.subjects.len(), 40);
        assert!(f.subjects.iter().all(|s| s.starts_with("L.ev.*.")));
        assert!(!f.exact);
        // 100 sources and a type: by type only.
        let many: Vec<String> = (0..100).map(|i| format!("s{i}")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let f = Filter::of(&n, &scope(&refs, &[], &[SourceType::Rss]));
        assert_eq!(f.subjects, vec!["L.ev.rss.>"]);
        assert!(!f.exact);
        // An id that cannot be a subject: the in-process check decides.
        let f = Filter::of(&n, &scope(&["a..b"], &[], &[]));
        assert!(f.subjects.is_empty());
        assert!(!f.exact);
    }

    #[test]
    fn the_in_process_check_is_the_scope() {
        let s = scope(&["x"], &["k."], &[SourceType::Rss]);
        assert!(in_scope(&s, "x", SourceType::Rss));
        assert!(in_scope(&s, "k.a.b", SourceType::Rss));
        assert!(!in_scope(&s, "k", SourceType::Rss));
        assert!(!in_scope(&s, "kx", SourceType::Rss));
        assert!(!in_scope(&s, "x", SourceType::Html));
        assert!(in_scope(&ReadScope::default(), "any", SourceType::Html));
    }
}
