//! The operations behind both the HTML pages and the JSON API: authorisation by role and
//! domain, validation through `store`'s types, the change itself, and its audit entry.
//! Handlers only translate requests into these calls and results into pages or JSON.

use serde_json::json;
use store::{
    AccessQuery, AccessRule, Admin, Alias, AliasSource, Domain, DomainName, EmailAddress,
    NewAccessRule, NewAuditEntry, NewUser, Role, User, UserPage, UserQuery,
};

use crate::AppState;
use crate::error::AppError;

/// Shortest password the console accepts for new mailbox and admin passwords.
pub(crate) const MIN_PASSWORD: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    Console,
    Api,
}

/// Who is acting: an administrator with their role and domains, from where.
#[derive(Debug, Clone)]
pub(crate) struct Actor {
    pub admin: Admin,
    pub domains: Vec<String>,
    pub remote: Option<String>,
    pub via: Via,
}

impl Actor {
    pub async fn load(
        state: &AppState,
        admin: Admin,
        remote: Option<String>,
        via: Via,
    ) -> Result<Actor, AppError> {
        let domains = state.store.admin_domains(admin.id).await?;
        Ok(Actor {
            admin,
            domains,
            remote,
            via,
        })
    }

    pub fn is_superadmin(&self) -> bool {
        self.admin.role == Role::Superadmin
    }

    pub fn may_manage(&self, domain: &str) -> bool {
        self.is_superadmin() || self.domains.iter().any(|d| d == domain)
    }

    pub fn check_domain(&self, domain: &DomainName) -> Result<(), AppError> {
        if self.may_manage(domain.as_str()) {
            Ok(())
        } else {
            Err(AppError::Forbidden(format!(
                "you are not an administrator of {domain}"
            )))
        }
    }

    pub fn require_superadmin(&self) -> Result<(), AppError> {
        if self.is_superadmin() {
            Ok(())
        } else {
            Err(AppError::Forbidden(
                "only a superadmin may do this".to_string(),
            ))
        }
    }

    pub(crate) async fn audit(
        &self,
        state: &AppState,
        action: &str,
        object: &str,
        before: Option<serde_json::Value>,
        after: Option<serde_json::Value>,
    ) -> Result<(), AppError> {
        let actor = match self.via {
            Via::Console => self.admin.username.clone(),
            Via::Api => format!("{} (api)", self.admin.username),
        };
        state
            .store
            .add_audit(&NewAuditEntry {
                actor,
                action: action.to_string(),
                object: object.to_string(),
                before: before.map(|v| v.to_string()),
                after: after.map(|v| v.to_string()),
                remote_addr: self.remote.clone(),
            })
            .await?;
        Ok(())
    }
}

pub(crate) fn domain_json(d: &Domain) -> serde_json::Value {
    json!({"name": d.name, "active": d.active, "description": d.description, "created_at": d.created_at})
}

pub(crate) fn user_json(u: &User) -> serde_json::Value {
    json!({"address": u.address, "domain": u.domain, "display_name": u.display_name,
           "quota_bytes": u.quota_bytes, "active": u.active, "created_at": u.created_at,
           "updated_at": u.updated_at})
}

pub(crate) fn alias_json(a: &Alias) -> serde_json::Value {
    json!({"id": a.id, "source": a.source, "destination": a.destination, "domain": a.domain,
           "active": a.active, "created_at": a.created_at})
}

pub(crate) fn rule_json(r: &AccessRule) -> serde_json::Value {
    json!({"id": r.id, "kind": r.kind, "value": r.value, "action": r.action, "source": r.source,
           "reason": r.reason, "created_at": r.created_at, "expires_at": r.expires_at})
}

pub(crate) fn check_new_password(password: &str) -> Result<(), AppError> {
    if password.chars().count() < MIN_PASSWORD {
        return Err(AppError::Invalid {
            field: "password",
            message: format!("the password needs at least {MIN_PASSWORD} characters"),
        });
    }
    Ok(())
}

fn parse_domain(input: &str, field: &'static str) -> Result<DomainName, AppError> {
    DomainName::parse(input).map_err(|e| AppError::Invalid {
        field,
        message: e.to_string(),
    })
}

fn parse_address(input: &str, field: &'static str) -> Result<EmailAddress, AppError> {
    EmailAddress::parse(input.trim()).map_err(|e| AppError::Invalid {
        field,
        message: e.to_string(),
    })
}

// ---- domains -------------------------------------------------------------------------

pub(crate) async fn list_domains(state: &AppState, actor: &Actor) -> Result<Vec<Domain>, AppError> {
    let all = state.store.list_domains().await?;
    Ok(all
        .into_iter()
        .filter(|d| actor.may_manage(&d.name))
        .collect())
}

