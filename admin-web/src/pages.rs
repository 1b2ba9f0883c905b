//! The HTML console: one handler per page or form, each a thin layer over [`crate::ops`].
//! A form that fails validation is rendered again with the message beside its field.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tower_sessions::Session;

use crate::AppState;
use crate::auth::{self, Console};
use crate::error::AppError;
use crate::net::RemoteAddr;
use crate::ops::{self, Actor, Via};

const USERS_PER_PAGE: u32 = 50;
const AUDIT_PER_PAGE: u32 = 100;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(dashboard))
        .route("/setup", get(setup_form).post(setup))
        .route("/login", get(login_form).post(login))
        .route("/login/totp", get(totp_login_form).post(totp_login))
        .route("/logout", post(logout))
        .route("/domains", get(domains).post(add_domain))
        .route("/domains/{name}/active", post(domain_active))
        .route(
            "/domains/{name}/remove",
            get(domain_remove_confirm).post(domain_remove),
        )
        .route("/users", get(users).post(add_user))
        .route("/users/{address}", get(user))
        .route("/users/{address}/password", post(user_password))
        .route("/users/{address}/quota", post(user_quota))
        .route("/users/{address}/active", post(user_active))
        .route("/users/{address}/remove", post(user_remove))
        .route("/aliases", get(aliases).post(add_alias))
        .route("/aliases/remove", post(remove_alias))
        .route("/access", get(access).post(add_access))
        .route("/access/{id}/remove", post(remove_access))
        .route("/admins", get(admins).post(add_admin))
        .route("/admins/{id}/domains", post(admin_domains))
        .route("/admins/{id}/remove", post(remove_admin))
        .route("/audit", get(audit))
        .route("/queue", get(crate::queue::page))
        .route("/queue/{id}/retry", post(crate::queue::retry))
        .route("/queue/{id}/remove", post(crate::queue::remove))
        .route("/tokens", get(tokens).post(add_token))
        .route("/tokens/{id}/remove", post(remove_token))
        .route("/totp", get(totp_page))
        .route("/totp/start", post(totp_start))
        .route("/totp/confirm", post(totp_confirm))
        .route("/totp/disable", post(totp_disable))
        .route(
            "/account/login",
            get(account_login_form).post(account_login),
        )
        .route("/domains/{name}/dkim", get(crate::dkim::page))
        .route(
            "/domains/{name}/dkim/generate",
            post(crate::dkim::page_generate),
        )
        .route(
            "/domains/{name}/dkim/import",
            post(crate::dkim::page_import),
        )
        .route(
            "/domains/{name}/dkim/{selector}/activate",
            post(crate::dkim::page_activate),
        )
        .route(
            "/domains/{name}/dkim/{selector}/retire",
            post(crate::dkim::page_retire),
        )
        .route(
            "/domains/{name}/dkim/{selector}/delete",
            post(crate::dkim::page_delete),
        )
        .route("/domains/{name}/dns", get(crate::dns::page))
        .route("/domains/{name}/dns/check", post(crate::dns::recheck))
        .route("/domains/{name}/dns/policy", post(crate::dns::page_policy))
        .route("/domains/{name}/dns.zone", get(crate::dns::zone_file))
        .route("/account", get(account))
        .route("/account/password", post(account_password))
        .route("/account/logout", post(account_logout))
}

// ---- helpers used by templates ----------------------------------------------------------

/// A Unix time, or nothing, as templates show it.
pub(crate) trait Timestamp {
    fn seconds(&self) -> Option<i64>;
}
impl Timestamp for i64 {
    fn seconds(&self) -> Option<i64> {
        Some(*self)
    }
}
impl Timestamp for Option<i64> {
    fn seconds(&self) -> Option<i64> {
        *self
    }
}
impl<T: Timestamp + ?Sized> Timestamp for &T {
    fn seconds(&self) -> Option<i64> {
        (**self).seconds()
    }
}

/// `YYYY-MM-DD HH:MM UTC`, or `never`.
pub(crate) fn when(t: impl Timestamp) -> String {
    let Some(t) = t.seconds() else {
        return "never".to_string();
    };
    // Howard Hinnant's days-to-civil algorithm.
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        secs / 3600,
        (secs % 3600) / 60
    )
}

pub(crate) fn quota(bytes: impl Timestamp) -> String {
    match bytes.seconds() {
        None | Some(0) => "none".to_string(),
        Some(b) if b % (1 << 30) == 0 => format!("{} GiB", b >> 30),
        Some(b) => format!("{} MiB", b / (1 << 20)),
    }
}

/// Messages for a form's fields.
#[derive(Debug, Default)]
pub(crate) struct Errors(Vec<(&'static str, String)>);

impl Errors {
    pub fn get(&self, field: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, m)| m.as_str())
    }

    pub(crate) fn from_error(e: AppError) -> Result<Errors, AppError> {
        match e {
            AppError::Invalid { field, message } => Ok(Errors(vec![(field, message)])),
            other => Err(other),
        }
    }
}

pub(crate) struct Nav {
    pub username: String,
    pub superadmin: bool,
    pub csrf: String,
}

pub(crate) fn nav(c: &Console) -> Option<Nav> {
    Some(Nav {
        username: c.actor.admin.username.clone(),
        superadmin: c.actor.is_superadmin(),
        csrf: c.csrf.clone(),
    })
}

/// Re-rendered forms answer 422 so scripts and tests can tell them from successes.
pub(crate) fn rerender(page: impl IntoResponse, errors: &Errors) -> Response {
    if errors.0.is_empty() {
        page.into_response()
    } else {
        (StatusCode::UNPROCESSABLE_ENTITY, page).into_response()
    }
}

