//! The API token: where it comes from, and how a request proves it has it.
//!
//! A request carries the token as `Authorization: Bearer T` or as
//! `X-Session-Id: T` (what the app sends). Tokens are compared in constant
//! time: both sides are hashed with SHA-256 and the digests compared without
//! an early exit, so neither the content nor the length of the token leaks
//! through timing.

use anyhow::{Result, bail};
use axum::http::HeaderMap;
use sha2::{Digest, Sha256};

/// The shortest token `serve` accepts: a guessable token is no token.
pub const TOKEN_CHARS_MIN: usize = 16;

/// The secret every request must present.
#[derive(Clone)]
pub struct ApiToken {
    digest: [u8; 32],
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(<secret>)")
    }
}

fn digest(text: &[u8]) -> [u8; 32] {
    Sha256::digest(text).into()
}

impl ApiToken {
    /// Checks and keeps `token`. Refuses one that is missing, too short, or
    /// not plain visible ASCII (it must fit in an HTTP header unchanged).
    pub fn new(token: Option<&str>) -> Result<ApiToken> {
        let Some(token) = token else {
            bail!(
                "serve needs an API token: set DAVSYNC_API_TOKEN (preferred: it stays out of the \
                 process list) or pass --token; it must be at least {TOKEN_CHARS_MIN} characters"
            );
        };
        if token.len() < TOKEN_CHARS_MIN {
            bail!("the API token is too short: use at least {TOKEN_CHARS_MIN} characters");
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            bail!("the API token must be visible ASCII characters without spaces");
        }
        Ok(ApiToken { digest: digest(token.as_bytes()) })
    }

    /// Whether `presented` is the token, in time independent of both.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let other = digest(presented);
        let diff = self.digest.iter().zip(other.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }

    /// Whether the request's headers carry the token.
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        presented_tokens(headers).any(|t| self.matches(t))
    }
}

/// Every token candidate in the request: each `Authorization: Bearer` value
/// and each `X-Session-Id` value.
fn presented_tokens(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    let bearer = headers.get_all(axum::http::header::AUTHORIZATION).iter().filter_map(|v| {
        let v = v.as_bytes();
        let (scheme, rest) = v.split_at_checked(7)?;
        scheme.eq_ignore_ascii_case(b"bearer ").then(|| rest.trim_ascii())
    });
    let session = headers.get_all("x-session-id").iter().map(|v| v.as_bytes().trim_ascii());
    bearer.chain(session)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    const T: &str = "0123456789abcdef-token";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_token_is_required_long_enough_and_printable() {
        assert!(ApiToken::new(None).unwrap_err().to_string().contains("DAVSYNC_API_TOKEN"));
        assert!(ApiToken::new(Some("short")).unwrap_err().to_string().contains("too short"));
        assert!(ApiToken::new(Some("has a space in it!!")).is_err());
        assert!(ApiToken::new(Some(T)).is_ok());
    }

    #[test]
    fn only_the_exact_token_matches() {
        let t = ApiToken::new(Some(T)).unwrap();
        assert!(t.matches(T.as_bytes()));
        assert!(!t.matches(b""));
        assert!(!t.matches(&T.as_bytes()[..T.len() - 1]));
        assert!(!t.matches(format!("{T}x").as_bytes()));
        assert!(!t.matches(T.to_uppercase().as_bytes()));
    }

    #[test]
    fn bearer_and_session_headers_are_accepted() {
        let t = ApiToken::new(Some(T)).unwrap();
        assert!(t.admits(&headers(&[("authorization", &format!("Bearer {T}"))])));
        assert!(t.admits(&headers(&[("authorization", &format!("bearer  {T} "))])));
        assert!(t.admits(&headers(&[("x-session-id", T)])));
        // A wrong header next to a right one still admits: each is a candidate.
        assert!(t.admits(&headers(&[("x-session-id", "nope"), ("authorization", &format!("Bearer {T}"))])));
    }

    #[test]
    fn anything_else_is_refused() {
        let t = ApiToken::new(Some(T)).unwrap();
        assert!(!t.admits(&HeaderMap::new()));
        assert!(!t.admits(&headers(&[("authorization", T)])));
        assert!(!t.admits(&headers(&[("authorization", &format!("Basic {T}"))])));
        assert!(!t.admits(&headers(&[("authorization", "Bearer wrong-token-wrong-token")])));
        assert!(!t.admits(&headers(&[("x-session-id", "")])));
        assert!(!t.admits(&headers(&[("x-api-key", T)])));
    }

    #[test]
    fn debug_never_shows_the_token() {
        let t = ApiToken::new(Some(T)).unwrap();
        assert!(!format!("{t:?}").contains(T));
    }
}