pub(crate) async fn get_domain(
    state: &AppState,
    actor: &Actor,
    name: &str,
) -> Result<Domain, AppError> {
    let name = parse_domain(name, "domain")?;
    actor.check_domain(&name)?;
    state
        .store
        .domain(&name)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("domain {name} does not exist")))
}

pub(crate) async fn add_domain(
    state: &AppState,
    actor: &Actor,
    name: &str,
    description: &str,
) -> Result<Domain, AppError> {
    actor.require_superadmin()?;
    let name = parse_domain(name.trim(), "domain")?;
    let description = description.trim();
    if description.chars().count() > 200 {
        return Err(AppError::Invalid {
            field: "description",
            message: "keep the description under 200 characters".to_string(),
        });
    }
    let d = state.store.add_domain(&name, description).await?;
    actor
        .audit(state, "domain.add", &d.name, None, Some(domain_json(&d)))
        .await?;
    Ok(d)
}

pub(crate) async fn set_domain_active(
    state: &AppState,
    actor: &Actor,
    name: &str,
    active: bool,
) -> Result<Domain, AppError> {
    let before = get_domain(state, actor, name).await?;
    let name = parse_domain(name, "domain")?;
    state.store.set_domain_active(&name, active).await?;
    let after = get_domain(state, actor, name.as_str()).await?;
    let action = if active {
        "domain.enable"
    } else {
        "domain.disable"
    };
    actor
        .audit(
            state,
            action,
            &after.name,
            Some(domain_json(&before)),
            Some(domain_json(&after)),
        )
        .await?;
    Ok(after)
}

/// What removing a domain would take with it: (users, aliases).
pub(crate) async fn domain_contents(
    state: &AppState,
    actor: &Actor,
    name: &str,
) -> Result<(Domain, i64, i64), AppError> {
    let d = get_domain(state, actor, name).await?;
    let (users, aliases) = state
        .store
        .domain_contents(&parse_domain(&d.name, "domain")?)
        .await?;
    Ok((d, users, aliases))
}

pub(crate) async fn remove_domain(
    state: &AppState,
    actor: &Actor,
    name: &str,
) -> Result<(), AppError> {
    actor.require_superadmin()?;
    let (d, users, aliases) = domain_contents(state, actor, name).await?;
    state
        .store
        .remove_domain(&parse_domain(&d.name, "domain")?)
        .await?;
    let mut before = domain_json(&d);
    before["users"] = users.into();
    before["aliases"] = aliases.into();
    actor
        .audit(state, "domain.remove", &d.name, Some(before), None)
        .await
}

// ---- users ---------------------------------------------------------------------------

pub(crate) async fn list_users(
    state: &AppState,
    actor: &Actor,
    domain: Option<&str>,
    search: Option<String>,
    offset: u32,
    limit: u32,
    (sort, descending): (store::UserSort, bool),
) -> Result<UserPage, AppError> {
    let domain = match domain.filter(|d| !d.is_empty()) {
        Some(d) => {
            let d = parse_domain(d, "domain")?;
            actor.check_domain(&d)?;
            Some(d)
        }
        // A domain admin without a filter sees their first domain.
        None if !actor.is_superadmin() => match actor.domains.first() {
            Some(d) => Some(parse_domain(d, "domain")?),
            None => {
                return Ok(UserPage {
                    users: Vec::new(),
                    total: 0,
                });
            }
        },
        None => None,
    };
    Ok(state
        .store
        .list_users_sorted(
            &UserQuery {
                domain,
                search: search.filter(|s| !s.trim().is_empty()),
                offset,
                limit,
            },
            sort,
            descending,
        )
        .await?)
}

pub(crate) async fn get_user(
    state: &AppState,
    actor: &Actor,
    address: &str,
) -> Result<User, AppError> {
    let address = parse_address(address, "address")?;
    actor.check_domain(address.domain())?;
    state
        .store
        .user(&address)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("user {address} does not exist")))
}

pub(crate) async fn add_user(
    state: &AppState,
    actor: &Actor,
    address: &str,
    password: &str,
    display_name: &str,
    quota_bytes: u64,
) -> Result<User, AppError> {
    let address = parse_address(address, "address")?;
    actor.check_domain(address.domain())?;
    check_new_password(password)?;
    let display_name = display_name.trim();
    if display_name.chars().count() > 200 {
        return Err(AppError::Invalid {
            field: "display_name",
            message: "keep the name under 200 characters".to_string(),
        });
    }
    let hash = crate::auth::hash_password(password.to_string()).await?;
    let u = state
        .store
        .add_user(&NewUser {
            address,
            password_hash: hash,
            display_name: display_name.to_string(),
            quota_bytes,
        })
        .await?;
    actor
        .audit(state, "user.add", &u.address, None, Some(user_json(&u)))
        .await?;
    Ok(u)
}

