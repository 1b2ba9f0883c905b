//! Static assets, compiled into the binary: no CDN, no files to install.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::AppState;

const CSS: &str = include_str!("../static/console.css");
const ICON: &str = include_str!("../static/favicon.svg");

/// Asset URLs carry the crate version, so a long cache lifetime is safe across upgrades.
pub(crate) const CSS_PATH: &str = concat!("/static/", env!("CARGO_PKG_VERSION"), "/console.css");
pub(crate) const ICON_PATH: &str = concat!("/static/", env!("CARGO_PKG_VERSION"), "/favicon.svg");
const CACHE: &str = "public, max-age=31536000, immutable";

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            CSS_PATH,
            get(|| async {
                (
                    [
                        (header::CONTENT_TYPE, "text/css; charset=utf-8"),
                        (header::CACHE_CONTROL, CACHE),
                    ],
                    CSS,
                )
                    .into_response()
            }),
        )
        .route(
            ICON_PATH,
            get(|| async {
                (
                    [
                        (header::CONTENT_TYPE, "image/svg+xml"),
                        (header::CACHE_CONTROL, CACHE),
                    ],
                    ICON,
                )
                    .into_response()
            }),
        )
}
