//! The web dashboard: the pages, scripts and styles of `web/`, embedded in
//! the binary and served at `/` and `/assets/{name}`.
//!
//! These routes need no token: the assets hold no data. The scripts call
//! the REST API with the user's token, which the browser keeps in
//! localStorage and sends as an `Authorization: Bearer` header. The API
//! never reads cookies, so another site cannot make a browser send an
//! authenticated request (no cross-site request forgery), and the strict
//! Content-Security-Policy below (same-origin scripts only, nothing inline)
//! keeps injected markup from running even if some text escaped escaping.

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::AppState;

/// Same-origin scripts, styles, images and API calls; no inline code, no
/// plugins, no framing, no form posts elsewhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $content_type:expr) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_bytes!(concat!("../../web/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file the dashboard serves (a test checks that `web/` has no others).
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("ui.js", JS),
    asset!("overview.js", JS),
    asset!("jobs.js", JS),
    asset!("job.js", JS),
    asset!("tasks.js", JS),
    asset!("timeline.js", JS),
    asset!("attempt.js", JS),
    asset!("modules.js", JS),
    asset!("submit.js", JS),
];

/// The dashboard's routes (public; see the module docs for why).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/assets/{name}", get(asset))
}

fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

fn serve(asset: &'static Asset) -> Response {
    (
        [
            (header::CONTENT_TYPE, asset.content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            // The login link carries the token in the fragment, which is
            // never sent; this keeps even the page address to ourselves.
            (header::REFERRER_POLICY, "no-referrer"),
            // Assets change with the binary: always revalidate.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        asset.body,
    )
        .into_response()
}

async fn index() -> Response {
    serve(find("index.html").expect("index.html is embedded"))
}

async fn asset(Path(name): Path<String>) -> Response {
    match find(&name).filter(|a| a.name != "index.html") {
        Some(asset) => serve(asset),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../web")
    }

    #[tokio::test]
    async fn index_is_html_with_a_strict_policy() {
        let res = index().await;
        assert_eq!(res.status(), StatusCode::OK);
        let h = res.headers();
        assert_eq!(h[header::CONTENT_TYPE], "text/html; charset=utf-8");
        let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    }

    #[tokio::test]
    async fn assets_have_their_types_and_unknown_ones_are_404() {
        let res = asset(Path("app.js".into())).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()[header::CONTENT_TYPE], JS);
        let res = asset(Path("style.css".into())).await;
        assert_eq!(
            res.headers()[header::CONTENT_TYPE],
            "text/css; charset=utf-8"
        );
        for missing in ["nope.js", "../Cargo.toml", "tests", "package.json"] {
            let res = asset(Path(missing.into())).await;
            assert_eq!(res.status(), StatusCode::NOT_FOUND, "{missing}");
        }
    }

    /// A file added to `web/` but not to `ASSETS` would be a 404 in the
    /// browser; catch it here instead.
    #[test]
    fn every_web_file_is_embedded() {
        let ignored = [
            "package.json",
            "package-lock.json",
            ".gitignore",
            "node_modules",
            "tests",
        ];
        for entry in std::fs::read_dir(web_dir()).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if !ignored.contains(&name.as_str()) {
                assert!(find(&name).is_some(), "web/{name} is not in ASSETS");
            }
        }
    }

    /// Every `import ... from './x.js'` and `/assets/x` names an embedded file.
    #[test]
    fn references_resolve() {
        for asset in ASSETS {
            let text = std::str::from_utf8(asset.body).unwrap();
            for marker in ["from './", "/assets/"] {
                for rest in text.split(marker).skip(1) {
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || ".-_".contains(*c))
                        .collect();
                    assert!(
                        find(&name).is_some(),
                        "{} refers to {name}, which is not embedded",
                        asset.name
                    );
                }
            }
        }
    }

    /// The scripts build the page with the DOM, never by parsing strings as
    /// HTML, so names like `<script>` always show as text.
    #[test]
    fn scripts_never_parse_html() {
        for asset in ASSETS.iter().filter(|a| a.content_type == JS) {
            let text = std::str::from_utf8(asset.body).unwrap();
            for sink in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
            ] {
                assert!(!text.contains(sink), "{} uses {sink}", asset.name);
            }
        }
    }
}
