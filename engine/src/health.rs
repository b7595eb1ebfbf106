//! A source's health, decided in one place for every view of it
//! (`livestrom sources list`, `GET /v1/admin/sources`).

use crate::redact::redact_urls_in;
use crate::store::SourceState;

/// How a source is doing, from its stored state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Never polled successfully yet (and not failing).
    New,
    /// The last poll (or upstream connection) succeeded.
    Ok,
    /// The last poll failed; `last_error` says why.
    Failing,
}

impl Health {
    /// The health of a source with this stored state (`None`: never polled).
    pub fn of(state: Option<&SourceState>) -> Self {
        match state {
            Some(s) if s.last_error.is_some() => Health::Failing,
            Some(s) if s.last_success_at.is_some() => Health::Ok,
            _ => Health::New,
        }
    }

    /// `new`, `ok` or `failing`.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::New => "new",
            Health::Ok => "ok",
            Health::Failing => "failing",
        }
    }
}

/// The source's last error as shown to operators. Redacted again on the way
/// out: a message stored by an older version may quote a source URL with its
/// credentials.
pub fn shown_error(state: &SourceState) -> Option<String> {
    state
        .last_error
        .as_deref()
        .map(|e| redact_urls_in(e).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_wins_over_an_earlier_success() {
        let mut s = SourceState::default();
        assert_eq!(Health::of(None), Health::New);
        assert_eq!(Health::of(Some(&s)), Health::New);
        s.last_success_at = Some(chrono::Utc::now());
        assert_eq!(Health::of(Some(&s)), Health::Ok);
        s.last_error = Some("request to https://x.example/?token=secret failed".into());
        assert_eq!(Health::of(Some(&s)), Health::Failing);
        let shown = shown_error(&s).unwrap_or_default();
        assert!(!shown.contains("secret"), "{shown}");
    }
}
