//! The web console: the page at `/`, its files under `/assets/` (embedded
//! from `collector/console/` at build time), sign-in and sign-out, the
//! handlers of the session's own API route and the live event stream
//! (routed by [`crate::api::ROUTES`]), and the security
//! headers every HTTP response carries.
//!
//! Invariants:
//! - The page never shows data without a live session: `/` answers the
//!   sign-in form unless the request carries one, and every data route is
//!   an `/api/v1/` route behind [`crate::api::Authed`].
//! - A wrong token gets the sign-in form again with one fixed sentence;
//!   nothing from the request is echoed into a page.
//! - Every response (API included) carries [`CONTENT_SECURITY_POLICY`],
//!   `X-Frame-Options: DENY` and `X-Content-Type-Options: nosniff`.
//! - The console never fetches from anywhere but this collector.

pub mod session;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use crate::api::{ApiError, ApiState, Authed};
use crate::auth::hash_secret;
use crate::model::EventQuery;
use crate::store::Store;

mod files {
    include!(concat!(env!("OUT_DIR"), "/console_files.rs"));
}

/// The page's policy: its own origin only, no inline script or style, not
/// framable, forms post only here.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// How often the event stream looks for new events.
const STREAM_POLL: Duration = Duration::from_secs(2);
/// The most events one poll of the stream sends.
const STREAM_BATCH: i64 = 200;

/// The console's routes, to merge with the API's.
pub fn router<S: Store>(state: Arc<ApiState<S>>) -> Router {
    Router::new()
        .route("/", get(page::<S>))
        .route("/login", post(login::<S>).get(to_page))
        .route("/logout", post(logout::<S>))
        .route("/assets/{*path}", get(asset))
        .with_state(state)
}

/// Adds the security headers to every response, and `Cache-Control:
/// no-store` to those that set no cache policy of their own.
pub async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let fixed = [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        // Not `no-referrer`: with it browsers send `Origin: null` on
        // same-origin POSTs, and the Origin rule needs the real one.
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ),
        (
            header::HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ),
        (
            header::HeaderName::from_static("cross-origin-resource-policy"),
            HeaderValue::from_static("same-origin"),
        ),
    ];
    for (name, value) in fixed {
        headers.insert(name, value);
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Whether a state-changing request's `Origin` is this collector's own:
/// `public` (`console.origin`) when set, whatever `Host` a proxy passed;
/// otherwise either scheme with the request's `Host`. A request without
/// `Origin` is not.
pub fn same_origin(headers: &HeaderMap, public: Option<&str>) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    if let Some(public) = public {
        return origin.eq_ignore_ascii_case(public);
    }
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|o| o.eq_ignore_ascii_case(host))
}

/// The session id the request's cookie carries, if any.
pub fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(session::from_cookie_header)
}

fn file(name: &str) -> Option<&'static [u8]> {
    files::FILES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, bytes)| *bytes)
}

