//! Bearer tokens: the one check the publish API and the admin API share.

// The refusal is the ready HTTP answer, built once per refused request.
#![allow(clippy::result_large_err)]

use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Response, StatusCode};

use crate::dispatch::Body;
use crate::transports::error;

/// Compare secrets in time independent of where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `Ok` if `headers` carry `Authorization: Bearer <expected>`; else the
/// answer: 401 without a token, 403 with a wrong one.
pub(crate) fn check_bearer(
    headers: &HeaderMap,
    expected: &str,
    what: &str,
) -> Result<(), Response<Body>> {
    let token = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match token {
        None => {
            let mut response = error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                format!("missing `Authorization: Bearer TOKEN` ({what})"),
            );
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            Err(response)
        }
        Some(t) if !same_secret(t.as_bytes(), expected.as_bytes()) => Err(error(
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
        let status = |h| {
            check_bearer(&h, "s3cret", "token")
                .err()
                .map(|r| r.status())
        };
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
    }
}
