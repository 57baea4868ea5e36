use super::*;

#[test]
fn paths_serve_their_files() {
    let cases = [
        ("/console", Some("text/html; charset=utf-8")),
        ("/console/", Some("text/html; charset=utf-8")), // trailing slash
        ("/console/app.js", Some("text/javascript; charset=utf-8")),
        ("/console/app.css", Some("text/css; charset=utf-8")),
        ("/console/app.ts", None),     // no such file
        ("/console/../app.js", None),  // no path tricks: exact matches only
        ("/Console", None),            // case-sensitive
        ("/console/index.html", None), // the page lives at /console only
    ];
    for (path, content_type) in cases {
        assert_eq!(asset(path).map(|a| a.content_type), content_type, "{path}");
    }
}

#[test]
fn every_answer_carries_the_console_headers() {
    for (path, asset) in ASSETS {
        let response = asset.response();
        assert_eq!(response.status(), 200, "{path}");
        let header = |name: axum::http::HeaderName| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        assert_eq!(header(CONTENT_TYPE).as_deref(), Some(asset.content_type));
        assert_eq!(header(CACHE_CONTROL).as_deref(), Some("no-cache"), "{path}");
        assert_eq!(
            header(CONTENT_SECURITY_POLICY).as_deref(),
            Some("default-src 'self'"),
            "{path}"
        );
        assert_eq!(header(X_CONTENT_TYPE_OPTIONS).as_deref(), Some("nosniff"));
    }
}

#[test]
fn page_has_nothing_the_policy_would_block() {
    let html = INDEX_HTML.body;
    // Inline code and styles: `default-src 'self'` refuses them, so the page would break.
    for forbidden in [
        "<style",
        " style=",
        " onclick=",
        " onsubmit=",
        "javascript:",
    ] {
        assert!(
            !html.contains(forbidden),
            "index.html contains {forbidden:?}"
        );
    }
    for script in html.split("<script").skip(1) {
        let tag = script.split('>').next().unwrap_or_default();
        assert!(tag.contains("src="), "inline <script> in index.html: {tag}");
    }
    // Nothing from another origin (the console works offline, and CSP would refuse it anyway).
    for external in ["http://", "https://", "//cdn"] {
        assert!(!html.contains(external), "index.html loads {external:?}");
    }
    assert!(html.contains(r#"src="/console/app.js""#));
    assert!(html.contains(r#"href="/console/app.css""#));
}

#[test]
fn every_element_the_script_looks_up_exists() {
    // app.js finds elements with `$("id")`; a renamed id would fail only at run time.
    let script = APP_JS.body;
    let ids: Vec<&str> = script
        .split("$(\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert!(ids.len() > 20, "found only {ids:?}");
    for id in ids {
        assert!(
            INDEX_HTML.body.contains(&format!("id=\"{id}\"")),
            "app.js looks up #{id}, which index.html does not have"
        );
    }
}

#[test]
fn routes_build_for_any_state() {
    // The API merges these into its `Router<ApiState>`; a stateless router must fit.
    #[derive(Clone)]
    struct SomeState;
    let _: Router<SomeState> = routes();
    let _: Router = routes();
}
