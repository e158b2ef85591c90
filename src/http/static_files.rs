//! The viewer page: built into the binary so an installed daemon needs nothing else, or served from a
//! folder (`web_dir`) for people changing the page without rebuilding.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::AppState;

const BUILT_IN: &[(&str, &str)] = &[
    ("index.html", include_str!("../../web/index.html")),
    ("app.js", include_str!("../../web/app.js")),
    ("ticket.js", include_str!("../../web/ticket.js")),
    ("style.css", include_str!("../../web/style.css")),
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
