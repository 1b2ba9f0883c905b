//! Outbound delivery for `action … relay`: to the MX hosts of each recipient domain, or to
//! a smarthost (`relay host URL`), over SMTP (or LMTP) with the TLS policy of the action.
//!
//! The protocol is a sans-IO state machine ([`client`]); [`conn`] is the socket shell,
//! [`mx`] picks hosts, [`tls`] holds the trust store and client configurations. A
//! [`Relayer`] lives as long as the daemon: it keeps the resolver, idle connections for
//! reuse (one connection carries several messages to the same host) and the
//! per-host/per-domain connection limits.
//!
//! Not done here: client certificates (`pki` on a relay action), `helo-src`, SRS.

pub mod client;
pub mod conn;
pub mod dns;
pub mod mx;
mod pool;
pub mod tls;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use rustls::{ClientConfig, RootCertStore};
use tokio::sync::Semaphore;

use crate::config::{Config, Relay, RelayHost, RelayProto, RelayUrl, parse_relay_url};
use crate::expand::resolve as resolve_table;
use crate::mtasts::{Mode, MtaSts};
use crate::queue::{MessageRef, Outcome, RcptOutcome, RcptRef};
use crate::table::{Service, Tables};
use client::{Credentials, Params, Proto, TlsPolicy, Transaction};
use conn::{Conn, ConnError, Target};
use tls::Verify;

/// OpenSMTPD's `mta limit` defaults (limit.c).
const MAX_CONN_PER_HOST: u64 = 10;
const MAX_CONN_PER_DOMAIN: u64 = 100;
const SESSION_MAIL_MAX: u64 = 100;
/// How long an idle connection is kept for the next message to the same host.
const SESSION_KEEPALIVE: Duration = Duration::from_secs(5);

/// Everything one delivery needs from the daemon.
pub struct Request<'a> {
    pub config: &'a Config,
    pub tables: &'a Tables,
    pub relay: &'a Relay,
    /// Our name: EHLO default and `backup` reference.
    pub hostname: &'a str,
    pub msg: &'a MessageRef,
    pub rcpts: &'a [RcptRef],
    /// The message as it goes out (CRLF, not dot-stuffed), signatures included.
    pub data: &'a [u8],
}

/// Everything about a connection that must match for it to be reused.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    target: Target,
    params: Params,
    verify: Option<Verify>,
    ca: Option<PathBuf>,
    src: Option<IpAddr>,
}

/// A connection is boxed while it is in use or idle: a delivery's future holds it across
/// its waits, and an inline `Conn` (352 bytes) was kept there twice.
impl pool::Idle for Box<Conn> {
    fn reusable(&self) -> bool {
        Conn::reusable(self)
    }
    fn quit(self) -> impl std::future::Future<Output = ()> + Send + 'static {
        Conn::quit(*self)
    }
}

/// A TLS client configuration is per trust store (`ca` file) and verification mode.
type ConfigKey = (Option<PathBuf>, Verify);

/// The daemon's outbound state: resolver, trust stores, idle connections, limits.
#[derive(Default)]
pub struct Relayer {
    resolver: Mutex<Option<(Option<String>, TokioResolver)>>,
    roots: Mutex<HashMap<Option<PathBuf>, Arc<RootCertStore>>>,
    configs: Mutex<HashMap<ConfigKey, Arc<ClientConfig>>>,
    pool: Arc<pool::Pool<PoolKey, Box<Conn>>>,
    /// Connection slots per destination domain and per host address.
    limits: Mutex<Limits>,
    /// Told each host a delivery succeeded to (greylisting's spamlogd role, see
    /// `crate::access::Guard::record_outbound`).
    pub on_delivered: std::sync::OnceLock<Arc<dyn Fn(IpAddr) + Send + Sync>>,
    /// MTA-STS policy finder and cache, per resolver and trust store.
    mtasts: Mutex<Option<(MtaStsKey, Arc<MtaSts>)>>,
}

type MtaStsKey = (Option<String>, Option<PathBuf>);

#[derive(Default)]
struct Limits {
    domains: HashMap<String, Arc<Semaphore>>,
    hosts: HashMap<SocketAddr, Arc<Semaphore>>,
}

/// One way to reach the destination: a host, the port, and how to talk to it.
struct Route {
    host: String,
    addrs: Vec<IpAddr>,
    port: u16,
    params: Params,
    verify: Option<Verify>,
    /// An MTA-STS `enforce` policy put this route under verified TLS.
    sts_enforced: bool,
}

