//! The web dashboard: plain HTML, CSS and JavaScript compiled into the
//! binary (no JS build step), reading only the native API and its event
//! stream.

use axum::extract::Path;
use axum::response::Response;

use crate::error::ApiError;
use crate::http::typed;

const INDEX: &str = include_str!("../ui/index.html");
const APP_JS: &str = include_str!("../ui/app.js");
const PAGES_JS: &str = include_str!("../ui/pages.js");
const CHARTS_JS: &str = include_str!("../ui/charts.js");
const STYLE: &str = include_str!("../ui/style.css");

pub async fn index() -> Response {
    typed("text/html; charset=utf-8", INDEX)
}

pub async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    match file.as_str() {
        "app.js" => Ok(typed("text/javascript; charset=utf-8", APP_JS)),
        "pages.js" => Ok(typed("text/javascript; charset=utf-8", PAGES_JS)),
        "charts.js" => Ok(typed("text/javascript; charset=utf-8", CHARTS_JS)),
        "style.css" => Ok(typed("text/css; charset=utf-8", STYLE)),
        other => Err(ApiError::NotFound(format!("no dashboard file {other}"))),
    }
}
