//! The JSON API under `/api/v1/`: the same operations as the console, authenticated by
//! bearer tokens (never by the session cookie, so CSRF does not apply), with an OpenAPI
//! document describing exactly these routes.

use axum::Json;
use axum::Router;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::AppError;
use crate::ops::{self, Actor, Via};

/// SHA-256 of a token in hex: all the database ever holds.
pub(crate) fn token_digest(token: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An API failure as JSON: `{"error": {"status": 403, "field": null, "message": "…"}}`.
pub(crate) struct ApiError(AppError);

impl From<AppError> for ApiError {
    fn from(e: AppError) -> ApiError {
        ApiError(e)
    }
}

impl From<store::Error> for ApiError {
    fn from(e: store::Error) -> ApiError {
        ApiError(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let field = match &self.0 {
            AppError::Invalid { field, .. } => Some(*field),
            _ => None,
        };
        let body = json!({"error": {"status": status.as_u16(), "field": field, "message": self.0.message()}});
        let mut res = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"fugu\""),
            );
        }
        res
    }
}

type ApiResult = Result<Response, ApiError>;

/// The caller behind a bearer token, and whether the token may write.
pub(crate) struct ApiCaller {
    pub actor: Actor,
    write: bool,
}

impl ApiCaller {
    pub(crate) fn require_write(&self) -> Result<(), ApiError> {
        if self.write {
            Ok(())
        } else {
            Err(AppError::Forbidden("this token is read-only".to_string()).into())
        }
    }
}

impl FromRequestParts<AppState> for ApiCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(ApiError(AppError::Unauthenticated))?;
        let t = state
            .store
            .use_api_token(&token_digest(token))
            .await?
            .ok_or(ApiError(AppError::Unauthenticated))?;
        let admin = state
            .store
            .admin_by_id(t.admin_id)
            .await?
            .ok_or(ApiError(AppError::Unauthenticated))?;
        let remote = parts
            .extensions
            .get::<axum::extract::ConnectInfo<crate::net::RemoteAddr>>()
            .map(|c| c.0.0.ip().to_string());
        Ok(ApiCaller {
            actor: Actor::load(state, admin, remote, Via::Api).await?,
            write: t.scope == store::TokenScope::ReadWrite.as_str(),
        })
    }
}

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/domains", get(list_domains).post(add_domain))
        .route(
            "/api/v1/domains/{name}",
            get(get_domain).patch(patch_domain).delete(delete_domain),
        )
        .route("/api/v1/users", get(list_users).post(add_user))
        .route(
            "/api/v1/users/{address}",
            get(get_user).patch(patch_user).delete(delete_user),
        )
        .route(
            "/api/v1/aliases",
            get(list_aliases).post(add_alias).delete(delete_alias),
        )
        .route("/api/v1/access-rules", get(list_rules).post(add_rule))
        .route(
            "/api/v1/access-rules/{id}",
            axum::routing::delete(delete_rule),
        )
        .route("/api/v1/queue", get(list_queue))
        .route("/api/v1/queue/{id}", axum::routing::delete(delete_queued))
        .route(
            "/api/v1/queue/{id}/retry",
            axum::routing::post(retry_queued),
        )
        .merge(crate::certificates::api_routes())
        .route(
            "/api/v1/domains/{name}/dkim-keys",
            get(list_dkim_keys).post(generate_dkim_key),
        )
        .route(
            "/api/v1/domains/{name}/dkim-keys/import",
            axum::routing::post(import_dkim_key),
        )
        .route(
            "/api/v1/domains/{name}/dkim-keys/{selector}",
            axum::routing::delete(delete_dkim_key),
        )
        .route(
            "/api/v1/domains/{name}/dkim-keys/{selector}/activate",
            axum::routing::post(activate_dkim_key),
        )
        .route(
            "/api/v1/domains/{name}/dkim-keys/{selector}/retire",
            axum::routing::post(retire_dkim_key),
        )
        .route("/api/v1/domains/{name}/dns", get(domain_dns))
        .route(
            "/api/v1/domains/{name}/policy",
            get(get_domain_policy).put(put_domain_policy),
        )
        .fallback(|| async { ApiError(AppError::NotFound("no such API route".to_string())) })
}

fn created(v: Value) -> Response {
    (StatusCode::CREATED, Json(v)).into_response()
}

pub(crate) fn bad_json(e: axum::extract::rejection::JsonRejection) -> ApiError {
    ApiError(AppError::Invalid {
        field: "body",
        message: e.body_text(),
    })
}

// ---- domains ---------------------------------------------------------------------------