pub(crate) async fn done(
    session: &Session,
    message: String,
    to: &str,
) -> Result<Response, AppError> {
    auth::set_flash(session, message).await?;
    Ok(Redirect::to(to).into_response())
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/error.html")]
pub(crate) struct ErrorPage {
    pub status: u16,
    pub message: String,
}

// ---- first run, sign-in, sign-out ---------------------------------------------------------

#[derive(Template, WebTemplate)]
#[template(path = "admin/setup.html")]
struct SetupPage {
    title: &'static str,
    nav: Option<Nav>,
    flash: Option<String>,
    csrf: String,
    username: String,
    errors: Errors,
}

#[derive(Deserialize)]
struct Credentials {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

async fn setup_form(State(state): State<AppState>, session: Session) -> Result<Response, AppError> {
    if state.store.admin_count().await? > 0 {
        return Ok(Redirect::to("/login").into_response());
    }
    Ok(SetupPage {
        title: "First-run setup",
        nav: None,
        flash: None,
        csrf: auth::csrf_token(&session).await?,
        username: String::new(),
        errors: Errors::default(),
    }
    .into_response())
}

async fn setup(
    State(state): State<AppState>,
    ConnectInfo(RemoteAddr(peer)): ConnectInfo<RemoteAddr>,
    session: Session,
    Form(f): Form<Credentials>,
) -> Result<Response, AppError> {
    let result = async {
        let username = store::Username::parse(&f.username)?;
        ops::check_new_password(&f.password)?;
        let hash = auth::hash_password(f.password.clone()).await?;
        let admin = state.store.add_first_superadmin(&username, &hash).await?;
        Ok::<_, AppError>(admin)
    }
    .await;
    match result {
        Ok(None) => Ok(Redirect::to("/login").into_response()),
        Ok(Some(admin)) => {
            let actor = Actor::load(
                &state,
                admin.clone(),
                Some(peer.ip().to_string()),
                Via::Console,
            )
            .await?;
            ops::audit_event(&state, &actor, "admin.add", &admin.username,
                Some(serde_json::json!({"username": admin.username, "role": "superadmin", "first_run": true}))).await?;
            sign_in(&state, &session, &admin).await?;
            done(
                &session,
                format!("Welcome, {}. Start by adding a domain.", admin.username),
                "/domains",
            )
            .await
        }
        Err(e) => {
            let errors = Errors::from_error(e)?;
            Ok(rerender(
                SetupPage {
                    title: "First-run setup",
                    nav: None,
                    flash: None,
                    csrf: auth::csrf_token(&session).await?,
                    username: f.username,
                    errors: Errors(errors.0),
                },
                &Errors(vec![("form", String::new())]),
            ))
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/login.html")]
struct LoginPage {
    title: &'static str,
    heading: &'static str,
    action: &'static str,
    user_label: &'static str,
    nav: Option<Nav>,
    flash: Option<String>,
    csrf: String,
    username: String,
    totp_step: bool,
    errors: Errors,
}

impl LoginPage {
    fn admin(csrf: String, username: String, errors: Errors) -> LoginPage {
        LoginPage {
            title: "Sign in",
            heading: "Sign in to the fugu console",
            action: "/login",
            user_label: "Username",
            nav: None,
            flash: None,
            csrf,
            username,
            totp_step: false,
            errors,
        }
    }
}

async fn login_form(State(state): State<AppState>, session: Session) -> Result<Response, AppError> {
    if state.store.admin_count().await? == 0 {
        return Ok(Redirect::to("/setup").into_response());
    }
    let mut page = LoginPage::admin(
        auth::csrf_token(&session).await?,
        String::new(),
        Errors::default(),
    );
    page.flash = auth::take_flash(&session).await?;
    Ok(page.into_response())
}

/// Rotates the session id (no fixation), records the sign-in and a fresh CSRF token.
async fn sign_in(
    state: &AppState,
    session: &Session,
    admin: &store::Admin,
) -> Result<(), AppError> {
    session.cycle_id().await?;
    session.remove_value(auth::PENDING_ADMIN).await?;
    session.insert(auth::ADMIN_ID, admin.id).await?;
    session.insert(auth::LOGIN_AT, auth::now(state)).await?;
    session.insert(auth::SEEN_AT, auth::now(state)).await?;
    auth::renew_csrf(session).await?;
    state.store.record_admin_login(admin.id).await?;
    Ok(())
}

async fn login(
    State(state): State<AppState>,
    ConnectInfo(RemoteAddr(peer)): ConnectInfo<RemoteAddr>,
    session: Session,
    Form(f): Form<Credentials>,
) -> Result<Response, AppError> {
    async fn fail(
        session: &Session,
        username: &str,
        e: AppError,
        status: StatusCode,
    ) -> Result<Response, AppError> {
        let errors = Errors::from_error(e)?;
        let page = LoginPage::admin(
            auth::csrf_token(session).await?,
            username.to_string(),
            errors,
        );
        Ok((status, page).into_response())
    }
    if let Err(e) = auth::throttle(&state, peer.ip(), &f.username).await {
        return fail(&session, &f.username, e, StatusCode::TOO_MANY_REQUESTS).await;
    }
    let admin = state.store.admin_by_username(&f.username).await?;
    let ok = auth::verify_password(
        f.password.clone(),
        admin.as_ref().map(|a| a.password_hash.clone()),
    )
    .await;
    let Some(admin) = admin.filter(|_| ok) else {
        auth::record_failure(&state, peer.ip(), &f.username).await?;
        tracing::info!(%peer, username = %f.username, "failed console sign-in");
        let e = AppError::Invalid {
            field: "login",
            message: "Wrong username or password.".to_string(),
        };
        return fail(&session, &f.username, e, StatusCode::UNAUTHORIZED).await;
    };
    auth::clear_failures(&state, &f.username).await?;
    if admin.totp_enabled {
        session.cycle_id().await?;
        session
            .insert(auth::PENDING_ADMIN, (admin.id, auth::now(&state)))
            .await?;
        return Ok(Redirect::to("/login/totp").into_response());
    }
    sign_in(&state, &session, &admin).await?;
    Ok(Redirect::to("/").into_response())
}

fn totp_page_for(csrf: String, errors: Errors) -> LoginPage {
    LoginPage {
        title: "Two-factor sign-in",
        heading: "Enter your second factor",
        action: "/login/totp",
        user_label: "",
        nav: None,
        flash: None,
        csrf,
        username: String::new(),
        totp_step: true,
        errors,
    }
}

async fn totp_login_form(session: Session) -> Result<Response, AppError> {
    if session
        .get::<(i64, i64)>(auth::PENDING_ADMIN)
        .await?
        .is_none()
    {
        return Ok(Redirect::to("/login").into_response());
    }
    Ok(totp_page_for(auth::csrf_token(&session).await?, Errors::default()).into_response())
}

#[derive(Deserialize)]
struct CodeForm {
    #[serde(default)]
    code: String,
}

async fn totp_login(
    State(state): State<AppState>,
    ConnectInfo(RemoteAddr(peer)): ConnectInfo<RemoteAddr>,
    session: Session,
    Form(f): Form<CodeForm>,
) -> Result<Response, AppError> {
    let Some((id, at)) = session.get::<(i64, i64)>(auth::PENDING_ADMIN).await? else {
        return Ok(Redirect::to("/login").into_response());
    };
    // The password step is good for five minutes.
    let Some(admin) = state
        .store
        .admin_by_id(id)
        .await?
        .filter(|_| auth::now(&state) - at < 300)
    else {
        session.flush().await?;
        return Ok(Redirect::to("/login").into_response());
    };
    if let Err(e) = auth::throttle(&state, peer.ip(), &admin.username).await {
        let page = totp_page_for(auth::csrf_token(&session).await?, Errors::from_error(e)?);
        return Ok((StatusCode::TOO_MANY_REQUESTS, page).into_response());
    }
    let secret = admin.totp_secret.clone().unwrap_or_default();
    let mut ok = crate::totp::verify(&secret, &f.code, auth::now(&state));
    if !ok {
        let code = f.code.trim().to_lowercase();
        for (row, hash) in state.store.admin_recovery_codes(admin.id).await? {
            if auth::verify_password(code.clone(), Some(hash)).await {
                ok = state.store.use_recovery_code(row).await?;
                break;
            }
        }
    }
    if !ok {
        auth::record_failure(&state, peer.ip(), &admin.username).await?;
        let errors = Errors(vec![("login", "That code is not valid.".to_string())]);
        let page = totp_page_for(auth::csrf_token(&session).await?, errors);
        return Ok((StatusCode::UNAUTHORIZED, page).into_response());
    }
    auth::clear_failures(&state, &admin.username).await?;
    sign_in(&state, &session, &admin).await?;
    Ok(Redirect::to("/").into_response())
}

async fn logout(session: Session) -> Result<Response, AppError> {
    session.flush().await?;
    auth::set_flash(&session, "You have been logged out.").await?;
    Ok(Redirect::to("/login").into_response())
}

// ---- dashboard ---------------------------------------------------------------------------

#[derive(Template, WebTemplate)]
#[template(path = "admin/dashboard.html")]
struct DashboardPage {
    title: &'static str,
    nav: Option<Nav>,
    flash: Option<String>,
    domains: usize,
    users: i64,
    aliases: i64,
    rules: Option<usize>,
    /// Mail-flow figures from the mta; `None` for domain admins (they are server-wide).
    flow: Option<crate::mailflow::FlowView>,
    recent: Vec<store::AuditEntry>,
}

async fn dashboard(State(state): State<AppState>, c: Console) -> Result<Response, AppError> {
    let domains = ops::list_domains(&state, &c.actor).await?;
    // Counted in SQL per domain: loading every alias row to count them took 300 ms at
    // 20,000 aliases (scripts/bench-console).
    let (users, aliases) = state
        .store
        .domain_counts()
        .await?
        .iter()
        .filter(|d| c.actor.may_manage(&d.domain))
        .fold((0, 0), |(u, a), d| (u + d.users, a + d.aliases));
    let rules = if c.actor.is_superadmin() {
        Some(
            ops::list_access_rules(&state, &c.actor, store::AccessQuery::default())
                .await?
                .len(),
        )
    } else {
        None
    };
    let recent = state
        .store
        .list_audit(&store::AuditQuery {
            domains: (!c.actor.is_superadmin()).then(|| c.actor.domains.clone()),
            limit: 10,
            ..Default::default()
        })
        .await?
        .entries;
    let flow = if c.actor.is_superadmin() {
        Some(crate::mailflow::fetch(&state).await)
    } else {
        None
    };
    Ok(DashboardPage {
        title: "Dashboard",
        flash: auth::take_flash(&c.session).await?,
        nav: nav(&c),
        domains: domains.len(),
        users,
        aliases,
        rules,
        flow,
        recent,
    }
    .into_response())
}

// ---- domains -----------------------------------------------------------------------------

#[derive(Template, WebTemplate)]
#[template(path = "admin/domains.html")]
struct DomainsPage {
    title: &'static str,
    nav: Option<Nav>,
    flash: Option<String>,
    csrf: String,
    superadmin: bool,
    domains: Vec<store::Domain>,
    form_name: String,
    form_description: String,
    errors: Errors,
}

#[derive(Deserialize, Default)]
struct DomainForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
}

async fn domains_page(
    state: &AppState,
    c: &Console,
    f: DomainForm,
    errors: Errors,
) -> Result<Response, AppError> {
    let status = page_errors(&errors);
    let page = DomainsPage {
        title: "Domains",
        nav: nav(c),
        flash: auth::take_flash(&c.session).await?,
        csrf: c.csrf.clone(),
        superadmin: c.actor.is_superadmin(),
        domains: ops::list_domains(state, &c.actor).await?,
        form_name: f.name,
        form_description: f.description,
        errors,
    };
    Ok(rerender(page, &status))
}

pub(crate) fn page_errors(e: &Errors) -> Errors {
    Errors(e.0.iter().map(|(f, m)| (*f, m.clone())).collect())
}

async fn domains(State(state): State<AppState>, c: Console) -> Result<Response, AppError> {
    domains_page(&state, &c, DomainForm::default(), Errors::default()).await
}

async fn add_domain(
    State(state): State<AppState>,
    c: Console,
    Form(f): Form<DomainForm>,
) -> Result<Response, AppError> {
    match ops::add_domain(&state, &c.actor, &f.name, &f.description).await {
        Ok(d) => done(&c.session, format!("Domain {} added.", d.name), "/domains").await,
        Err(e) => domains_page(&state, &c, f, Errors::from_error(e)?).await,
    }
}

#[derive(Deserialize)]
struct ActiveForm {
    #[serde(default)]
    active: String,
}

async fn domain_active(
    State(state): State<AppState>,
    c: Console,
    Path(name): Path<String>,
    Form(f): Form<ActiveForm>,
) -> Result<Response, AppError> {
    let d = ops::set_domain_active(&state, &c.actor, &name, f.active == "1").await?;
    let state_word = if d.active { "enabled" } else { "disabled" };
    done(
        &c.session,
        format!("Domain {} {state_word}.", d.name),
        "/domains",
    )
    .await
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/domain_remove.html")]
struct DomainRemovePage {
    title: &'static str,
    nav: Option<Nav>,
    flash: Option<String>,
    csrf: String,
    domain: store::Domain,
    users: i64,
    aliases: i64,
}

async fn domain_remove_confirm(
    State(state): State<AppState>,
    c: Console,
    Path(name): Path<String>,
) -> Result<Response, AppError> {
    c.actor.require_superadmin()?;
    let (domain, users, aliases) = ops::domain_contents(&state, &c.actor, &name).await?;
    Ok(DomainRemovePage {
        title: "Remove domain",
        nav: nav(&c),
        flash: None,
        csrf: c.csrf.clone(),
        domain,
        users,
        aliases,
    }
    .into_response())
}

async fn domain_remove(
    State(state): State<AppState>,
    c: Console,
    Path(name): Path<String>,
) -> Result<Response, AppError> {
    ops::remove_domain(&state, &c.actor, &name).await?;
    done(
        &c.session,
        format!("Domain {name} removed with its users and aliases."),
        "/domains",
    )
    .await
}

// ---- users -------------------------------------------------------------------------------

#[derive(Template, WebTemplate)]
#[template(path = "admin/users.html")]
struct UsersPage {
    title: &'static str,
    nav: Option<Nav>,
    flash: Option<String>,
    csrf: String,
    superadmin: bool,
    domains: Vec<store::Domain>,
    domain: String,
    q: String,
    sort_links: Vec<SortLink>,
    sort: &'static str,
    dir: &'static str,
    page: u32,
    pages: u32,
    total: i64,
    users: Vec<store::User>,
    form_address: String,
    form_display_name: String,
    form_quota_mb: String,
    errors: Errors,
}

#[derive(Deserialize, Default)]
struct UsersQuery {
    #[serde(default)]
    domain: String,
    #[serde(default)]
    q: String,
    #[serde(default)]
    page: Option<u32>,
    /// A column of [`store::UserSort`]; anything else sorts by domain.
    #[serde(default)]
    sort: String,
    /// `desc` reverses the order; anything else is ascending.
    #[serde(default)]
    dir: String,
}

/// A sortable column header: its link flips the direction when it is the current column.
pub(crate) struct SortLink {
    pub label: &'static str,
    pub href: String,
    /// `ascending`/`descending` on the current column (for `aria-sort`), else empty.
    pub current: &'static str,
}

fn sort_links(domain: &str, q: &str, sort: store::UserSort, descending: bool) -> Vec<SortLink> {
    use store::UserSort;
    [
        ("Address", UserSort::Address),
        ("Domain", UserSort::Domain),
        ("Quota", UserSort::Quota),
        ("Created", UserSort::Created),
    ]
    .into_iter()
    .map(|(label, column)| {
        let on = column == sort;
        SortLink {
            label,
            href: format!(
                "/users?domain={}&q={}&sort={}&dir={}",
                enc(domain),
                enc(q),
                column.as_str(),
                if on && !descending { "desc" } else { "asc" }
            ),
            current: match (on, descending) {
                (false, _) => "",
                (true, false) => "ascending",
                (true, true) => "descending",
            },
        }
    })
    .collect()
}

#[derive(Deserialize, Default)]
struct UserForm {
    #[serde(default)]
    address: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    quota_mb: String,
}

fn parse_quota_mb(s: &str) -> Result<u64, AppError> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(0);
    }
    s.parse::<u64>()
        .ok()
        .and_then(|mb| mb.checked_mul(1 << 20))
        .ok_or_else(|| AppError::Invalid {
            field: "quota",
            message: format!("{s:?} is not a whole number of MiB"),
        })
}

async fn users_page(
    state: &AppState,
    c: &Console,
    q: UsersQuery,
    f: UserForm,
    errors: Errors,
) -> Result<Response, AppError> {
    let page = q.page.unwrap_or(1).max(1);
    let sort = store::UserSort::parse(&q.sort).unwrap_or_default();
    let descending = q.dir == "desc";
    let result = ops::list_users(
        state,
        &c.actor,
        Some(q.domain.as_str()),
        Some(q.q.clone()),
        (page - 1).saturating_mul(USERS_PER_PAGE),
        USERS_PER_PAGE,
        (sort, descending),
    )
    .await?;
    let pages =
        u32::try_from((result.total + i64::from(USERS_PER_PAGE) - 1) / i64::from(USERS_PER_PAGE))
            .unwrap_or(u32::MAX)
            .max(1);
    let domain = if q.domain.is_empty() && !c.actor.is_superadmin() {
        c.actor.domains.first().cloned().unwrap_or_default()
    } else {
        q.domain
    };
    let status = page_errors(&errors);
    let view = UsersPage {
        title: "Users",
        nav: nav(c),
        flash: auth::take_flash(&c.session).await?,
        csrf: c.csrf.clone(),
        superadmin: c.actor.is_superadmin(),
        domains: ops::list_domains(state, &c.actor).await?,
        sort_links: sort_links(&domain, &q.q, sort, descending),
        sort: sort.as_str(),
        dir: if descending { "desc" } else { "asc" },
        domain,
        q: q.q,
        page,
        pages,
        total: result.total,
        users: result.users,
        form_address: f.address,
        form_display_name: f.display_name,
        form_quota_mb: f.quota_mb,
        errors,
    };
    Ok(rerender(view, &status))
}

async fn users(
    State(state): State<AppState>,
    c: Console,
    Query(q): Query<UsersQuery>,
) -> Result<Response, AppError> {
    users_page(&state, &c, q, UserForm::default(), Errors::default()).await
}

async fn add_user(
    State(state): State<AppState>,
    c: Console,
    Form(f): Form<UserForm>,
) -> Result<Response, AppError> {
    let result = async {
        let quota = parse_quota_mb(&f.quota_mb)?;
        ops::add_user(
            &state,
            &c.actor,
            &f.address,
            &f.password,
            &f.display_name,
            quota,
        )
        .await
    }
    .await;
    match result {
        Ok(u) => {
            done(
                &c.session,
                format!("User {} added.", u.address),
                &format!("/users?domain={}", enc(&u.domain)),
            )
            .await
        }
        Err(e) => users_page(&state, &c, UsersQuery::default(), f, Errors::from_error(e)?).await,
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/user.html")]
struct UserPageView {
    title: &'static str,
    nav: Option<Nav>,
    flash: Option<String>,
    csrf: String,
    user: store::User,
    errors: Errors,
}

async fn user_page(
    state: &AppState,
    c: &Console,
    address: &str,
    errors: Errors,
) -> Result<Response, AppError> {
    let status = page_errors(&errors);
    let view = UserPageView {
        title: "User",
        nav: nav(c),
        flash: auth::take_flash(&c.session).await?,
        csrf: c.csrf.clone(),
        user: ops::get_user(state, &c.actor, address).await?,
        errors,
    };
    Ok(rerender(view, &status))
}

async fn user(
    State(state): State<AppState>,
    c: Console,
    Path(address): Path<String>,
) -> Result<Response, AppError> {
    user_page(&state, &c, &address, Errors::default()).await
}

#[derive(Deserialize)]
struct PasswordForm {
    #[serde(default)]
    password: String,
}

async fn user_password(
    State(state): State<AppState>,
    c: Console,
    Path(address): Path<String>,
    Form(f): Form<PasswordForm>,
) -> Result<Response, AppError> {
    match ops::reset_password(&state, &c.actor, &address, &f.password).await {
        Ok(()) => {
            done(
                &c.session,
                format!("Password of {address} changed."),
                &format!("/users/{}", enc(&address)),
            )
            .await
        }
        Err(e) => user_page(&state, &c, &address, Errors::from_error(e)?).await,
    }
}

#[derive(Deserialize)]
struct QuotaForm {
    #[serde(default)]
    quota_mb: String,
}

async fn user_quota(
    State(state): State<AppState>,
    c: Console,
    Path(address): Path<String>,
    Form(f): Form<QuotaForm>,
) -> Result<Response, AppError> {
    let result = async {
        let q = parse_quota_mb(&f.quota_mb)?;
        ops::update_user(&state, &c.actor, &address, Some(q), None).await
    }
    .await;
    match result {
        Ok(u) => {
            done(
                &c.session,
                format!("Quota of {} set to {}.", u.address, quota(u.quota_bytes)),
                &format!("/users/{}", enc(&address)),
            )
            .await
        }
        Err(e) => user_page(&state, &c, &address, Errors::from_error(e)?).await,
    }
}

async fn user_active(
    State(state): State<AppState>,
    c: Console,
    Path(address): Path<String>,
    Form(f): Form<ActiveForm>,
) -> Result<Response, AppError> {
    let u = ops::update_user(&state, &c.actor, &address, None, Some(f.active == "1")).await?;
    let word = if u.active { "enabled" } else { "disabled" };
    done(
        &c.session,
        format!("{} {word}.", u.address),
        &format!("/users/{}", enc(&address)),
    )
    .await
}

async fn user_remove(
    State(state): State<AppState>,
    c: Console,
    Path(address): Path<String>,
) -> Result<Response, AppError> {
    let u = ops::get_user(&state, &c.actor, &address).await?;
    ops::remove_user(&state, &c.actor, &address).await?;
    done(
        &c.session,
        format!("User {} removed.", u.address),
        &format!("/users?domain={}", enc(&u.domain)),
    )
    .await
}

// ---- aliases -----------------------------------------------------------------------------

#[derive(Template, WebTemplate)]
#[template(path = "admin/aliases.html")]
struct AliasesPage {
    title: &'static str,
    nav: Option<Nav>,
    flash: Option<String>,
    csrf: String,
    aliases: Vec<store::Alias>,
    form_source: String,
    form_destinations: String,
    errors: Errors,
}

#[derive(Deserialize, Default)]
struct AliasForm {
    #[serde(default)]
    source: String,
    #[serde(default)]
    destinations: String,
}

#[derive(Deserialize, Default)]
struct DomainFilter {
    #[serde(default)]
    domain: String,
}

async fn aliases_page(
    state: &AppState,
    c: &Console,
    domain: &str,
    f: AliasForm,
    errors: Errors,
) -> Result<Response, AppError> {
    let status = page_errors(&errors);
    let view = AliasesPage {
        title: "Aliases",
        nav: nav(c),
        flash: auth::take_flash(&c.session).await?,
        csrf: c.csrf.clone(),
        aliases: ops::list_aliases(state, &c.actor, Some(domain)).await?,
        form_source: f.source,
        form_destinations: f.destinations,
        errors,
    };
    Ok(rerender(view, &status))
}

async fn aliases(
    State(state): State<AppState>,
    c: Console,
    Query(q): Query<DomainFilter>,
) -> Result<Response, AppError> {
    aliases_page(
        &state,
        &c,
        &q.domain,
        AliasForm::default(),
        Errors::default(),
    )
    .await
}

fn split_list(s: &str) -> Vec<String> {
    s.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

async fn add_alias(
    State(state): State<AppState>,
    c: Console,
    Form(f): Form<AliasForm>,
) -> Result<Response, AppError> {
    match ops::add_aliases(&state, &c.actor, &f.source, &split_list(&f.destinations)).await {
        Ok(added) => {
            let to: Vec<&str> = added.iter().map(|a| a.destination.as_str()).collect();
            let from = added.first().map(|a| a.source.clone()).unwrap_or_default();
            done(
                &c.session,
                format!("Alias {from} → {} added.", to.join(", ")),
                "/aliases",
            )
            .await
        }
        Err(e) => aliases_page(&state, &c, "", f, Errors::from_error(e)?).await,
    }
}

#[derive(Deserialize)]
struct AliasRemoveForm {
    #[serde(default)]
    source: String,
    #[serde(default)]
    destination: String,
}

async fn remove_alias(
    State(state): State<AppState>,
    c: Console,
    Form(f): Form<AliasRemoveForm>,
) -> Result<Response, AppError> {
    ops::remove_alias(&state, &c.actor, &f.source, Some(&f.destination)).await?;
    done(
        &c.session,
        format!("Alias {} → {} removed.", f.source, f.destination),
        "/aliases",
    )
    .await
}

// ---- access rules ------------------------------------------------------------------------

#[derive(Template, WebTemplate)]
#[template(path = "admin/access.html")]
struct AccessPage {
    title: &'static str,
    nav: Option<Nav>,
    flash: Option<String>,
    csrf: String,
    kinds: Vec<&'static str>,
    sources: Vec<&'static str>,
    rules: Vec<store::AccessRule>,
    filter_kind: String,
    filter_source: String,
    filter_q: String,
    form_kind: String,
    form_value: String,
    form_action: String,
    form_reason: String,
    errors: Errors,
}

#[derive(Deserialize, Default)]
struct AccessFilter {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    q: String,
}

#[derive(Deserialize, Default)]
struct AccessForm {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    expires: String,
}

async fn access_page(
    state: &AppState,
    c: &Console,
    q: AccessFilter,
    f: AccessForm,
    errors: Errors,
) -> Result<Response, AppError> {
    let query = store::AccessQuery {
        kind: store::AccessKind::parse(&q.kind).ok(),
        source: Some(q.source.clone()).filter(|s| !s.is_empty()),
        search: Some(q.q.clone()).filter(|s| !s.is_empty()),
        ..Default::default()
    };
    let status = page_errors(&errors);
    let view = AccessPage {
        title: "Access rules",
        nav: nav(c),
        flash: auth::take_flash(&c.session).await?,
        csrf: c.csrf.clone(),
        kinds: store::AccessKind::ALL.iter().map(|k| k.as_str()).collect(),
        sources: vec!["manual", "auto", "feed"],
        rules: ops::list_access_rules(state, &c.actor, query).await?,
        filter_kind: q.kind,
        filter_source: q.source,
        filter_q: q.q,
        form_kind: f.kind,
        form_value: f.value,
        form_action: f.action,
        form_reason: f.reason,
        errors,
    };
    Ok(rerender(view, &status))
}

async fn access(
    State(state): State<AppState>,
    c: Console,
    Query(q): Query<AccessFilter>,
) -> Result<Response, AppError> {
    access_page(&state, &c, q, AccessForm::default(), Errors::default()).await
}

async fn add_access(
    State(state): State<AppState>,
    c: Console,
    Form(f): Form<AccessForm>,
) -> Result<Response, AppError> {
    let result = async {
        let expires_at = match f.expires.trim() {
            "" => None,
            s => Some(
                s.parse::<i64>()
                    .ok()
                    .filter(|s| *s > 0)
                    .map(|s| auth::now(&state) + s)
                    .ok_or_else(|| AppError::Invalid {
                        field: "expires",
                        message: "choose an expiry from the list".to_string(),
                    })?,
            ),
        };
        ops::add_access_rule(
            &state, &c.actor, &f.kind, &f.value, &f.action, &f.reason, expires_at,
        )
        .await
    }
    .await;
    match result {
        Ok(r) => {
            done(
                &c.session,
                format!("Rule added: {} {} {}.", r.action, r.kind, r.value),
                "/access",
            )
            .await
        }
        Err(e) => {
            access_page(
                &state,
                &c,
                AccessFilter::default(),
                f,
                Errors::from_error(e)?,
            )
            .await
        }
    }
}

async fn remove_access(
    State(state): State<AppState>,
    c: Console,
    Path(id): Path<i64>,
) -> Result<Response, AppError> {
    let r = ops::remove_access_rule(&state, &c.actor, id).await?;
    done(
        &c.session,
        format!("Lifted: {} {} {}.", r.action, r.kind, r.value),
        "/access",
    )
    .await
}

// ---- admins ------------------------------------------------------------------------------

struct AdminRow {
    id: i64,
    username: String,
    role: &'static str,
    domains: String,
    totp: bool,
    last_login: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/admins.html")]
struct AdminsPage {
    title: &'static str,
    nav: Option<Nav>,
    flash: Option<String>,
    csrf: String,
    self_id: i64,
    admins: Vec<AdminRow>,
    form_username: String,
    form_role: String,
    form_domains: String,
    errors: Errors,
}

#[derive(Deserialize, Default)]
struct AdminForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    domains: String,
}

async fn admins_page(
    state: &AppState,
    c: &Console,
    f: AdminForm,
    errors: Errors,
) -> Result<Response, AppError> {
    c.actor.require_superadmin()?;
    let mut rows = Vec::new();
    for a in state.store.list_admins().await? {
        rows.push(AdminRow {
            id: a.id,
            domains: state.store.admin_domains(a.id).await?.join(" "),
            username: a.username,
            role: a.role.as_str(),
            totp: a.totp_enabled,
            last_login: when(a.last_login_at),
        });
    }
    let status = page_errors(&errors);
    let view = AdminsPage {
        title: "Administrators",
        nav: nav(c),
        flash: auth::take_flash(&c.session).await?,
        csrf: c.csrf.clone(),
        self_id: c.actor.admin.id,
        admins: rows,
        form_username: f.username,
        form_role: f.role,
        form_domains: f.domains,
        errors,
    };
    Ok(rerender(view, &status))
}

async fn admins(State(state): State<AppState>, c: Console) -> Result<Response, AppError> {
    admins_page(&state, &c, AdminForm::default(), Errors::default()).await
}

async fn add_admin(
    State(state): State<AppState>,
    c: Console,
    Form(f): Form<AdminForm>,
) -> Result<Response, AppError> {
    match ops::add_admin(
        &state,
        &c.actor,
        &f.username,
        &f.password,
        &f.role,
        &split_list(&f.domains),
    )
    .await
    {
        Ok(a) => {
            done(
                &c.session,
                format!("Administrator {} added.", a.username),
                "/admins",
            )
            .await
        }
        Err(e) => admins_page(&state, &c, f, Errors::from_error(e)?).await,
    }
}

#[derive(Deserialize)]
struct DomainsForm {
    #[serde(default)]
    domains: String,
}

async fn admin_domains(
    State(state): State<AppState>,
    c: Console,
    Path(id): Path<i64>,
    Form(f): Form<DomainsForm>,
) -> Result<Response, AppError> {
    match ops::set_admin_domains(&state, &c.actor, id, &split_list(&f.domains)).await {
        Ok(()) => done(&c.session, "Domains saved.".to_string(), "/admins").await,
        Err(e) => admins_page(&state, &c, AdminForm::default(), Errors::from_error(e)?).await,
    }
}

async fn remove_admin(
    State(state): State<AppState>,
    c: Console,
    Path(id): Path<i64>,
) -> Result<Response, AppError> {
    ops::remove_admin(&state, &c.actor, id).await?;
    done(&c.session, "Administrator removed.".to_string(), "/admins").await
}

// ---- audit log ---------------------------------------------------------------------------

#[derive(Template, WebTemplate)]
#[template(path = "admin/audit.html")]
struct AuditPageView {
    title: &'static str,
    nav: Option<Nav>,
    flash: Option<String>,
    actor: String,
    action: String,
    object: String,
    page: u32,
    pages: u32,
    total: i64,
    entries: Vec<store::AuditEntry>,
}

#[derive(Deserialize)]
struct AuditFilter {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    object: String,
    #[serde(default)]
    page: Option<u32>,
}

async fn audit(
    State(state): State<AppState>,
    c: Console,
    Query(q): Query<AuditFilter>,
) -> Result<Response, AppError> {
    let page = q.page.unwrap_or(1).max(1);
    let some = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
    let result = state
        .store
        .list_audit(&store::AuditQuery {
            actor: some(&q.actor),
            action: some(&q.action),
            object: some(&q.object),
            domains: (!c.actor.is_superadmin()).then(|| c.actor.domains.clone()),
            offset: (page - 1).saturating_mul(AUDIT_PER_PAGE),
            limit: AUDIT_PER_PAGE,
        })
        .await?;
    let pages =
        u32::try_from((result.total + i64::from(AUDIT_PER_PAGE) - 1) / i64::from(AUDIT_PER_PAGE))
            .unwrap_or(u32::MAX)
            .max(1);
    Ok(AuditPageView {
        title: "Audit log",
        nav: nav(&c),
        flash: auth::take_flash(&c.session).await?,
        actor: q.actor,
        action: q.action,
        object: q.object,
        page,
        pages,
        total: result.total,
        entries: result.entries,
    }
    .into_response())
}

// ---- API tokens --------------------------------------------------------------------------

#[derive(Template, WebTemplate)]
#[template(path = "admin/tokens.html")]
struct TokensPage {
    title: &'static str,
    nav: Option<Nav>,
    flash: Option<String>,
    csrf: String,
    new_token: Option<String>,
    tokens: Vec<store::ApiToken>,
    form_name: String,
    errors: Errors,
}

#[derive(Deserialize, Default)]
struct TokenForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    scope: String,
}

async fn tokens_page(
    state: &AppState,
    c: &Console,
    new_token: Option<String>,
    form_name: String,
    errors: Errors,
) -> Result<Response, AppError> {
    let status = page_errors(&errors);
    let view = TokensPage {
        title: "API tokens",
        nav: nav(c),
        flash: auth::take_flash(&c.session).await?,
        csrf: c.csrf.clone(),
        new_token,
        tokens: state.store.list_api_tokens(Some(c.actor.admin.id)).await?,
        form_name,
        errors,
    };
    Ok(rerender(view, &status))
}

async fn tokens(State(state): State<AppState>, c: Console) -> Result<Response, AppError> {
    tokens_page(&state, &c, None, String::new(), Errors::default()).await
}

async fn add_token(
    State(state): State<AppState>,
    c: Console,
    Form(f): Form<TokenForm>,
) -> Result<Response, AppError> {
    let result = async {
        let scope = store::TokenScope::parse(&f.scope)?;
        let token = format!("fugu_{}", auth::random_hex(32));
        let t = state
            .store
            .add_api_token(
                c.actor.admin.id,
                &f.name,
                scope,
                &crate::api::token_digest(&token),
            )
            .await?;
        ops::audit_event(
            &state,
            &c.actor,
            "token.add",
            &t.name,
            Some(serde_json::json!({"name": t.name, "scope": t.scope})),
        )
        .await?;
        Ok::<_, AppError>(token)
    }
    .await;
    match result {
        // Shown in this response only; the redirect-after-post pattern would lose it.
        Ok(token) => tokens_page(&state, &c, Some(token), String::new(), Errors::default()).await,
        Err(e) => tokens_page(&state, &c, None, f.name, Errors::from_error(e)?).await,
    }
}

async fn remove_token(
    State(state): State<AppState>,
    c: Console,
    Path(id): Path<i64>,
) -> Result<Response, AppError> {
    state
        .store
        .remove_api_token(id, Some(c.actor.admin.id))
        .await?;
    ops::audit_event(&state, &c.actor, "token.remove", &id.to_string(), None).await?;
    done(&c.session, "Token revoked.".to_string(), "/tokens").await
}

// ---- TOTP enrolment ----------------------------------------------------------------------

struct Enrolment {
    secret: String,
    svg: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/totp.html")]
struct TotpPage {
    title: &'static str,
    nav: Option<Nav>,
    flash: Option<String>,
    csrf: String,
    username: String,
    enabled: bool,
    enrolment: Option<Enrolment>,
    recovery_codes: Option<Vec<String>>,
    errors: Errors,
}

async fn totp_view(
    c: &Console,
    recovery_codes: Option<Vec<String>>,
    errors: Errors,
) -> Result<Response, AppError> {
    let admin = &c.actor.admin;
    let enrolment = match (&admin.totp_secret, admin.totp_enabled) {
        (Some(secret), false) => {
            let (_, svg) = crate::totp::enrolment(secret, &admin.username);
            Some(Enrolment {
                secret: secret.clone(),
                svg,
            })
        }
        _ => None,
    };
    let status = page_errors(&errors);
    let view = TotpPage {
        title: "Two-factor sign-in",
        nav: nav(c),
        flash: auth::take_flash(&c.session).await?,
        csrf: c.csrf.clone(),
        username: admin.username.clone(),
        enabled: admin.totp_enabled,
        enrolment,
        recovery_codes,
        errors,
    };
    Ok(rerender(view, &status))
}

async fn totp_page(c: Console) -> Result<Response, AppError> {
    totp_view(&c, None, Errors::default()).await
}

async fn totp_start(State(state): State<AppState>, c: Console) -> Result<Response, AppError> {
    if c.actor.admin.totp_enabled {
        return Ok(Redirect::to("/totp").into_response());
    }
    state
        .store
        .set_admin_totp_secret(c.actor.admin.id, Some(&crate::totp::new_secret()))
        .await?;
    Ok(Redirect::to("/totp").into_response())
}

async fn totp_confirm(
    State(state): State<AppState>,
    mut c: Console,
    Form(f): Form<CodeForm>,
) -> Result<Response, AppError> {
    let secret = c.actor.admin.totp_secret.clone().unwrap_or_default();
    if c.actor.admin.totp_enabled || !crate::totp::verify(&secret, &f.code, auth::now(&state)) {
        let errors = Errors(vec![(
            "code",
            "That code does not match; check the app's clock and try the next one.".to_string(),
        )]);
        return totp_view(&c, None, errors).await;
    }
    let codes: Vec<String> = (0..8).map(|_| auth::random_hex(5)).collect();
    let mut hashes = Vec::new();
    for code in &codes {
        hashes.push(auth::hash_password(code.clone()).await?);
    }
    state
        .store
        .enable_admin_totp(c.actor.admin.id, &hashes)
        .await?;
    ops::audit_event(
        &state,
        &c.actor,
        "admin.totp-on",
        &c.actor.admin.username,
        None,
    )
    .await?;
    c.actor.admin.totp_enabled = true;
    totp_view(&c, Some(codes), Errors::default()).await
}

async fn totp_disable(State(state): State<AppState>, c: Console) -> Result<Response, AppError> {
    state
        .store
        .set_admin_totp_secret(c.actor.admin.id, None)
        .await?;
    ops::audit_event(
        &state,
        &c.actor,
        "admin.totp-off",
        &c.actor.admin.username,
        None,
    )
    .await?;
    done(
        &c.session,
        "Two-factor sign-in turned off.".to_string(),
        "/totp",
    )
    .await
}

// ---- mailbox owners' self-service --------------------------------------------------------

fn account_login_page(csrf: String, username: String, errors: Errors) -> LoginPage {
    LoginPage {
        title: "Mailbox sign-in",
        heading: "Sign in with your mail address",
        action: "/account/login",
        user_label: "Mail address",
        nav: None,
        flash: None,
        csrf,
        username,
        totp_step: false,
        errors,
    }
}

async fn account_login_form(session: Session) -> Result<Response, AppError> {
    let mut page = account_login_page(
        auth::csrf_token(&session).await?,
        String::new(),
        Errors::default(),
    );
    page.flash = auth::take_flash(&session).await?;
    Ok(page.into_response())
}

async fn account_login(
    State(state): State<AppState>,
    ConnectInfo(RemoteAddr(peer)): ConnectInfo<RemoteAddr>,
    session: Session,
    Form(f): Form<Credentials>,
) -> Result<Response, AppError> {
    let key = format!("mailbox:{}", f.username);
    if let Err(e) = auth::throttle(&state, peer.ip(), &key).await {
        let page = account_login_page(
            auth::csrf_token(&session).await?,
            f.username,
            Errors::from_error(e)?,
        );
        return Ok((StatusCode::TOO_MANY_REQUESTS, page).into_response());
    }
    let ok = match store::EmailAddress::parse(f.username.trim()) {
        Ok(addr) => {
            let pw = f.password.clone();
            let st = state.store.clone();
            st.verify_user_password(&addr, &pw).await?.then_some(addr)
        }
        Err(_) => None,
    };
    let Some(addr) = ok else {
        auth::record_failure(&state, peer.ip(), &key).await?;
        let errors = Errors(vec![("login", "Wrong address or password.".to_string())]);
        let page = account_login_page(auth::csrf_token(&session).await?, f.username, errors);
        return Ok((StatusCode::UNAUTHORIZED, page).into_response());
    };
    auth::clear_failures(&state, &key).await?;
    session.cycle_id().await?;
    session
        .insert(auth::MAILBOX, (addr.to_string(), auth::now(&state)))
        .await?;
    session.insert(auth::SEEN_AT, auth::now(&state)).await?;
    auth::renew_csrf(&session).await?;
    Ok(Redirect::to("/account").into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/account.html")]
struct AccountPage {
    title: &'static str,
    nav: Option<Nav>,
    flash: Option<String>,
    csrf: String,
    address: String,
    errors: Errors,
}

async fn mailbox(state: &AppState, session: &Session) -> Result<Option<String>, AppError> {
    let Some((addr, at)) = session.get::<(String, i64)>(auth::MAILBOX).await? else {
        return Ok(None);
    };
    let absolute = i64::try_from(state.config.absolute_timeout.as_secs()).unwrap_or(i64::MAX);
    let idle = i64::try_from(state.config.idle_timeout.as_secs()).unwrap_or(i64::MAX);
    let seen_at = session.get::<i64>(auth::SEEN_AT).await?.unwrap_or(at);
    let now = auth::now(state);
    if now - at > absolute || now - seen_at > idle {
        session.flush().await?;
        return Ok(None);
    }
    session.insert(auth::SEEN_AT, now).await?;
    Ok(Some(addr))
}

async fn account_view(
    session: &Session,
    address: String,
    errors: Errors,
) -> Result<Response, AppError> {
    let status = page_errors(&errors);
    let view = AccountPage {
        title: "Your mailbox",
        nav: None,
        flash: auth::take_flash(session).await?,
        csrf: auth::csrf_token(session).await?,
        address,
        errors,
    };
    Ok(rerender(view, &status))
}

async fn account(State(state): State<AppState>, session: Session) -> Result<Response, AppError> {
    match mailbox(&state, &session).await? {
        Some(address) => account_view(&session, address, Errors::default()).await,
        None => Ok(Redirect::to("/account/login").into_response()),
    }
}

#[derive(Deserialize)]
struct OwnPasswordForm {
    #[serde(default)]
    current: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    repeat: String,
}

async fn account_password(
    State(state): State<AppState>,
    ConnectInfo(RemoteAddr(peer)): ConnectInfo<RemoteAddr>,
    session: Session,
    Form(f): Form<OwnPasswordForm>,
) -> Result<Response, AppError> {
    let Some(address) = mailbox(&state, &session).await? else {
        return Ok(Redirect::to("/account/login").into_response());
    };
    let addr = store::EmailAddress::parse(&address)?;
    let result = async {
        if !state.store.verify_user_password(&addr, &f.current).await? {
            return Err(AppError::Invalid {
                field: "current",
                message: "That is not your current password.".to_string(),
            });
        }
        ops::check_new_password(&f.password)?;
        if f.password != f.repeat {
            return Err(AppError::Invalid {
                field: "repeat",
                message: "The two new passwords differ.".to_string(),
            });
        }
        let hash = auth::hash_password(f.password.clone()).await?;
        state.store.set_password_hash(&addr, &hash).await?;
        state
            .store
            .add_audit(&store::NewAuditEntry {
                actor: address.clone(),
                action: "user.passwd".to_string(),
                object: address.clone(),
                after: Some(serde_json::json!({"password": "changed by owner"}).to_string()),
                remote_addr: Some(peer.ip().to_string()),
                ..Default::default()
            })
            .await?;
        Ok(())
    }
    .await;
    match result {
        Ok(()) => {
            done(
                &session,
                "Your password has been changed.".to_string(),
                "/account",
            )
            .await
        }
        Err(e) => account_view(&session, address, Errors::from_error(e)?).await,
    }
}

async fn account_logout(session: Session) -> Result<Response, AppError> {
    session.flush().await?;
    Ok(Redirect::to("/account/login").into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_formats_utc() {
        assert_eq!(when(0i64), "1970-01-01 00:00 UTC");
        assert_eq!(when(1_700_000_000i64), "2023-11-14 22:13 UTC");
        assert_eq!(when(None::<i64>), "never");
        assert_eq!(quota(0i64), "none");
        assert_eq!(quota(2i64 << 30), "2 GiB");
        assert_eq!(quota(100i64 << 20), "100 MiB");
    }
}
