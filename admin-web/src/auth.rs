//! Sessions, CSRF tokens, sign-in throttling and the extractor that turns a session
//! into the signed-in administrator.

use std::sync::OnceLock;

use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use tower_sessions::cookie::SameSite;
use tower_sessions::{Expiry, Session, SessionManagerLayer};
use tower_sessions_sqlx_store::SqliteStore;

use crate::error::AppError;
use crate::ops::Actor;
use crate::{AppState, Config, Error};

pub(crate) const SESSION_COOKIE: &str = "fugu_session";
const CSRF: &str = "csrf";
pub(crate) const ADMIN_ID: &str = "admin_id";
pub(crate) const LOGIN_AT: &str = "login_at";
/// When the signed-in session last made a request, for the idle timeout.
pub(crate) const SEEN_AT: &str = "seen_at";
pub(crate) const PENDING_ADMIN: &str = "pending_admin";
pub(crate) const MAILBOX: &str = "mailbox";
const FLASH: &str = "flash";
/// Form bodies are small; refuse anything bigger before buffering it.
const MAX_FORM: usize = 256 * 1024;

/// Unix seconds on the console's injected clock: session expiry, TOTP steps and sign-in
/// throttling all read it, so tests move a manual clock instead of sleeping.
pub(crate) fn now(state: &AppState) -> i64 {
    state.config.clock.unix()
}

pub(crate) async fn session_layer(
    config: &Config,
) -> Result<SessionManagerLayer<SqliteStore>, Error> {
    let bad = |e: sqlx::Error| Error::Sessions {
        path: config.sessions_path.clone(),
        reason: e.to_string(),
    };
    if let Some(dir) = config
        .sessions_path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).map_err(|e| Error::Sessions {
            path: config.sessions_path.clone(),
            reason: e.to_string(),
        })?;
    }
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(
            SqliteConnectOptions::new()
                .filename(&config.sessions_path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // Every request refreshes its session (idle expiry), so every request
                // commits here: without an fsync per commit, since a session lost to a
                // power cut only means signing in again. fsync stalls under disk load were
                // the users page's p95 (scripts/bench-console).
                .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
                .busy_timeout(store::BUSY_TIMEOUT),
        )
        .await
        .map_err(bad)?;
    let sessions = SqliteStore::new(pool);
    sessions.migrate().await.map_err(bad)?;
    {
        use tower_sessions::ExpiredDeletion;
        let sessions = sessions.clone();
        tokio::spawn(async move {
            let every = tokio::time::Duration::from_secs(600);
            if let Err(e) = sessions.continuously_delete_expired(every).await {
                tracing::warn!(error = %e, "expired-session cleanup stopped");
            }
        });
    }
    let idle = tower_sessions::cookie::time::Duration::seconds(
        i64::try_from(config.idle_timeout.as_secs()).unwrap_or(i64::MAX),
    );
    Ok(SessionManagerLayer::new(sessions)
        .with_name(SESSION_COOKIE)
        .with_secure(true)
        .with_http_only(true)
        .with_same_site(SameSite::Strict)
        .with_path("/")
        .with_expiry(Expiry::OnInactivity(idle)))
}

pub(crate) fn random_hex(bytes: usize) -> String {
    use ring::rand::SecureRandom;
    let mut buf = vec![0u8; bytes];
    // SystemRandom reads getrandom(2); failing means the kernel has no entropy source,
    // and a zeroed buffer is not an acceptable fallback.
    if ring::rand::SystemRandom::new().fill(&mut buf).is_err() {
        panic_free_abort();
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn panic_free_abort() -> ! {
    tracing::error!("the system random number generator failed");
    std::process::abort()
}

/// The session's CSRF token, created on first use.
pub(crate) async fn csrf_token(session: &Session) -> Result<String, AppError> {
    if let Some(t) = session.get::<String>(CSRF).await? {
        return Ok(t);
    }
    let t = random_hex(32);
    session.insert(CSRF, &t).await?;
    Ok(t)
}

/// A new CSRF token (after sign-in the old one, seen before authentication, is dropped).
pub(crate) async fn renew_csrf(session: &Session) -> Result<String, AppError> {
    let t = random_hex(32);
    session.insert(CSRF, &t).await?;
    Ok(t)
}

pub(crate) async fn set_flash(
    session: &Session,
    message: impl Into<String>,
) -> Result<(), AppError> {
    session.insert(FLASH, message.into()).await?;
    Ok(())
}

pub(crate) async fn take_flash(session: &Session) -> Result<Option<String>, AppError> {
    Ok(session.remove::<String>(FLASH).await?)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Refuses every state-changing browser request whose form lacks the session's CSRF
/// token. The API is exempt because it authenticates by bearer token, never by cookie.
pub(crate) async fn csrf_guard(State(_): State<AppState>, req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        || req.uri().path().starts_with("/api/")
    {
        return next.run(req).await;
    }
    let refuse = || {
        (
            StatusCode::FORBIDDEN,
            crate::pages::ErrorPage {
                status: 403,
                message: "This form has expired or did not come from this console (missing or \
                          wrong CSRF token). Go back, reload the page and try again."
                    .to_string(),
            },
        )
            .into_response()
    };
    let Some(session) = req.extensions().get::<Session>().cloned() else {
        return refuse();
    };
    let expected = match session.get::<String>(CSRF).await {
        Ok(Some(t)) => t,
        _ => return refuse(),
    };
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "form too large").into_response();
    };
    // The token is hex, so it is never percent-encoded: compare the raw field.
    let given = bytes
        .split(|b| *b == b'&')
        .find_map(|pair| pair.strip_prefix(b"csrf="));
    match given {
        Some(given) if constant_time_eq(given, expected.as_bytes()) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        _ => refuse(),
    }
}

// ---- passwords and throttling ------------------------------------------------------

/// argon2id is deliberately slow: keep it off the async workers.
pub(crate) async fn hash_password(password: String) -> Result<String, password::Error> {
    tokio::task::spawn_blocking(move || password::hash(&password, password::Scheme::Argon2id))
        .await
        .unwrap_or(Err(password::Error::Hashing(
            "hashing task failed".to_string(),
        )))
}

pub(crate) async fn verify_password(password: String, hash: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || match hash {
        Some(h) => password::verify(&password, &h).unwrap_or(false),
        None => {
            // Spend the same time for unknown accounts, so timing does not reveal names.
            static DUMMY: OnceLock<Option<String>> = OnceLock::new();
            if let Some(d) =
                DUMMY.get_or_init(|| password::hash("fugu-dummy", password::Scheme::Argon2id).ok())
            {
                let _ = password::verify(&password, d);
            }
            false
        }
    })
    .await
    .unwrap_or(false)
}