async fn list_domains(State(state): State<AppState>, c: ApiCaller) -> ApiResult {
    let d = ops::list_domains(&state, &c.actor).await?;
    Ok(
        Json(json!({"domains": d.iter().map(ops::domain_json).collect::<Vec<_>>()}))
            .into_response(),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewDomain {
    name: String,
    #[serde(default)]
    description: String,
}

async fn add_domain(
    State(state): State<AppState>,
    c: ApiCaller,
    body: Result<Json<NewDomain>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    c.require_write()?;
    let Json(b) = body.map_err(bad_json)?;
    let d = ops::add_domain(&state, &c.actor, &b.name, &b.description).await?;
    Ok(created(ops::domain_json(&d)))
}

async fn get_domain(
    State(state): State<AppState>,
    c: ApiCaller,
    Path(name): Path<String>,
) -> ApiResult {
    let (d, users, aliases) = ops::domain_contents(&state, &c.actor, &name).await?;
    let mut v = ops::domain_json(&d);
    v["users"] = users.into();
    v["aliases"] = aliases.into();
    Ok(Json(v).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DomainPatch {
    active: bool,
}

async fn patch_domain(
    State(state): State<AppState>,
    c: ApiCaller,
    Path(name): Path<String>,
    body: Result<Json<DomainPatch>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    c.require_write()?;
    let Json(b) = body.map_err(bad_json)?;
    let d = ops::set_domain_active(&state, &c.actor, &name, b.active).await?;
    Ok(Json(ops::domain_json(&d)).into_response())
}

async fn delete_domain(
    State(state): State<AppState>,
    c: ApiCaller,
    Path(name): Path<String>,
) -> ApiResult {
    c.require_write()?;
    ops::remove_domain(&state, &c.actor, &name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- users -----------------------------------------------------------------------------

#[derive(Deserialize)]
struct UserListQuery {
    domain: Option<String>,
    q: Option<String>,
    #[serde(default)]
    offset: u32,
    limit: Option<u32>,
}

async fn list_users(
    State(state): State<AppState>,
    c: ApiCaller,
    Query(q): Query<UserListQuery>,
) -> ApiResult {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let page = ops::list_users(
        &state,
        &c.actor,
        q.domain.as_deref(),
        q.q,
        q.offset,
        limit,
        (store::UserSort::default(), false),
    )
    .await?;
    Ok(Json(
        json!({"total": page.total, "offset": q.offset, "limit": limit,
                   "users": page.users.iter().map(ops::user_json).collect::<Vec<_>>()}),
    )
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUserBody {
    address: String,
    password: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    quota_bytes: u64,
}

async fn add_user(
    State(state): State<AppState>,
    c: ApiCaller,
    body: Result<Json<NewUserBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    c.require_write()?;
    let Json(b) = body.map_err(bad_json)?;
    let u = ops::add_user(
        &state,
        &c.actor,
        &b.address,
        &b.password,
        &b.display_name,
        b.quota_bytes,
    )
    .await?;
    Ok(created(ops::user_json(&u)))
}

async fn get_user(
    State(state): State<AppState>,
    c: ApiCaller,
    Path(address): Path<String>,
) -> ApiResult {
    let u = ops::get_user(&state, &c.actor, &address).await?;
    Ok(Json(ops::user_json(&u)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserPatch {
    password: Option<String>,
    quota_bytes: Option<u64>,
    active: Option<bool>,
}

async fn patch_user(
    State(state): State<AppState>,
    c: ApiCaller,
    Path(address): Path<String>,
    body: Result<Json<UserPatch>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    c.require_write()?;
    let Json(b) = body.map_err(bad_json)?;
    if let Some(pw) = &b.password {
        ops::reset_password(&state, &c.actor, &address, pw).await?;
    }
    let u = if b.quota_bytes.is_some() || b.active.is_some() {
        ops::update_user(&state, &c.actor, &address, b.quota_bytes, b.active).await?
    } else {
        ops::get_user(&state, &c.actor, &address).await?
    };
    Ok(Json(ops::user_json(&u)).into_response())
}

async fn delete_user(
    State(state): State<AppState>,
    c: ApiCaller,
    Path(address): Path<String>,
) -> ApiResult {
    c.require_write()?;
    ops::remove_user(&state, &c.actor, &address).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- aliases ---------------------------------------------------------------------------

#[derive(Deserialize)]
struct DomainQuery {
    domain: Option<String>,
}

async fn list_aliases(
    State(state): State<AppState>,
    c: ApiCaller,
    Query(q): Query<DomainQuery>,
) -> ApiResult {
    let a = ops::list_aliases(&state, &c.actor, q.domain.as_deref()).await?;
    Ok(Json(json!({"aliases": a.iter().map(ops::alias_json).collect::<Vec<_>>()})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAliasBody {
    source: String,
    destinations: Vec<String>,
}

async fn add_alias(
    State(state): State<AppState>,
    c: ApiCaller,
    body: Result<Json<NewAliasBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    c.require_write()?;
    let Json(b) = body.map_err(bad_json)?;
    let added = ops::add_aliases(&state, &c.actor, &b.source, &b.destinations).await?;
    Ok(created(
        json!({"aliases": added.iter().map(ops::alias_json).collect::<Vec<_>>()}),
    ))
}

#[derive(Deserialize)]
struct AliasDeleteQuery {
    source: String,
    destination: Option<String>,
}

async fn delete_alias(
    State(state): State<AppState>,
    c: ApiCaller,
    Query(q): Query<AliasDeleteQuery>,
) -> ApiResult {
    c.require_write()?;
    let n = ops::remove_alias(&state, &c.actor, &q.source, q.destination.as_deref()).await?;
    Ok(Json(json!({"removed": n})).into_response())
}

// ---- access rules ----------------------------------------------------------------------

#[derive(Deserialize)]
struct RuleQuery {
    kind: Option<String>,
    source: Option<String>,
    q: Option<String>,
    #[serde(default)]
    include_expired: bool,
}

async fn list_rules(
    State(state): State<AppState>,
    c: ApiCaller,
    Query(q): Query<RuleQuery>,
) -> ApiResult {
    let kind = q
        .kind
        .as_deref()
        .map(store::AccessKind::parse)
        .transpose()?;
    let rules = ops::list_access_rules(
        &state,
        &c.actor,
        store::AccessQuery {
            kind,
            source: q.source,
            search: q.q,
            include_expired: q.include_expired,
            now: 0,
        },
    )
    .await?;
    Ok(
        Json(json!({"rules": rules.iter().map(ops::rule_json).collect::<Vec<_>>()}))
            .into_response(),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRuleBody {
    kind: String,
    value: String,
    action: String,
    #[serde(default)]
    reason: String,
    expires_at: Option<i64>,
}

async fn add_rule(
    State(state): State<AppState>,
    c: ApiCaller,
    body: Result<Json<NewRuleBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    c.require_write()?;
    let Json(b) = body.map_err(bad_json)?;
    let r = ops::add_access_rule(
        &state,
        &c.actor,
        &b.kind,
        &b.value,
        &b.action,
        &b.reason,
        b.expires_at,
    )
    .await?;
    Ok(created(ops::rule_json(&r)))
}

async fn delete_rule(
    State(state): State<AppState>,
    c: ApiCaller,
    Path(id): Path<i64>,
) -> ApiResult {
    c.require_write()?;
    let r = ops::remove_access_rule(&state, &c.actor, id).await?;
    Ok(Json(ops::rule_json(&r)).into_response())
}

// ---- DKIM keys, DNS hints and domain policy (handlers' logic in dkim.rs and dns.rs) ----------

async fn list_dkim_keys(
    State(state): State<AppState>,
    c: ApiCaller,
    Path(name): Path<String>,
) -> ApiResult {
    let keys = crate::dkim::list(&state, &c.actor, &name).await?;
    Ok(Json(json!({"keys": crate::dkim::keys_json(&keys)})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewDkimKey {
    algorithm: String,
}

async fn generate_dkim_key(
    State(state): State<AppState>,
    c: ApiCaller,
    Path(name): Path<String>,
    body: Result<Json<NewDkimKey>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    c.require_write()?;
    let Json(b) = body.map_err(bad_json)?;
    let k = crate::dkim::generate_key(&state, &c.actor, &name, &b.algorithm).await?;
    Ok(created(crate::dkim::key_json(&k)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportDkimKey {
    selector: String,
    private_key: String,
}

async fn import_dkim_key(
    State(state): State<AppState>,
    c: ApiCaller,
    Path(name): Path<String>,
    body: Result<Json<ImportDkimKey>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    c.require_write()?;
    let Json(b) = body.map_err(bad_json)?;
    let k = crate::dkim::import_key(&state, &c.actor, &name, &b.selector, &b.private_key).await?;
    Ok(created(crate::dkim::key_json(&k)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ActivateDkimKey {
    #[serde(default)]
    force: bool,
}

async fn activate_dkim_key(
    State(state): State<AppState>,
    c: ApiCaller,
    Path((name, selector)): Path<(String, String)>,
    body: Option<Json<ActivateDkimKey>>,
) -> ApiResult {
    c.require_write()?;
    let force = body.map(|Json(b)| b.force).unwrap_or(false);
    let (k, retired) = crate::dkim::activate_key(&state, &c.actor, &name, &selector, force).await?;
    Ok(Json(crate::dkim::activated_json(&k, retired.as_ref())).into_response())
}

async fn retire_dkim_key(
    State(state): State<AppState>,
    c: ApiCaller,
    Path((name, selector)): Path<(String, String)>,
) -> ApiResult {
    c.require_write()?;
    let k = crate::dkim::retire_key(&state, &c.actor, &name, &selector).await?;
    Ok(Json(crate::dkim::key_json(&k)).into_response())
}

async fn delete_dkim_key(
    State(state): State<AppState>,
    c: ApiCaller,
    Path((name, selector)): Path<(String, String)>,
) -> ApiResult {
    c.require_write()?;
    crate::dkim::delete_key(&state, &c.actor, &name, &selector).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn domain_dns(
    State(state): State<AppState>,
    c: ApiCaller,
    Path(name): Path<String>,
) -> ApiResult {
    Ok(Json(crate::dns::api_report(&state, &c.actor, &name).await?).into_response())
}

async fn get_domain_policy(
    State(state): State<AppState>,
    c: ApiCaller,
    Path(name): Path<String>,
) -> ApiResult {
    let p = crate::dns::policy(&state, &c.actor, &name).await?;
    Ok(Json(crate::dns::policy_json(&p)).into_response())
}

async fn put_domain_policy(
    State(state): State<AppState>,
    c: ApiCaller,
    Path(name): Path<String>,
    body: Result<Json<crate::dns::PolicyInput>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    c.require_write()?;
    let Json(b) = body.map_err(bad_json)?;
    let p = crate::dns::set_policy(&state, &c.actor, &name, &b).await?;
    Ok(Json(crate::dns::policy_json(&p)).into_response())
}

// ---- OpenAPI ---------------------------------------------------------------------------

// ---- queue -----------------------------------------------------------------------------

fn queue_row_json(r: &crate::queue::QueueRow) -> Value {
    json!({
        "id": r.evpid,
        "sender": r.sender,
        "recipient": r.rcpt,
        "state": r.state,
        "retries": r.retries.parse::<i64>().unwrap_or(0),
        "age_seconds": r.age_secs,
        "next_attempt_seconds": r.next_secs,
        "last_error": r.error,
    })
}

async fn list_queue(State(state): State<AppState>, c: ApiCaller) -> ApiResult {
    match crate::queue::list(&state, &c.actor).await? {
        Some((rows, None)) => Ok(Json(
            json!({"envelopes": rows.iter().map(queue_row_json).collect::<Vec<_>>()}),
        )
        .into_response()),
        Some((_, Some(problem))) => {
            Err(AppError::Upstream(format!("the mta answered: {problem}")).into())
        }
        None => Err(AppError::Unavailable(crate::queue::NOT_RUNNING.to_string()).into()),
    }
}

async fn queue_action(
    state: &AppState,
    c: &ApiCaller,
    action: crate::queue::Action,
    id: &str,
) -> ApiResult {
    use crate::queue::Outcome;
    c.require_write()?;
    match crate::queue::act(state, &c.actor, action, id).await? {
        Outcome::Done => Ok(StatusCode::NO_CONTENT.into_response()),
        Outcome::NotRunning => {
            Err(AppError::Unavailable(crate::queue::NOT_RUNNING.to_string()).into())
        }
        // The daemon's "no such message or envelope" is the API's 404.
        Outcome::Refused(t) if t.starts_with("no such") => Err(AppError::NotFound(t).into()),
        Outcome::Refused(t) => Err(AppError::Upstream(format!("the mta refused: {t}")).into()),
    }
}

async fn retry_queued(
    State(state): State<AppState>,
    c: ApiCaller,
    Path(id): Path<String>,
) -> ApiResult {
    queue_action(&state, &c, crate::queue::Action::Retry, &id).await
}

async fn delete_queued(
    State(state): State<AppState>,
    c: ApiCaller,
    Path(id): Path<String>,
) -> ApiResult {
    queue_action(&state, &c, crate::queue::Action::Remove, &id).await
}

const OPENAPI: &str = include_str!("openapi.json");

/// Public (within the allow-list): it documents the API, it grants nothing.
async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}
