//! The Nimbus web console: a small single-page app, served by `nimbus server` under `/console`.
//!
//! The crate owns only static files (`assets/`: `index.html`, `app.js`, `app.css`), embedded in
//! the binary with `include_str!`, and the routes that serve them. The page holds no data: it asks
//! for the admin token and calls the REST API (`/v1`, docs/api.md) from the browser, so these
//! routes need no auth and no state, and the crate must never read the store or the token.
//!
//! Every answer carries `Content-Security-Policy: default-src 'self'` (so the page runs only its
//! own script and style files, and nothing inline) and `Cache-Control: no-cache` (a browser
//! revalidates after an upgrade instead of mixing old and new files).

#![forbid(unsafe_code)]

use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

#[cfg(test)]
mod tests;

/// The policy every console answer carries: scripts, styles and `fetch` from this origin only.
pub const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'self'";

/// One embedded file and its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static str,
}

const INDEX_HTML: Asset = Asset {
    content_type: "text/html; charset=utf-8",
    body: include_str!("../assets/index.html"),
};
const APP_JS: Asset = Asset {
    content_type: "text/javascript; charset=utf-8",
    body: include_str!("../assets/app.js"),
};
const APP_CSS: Asset = Asset {
    content_type: "text/css; charset=utf-8",
    body: include_str!("../assets/app.css"),
};

/// Every console path and the file it serves (`/console/` too: a typed trailing slash works).
pub const ASSETS: [(&str, Asset); 4] = [
    ("/console", INDEX_HTML),
    ("/console/", INDEX_HTML),
    ("/console/app.js", APP_JS),
    ("/console/app.css", APP_CSS),
];

/// The asset served at `path`, if any.
pub fn asset(path: &str) -> Option<Asset> {
    ASSETS
        .iter()
        .find(|(served_at, _)| *served_at == path)
        .map(|(_, asset)| *asset)
}

/// `GET` routes for the console's files. Stateless, so they merge into a router of any state.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    ASSETS.iter().fold(Router::new(), |router, &(path, asset)| {
        router.route(path, get(move || async move { asset.response() }))
    })
}

// === impl Asset ===

impl Asset {
    /// The `200` answer with the file and the console's headers.
    pub fn response(self) -> Response {
        (
            [
                (CONTENT_TYPE, self.content_type),
                (CACHE_CONTROL, "no-cache"),
                (CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY_VALUE),
                // Browsers must not guess another type, and other sites may not frame the page.
                (X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (X_FRAME_OPTIONS, "DENY"),
                (REFERRER_POLICY, "no-referrer"),
            ],
            self.body,
        )
            .into_response()
    }
}