fn limit(config: &Config, domain: &str, key: &str, default: u64) -> u64 {
    let mut v = default;
    for (d, k, n) in &config.mta.limits {
        if k == key && d.as_deref().is_none_or(|d| d.eq_ignore_ascii_case(domain)) {
            v = *n;
        }
    }
    v.max(1)
}

fn all(rcpts: &[RcptRef], o: &Outcome) -> Vec<Outcome> {
    vec![o.clone(); rcpts.len()]
}

fn domain_of(addr: &str) -> &str {
    addr.rsplit_once('@').map_or("", |(_, d)| d)
}

impl Relayer {
    pub fn new() -> Relayer {
        Relayer::default()
    }

    /// The resolver for `config_resolver`, built once and rebuilt when a reload changes it.
    pub fn resolver(&self, config_resolver: Option<&str>) -> Result<TokioResolver, String> {
        let mut g = self.resolver.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((addr, r)) = g.as_ref()
            && addr.as_deref() == config_resolver
        {
            return Ok(r.clone());
        }
        let r = dns::resolver(config_resolver).map_err(|e| e.to_string())?;
        *g = Some((config_resolver.map(str::to_string), r.clone()));
        Ok(r)
    }

    /// Builds the resolver and the TLS configuration over the system trust store, which
    /// the first delivery needs. Each reads files and parses the system's certificates
    /// (some 150 on Debian): milliseconds on a warm cache, more on a cold one, which a
    /// delivery would spend holding up the sessions on its worker thread. Failures are
    /// logged; a delivery tries again.
    pub fn prepare(&self, config_resolver: Option<&str>) {
        if let Err(e) = self.resolver(config_resolver) {
            tracing::warn!("smtp-out: resolver: {e}");
        }
        if let Err(e) = self.tls_config(None, Verify::Logged) {
            tracing::warn!("smtp-out: TLS configuration: {e}");
        }
    }

    /// The trust store for a relay's `ca` file (system roots when `None`), loaded once.
    pub fn roots(&self, ca: Option<&std::path::Path>) -> Arc<RootCertStore> {
        let key = ca.map(PathBuf::from);
        let mut g = self.roots.lock().unwrap_or_else(|p| p.into_inner());
        g.entry(key).or_insert_with(|| tls::roots(ca)).clone()
    }

    /// The MTA-STS finder for this resolver; policy hosts are verified against the system
    /// roots plus the relay's `ca` file (how tests bring their own CA).
    pub fn mtasts(
        &self,
        config_resolver: Option<&str>,
        ca: Option<&std::path::Path>,
    ) -> Result<Arc<MtaSts>, String> {
        let key = (config_resolver.map(str::to_string), ca.map(PathBuf::from));
        let mut g = self.mtasts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((k, m)) = g.as_ref()
            && *k == key
        {
            return Ok(m.clone());
        }
        let m = Arc::new(MtaSts::new(self.resolver(config_resolver)?, self.roots(ca)));
        *g = Some((key, m.clone()));
        Ok(m)
    }

