//! The viewer page: built into the binary so an installed daemon needs nothing else, or served from a
//! folder (`web_dir`) for people changing the page without rebuilding.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::AppState;

/// Every file of the page. Flat on purpose: the `/:file` route serves plain names only, and the ES modules
/// import each other as `./name.js`. The unit test below finds a file referenced but missing here.
const BUILT_IN: &[(&str, &str)] = &[
    ("index.html", include_str!("../../web/index.html")),
    ("style.css", include_str!("../../web/style.css")),
    ("app.js", include_str!("../../web/app.js")),
    ("backoff.js", include_str!("../../web/backoff.js")),
    ("render.js", include_str!("../../web/render.js")),
    ("session.js", include_str!("../../web/session.js")),
    ("stats.js", include_str!("../../web/stats.js")),
    ("transport.js", include_str!("../../web/transport.js")),
    ("ticket.js", include_str!("../../web/ticket.js")),
];

#[derive(Clone, Default)]
pub struct WebFiles {
    dir: Option<Arc<PathBuf>>,
}

impl WebFiles {
    pub fn built_in() -> Self {
        Self { dir: None }
    }

    pub fn from_dir(dir: PathBuf) -> Self {
        Self {
            dir: Some(Arc::new(dir)),
        }
    }

    async fn get(&self, name: &str) -> Option<Vec<u8>> {
        // Only plain file names: no path separators, no "..", nothing hidden.
        let plain = !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        if !plain {
            return None;
        }
        match &self.dir {
            Some(dir) => tokio::fs::read(dir.join(name)).await.ok(),
            None => BUILT_IN
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, body)| body.as_bytes().to_vec()),
        }
    }
}

pub async fn index(State(state): State<AppState>) -> Response {
    serve(&state.web, "index.html").await
}

pub async fn file(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    serve(&state.web, &name).await
}

async fn serve(web: &WebFiles, name: &str) -> Response {
    match web.get(name).await {
        Some(body) => {
            let mime = match name.rsplit('.').next() {
                Some("html") => "text/html; charset=utf-8",
                Some("js") => "text/javascript; charset=utf-8",
                Some("css") => "text/css; charset=utf-8",
                Some("png") => "image/png",
                Some("svg") => "image/svg+xml",
                _ => "application/octet-stream",
            };
            // The page changes with the daemon; stale cached copies would speak an old protocol.
            (
                [(header::CONTENT_TYPE, mime), (header::CACHE_CONTROL, "no-cache")],
                body,
            )
                .into_response()
        }
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::BUILT_IN;

    /// What follows each `marker` in `text` up to the next `end`: the names a file refers to.
    fn refs<'a>(text: &'a str, marker: &str, end: char) -> Vec<&'a str> {
        text.split(marker)
            .skip(1)
            .filter_map(|rest| rest.split(end).next())
            .collect()
    }

    /// A module imported but not built in works with `--web-dir` and breaks the installed daemon's page,
    /// so every local reference of every built-in file must name a built-in file.
    #[test]
    fn every_file_the_page_refers_to_is_built_in() {
        let names: Vec<&str> = BUILT_IN.iter().map(|(name, _)| *name).collect();
        let mut checked = 0;
        for (name, body) in BUILT_IN {
            let found = match name.rsplit('.').next() {
                Some("js") => refs(body, "from './", '\''),
                Some("html") => [refs(body, "src=\"", '"'), refs(body, "href=\"", '"')].concat(),
                _ => continue,
            };
            for target in found.into_iter().filter(|t| !t.starts_with("data:")) {
                assert!(
                    names.contains(&target),
                    "{name} refers to {target}, which BUILT_IN lacks"
                );
                checked += 1;
            }
        }
        // index.html's app.js and style.css, and app.js's four imports at least: the scan itself works.
        assert!(checked >= 6, "only {checked} references found");
    }

    /// The reverse: a built-in file nothing refers to is dead weight in the binary.
    #[test]
    fn every_built_in_file_is_referred_to() {
        for (name, _) in BUILT_IN.iter().filter(|(name, _)| *name != "index.html") {
            let used = BUILT_IN
                .iter()
                .any(|(_, body)| body.contains(&format!("from './{name}'")) || body.contains(&format!("=\"{name}\"")));
            assert!(used, "{name} is built in but nothing refers to it");
        }
    }
}