pub(crate) async fn reset_password(
    state: &AppState,
    actor: &Actor,
    address: &str,
    password: &str,
) -> Result<(), AppError> {
    let u = get_user(state, actor, address).await?;
    check_new_password(password)?;
    let hash = crate::auth::hash_password(password.to_string()).await?;
    state
        .store
        .set_password_hash(&parse_address(&u.address, "address")?, &hash)
        .await?;
    // Never the hash itself in the log: only that it changed.
    actor
        .audit(
            state,
            "user.passwd",
            &u.address,
            None,
            Some(json!({"password": "changed"})),
        )
        .await
}

pub(crate) async fn update_user(
    state: &AppState,
    actor: &Actor,
    address: &str,
    quota_bytes: Option<u64>,
    active: Option<bool>,
) -> Result<User, AppError> {
    let before = get_user(state, actor, address).await?;
    let addr = parse_address(&before.address, "address")?;
    if let Some(q) = quota_bytes {
        state.store.set_user_quota(&addr, q).await?;
    }
    if let Some(a) = active {
        state.store.set_user_active(&addr, a).await?;
    }
    let after = get_user(state, actor, address).await?;
    actor
        .audit(
            state,
            "user.update",
            &after.address,
            Some(user_json(&before)),
            Some(user_json(&after)),
        )
        .await?;
    Ok(after)
}

pub(crate) async fn remove_user(
    state: &AppState,
    actor: &Actor,
    address: &str,
) -> Result<(), AppError> {
    let before = get_user(state, actor, address).await?;
    state
        .store
        .remove_user(&parse_address(&before.address, "address")?)
        .await?;
    actor
        .audit(
            state,
            "user.remove",
            &before.address,
            Some(user_json(&before)),
            None,
        )
        .await
}

// ---- aliases -------------------------------------------------------------------------

pub(crate) async fn list_aliases(
    state: &AppState,
    actor: &Actor,
    domain: Option<&str>,
) -> Result<Vec<Alias>, AppError> {
    match domain.filter(|d| !d.is_empty()) {
        Some(d) => {
            let d = parse_domain(d, "domain")?;
            actor.check_domain(&d)?;
            Ok(state.store.list_aliases(Some(&d)).await?)
        }
        None => {
            let all = state.store.list_aliases(None).await?;
            Ok(all
                .into_iter()
                .filter(|a| actor.may_manage(&a.domain))
                .collect())
        }
    }
}

/// Adds `source` → each destination (one row per pair). Destinations may be local
/// mailboxes or external addresses (forwards); `@domain` as source is a catch-all.
pub(crate) async fn add_aliases(
    state: &AppState,
    actor: &Actor,
    source: &str,
    destinations: &[String],
) -> Result<Vec<Alias>, AppError> {
    let source = AliasSource::parse(source.trim()).map_err(|e| AppError::Invalid {
        field: "source",
        message: e.to_string(),
    })?;
    actor.check_domain(source.domain())?;
    let destinations = destinations
        .iter()
        .map(|d| d.trim())
        .filter(|d| !d.is_empty())
        .map(|d| parse_address(d, "destination"))
        .collect::<Result<Vec<_>, _>>()?;
    if destinations.is_empty() {
        return Err(AppError::Invalid {
            field: "destination",
            message: "give at least one destination address".to_string(),
        });
    }
    let mut added = Vec::new();
    for d in &destinations {
        let a = state.store.add_alias(&source, d).await?;
        actor
            .audit(state, "alias.add", &a.source, None, Some(alias_json(&a)))
            .await?;
        added.push(a);
    }
    Ok(added)
}

pub(crate) async fn remove_alias(
    state: &AppState,
    actor: &Actor,
    source: &str,
    destination: Option<&str>,
) -> Result<u64, AppError> {
    let source = AliasSource::parse(source.trim()).map_err(|e| AppError::Invalid {
        field: "source",
        message: e.to_string(),
    })?;
    actor.check_domain(source.domain())?;
    let destination = destination
        .filter(|d| !d.is_empty())
        .map(|d| parse_address(d, "destination"))
        .transpose()?;
    let n = state
        .store
        .remove_alias(&source, destination.as_ref())
        .await?;
    actor
        .audit(
            state,
            "alias.remove",
            &source.to_string(),
            Some(json!({"source": source.to_string(),
                        "destination": destination.map(|d| d.to_string()), "rows": n})),
            None,
        )
        .await?;
    Ok(n)
}

// ---- access rules (appliance-wide: superadmins only) ---------------------------------

pub(crate) async fn list_access_rules(
    state: &AppState,
    actor: &Actor,
    mut q: AccessQuery,
) -> Result<Vec<AccessRule>, AppError> {
    actor.require_superadmin()?;
    q.now = crate::auth::now(state);
    Ok(state.store.list_access_rules(&q).await?)
}

