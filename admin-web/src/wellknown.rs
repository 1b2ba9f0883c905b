//! The public documents served by host name on the HTTPS listener, outside the console's
//! allow-list and login: the MTA-STS policy at
//! `https://mta-sts.<domain>/.well-known/mta-sts.txt` (RFC 8461 §3.3) and the
//! Thunderbird-style autoconfig file at `https://autoconfig.<domain>/mail/config-v1.1.xml`.
//!
//! Any other request, whatever its Host, goes on to the console unchanged.

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use store::{DomainName, DomainPolicy, MtaStsMode};

use crate::AppState;
use crate::config::MailServices;

pub(crate) const MTA_STS_PATH: &str = "/.well-known/mta-sts.txt";
pub(crate) const AUTOCONFIG_PATH: &str = "/mail/config-v1.1.xml";

/// The policy text (RFC 8461 §3.2), CRLF-terminated lines.
pub(crate) fn mta_sts_policy(hostname: &str, policy: &DomainPolicy) -> String {
    let mode = match policy.mta_sts_mode {
        MtaStsMode::None => "none",
        MtaStsMode::Testing => "testing",
        MtaStsMode::Enforce => "enforce",
    };
    format!(
        "version: STSv1\r\nmode: {mode}\r\nmx: {hostname}\r\nmax_age: {}\r\n",
        policy.mta_sts_max_age
    )
}

/// The `id=` of the `_mta-sts` TXT record (RFC 8461 §3.1: 1 to 32 alphanumerics): a
/// digest of the policy, so it changes exactly when the policy does.
pub(crate) fn mta_sts_id(policy_text: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, policy_text.as_bytes())
        .as_ref()
        .iter()
        .take(10)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Thunderbird's autoconfig format (clientConfig 1.1): IMAP over implicit TLS, submission
/// over implicit TLS and STARTTLS, the full address as user name.
pub(crate) fn autoconfig_xml(domain: &str, hostname: &str, services: &MailServices) -> String {
    let mut x = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <clientConfig version=\"1.1\">\n\
         \x20 <emailProvider id=\"{domain}\">\n\
         \x20   <domain>{domain}</domain>\n\
         \x20   <displayName>{domain} mail</displayName>\n\
         \x20   <displayShortName>{domain}</displayShortName>\n"
    );
    let server = |kind: &str, tag: &str, port: u16, socket: &str| {
        format!(
            "    <{tag} type=\"{kind}\">\n\
             \x20     <hostname>{hostname}</hostname>\n\
             \x20     <port>{port}</port>\n\
             \x20     <socketType>{socket}</socketType>\n\
             \x20     <authentication>password-cleartext</authentication>\n\
             \x20     <username>%EMAILADDRESS%</username>\n\
             \x20   </{tag}>\n"
        )
    };
    if let Some(p) = services.imaps {
        x.push_str(&server("imap", "incomingServer", p, "SSL"));
    }
    if let Some(p) = services.pop3s {
        x.push_str(&server("pop3", "incomingServer", p, "SSL"));
    }
    if let Some(p) = services.submissions {
        x.push_str(&server("smtp", "outgoingServer", p, "SSL"));
    }
    if let Some(p) = services.submission {
        x.push_str(&server("smtp", "outgoingServer", p, "STARTTLS"));
    }
    x.push_str("  </emailProvider>\n</clientConfig>\n");
    x
}

fn request_host(req: &Request) -> Option<String> {
    let raw = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().host())?;
    let name = raw.rsplit_once(':').map_or(raw, |(n, _)| n);
    Some(name.trim_end_matches('.').to_ascii_lowercase())
}

/// Serves the public documents before the allow-list sees the request.
pub(crate) async fn public_names(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let Some(host) = request_host(&req) else {
        return next.run(req).await;
    };
    let path = req.uri().path();
    let wanted = if let Some(d) = host.strip_prefix("mta-sts.") {
        (path == MTA_STS_PATH).then_some((d.to_string(), true))
    } else if let Some(d) = host.strip_prefix("autoconfig.") {
        (path == AUTOCONFIG_PATH).then_some((d.to_string(), false))
    } else {
        None
    };
    let Some((domain, mta_sts)) = wanted else {
        return next.run(req).await;
    };
    match document(&state, &domain, mta_sts, req.uri().query()).await {
        Ok(Some((content_type, body))) => {
            ([(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        Ok(None) => (StatusCode::NOT_FOUND, "not found\n").into_response(),
        Err(e) => {
            tracing::error!(error = %e, %domain, "public document failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
        }
    }
}

async fn document(
    state: &AppState,
    domain: &str,
    mta_sts: bool,
    _query: Option<&str>,
) -> Result<Option<(&'static str, String)>, store::Error> {
    let Ok(name) = DomainName::parse(domain) else {
        return Ok(None);
    };
    match state.store.domain(&name).await? {
        Some(d) if d.active => {}
        _ => return Ok(None),
    }
    let policy = state.store.domain_policy(&name).await?;
    let host = &state.config.mail_hostname;
    if mta_sts {
        // RFC 8461 §3.3: the policy is served as text/plain.
        Ok(policy
            .mta_sts_enabled
            .then(|| ("text/plain", mta_sts_policy(host, &policy))))
    } else {
        Ok(policy.autoconfig_enabled.then(|| {
            (
                "application/xml",
                autoconfig_xml(name.as_str(), host, &state.config.services),
            )
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mta_sts_policy_and_autoconfig_match_their_golden_files() {
        let d = DomainName::parse("example.org").unwrap();
        let policy = mta_sts_policy("mail.example.org", &DomainPolicy::defaults(&d));
        crate::dns::tests::golden("mta-sts.txt", &policy);
        crate::dns::tests::golden(
            "autoconfig.xml",
            &autoconfig_xml("example.org", "mail.example.org", &MailServices::default()),
        );
    }

    #[test]
    fn policy_id_changes_with_the_policy() {
        let d = DomainName::parse("example.org").unwrap();
        let mut p = DomainPolicy::defaults(&d);
        let a = mta_sts_id(&mta_sts_policy("mail.example.org", &p));
        p.mta_sts_mode = MtaStsMode::Enforce;
        let b = mta_sts_id(&mta_sts_policy("mail.example.org", &p));
        assert_ne!(a, b);
        assert_eq!(a.len(), 20);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(
            a,
            mta_sts_id(&mta_sts_policy(
                "mail.example.org",
                &DomainPolicy::defaults(&d)
            ))
        );
    }
}