/// Refuses a sign-in attempt when the account or the client address has failed too
/// often in the window; the message says which and for how long.
pub(crate) async fn throttle(
    state: &AppState,
    ip: std::net::IpAddr,
    account: &str,
) -> Result<(), AppError> {
    let window = i64::try_from(state.config.login_window.as_secs()).unwrap_or(900);
    let since = now(state) - window;
    let checks = [
        (
            format!("account:{}", account.trim().to_lowercase()),
            state.config.login_max_failures_account,
            "this account",
        ),
        (
            format!("ip:{ip}"),
            state.config.login_max_failures_ip,
            "your address",
        ),
    ];
    for (key, max, who) in checks {
        let (count, oldest) = state.store.login_failures_since(&key, since).await?;
        if count >= max {
            let wait = oldest.map_or(window, |o| o + window - now(state)).max(60);
            return Err(AppError::Invalid {
                field: "throttled",
                message: format!(
                    "Too many failed sign-ins for {who}. Try again in {} minutes.",
                    (wait + 59) / 60
                ),
            });
        }
    }
    Ok(())
}

pub(crate) async fn record_failure(
    state: &AppState,
    ip: std::net::IpAddr,
    account: &str,
) -> Result<(), AppError> {
    let at = now(state);
    let account = format!("account:{}", account.trim().to_lowercase());
    state.store.record_login_failure(&account, at).await?;
    state
        .store
        .record_login_failure(&format!("ip:{ip}"), at)
        .await?;
    Ok(())
}

pub(crate) async fn clear_failures(state: &AppState, account: &str) -> Result<(), AppError> {
    let account = format!("account:{}", account.trim().to_lowercase());
    state.store.clear_login_failures(&account).await?;
    Ok(())
}

// ---- the signed-in administrator ----------------------------------------------------

/// A signed-in administrator on a console page, with the page's CSRF token.
pub(crate) struct Console {
    pub actor: Actor,
    pub session: Session,
    pub csrf: String,
}

impl FromRequestParts<AppState> for Console {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let session = parts
            .extensions
            .get::<Session>()
            .cloned()
            .ok_or(AppError::Unauthenticated)?;
        let Some(id) = session.get::<i64>(ADMIN_ID).await? else {
            return Err(AppError::Unauthenticated);
        };
        let login_at = session.get::<i64>(LOGIN_AT).await?.unwrap_or(0);
        let absolute = i64::try_from(state.config.absolute_timeout.as_secs()).unwrap_or(i64::MAX);
        let idle = i64::try_from(state.config.idle_timeout.as_secs()).unwrap_or(i64::MAX);
        let seen_at = session.get::<i64>(SEEN_AT).await?.unwrap_or(login_at);
        let now = now(state);
        // tower-sessions also expires idle sessions, but on the system clock; these checks
        // are the ones that hold on the injected clock.
        if now - login_at > absolute || now - seen_at > idle {
            session.flush().await?;
            return Err(AppError::Unauthenticated);
        }
        session.insert(SEEN_AT, now).await?;
        let Some(admin) = state.store.admin_by_id(id).await? else {
            session.flush().await?;
            return Err(AppError::Unauthenticated);
        };
        let remote = parts
            .extensions
            .get::<axum::extract::ConnectInfo<crate::net::RemoteAddr>>()
            .map(|c| c.0.0.ip().to_string());
        let actor = Actor::load(state, admin, remote, crate::ops::Via::Console).await?;
        let csrf = csrf_token(&session).await?;
        Ok(Console {
            actor,
            session,
            csrf,
        })
    }
}
