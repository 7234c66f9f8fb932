//! The console's static files, embedded in the binary: one stylesheet,
//! served as `/console/assets/console-<hash>.css` so it can be cached for
//! a year and still change with the binary. Nothing comes from a CDN.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::layout::Oops;

const CSS: &str = include_str!("assets/console.css");

/// The stylesheet's file name, with the first 12 hex digits of its SHA-256.
static CSS_NAME: LazyLock<String> = LazyLock::new(|| {
    let hash = hex::encode(Sha256::digest(CSS.as_bytes()));
    format!("console-{}.css", &hash[..12])
});

/// Where pages link the stylesheet.
pub fn stylesheet_url() -> String {
    format!("/console/assets/{}", *CSS_NAME)
}

/// Serves an embedded file by its hashed name.
pub async fn serve(Path(name): Path<String>) -> Response {
    if name != *CSS_NAME {
        return Oops::NotFound.into_response();
    }
    let mut response = CSS.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    response
}
