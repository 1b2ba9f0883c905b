//! The crate's error, and how failures become HTTP responses (once, here).

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// What can stop the console from starting or serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS certificate {path}: {reason}")]
    Certificate { path: PathBuf, reason: String },
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error("session database {path}: {reason}")]
    Sessions { path: PathBuf, reason: String },
    #[error("serving HTTP failed: {0}")]
    Serve(std::io::Error),
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Password(#[from] password::Error),
}

/// How a request failed, as the browser or API client sees it.
#[derive(Debug)]
pub(crate) enum AppError {
    /// Not signed in (pages redirect to the login form, the API answers 401).
    Unauthenticated,
    Forbidden(String),
    NotFound(String),
    /// Bad input: the field it belongs to and the store's message.
    Invalid {
        field: &'static str,
        message: String,
    },
    Internal(String),
    /// A service the request needs is not running on this box (the mta's control socket).
    Unavailable(String),
    /// That service answered with an error or broke its protocol.
    Upstream(String),
}

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::Unauthenticated => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Upstream(_) => StatusCode::BAD_GATEWAY,
        }
    }

    pub fn message(&self) -> String {
        match self {
            AppError::Unauthenticated => "sign in first".to_string(),
            AppError::Forbidden(m)
            | AppError::NotFound(m)
            | AppError::Internal(m)
            | AppError::Unavailable(m)
            | AppError::Upstream(m) => m.clone(),
            AppError::Invalid { message, .. } => message.clone(),
        }
    }
}

impl From<store::Error> for AppError {
    fn from(e: store::Error) -> AppError {
        use store::Error as S;
        let message = e.to_string();
        let field = match &e {
            S::InvalidDomain { .. } | S::DomainExists(_) => "domain",
            S::InvalidAddress { .. } | S::UserExists(_) => "address",
            S::AliasExists { .. } | S::AliasLoop(_) => "destination",
            S::Password(_) => "password",
            S::Invalid { field, .. } => field,
            S::AdminExists(_) => "username",
            S::AccessRuleExists { .. } => "value",
            S::DomainNotFound(_)
            | S::UserNotFound(_)
            | S::AliasNotFound(_)
            | S::AdminNotFound(_)
            | S::AccessRuleNotFound(_)
            | S::TokenNotFound(_) => return AppError::NotFound(message),
            _ if !e.is_user_error() => {
                tracing::error!(error = %e, "store failure");
                return AppError::Internal("the database failed; see the server log".to_string());
            }
            _ => "form",
        };
        AppError::Invalid { field, message }
    }
}

impl From<password::Error> for AppError {
    fn from(e: password::Error) -> AppError {
        AppError::Invalid {
            field: "password",
            message: e.to_string(),
        }
    }
}

impl From<tower_sessions::session::Error> for AppError {
    fn from(e: tower_sessions::session::Error) -> AppError {
        tracing::error!(error = %e, "session store failure");
        AppError::Internal("the session store failed; see the server log".to_string())
    }
}

/// A plain page for failures outside a form (forms re-render with the message instead).
impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        if let AppError::Unauthenticated = self {
            return axum::response::Redirect::to("/login").into_response();
        }
        let status = self.status();
        let page = crate::pages::ErrorPage {
            status: status.as_u16(),
            message: self.message(),
        };
        (status, page).into_response()
    }
}
