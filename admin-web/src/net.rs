//! Listeners: binding (done by the binary before it drops privileges), the TLS accept
//! loop, the allow-list, the HTTP→HTTPS redirect, and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::serve::{IncomingStream, Listener};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::{AppState, Config, Error};

/// Sockets bound by [`bind`], ready for [`crate::serve`].
#[derive(Debug)]
pub struct Listeners {
    pub https: Vec<std::net::TcpListener>,
    pub http: Vec<std::net::TcpListener>,
}

impl Listeners {
    /// The bound HTTPS addresses (useful when the configuration asked for port 0).
    pub fn https_addrs(&self) -> Vec<SocketAddr> {
        self.https
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    pub fn http_addrs(&self) -> Vec<SocketAddr> {
        self.http
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }
}

/// Binds every configured address (as root, before privileges are dropped).
pub fn bind(config: &Config) -> Result<Listeners, Error> {
    let open = |addrs: &[SocketAddr]| {
        addrs
            .iter()
            .map(|&addr| {
                let l = std::net::TcpListener::bind(addr)
                    .map_err(|source| Error::Bind { addr, source })?;
                l.set_nonblocking(true)
                    .map_err(|source| Error::Bind { addr, source })?;
                Ok(l)
            })
            .collect::<Result<Vec<_>, Error>>()
    };
    Ok(Listeners {
        https: open(&config.listen)?,
        http: open(&config.http_listen)?,
    })
}

/// The peer address of a console connection, as handlers see it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RemoteAddr(pub SocketAddr);

/// Accepts TCP, completes TLS handshakes off the accept path (a slow client must not
/// stall others), and hands finished streams to axum.
struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl TlsListener {
    fn new(tcp: TcpListener, acceptor: TlsAcceptor) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    break;
                }
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { rx, local })
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept task only ends with the runtime; wait for shutdown instead.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

impl axum::extract::connect_info::Connected<IncomingStream<'_, TlsListener>> for RemoteAddr {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> RemoteAddr {
        RemoteAddr(*stream.remote_addr())
    }
}

impl axum::extract::connect_info::Connected<IncomingStream<'_, TcpListener>> for RemoteAddr {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> RemoteAddr {
        RemoteAddr(*stream.remote_addr())
    }
}

pub(crate) async fn serve_with_store(
    config: Config,
    store: store::Store,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let (tls, certs) = crate::tls::server_config(&config.tls)?;
    let sessions = crate::auth::session_layer(&config).await?;
    let https_port = listeners
        .https_addrs()
        .first()
        .map(SocketAddr::port)
        .unwrap_or(443);
    let state = AppState {
        store,
        checks: Arc::new(crate::dns::LiveChecks::new(&config)),
        certs,
        config: Arc::new(config),
    };
    let app = crate::pages::routes()
        .merge(crate::certificates::routes())
        .merge(crate::api::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::csrf_guard,
        ))
        .layer(sessions)
        .merge(crate::assets::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            allow_list,
        ))
        // MTA-STS and autoconfig are public: answered before the allow-list.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::wellknown::public_names,
        ))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(state.clone());

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let mut tasks = tokio::task::JoinSet::new();
    for l in listeners.https {
        let acceptor = TlsAcceptor::from(tls.clone());
        let tcp = TcpListener::from_std(l).map_err(Error::Serve)?;
        let listener = TlsListener::new(tcp, acceptor).map_err(Error::Serve)?;
        let app = app
            .clone()
            .into_make_service_with_connect_info::<RemoteAddr>();
        let stop = stopped(stop_rx.clone());
        tasks.spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
        });
    }
    // Certificates are renewed while the console runs, on the injected clock.
    tasks.spawn({
        let state = state.clone();
        let stop = stop_rx.clone();
        async move {
            crate::acme::renewal_task(state, stop).await;
            Ok::<(), std::io::Error>(())
        }
    });
    for l in listeners.http {
        let tcp = TcpListener::from_std(l).map_err(Error::Serve)?;
        let challenges = state.config.acme.challenges.clone();
        // RFC 8555 §8.3: the CA fetches the key authorization over plain HTTP on port 80;
        // that path is answered here, everything else is redirected.
        let app = Router::new()
            .route(
                "/.well-known/acme-challenge/{token}",
                axum::routing::get(move |Path(token): Path<String>| async move {
                    acme_challenge(&challenges, &token)
                }),
            )
            .fallback(move |req: Request| redirect_to_https(req, https_port))
            .into_make_service();
        let stop = stopped(stop_rx.clone());
        tasks.spawn(async move { axum::serve(tcp, app).with_graceful_shutdown(stop).await });
    }
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Error::Serve(e)),
            Err(e) => return Err(Error::Serve(std::io::Error::other(e))),
        }
    }
    Ok(())
}

fn acme_challenge(challenges: &crate::acme::Challenges, token: &str) -> Response {
    match challenges.answer(token) {
        Some(key_authorization) => {
            tracing::info!(token, "answered an ACME HTTP-01 challenge");
            (
                [(header::CONTENT_TYPE, "application/octet-stream")],
                key_authorization,
            )
                .into_response()
        }
        None => {
            tracing::info!(token, "ACME challenge request for an unknown token");
            (StatusCode::NOT_FOUND, "no such ACME challenge\n").into_response()
        }
    }
}

/// Plain HTTP only redirects, apart from ACME HTTP-01 challenges.
async fn redirect_to_https(req: Request, https_port: u16) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| h.rsplit_once(':').map_or(h, |(name, _)| name).to_string())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b))
        });
    let Some(host) = host else {
        return (StatusCode::BAD_REQUEST, "missing Host header").into_response();
    };
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let target = if https_port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{https_port}{path}")
    };
    match target.parse::<Uri>() {
        Ok(_) => Redirect::permanent(&target).into_response(),
        Err(_) => (StatusCode::BAD_REQUEST, "bad request target").into_response(),
    }
}

async fn allow_list(
    State(state): State<AppState>,
    ConnectInfo(RemoteAddr(peer)): ConnectInfo<RemoteAddr>,
    req: Request,
    next: Next,
) -> Response {
    if state.config.allows(peer.ip()) {
        next.run(req).await
    } else {
        tracing::info!(%peer, "console request from outside the allow-list");
        (
            StatusCode::FORBIDDEN,
            "403 Forbidden: this console answers only the networks in its allow-list\n",
        )
            .into_response()
    }
}

async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, k: header::HeaderName, v: &'static str| {
        h.entry(k)
            .or_insert(axum::http::HeaderValue::from_static(v));
    };
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'",
    );
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::REFERRER_POLICY, "same-origin");
    set(h, header::STRICT_TRANSPORT_SECURITY, "max-age=31536000");
    set(h, header::CACHE_CONTROL, "no-store");
    res
}
