//! Bearer tokens: the one check the publish API and the admin API share.

use http::HeaderMap;
use http::StatusCode;
use http::header::AUTHORIZATION;

use crate::http::ApiError;

/// Compare secrets in time independent of where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token of an `Authorization: Bearer TOKEN` header. The scheme is
/// case-insensitive (RFC 9110, section 11.1).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start_matches(' '))
}

/// `Ok` if `headers` carry `Authorization: Bearer <expected>`; else 401
/// without a token, 403 with a wrong one.
pub(crate) fn check_bearer(
    headers: &HeaderMap,
    expected: &str,
    what: &str,
) -> Result<(), ApiError> {
    match bearer(headers) {
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!("missing `Authorization: Bearer TOKEN` ({what})"),
        )),
        Some(t) if !same_secret(t.as_bytes(), expected.as_bytes()) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("wrong {what}"),
        )),
        Some(_) => Ok(()),
    }
}

/// 128 random bits as hex: a token for when the operator sets none.
pub fn random_token() -> String {
    let mut bytes = [0u8; 16];
    // Without OS randomness there is no safe token: refuse to run.
    getrandom::fill(&mut bytes).expect("the OS random number generator failed");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(AUTHORIZATION, HeaderValue::from_str(a).unwrap());
        }
        h
    }

    #[test]
    fn secrets_compare_exactly() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"ab"));
    }

    #[test]
    fn missing_wrong_and_right_tokens() {
        let status = |h| check_bearer(&h, "s3cret", "token").err().map(|e| e.status);
        assert_eq!(status(headers(None)), Some(StatusCode::UNAUTHORIZED));
        assert_eq!(
            status(headers(Some("Basic x"))),
            Some(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            status(headers(Some("Bearer s3cre"))),
            Some(StatusCode::FORBIDDEN)
        );
        assert_eq!(status(headers(Some("Bearer s3cret"))), None);
        assert_eq!(status(headers(Some("bearer s3cret"))), None);
        assert_eq!(status(headers(Some("BEARER s3cret"))), None);
    }
}