    fn tls_config(
        &self,
        ca: Option<&std::path::Path>,
        verify: Verify,
    ) -> Result<Arc<ClientConfig>, String> {
        let key = (ca.map(PathBuf::from), verify);
        if let Some(c) = self
            .configs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(c.clone());
        }
        let c = tls::client_config(self.roots(ca), verify).map_err(|e| e.to_string())?;
        self.configs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, c.clone());
        Ok(c)
    }

    fn domain_slots(&self, domain: &str, n: u64) -> Arc<Semaphore> {
        let mut limits = self.limits.lock().unwrap_or_else(|p| p.into_inner());
        // Looked up by reference first: once a domain has its slots, delivering to it
        // allocates no key.
        if let Some(s) = limits.domains.get(domain) {
            return s.clone();
        }
        limits
            .domains
            .entry(domain.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(n as usize)))
            .clone()
    }

    fn host_slots(&self, addr: SocketAddr, n: u64) -> Arc<Semaphore> {
        self.limits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .hosts
            .entry(addr)
            .or_insert_with(|| Arc::new(Semaphore::new(n as usize)))
            .clone()
    }

    /// Delivers one message to recipients of one destination domain; one outcome per
    /// recipient, in order.
    pub async fn deliver(&self, req: Request<'_>) -> Vec<RcptOutcome> {
        let domain = req
            .rcpts
            .first()
            .map(|r| domain_of(&r.dest).to_ascii_lowercase())
            .unwrap_or_default();
        let (outcomes, relay_desc, source) = self.deliver_domain(&req, &domain).await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let delay = u64::try_from(now - req.msg.ctime).unwrap_or(0);
        req.rcpts
            .iter()
            .zip(outcomes)
            .map(|(r, outcome)| {
                let (result, stat) = match &outcome {
                    Outcome::Delivered(t) => ("Ok", t),
                    Outcome::TempFail(t) => ("TempFail", t),
                    Outcome::PermFail(t) => ("PermFail", t),
                };
                tracing::info!(
                    "{}",
                    crate::queue::delivery_line(&crate::queue::DeliveryLog {
                        session_id: req.msg.envelope.session_id,
                        relay: true,
                        peer: Some((&source, &relay_desc)),
                        rcpt: r,
                        sender: req.msg.sender().unwrap_or(""),
                        delay,
                        result,
                        stat,
                    })
                );
                RcptOutcome {
                    evpid: r.evpid,
                    outcome,
                }
            })
            .collect()
    }

    /// The outcomes, the `relay=` text and the `source=` text.
    async fn deliver_domain(
        &self,
        req: &Request<'_>,
        domain: &str,
    ) -> (Vec<Outcome>, String, String) {
        let fail_all = |o: Outcome| (all(req.rcpts, &o), String::new(), String::new());
        let routes = match self.routes(req, domain).await {
            Ok(r) => r,
            Err(o) => return fail_all(o),
        };
        let ca = match relay_ca(req) {
            Ok(c) => c,
            Err(o) => return fail_all(o),
        };
        let src = match self.source(req) {
            Ok(s) => s,
            Err(o) => return fail_all(o),
        };
        let tx = Transaction {
            mail_from: match (&req.relay.mail_from, req.msg.sender()) {
                // A bounce keeps its null reverse-path whatever `mail-from` says.
                (_, None) => None,
                (Some(m), Some(_)) => Some(m.clone()),
                (None, Some(s)) => Some(s.to_string()),
            },
            rcpts: req.rcpts.iter().map(|r| r.dest.clone()).collect(),
            body: Arc::from(req.data),
            smtputf8: req.msg.envelope.smtputf8,
            eight_bit: !req.data.is_ascii(),
        };
        let domain_slot = self.domain_slots(
            domain,
            limit(
                req.config,
                domain,
                "max-conn-per-domain",
                MAX_CONN_PER_DOMAIN,
            ),
        );
        let _domain_permit = domain_slot.acquire_owned().await;
        let mut errors: Vec<String> = Vec::new();
        for route in routes {
            for ip in &route.addrs {
                let target = Target {
                    host: route.host.clone(),
                    addr: SocketAddr::new(*ip, route.port),
                };
                let relay_desc = format!("{ip} ({})", route.host);
                let key = PoolKey {
                    target: target.clone(),
                    params: route.params.clone(),
                    verify: route.verify,
                    ca: ca.clone(),
                    src,
                };
                let host_slot = self.host_slots(
                    target.addr,
                    limit(req.config, domain, "max-conn-per-host", MAX_CONN_PER_HOST),
                );
                let _host_permit = host_slot.acquire_owned().await;
                let mut result = self.attempt(&key, &route, ca.as_deref(), tx.clone()).await;
                if let Err(e) = &result
                    && e.tls_handshake
                    && route.params.tls == TlsPolicy::Opportunistic
                    && !route.sts_enforced
                {
                    // Opportunistic TLS that cannot be negotiated at all: OpenSMTPD's
                    // plain `relay` then delivers in clear text rather than not at all.
                    tracing::info!("smtp-out: {}; retrying without TLS", e.text);
                    let clear = Route {
                        host: route.host.clone(),
                        addrs: Vec::new(),
                        port: route.port,
                        params: Params {
                            tls: TlsPolicy::Never,
                            ..route.params.clone()
                        },
                        verify: None,
                        sts_enforced: false,
                    };
                    let clear_key = PoolKey {
                        params: clear.params.clone(),
                        verify: None,
                        ..key.clone()
                    };
                    result = self
                        .attempt(&clear_key, &clear, ca.as_deref(), tx.clone())
                        .await;
                }
                match result {
                    Ok((outcomes, source)) => {
                        if let Some(f) = self.on_delivered.get()
                            && outcomes.iter().any(|o| matches!(o, Outcome::Delivered(_)))
                        {
                            f(*ip);
                        }
                        return (outcomes, relay_desc, source);
                    }
                    Err(mut e) => {
                        if route.sts_enforced {
                            e.text = format!(
                                "MTA-STS policy of {domain} requires verified TLS: {}",
                                e.text
                            );
                        }
                        tracing::info!("smtp-out: {}", e.text);
                        errors.push(e.text);
                    }
                }
            }
        }
        // RFC 5321 §4.5.4.1: hosts that could not be reached are tried again later.
        let text = match errors.len() {
            0 => format!("451 4.4.1 no host to deliver to for {domain}"),
            1 => format!("451 4.4.1 {}", errors[0]),
            _ => format!("451 4.4.1 {} (and {} more)", errors[0], errors.len() - 1),
        };
        fail_all(Outcome::TempFail(text))
    }

    /// One try on one address: a pooled connection (RSET) or a new one.
    async fn attempt(
        &self,
        key: &PoolKey,
        route: &Route,
        ca: Option<&std::path::Path>,
        tx: Transaction,
    ) -> Result<(Vec<Outcome>, String), ConnError> {
        // Opening (connect, TLS, hello) is boxed: a 2 KiB future that a message on a pooled
        // connection does not need.
        let mut conn = match self.pool.take(key) {
            Some(mut c) => {
                // The peer may have closed the idle connection; RSET finds out.
                match c.send(tx.clone()).await {
                    Ok(o) => {
                        let source = c.source.clone();
                        self.release(key.clone(), c);
                        return Ok((o, source));
                    }
                    Err(e) => tracing::debug!("smtp-out: pooled connection unusable: {}", e.text),
                }
                Box::pin(self.open(key, route, ca)).await?
            }
            None => Box::pin(self.open(key, route, ca)).await?,
        };
        let o = conn.send(tx).await?;
        let source = conn.source.clone();
        self.release(key.clone(), conn);
        Ok((o, source))
    }

    async fn open(
        &self,
        key: &PoolKey,
        route: &Route,
        ca: Option<&std::path::Path>,
    ) -> Result<Box<Conn>, ConnError> {
        let tls = match route.verify {
            Some(v) => Some(self.tls_config(ca, v).map_err(|e| ConnError {
                text: format!("TLS configuration: {e}"),
                permanent: false,
                tls_handshake: false,
            })?),
            None => None,
        };
        tracing::info!(
            "smtp-out: connecting to {}://{} host={}",
            match (route.params.proto, route.params.implicit_tls) {
                (Proto::Lmtp, _) => "lmtp",
                (_, true) => "smtps",
                _ => "smtp",
            },
            key.target.addr,
            key.target.host
        );
        let conn = Conn::open(key.target.clone(), route.params.clone(), tls, key.src).await?;
        tracing::info!(
            "smtp-out: connected to {}{}",
            key.target,
            if conn.tls_active() { " with TLS" } else { "" }
        );
        Ok(Box::new(conn))
    }

    fn release(&self, key: PoolKey, conn: Box<Conn>) {
        if conn.reusable() && (conn.messages() as u64) < SESSION_MAIL_MAX {
            self.pool.put(key, conn);
        } else {
            tokio::spawn(conn.quit());
        }
    }

    /// `src <table>`: the source address to bind (the first one the table gives).
    fn source(&self, req: &Request<'_>) -> Result<Option<IpAddr>, Outcome> {
        let Some(r) = &req.relay.src else {
            return Ok(None);
        };
        let table = resolve_table(r, req.tables)
            .ok_or_else(|| Outcome::TempFail("451 4.3.0 relay src table is not open".into()))?;
        let v = table
            .fetch(Service::Source)
            .map_err(|e| Outcome::TempFail(format!("451 4.3.0 relay src table: {e}")))?;
        match v {
            Some(v) => v
                .trim()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .map(Some)
                .map_err(|_| {
                    Outcome::TempFail(format!("451 4.3.0 relay src {v:?} is not an address"))
                }),
            None => Ok(None),
        }
    }

    async fn routes(&self, req: &Request<'_>, domain: &str) -> Result<Vec<Route>, Outcome> {
        let relay = req.relay;
        let helo = relay
            .helo
            .clone()
            .unwrap_or_else(|| req.hostname.to_string());
        let resolver = self
            .resolver(req.config.resolver.as_deref())
            .map_err(|e| Outcome::TempFail(format!("451 4.3.0 {e}")))?;
        let url = match (&relay.host, &relay.domain) {
            (Some(RelayHost::Url(u)), _) => Some(u.clone()),
            (Some(RelayHost::Table(t)), _) => Some(relay_table(req.tables, t, domain, true)?),
            (None, Some(t)) => relay_table_opt(req.tables, t, domain)?,
            (None, None) => None,
        };
        if let Some(url) = url {
            return self
                .smarthost(req, &resolver, &url, helo)
                .await
                .map(|r| vec![r]);
        }
        let backup = relay
            .backup
            .as_ref()
            .map(|b| b.clone().unwrap_or_else(|| req.hostname.to_string()));
        let mut hosts = mx::resolve(&resolver, domain, backup.as_deref())
            .await
            .map_err(|e| {
                tracing::info!("smtp-out: MX for {domain}: {e}");
                e.outcome()
            })?;
        let (mut tls, mut verify) = match relay.tls {
            None => (TlsPolicy::Opportunistic, Verify::Logged),
            Some(true) => (TlsPolicy::Required, Verify::Required),
            Some(false) => (TlsPolicy::Required, Verify::Off),
        };
        // RFC 8461 §4: an `enforce` policy keeps only the MX hosts it lists and requires
        // TLS with a verified certificate; `testing` only logs what enforce would refuse.
        let mut sts_enforced = false;
        if mx::address_literal(domain).is_none() {
            let ca = relay_ca(req)?;
            let sts = self
                .mtasts(req.config.resolver.as_deref(), ca.as_deref())
                .map_err(|e| Outcome::TempFail(format!("451 4.3.0 {e}")))?;
            // Boxed: the policy fetch (DNS and HTTPS) is a 10 KiB future, which would
            // otherwise be part of every delivery's, smarthost deliveries too.
            match Box::pin(sts.policy(domain)).await {
                Err(e) => {
                    return Err(Outcome::TempFail(format!(
                        "451 4.7.5 MTA-STS policy of {domain} cannot be fetched: {e}"
                    )));
                }
                Ok(None) => {}
                Ok(Some(p)) => match p.mode {
                    Mode::Enforce => {
                        let all: Vec<String> = hosts.iter().map(|h| h.name.clone()).collect();
                        hosts.retain(|h| p.allows_mx(&h.name));
                        if hosts.is_empty() {
                            return Err(Outcome::TempFail(format!(
                                "451 4.7.5 MTA-STS policy of {domain} allows none of its MX hosts ({})",
                                all.join(", ")
                            )));
                        }
                        tls = TlsPolicy::Required;
                        verify = Verify::Required;
                        sts_enforced = true;
                    }
                    Mode::Testing => {
                        for h in hosts.iter().filter(|h| !p.allows_mx(&h.name)) {
                            tracing::warn!(
                                "smtp-out: MTA-STS (testing) policy of {domain} does not list MX {}",
                                h.name
                            );
                        }
                    }
                    Mode::None => {}
                },
            }
        }
        Ok(hosts
            .into_iter()
            .map(|h| Route {
                host: h.name,
                addrs: h.addrs,
                port: 25,
                params: Params {
                    proto: Proto::Smtp,
                    helo: helo.clone(),
                    tls,
                    implicit_tls: false,
                    auth: None,
                },
                verify: Some(verify),
                sts_enforced,
            })
            .collect())
    }

    async fn smarthost(
        &self,
        req: &Request<'_>,
        resolver: &TokioResolver,
        url: &RelayUrl,
        helo: String,
    ) -> Result<Route, Outcome> {
        let relay = req.relay;
        let verify_default = match relay.tls {
            Some(false) => Verify::Off,
            _ => Verify::Required,
        };
        let (proto, tls, implicit, verify, port) = match url.proto {
            RelayProto::Smtp => match relay.tls {
                None => (
                    Proto::Smtp,
                    TlsPolicy::Opportunistic,
                    false,
                    Some(Verify::Logged),
                    25,
                ),
                Some(_) => (
                    Proto::Smtp,
                    TlsPolicy::Required,
                    false,
                    Some(verify_default),
                    25,
                ),
            },
            RelayProto::SmtpTls => (
                Proto::Smtp,
                TlsPolicy::Required,
                false,
                Some(verify_default),
                25,
            ),
            RelayProto::SmtpNotls => (Proto::Smtp, TlsPolicy::Never, false, None, 25),
            RelayProto::Smtps => (
                Proto::Smtp,
                TlsPolicy::Never,
                true,
                Some(verify_default),
                465,
            ),
            RelayProto::Lmtp => (Proto::Lmtp, TlsPolicy::Never, false, None, 24),
        };
        let auth = match &relay.auth {
            None => None,
            Some(t) => {
                let label = url.label.as_deref().ok_or_else(|| {
                    Outcome::TempFail(
                        "451 4.3.0 relay auth needs a label in the host URL (smtp+tls://label@host)"
                            .into(),
                    )
                })?;
                let table = resolve_table(t, req.tables).ok_or_else(|| {
                    Outcome::TempFail("451 4.3.0 relay auth table is not open".into())
                })?;
                let v = table
                    .lookup(Service::Credentials, label)
                    .map_err(|e| Outcome::TempFail(format!("451 4.3.0 relay auth table: {e}")))?
                    .ok_or_else(|| {
                        Outcome::TempFail(format!(
                            "451 4.3.0 no credentials for label {label:?} in the relay auth table"
                        ))
                    })?;
                let (user, password) = v.split_once(':').ok_or_else(|| {
                    Outcome::TempFail(format!(
                        "451 4.3.0 credentials for {label:?} are not user:password"
                    ))
                })?;
                Some(Credentials {
                    user: user.to_string(),
                    password: password.to_string(),
                })
            }
        };
        let addrs = mx::addresses(resolver, &url.host)
            .await
            .map_err(|e| Outcome::TempFail(format!("451 4.4.3 {e}")))?;
        if addrs.is_empty() {
            return Err(Outcome::TempFail(format!(
                "451 4.4.3 relay host {} has no address",
                url.host
            )));
        }
        Ok(Route {
            host: url.host.clone(),
            addrs,
            port: url.port.unwrap_or(port),
            params: Params {
                proto,
                helo,
                tls,
                implicit_tls: implicit,
                auth,
            },
            verify,
            sts_enforced: false,
        })
    }
}