fn html(status: StatusCode, body: Vec<u8>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

/// The sign-in form, with `error` (a fixed sentence) shown when set.
fn sign_in_page(status: StatusCode, error: Option<&'static str>) -> Response {
    let template = String::from_utf8_lossy(file("login.html").unwrap_or_default());
    let message = match error {
        Some(text) => format!("<p class=\"error\" role=\"alert\">{text}</p>"),
        None => String::new(),
    };
    html(
        status,
        template.replace("<!--error-->", &message).into_bytes(),
    )
}

/// `/`: the console for a signed-in browser, the sign-in form otherwise.
async fn page<S: Store>(State(state): State<Arc<ApiState<S>>>, headers: HeaderMap) -> Response {
    let signed_in = session_id(&headers).is_some_and(|id| state.sessions.project(id).is_some());
    if signed_in {
        html(
            StatusCode::OK,
            file("index.html").unwrap_or_default().to_vec(),
        )
    } else {
        sign_in_page(StatusCode::OK, None)
    }
}

async fn to_page() -> Response {
    see_other("/")
}

fn see_other(location: &'static str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
}

/// The sign-in form's fields.
#[derive(Deserialize)]
struct SignIn {
    token: String,
}

/// `POST /login`: a right token opens a session and goes to the console;
/// anything else shows the form again.
async fn login<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    headers: HeaderMap,
    form: Result<Form<SignIn>, FormRejection>,
) -> Response {
    // A form posted from another site would sign the browser into the
    // other site's project: refuse a foreign Origin (a missing one, as from
    // curl, cannot be a browser's cross-site post).
    if headers.contains_key(header::ORIGIN)
        && !same_origin(&headers, state.public_origin.as_deref())
    {
        return sign_in_page(
            StatusCode::FORBIDDEN,
            Some("Sign in from this collector's own page."),
        );
    }
    let refused = || {
        sign_in_page(
            StatusCode::UNAUTHORIZED,
            Some("That token was not accepted."),
        )
    };
    let Ok(Form(SignIn { token })) = form else {
        return refused();
    };
    let token = token.trim();
    if token.is_empty() {
        return refused();
    }
    let store = state.store.clone();
    let project = state
        .tokens
        .get(hash_secret(token), |hash| async move {
            store.project_by_token(&hash).await
        })
        .await;
    let project = match project {
        Ok(Some(p)) => p,
        Ok(None) => return refused(),
        Err(e) => {
            tracing::error!(error = %e, "Sign-in lookup failed.");
            return sign_in_page(
                StatusCode::SERVICE_UNAVAILABLE,
                Some("The collector's store is unavailable; try again."),
            );
        }
    };
    let id = match state.sessions.open(project) {
        Ok(id) => id,
        Err(e) => {
            tracing::error!(error = %e, "No randomness for a session id.");
            return sign_in_page(
                StatusCode::SERVICE_UNAVAILABLE,
                Some("The collector cannot open a session now; try again."),
            );
        }
    };
    // Secure when the browser reached us over https (a TLS proxy in front);
    // a plain-http collector on a trusted network still works.
    let secure = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .or(state.public_origin.as_deref())
        .is_some_and(|o| o.starts_with("https://"));
    let cookie = format!(
        "{}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        session::COOKIE,
        session::ABSOLUTE_LIMIT.as_secs(),
        if secure { "; Secure" } else { "" }
    );
    let mut response = see_other("/#/fleet");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// `POST /logout`: ends the session and clears the cookie.
async fn logout<S: Store>(State(state): State<Arc<ApiState<S>>>, headers: HeaderMap) -> Response {
    if !same_origin(&headers, state.public_origin.as_deref()) {
        return (
            StatusCode::FORBIDDEN,
            "sign out from the console's own page",
        )
            .into_response();
    }
    if let Some(id) = session_id(&headers) {
        state.sessions.close(id);
    }
    let mut response = see_other("/");
    let cookie = format!(
        "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
        session::COOKIE
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// The content type of a console file, by its extension.
fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        _ => "text/plain; charset=utf-8",
    }
}

/// A validator for a file's bytes (FNV-1a, enough to tell versions apart).
fn etag(bytes: &[u8]) -> String {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("\"{hash:016x}\"")
}

/// `/assets/<path>`: a console file. Cached, but revalidated on each use
/// (an upgraded collector serves new files at the same paths).
async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    let Some(bytes) = file(&path).filter(|_| path != "login.html") else {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    };
    let tag = etag(bytes);
    let cache = (header::CACHE_CONTROL, "no-cache");
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == tag)
    {
        return (
            StatusCode::NOT_MODIFIED,
            [cache, (header::ETAG, tag.as_str())],
        )
            .into_response();
    }
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type(&path)),
            cache,
            (header::ETAG, tag.as_str()),
        ],
        bytes,
    )
        .into_response()
}

/// `GET /api/v1/session`: the project the credentials belong to.
pub(crate) async fn whoami(Authed(project): Authed) -> axum::Json<serde_json::Value> {
    axum::Json(json!({ "project": project.name }))
}

/// `DELETE /api/v1/session`: signs the cookie's session out (the API's
/// way to do what `POST /logout` does for the form). Cookie-authenticated,
/// so [`Authed`] has checked the `Origin`.
pub(crate) async fn end_session<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    Authed(_project): Authed,
    headers: HeaderMap,
) -> StatusCode {
    if headers.get(header::AUTHORIZATION).is_none()
        && let Some(id) = session_id(&headers)
    {
        state.sessions.close(id);
    }
    StatusCode::NO_CONTENT
}

/// The session a stream opened by cookie lives by (none when it was
/// opened with a bearer token, which has no end): such a stream must end
/// with its session (sign-out, expiry).
pub fn stream_session(headers: &HeaderMap) -> Option<String> {
    match headers.get(header::AUTHORIZATION) {
        Some(_) => None,
        None => session_id(headers).map(str::to_string),
    }
}

/// Whether a stream's session (from [`stream_session`]) still lives; a
/// stream without one always does.
fn session_alive<S: Store>(state: &ApiState<S>, session: Option<&str>) -> bool {
    session.is_none_or(|id| state.sessions.is_alive(id))
}

/// Resolves once a stream's session has ended, looked at every
/// [`STREAM_POLL`]; never for a stream without one. A stream that is not
/// polled by its own loop ends on it (`take_until`).
pub async fn session_ended<S: Store>(state: Arc<ApiState<S>>, session: Option<String>) {
    loop {
        tokio::time::sleep(STREAM_POLL).await;
        if !session_alive(&state, session.as_deref()) {
            return;
        }
    }
}