pub(crate) async fn add_access_rule(
    state: &AppState,
    actor: &Actor,
    kind: &str,
    value: &str,
    action: &str,
    reason: &str,
    expires_at: Option<i64>,
) -> Result<AccessRule, AppError> {
    actor.require_superadmin()?;
    let kind = store::AccessKind::parse(kind)?;
    let action = store::AccessAction::parse(action)?;
    if expires_at.is_some_and(|e| e <= crate::auth::now(state)) {
        return Err(AppError::Invalid {
            field: "expires",
            message: "the expiry is in the past".to_string(),
        });
    }
    let rule = NewAccessRule::parse(kind, value, action, reason, expires_at)?;
    let r = state.store.add_access_rule(&rule).await?;
    actor
        .audit(
            state,
            "access.add",
            &format!("{} {}", r.kind, r.value),
            None,
            Some(rule_json(&r)),
        )
        .await?;
    Ok(r)
}

pub(crate) async fn remove_access_rule(
    state: &AppState,
    actor: &Actor,
    id: i64,
) -> Result<AccessRule, AppError> {
    actor.require_superadmin()?;
    let r = state.store.remove_access_rule(id).await?;
    let action = if r.source == "auto" {
        "access.lift-ban"
    } else {
        "access.remove"
    };
    actor
        .audit(
            state,
            action,
            &format!("{} {}", r.kind, r.value),
            Some(rule_json(&r)),
            None,
        )
        .await?;
    Ok(r)
}

// ---- admins --------------------------------------------------------------------------

pub(crate) async fn add_admin(
    state: &AppState,
    actor: &Actor,
    username: &str,
    password: &str,
    role: &str,
    domains: &[String],
) -> Result<Admin, AppError> {
    actor.require_superadmin()?;
    let username = store::Username::parse(username)?;
    let role = Role::parse(role)?;
    check_new_password(password)?;
    let domains = domains
        .iter()
        .map(|d| d.trim())
        .filter(|d| !d.is_empty())
        .map(|d| parse_domain(d, "domains"))
        .collect::<Result<Vec<_>, _>>()?;
    for d in &domains {
        if state.store.domain(d).await?.is_none() {
            return Err(AppError::Invalid {
                field: "domains",
                message: format!("domain {d} does not exist"),
            });
        }
    }
    let hash = crate::auth::hash_password(password.to_string()).await?;
    let admin = state.store.add_admin(&username, &hash, role).await?;
    state.store.set_admin_domains(admin.id, &domains).await?;
    let names: Vec<String> = domains.iter().map(ToString::to_string).collect();
    actor
        .audit(
            state,
            "admin.add",
            &admin.username,
            None,
            Some(json!({"username": admin.username, "role": role.as_str(), "domains": names})),
        )
        .await?;
    Ok(admin)
}

pub(crate) async fn set_admin_domains(
    state: &AppState,
    actor: &Actor,
    id: i64,
    domains: &[String],
) -> Result<(), AppError> {
    actor.require_superadmin()?;
    let admin = state
        .store
        .admin_by_id(id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("admin {id} does not exist")))?;
    let before = state.store.admin_domains(id).await?;
    let parsed = domains
        .iter()
        .map(|d| d.trim())
        .filter(|d| !d.is_empty())
        .map(|d| parse_domain(d, "domains"))
        .collect::<Result<Vec<_>, _>>()?;
    state
        .store
        .set_admin_domains(id, &parsed)
        .await
        .map_err(|e| match e {
            store::Error::DomainNotFound(d) => AppError::Invalid {
                field: "domains",
                message: format!("domain {d} does not exist"),
            },
            other => other.into(),
        })?;
    let after = state.store.admin_domains(id).await?;
    actor
        .audit(
            state,
            "admin.domains",
            &admin.username,
            Some(json!({"domains": before})),
            Some(json!({"domains": after})),
        )
        .await
}

pub(crate) async fn remove_admin(state: &AppState, actor: &Actor, id: i64) -> Result<(), AppError> {
    actor.require_superadmin()?;
    if id == actor.admin.id {
        return Err(AppError::Forbidden(
            "you cannot remove your own account".to_string(),
        ));
    }
    let admin = state
        .store
        .admin_by_id(id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("admin {id} does not exist")))?;
    state.store.remove_admin(id).await?;
    actor
        .audit(
            state,
            "admin.remove",
            &admin.username,
            Some(json!({"username": admin.username, "role": admin.role.as_str()})),
            None,
        )
        .await
}

/// Writes an audit entry for actions handled outside this module (sign-in, tokens, TOTP).
pub(crate) async fn audit_event(
    state: &AppState,
    actor: &Actor,
    action: &str,
    object: &str,
    after: Option<serde_json::Value>,
) -> Result<(), AppError> {
    actor.audit(state, action, object, None, after).await
}