/// The file of the relay's `ca NAME`, if it names one.
fn relay_ca(req: &Request<'_>) -> Result<Option<PathBuf>, Outcome> {
    match req.relay.ca.as_deref() {
        Some(name) => match req.config.ca.get(&name.to_ascii_lowercase()) {
            Some(ca) => Ok(Some(ca.cert.clone())),
            None => Err(Outcome::TempFail(format!(
                "451 4.3.0 relay ca {name:?} is not defined"
            ))),
        },
        None => Ok(None),
    }
}

/// `relay host <table>`: a relayhost table; the domain's entry, else any entry.
fn relay_table(
    tables: &Tables,
    t: &crate::config::TableRef,
    domain: &str,
    fetch: bool,
) -> Result<RelayUrl, Outcome> {
    let table = resolve_table(t, tables)
        .ok_or_else(|| Outcome::TempFail("451 4.3.0 relay host table is not open".into()))?;
    let err = |e: crate::table::LookupError| Outcome::TempFail(format!("451 4.3.0 {e}"));
    let v = match table.lookup(Service::Relayhost, domain).map_err(err)? {
        Some(v) => Some(v),
        None if fetch => table.fetch(Service::Relayhost).map_err(err)?,
        None => None,
    };
    let v = v.ok_or_else(|| {
        Outcome::TempFail(format!(
            "451 4.3.0 the relay host table has no entry for {domain}"
        ))
    })?;
    parse_relay_url(v.trim()).map_err(|e| Outcome::TempFail(format!("451 4.3.0 {e}")))
}

/// `relay domain <table>`: the domain's URL, or `None` to use its MX.
fn relay_table_opt(
    tables: &Tables,
    t: &crate::config::TableRef,
    domain: &str,
) -> Result<Option<RelayUrl>, Outcome> {
    match relay_table(tables, t, domain, false) {
        Ok(u) => Ok(Some(u)),
        Err(Outcome::TempFail(t)) if t.contains("has no entry") => Ok(None),
        Err(o) => Err(o),
    }
}