/// `GET /api/v1/events/stream`: the project's new events as server-sent
/// events (`event: event`, data the event's JSON as `/api/v1/events`
/// lists it, id its id), polled from the store every [`STREAM_POLL`].
/// Starts after the newest stored event, or after `Last-Event-ID`.
pub(crate) async fn event_stream<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    Authed(project): Authed,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let newest = |since_ms: i64| EventQuery {
        from_ms: since_ms,
        to_ms: i64::MAX,
        oid: None,
        kind: None,
        limit: STREAM_BATCH,
    };
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok());
    let last_id = match resume {
        Some(id) => id,
        None => state
            .store
            .events(
                project.id,
                &EventQuery {
                    limit: 1,
                    ..newest(0)
                },
            )
            .await?
            .first()
            .map_or(0, |e| e.id),
    };
    struct Cursor<S> {
        state: Arc<ApiState<S>>,
        project_id: i64,
        last_id: i64,
        pending: std::collections::VecDeque<Event>,
        /// The session the stream was opened with, when by cookie: the
        /// stream ends with it (sign-out, expiry).
        session: Option<String>,
    }
    let session = stream_session(&headers);
    let cursor = Cursor {
        state,
        project_id: project.id,
        last_id,
        pending: Default::default(),
        session,
    };
    let stream = futures_util::stream::unfold(cursor, move |mut c| async move {
        loop {
            if let Some(event) = c.pending.pop_front() {
                return Some((Ok::<Event, std::convert::Infallible>(event), c));
            }
            tokio::time::sleep(STREAM_POLL).await;
            if !session_alive(&c.state, c.session.as_deref()) {
                return None;
            }
            // Events are stamped with their own time, which may be late:
            // look back an hour and keep only ids not yet sent.
            let since = crate::now_ms() - 3_600_000;
            let Ok(mut found) = c.state.store.events(c.project_id, &newest(since)).await else {
                continue;
            };
            found.retain(|e| e.id > c.last_id);
            found.sort_by_key(|e| e.id);
            for e in found {
                c.last_id = c.last_id.max(e.id);
                if let Ok(data) = serde_json::to_string(&e) {
                    c.pending.push_back(
                        Event::default()
                            .event("event")
                            .id(e.id.to_string())
                            .data(data),
                    );
                }
            }
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn same_origin_needs_an_origin_naming_the_host() {
        let host = ("host", "127.0.0.1:8080");
        assert!(same_origin(
            &headers(&[host, ("origin", "http://127.0.0.1:8080")]),
            None
        ));
        assert!(same_origin(
            &headers(&[host, ("origin", "https://127.0.0.1:8080")]),
            None
        ));
        assert!(!same_origin(&headers(&[host]), None), "no Origin");
        assert!(!same_origin(&headers(&[host, ("origin", "null")]), None));
        assert!(!same_origin(
            &headers(&[host, ("origin", "http://evil.example")]),
            None
        ));
        assert!(!same_origin(
            &headers(&[host, ("origin", "http://127.0.0.1:8081")]),
            None
        ));
        assert!(
            !same_origin(&headers(&[("origin", "http://127.0.0.1:8080")]), None),
            "no Host"
        );
    }

    #[test]
    fn with_a_public_origin_set_it_is_the_one_accepted() {
        let public = Some("https://sightline.example.com");
        // The proxy passed its own upstream Host.
        let host = ("host", "127.0.0.1:6680");
        assert!(same_origin(
            &headers(&[host, ("origin", "https://sightline.example.com")]),
            public
        ));
        assert!(!same_origin(
            &headers(&[host, ("origin", "http://127.0.0.1:6680")]),
            public
        ));
        assert!(!same_origin(
            &headers(&[host, ("origin", "http://sightline.example.com")]),
            public
        ));
        assert!(!same_origin(&headers(&[host]), public), "no Origin");
    }

    #[test]
    fn every_file_the_page_names_is_embedded() {
        for name in ["index.html", "login.html", "style.css", "lib.js", "app.js"] {
            assert!(file(name).is_some(), "{name} is not embedded");
        }
        assert!(file("vendor/uPlot.iife.min.js").is_some());
        assert!(file("vendor/LICENSE").is_some());
    }

    #[test]
    fn content_types_follow_extensions() {
        assert_eq!(content_type("app.js"), "text/javascript; charset=utf-8");
        assert_eq!(
            content_type("vendor/uPlot.min.css"),
            "text/css; charset=utf-8"
        );
        assert_eq!(content_type("vendor/LICENSE"), "text/plain; charset=utf-8");
    }
}
