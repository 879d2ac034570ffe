//! HTTP range requests (RFC 9110, section 14) on downloadable files, so GDAL, QGIS, rasterio and
//! TiTiler can read a COG by URL, fetching only the bytes they need: `Accept-Ranges: bytes` on every
//! answer, `206 Partial Content` with `Content-Range` for one satisfiable range, `416` with
//! `Content-Range: bytes */len` for an unsatisfiable one. A request with several ranges gets the whole
//! file (200), which the RFC allows.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// What a `Range` header asks of a file of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Wanted {
    /// The whole file (no range, several ranges, or a header we do not read).
    Whole,
    /// Bytes `start..=end`.
    Part(u64, u64),
    /// Nothing of it can be served.
    Unsatisfiable,
}

/// Reads a `Range` header: `bytes=a-b`, `bytes=a-` or `bytes=-n`.
#[must_use]
pub fn wanted(range: Option<&str>, len: u64) -> Wanted {
    let Some(spec) = range.and_then(|r| r.trim().strip_prefix("bytes=")) else {
        return Wanted::Whole;
    };
    if spec.contains(',') {
        return Wanted::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Wanted::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    let parsed = match (a.is_empty(), b.is_empty()) {
        // The last n bytes.
        (true, false) => match b.parse::<u64>() {
            Ok(0) => return Wanted::Unsatisfiable,
            Ok(n) => Some((len.saturating_sub(n), len.saturating_sub(1))),
            Err(_) => None,
        },
        (false, true) => a.parse::<u64>().ok().map(|s| (s, len.saturating_sub(1))),
        (false, false) => match (a.parse::<u64>(), b.parse::<u64>()) {
            (Ok(s), Ok(e)) if s <= e => Some((s, e.min(len.saturating_sub(1)))),
            _ => None,
        },
        (true, true) => None,
    };
    match parsed {
        None => Wanted::Whole,
        Some((s, _)) if len == 0 || s >= len => Wanted::Unsatisfiable,
        Some((s, e)) => Wanted::Part(s, e),
    }
}

/// Serves the file at `path` with `headers` (content type, disposition, …), honouring `Range`.
pub async fn serve_file(
    path: &Path,
    request: &HeaderMap,
    mut headers: HeaderMap,
) -> Result<Response, std::io::Error> {
    let mut file = tokio::fs::File::open(path).await?;
    let len = file.metadata().await?.len();
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let range = request.get(header::RANGE).and_then(|v| v.to_str().ok());
    match wanted(range, len) {
        Wanted::Whole => {
            let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
            file.read_to_end(&mut bytes).await?;
            Ok((StatusCode::OK, headers, bytes).into_response())
        }
        Wanted::Part(start, end) => {
            file.seek(std::io::SeekFrom::Start(start)).await?;
            let n = end - start + 1;
            let mut bytes = vec![0u8; usize::try_from(n).unwrap_or(0)];
            file.read_exact(&mut bytes).await?;
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
                headers.insert(header::CONTENT_RANGE, v);
            }
            Ok((StatusCode::PARTIAL_CONTENT, headers, bytes).into_response())
        }
        Wanted::Unsatisfiable => {
            headers.remove(header::CONTENT_DISPOSITION);
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                headers.insert(header::CONTENT_RANGE, v);
            }
            Ok((StatusCode::RANGE_NOT_SATISFIABLE, headers, Body::empty()).into_response())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_headers_are_read_as_the_rfc_says() {
        assert_eq!(wanted(None, 100), Wanted::Whole);
        assert_eq!(wanted(Some("bytes=0-15"), 100), Wanted::Part(0, 15));
        assert_eq!(wanted(Some("bytes=90-200"), 100), Wanted::Part(90, 99));
        assert_eq!(wanted(Some("bytes=50-"), 100), Wanted::Part(50, 99));
        assert_eq!(wanted(Some("bytes=-10"), 100), Wanted::Part(90, 99));
        assert_eq!(wanted(Some("bytes=-500"), 100), Wanted::Part(0, 99));
        assert_eq!(wanted(Some("bytes=100-"), 100), Wanted::Unsatisfiable);
        assert_eq!(wanted(Some("bytes=-0"), 100), Wanted::Unsatisfiable);
        assert_eq!(wanted(Some("bytes=0-0"), 0), Wanted::Unsatisfiable);
        assert_eq!(wanted(Some("bytes=5-2"), 100), Wanted::Whole);
        assert_eq!(wanted(Some("bytes=0-1,5-6"), 100), Wanted::Whole);
        assert_eq!(wanted(Some("items=0-1"), 100), Wanted::Whole);
        assert_eq!(wanted(Some("bytes=x-1"), 100), Wanted::Whole);
    }
}
