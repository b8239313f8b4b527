//! The dashboard's files, compiled in. `/` is `index.html` with the asset names filled in;
//! each asset is served under a name carrying a hash of its content
//! (`/assets/app.3f9c2a1b7d4e5f60.js`) with a year-long, immutable cache lifetime, so a new
//! build is picked up at the next load of `/` (which is `no-cache`) and nothing is fetched
//! twice. The plain names (`/assets/app.js`) answer too, revalidated by `ETag`.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::api::error::ApiError;

/// One embedded file.
struct Source {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const SOURCES: &[Source] = &[
    Source {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("assets/app.js"),
    },
    Source {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("assets/app.css"),
    },
    Source {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("assets/favicon.svg"),
    },
];

const INDEX_TEMPLATE: &str = include_str!("assets/index.html");

/// The policy of every dashboard page: only this origin's own scripts, styles and
/// connections; no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// Cache lifetime of content-hashed assets: a year, never revalidated.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// Revalidate every time (with the `ETag`).
const NO_CACHE: &str = "no-cache";

/// A file ready to serve.
struct Asset {
    /// The content-hashed name.
    hashed_name: String,
    source: &'static Source,
    etag: String,
}

struct Assets {
    files: Vec<Asset>,
    index: String,
    index_etag: String,
}

fn digest(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..8])
}

fn assets() -> &'static Assets {
    static ASSETS: OnceLock<Assets> = OnceLock::new();
    ASSETS.get_or_init(|| {
        let files: Vec<Asset> = SOURCES
            .iter()
            .map(|source| {
                let hash = digest(source.body);
                let (stem, ext) = source
                    .name
                    .rsplit_once('.')
                    .expect("every asset name has an extension");
                Asset {
                    hashed_name: format!("{stem}.{hash}.{ext}"),
                    source,
                    etag: format!("\"{hash}\""),
                }
            })
            .collect();
        let mut index = INDEX_TEMPLATE.to_string();
        for file in &files {
            index = index.replace(
                &format!("{{{{{}}}}}", file.source.name),
                &format!("/assets/{}", file.hashed_name),
            );
        }
        let index_etag = format!("\"{}\"", digest(index.as_bytes()));
        Assets {
            files,
            index,
            index_etag,
        }
    })
}

/// The content-hashed URL path of an embedded asset (`app.js` →
/// `/assets/app.<hash>.js`), if there is such an asset.
pub fn hashed_path(name: &str) -> Option<String> {
    assets()
        .files
        .iter()
        .find(|f| f.source.name == name)
        .map(|f| format!("/assets/{}", f.hashed_name))
}

/// The names of the embedded assets.
pub fn names() -> impl Iterator<Item = &'static str> {
    SOURCES.iter().map(|s| s.name)
}

fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
}

fn respond(
    headers: &HeaderMap,
    etag: &str,
    cache: &'static str,
    content_type: &'static str,
    body: Vec<u8>,
) -> Response {
    let status = if not_modified(headers, etag) {
        StatusCode::NOT_MODIFIED
    } else {
        StatusCode::OK
    };
    let mut response = if status == StatusCode::NOT_MODIFIED {
        status.into_response()
    } else {
        (status, body).into_response()
    };
    let h = response.headers_mut();
    if status == StatusCode::OK {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// `GET /`: the app's page.
pub async fn index(headers: HeaderMap) -> Response {
    let assets = assets();
    let mut response = respond(
        &headers,
        &assets.index_etag,
        NO_CACHE,
        "text/html; charset=utf-8",
        assets.index.clone().into_bytes(),
    );
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// `GET /assets/{name}`: an embedded file, by its hashed name (cached for a year) or its
/// plain name (revalidated); 404 for anything else.
pub async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    let assets = assets();
    if let Some(file) = assets.files.iter().find(|f| f.hashed_name == name) {
        return Ok(respond(
            &headers,
            &file.etag,
            IMMUTABLE,
            file.source.content_type,
            file.source.body.to_vec(),
        ));
    }
    if let Some(file) = assets.files.iter().find(|f| f.source.name == name) {
        return Ok(respond(
            &headers,
            &file.etag,
            NO_CACHE,
            file.source.content_type,
            file.source.body.to_vec(),
        ));
    }
    Err(ApiError::not_found(
        "unknown_asset",
        format!("no dashboard asset {name:?}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_names_every_asset_by_its_hashed_path_and_has_no_placeholders_left() {
        let index = &assets().index;
        for name in names() {
            let path = hashed_path(name).expect("every source has a hashed path");
            assert!(index.contains(&path), "{path} missing from index.html");
        }
        assert!(!index.contains("{{"), "a placeholder is left in index.html");
    }

    #[test]
    fn hashed_names_change_with_the_content() {
        assert_ne!(digest(b"a"), digest(b"b"));
        let js = hashed_path("app.js").expect("app.js is embedded");
        assert!(js.starts_with("/assets/app.") && js.ends_with(".js") && js.len() > 20);
    }
}
