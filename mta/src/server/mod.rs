//! The I/O shell around [`crate::session`]: tokio listeners (TCP with a 1024 backlog, and
//! the local enqueue socket), rustls for implicit TLS and STARTTLS, connection limits,
//! idle and total timeouts. It only moves bytes and carries out the session's actions;
//! every decision goes through a [`Backend`] (the rules, the credentials, the queue),
//! which the daemon implements.
//!
//! Replies are buffered and flushed when the shell is about to wait for the client, so
//! the answers to a pipelined group (RFC 2920) leave in one write.

pub mod ciphers;
mod rate;
pub mod tls;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UnixListener, UnixStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::Error;
use crate::clock::Clock;
use crate::envelope::{Envelope, Origin};
use crate::filter::Verdict;
use crate::session::{
    Action, AuthVerdict, CheckContext, Event, Peer, RecipientVerdict, Reply, SenderVerdict,
    Session, SessionConfig, TlsPolicy, reply,
};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Everything a session asks that needs configuration, tables or the queue.
pub trait Backend: Send + Sync + 'static {
    /// MAIL FROM (`senders` tables, blocklists…). `address` `None` is `<>`.
    fn check_sender<'a>(
        &'a self,
        address: Option<&'a str>,
        ctx: &'a CheckContext,
    ) -> BoxFuture<'a, SenderVerdict>;
    /// RCPT TO against the `match` rules (first match wins).
    fn check_recipient<'a>(
        &'a self,
        address: &'a str,
        ctx: &'a CheckContext,
    ) -> BoxFuture<'a, RecipientVerdict>;
    /// AUTH PLAIN/LOGIN against the listener's credentials. Add any anti-timing delay
    /// on failure here (OpenSMTPD pauses up to 1 s).
    fn verify_credentials<'a>(
        &'a self,
        user: &'a str,
        password: &'a str,
        listener: usize,
    ) -> BoxFuture<'a, AuthVerdict>;
    /// A new TCP client, before the banner (access lists, bans, DNS block lists). A
    /// reply refuses the session with it.
    fn check_connect(&self, ip: IpAddr, listener: usize) -> BoxFuture<'_, Option<Reply>> {
        let _ = (ip, listener);
        Box::pin(async { None })
    }
    /// The client's reverse name (PTR, then forward-confirmed), asked once per session
    /// after `check_connect` let it in; bounded in time by the implementation.
    fn reverse_name(&self, ip: IpAddr) -> BoxFuture<'_, crate::rdns::ReverseName> {
        let _ = ip;
        Box::pin(async { crate::rdns::ReverseName::default() })
    }
    /// A client got an error reply (auth failures and protocol abuse feed auto-bans).
    fn record_failure(&self, ip: IpAddr, failure: crate::access::Failure) {
        let _ = (ip, failure);
    }
    /// Opens a message in the queue; an `Err` reply is given at the end of data.
    fn begin_message(
        &self,
        envelope: Envelope,
    ) -> BoxFuture<'_, Result<Box<dyn MessageWriter>, Reply>>;
    /// [`Backend::begin_message`] knowing the listener (its index in the configuration)
    /// the session came in on; by default the listener does not matter.
    fn begin_message_on(
        &self,
        envelope: Envelope,
        listener: usize,
    ) -> BoxFuture<'_, Result<Box<dyn MessageWriter>, Reply>> {
        let _ = listener;
        self.begin_message(envelope)
    }
}

/// One message being written to the queue.
pub trait MessageWriter: Send {
    fn write<'a>(&'a mut self, chunk: &'a [u8]) -> BoxFuture<'a, Result<(), Reply>>;
    /// Makes the message durable; returns the queue id shown in the 250.
    fn commit(self: Box<Self>) -> BoxFuture<'static, Result<String, Reply>>;
    /// Drops the message (error, RSET, disconnect).
    fn abort(self: Box<Self>);
}

/// Where a listener listens.
#[derive(Debug, Clone)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    /// The local enqueue socket (`listen on socket`): sessions have [`Origin::Local`].
    Unix(PathBuf),
}

#[derive(Clone)]
pub struct Listener {
    pub addr: ListenAddr,
    pub session: Arc<SessionConfig>,
    /// Required for `TlsPolicy::StartTls*` and `Implicit`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The listener's OpenSMTPD filters (`listen … filter`), run for every session.
    pub filters: Option<Arc<crate::filter::Chain>>,
}

/// Limits across all listeners.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_sessions: usize,
    pub max_sessions_per_ip: usize,
    /// Whether `max_sessions_per_ip` also counts loopback clients. Off unless the limit
    /// was set explicitly: every local submitter (content filters reinjecting, webmail,
    /// `sendmail` over TCP) shares 127.0.0.1, and OpenSMTPD has no per-address cap at all.
    pub per_ip_covers_loopback: bool,
    /// New connections per minute from one address (`smtp limit max-conn-rate`, a fugu
    /// extension); 0 is no limit.
    pub max_conn_rate_per_ip: u32,
    /// OpenSMTPD's session timeout: 300 s without a complete command.
    pub idle_timeout: Duration,
    pub total_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    /// `listen(2)` backlog: OpenSMTPD's 5 stalls bursts of clients on SYN retries.
    pub backlog: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_sessions: 4096,
            max_sessions_per_ip: 64,
            per_ip_covers_loopback: false,
            max_conn_rate_per_ip: 0,
            idle_timeout: Duration::from_secs(300),
            total_timeout: Duration::from_secs(3600),
            tls_handshake_timeout: Duration::from_secs(30),
            backlog: 1024,
        }
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (each session holds a socket, and
/// the queue files on top). Returns the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current < lim.maximum {
        lim.current = lim.maximum;
        setrlimit(Resource::Nofile, lim).map_err(io::Error::from)?;
    }
    Ok(lim.current.unwrap_or(u64::MAX))
}

enum Bound {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// Bound listeners, ready to serve.
pub struct Server {
    bound: Vec<(Bound, Listener)>,
    limits: Limits,
    clock: Arc<dyn Clock>,
    paused: PauseSwitch,
    counters: Arc<Mutex<Counters>>,
}

/// The number of SMTP sessions open right now (OpenSMTPD's `smtp.session` statistic).
#[derive(Clone)]
pub struct SessionGauge(Arc<Mutex<Counters>>);

impl SessionGauge {
    pub fn current(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

/// `pause smtp` / `resume smtp`: while set, the network listeners stop accepting
/// (connections wait in the kernel's backlog). The local enqueue socket keeps serving.
#[derive(Clone)]
pub struct PauseSwitch(Arc<watch::Sender<bool>>);

impl PauseSwitch {
    fn new() -> PauseSwitch {
        PauseSwitch(Arc::new(watch::channel(false).0))
    }

    pub fn set(&self, paused: bool) {
        self.0.send_replace(paused);
    }

    pub fn is_paused(&self) -> bool {
        *self.0.borrow()
    }
}

struct Counters {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
    rate: rate::ConnRate,
}

/// Releases a connection slot when the session ends.
struct Slot {
    counters: Arc<Mutex<Counters>>,
    ip: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(ip) = self.ip
            && let Some(n) = c.per_ip.get_mut(&ip)
        {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&ip);
            }
        }
    }
}

impl Server {
    /// Binds every listener (TCP with `limits.backlog`).
    pub fn bind(
        listeners: Vec<Listener>,
        limits: Limits,
        clock: Arc<dyn Clock>,
    ) -> Result<Server, Error> {
        let mut bound = Vec::new();
        for mut l in listeners {
            if l.filters.is_some() && !l.session.filtered {
                // The session asks the filters only where there are some.
                let mut session = (*l.session).clone();
                session.filtered = true;
                l.session = Arc::new(session);
            }
            let b = match &l.addr {
                ListenAddr::Tcp(sa) => Bound::Tcp(tcp_listener(*sa, limits.backlog)?),
                ListenAddr::Unix(path) => {
                    let _ = std::fs::remove_file(path);
                    Bound::Unix(UnixListener::bind(path).map_err(|source| Error::Bind {
                        addr: path.display().to_string(),
                        source,
                    })?)
                }
            };
            bound.push((b, l));
        }
        let counters = Arc::new(Mutex::new(Counters {
            total: 0,
            per_ip: HashMap::new(),
            rate: rate::ConnRate::new(limits.max_conn_rate_per_ip),
        }));
        Ok(Server {
            bound,
            limits,
            clock,
            paused: PauseSwitch::new(),
            counters,
        })
    }

    /// The switch `pause smtp` / `resume smtp` turn.
    pub fn pause_switch(&self) -> PauseSwitch {
        self.paused.clone()
    }

    /// The count of open sessions, for `show stats`.
    pub fn session_gauge(&self) -> SessionGauge {
        SessionGauge(self.counters.clone())
    }

    /// The bound TCP addresses, in listener order (for port 0 in tests).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.bound
            .iter()
            .filter_map(|(b, _)| match b {
                Bound::Tcp(t) => t.local_addr().ok(),
                Bound::Unix(_) => None,
            })
            .collect()
    }

    /// Serves until `shutdown` turns true; sessions in progress then get a 421.
    pub async fn run(self, backend: Arc<dyn Backend>, shutdown: watch::Receiver<bool>) {
        let counters = self.counters;
        let mut tasks = Vec::new();
        for (bound, listener) in self.bound {
            let ctx = Arc::new(ConnCtx {
                listener,
                backend: backend.clone(),
                limits: self.limits.clone(),
                clock: self.clock.clone(),
                shutdown: shutdown.clone(),
            });
            let counters = counters.clone();
            let mut shutdown = shutdown.clone();
            let mut paused = self.paused.0.subscribe();
            let pausable = matches!(bound, Bound::Tcp(_));
            tasks.push(tokio::spawn(async move {
                loop {
                    if pausable && *paused.borrow_and_update() {
                        tokio::select! {
                            _ = shutdown.changed() => break,
                            _ = paused.changed() => continue,
                        }
                    }
                    // accept() is cancel-safe: a pause takes effect before the next accept.
                    let accepted = tokio::select! {
                        _ = shutdown.changed() => break,
                        _ = paused.changed(), if pausable => continue,
                        a = accept(&bound) => a,
                    };
                    let Ok((stream, origin)) = accepted else {
                        // EMFILE and friends: back off instead of spinning.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    let ip = match &origin {
                        Origin::Inet(sa) => Some(sa.ip()),
                        Origin::Local => None,
                    };
                    let slot = take_slot(&counters, ip, &ctx.limits);
                    tokio::spawn(connection(ctx.clone(), stream, origin, slot));
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// Bytes taken from a client per read. The buffer belongs to the worker thread, not the
/// session: input is handed to the session as soon as it is read, so a thousand waiting
/// sessions hold no read buffers at all.
const READ_CHUNK: usize = 64 * 1024;

thread_local! {
    static SCRATCH: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0u8; READ_CHUNK].into_boxed_slice());
}

/// Waits for input, reads it into the worker's scratch buffer and gives it to `take`
/// before the next await (end of stream is an empty slice).
async fn read_with<R>(stream: &mut Stream, take: impl FnOnce(&[u8]) -> R) -> io::Result<R> {
    let mut take = Some(take);
    std::future::poll_fn(|cx| {
        SCRATCH.with_borrow_mut(|scratch| {
            let mut rb = ReadBuf::new(scratch);
            match Pin::new(&mut *stream).poll_read(cx, &mut rb) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => match take.take() {
                    Some(take) => Poll::Ready(Ok(take(rb.filled()))),
                    None => Poll::Ready(Err(io::Error::other("read polled after its end"))),
                },
            }
        })
    })
    .await
}

/// A listening TCP socket for `sa`, whose accepted sockets send without delay.
fn tcp_listener(sa: SocketAddr, backlog: u32) -> Result<TcpListener, Error> {
    let bind_err = |source| Error::Bind {
        addr: sa.to_string(),
        source,
    };
    let sock = if sa.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(bind_err)?;
    if sa.is_ipv6() {
        // `listen on ::` beside `listen on 0.0.0.0` (the default pair) must
        // not also claim IPv4, or the second bind fails on Linux.
        nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::Ipv6V6Only, &true)
            .map_err(|e| bind_err(std::io::Error::from(e)))?;
    }
    sock.set_reuseaddr(true).map_err(bind_err)?;
    // Accepted sockets inherit it: no system call per session.
    sock.set_nodelay(true).map_err(bind_err)?;
    sock.bind(sa).map_err(bind_err)?;
    sock.listen(backlog).map_err(bind_err)
}

/// Which limit refused a connection, for the log.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    Sessions,
    SessionsPerIp,
    ConnRate,
}

fn take_slot(
    counters: &Arc<Mutex<Counters>>,
    ip: Option<IpAddr>,
    limits: &Limits,
) -> Result<Slot, Refusal> {
    let mut c = counters.lock().unwrap_or_else(|p| p.into_inner());
    if c.total >= limits.max_sessions {
        return Err(Refusal::Sessions);
    }
    if let Some(ip) = ip {
        if c.per_ip.get(&ip).copied().unwrap_or(0) >= limits.max_sessions_per_ip
            && (limits.per_ip_covers_loopback || !ip.is_loopback())
        {
            return Err(Refusal::SessionsPerIp);
        }
        // Counted only once the concurrency caps let it in: a client held back by
        // those does not also use up its rate.
        if !c.rate.admit(ip, std::time::Instant::now()) {
            return Err(Refusal::ConnRate);
        }
        *c.per_ip.entry(ip).or_insert(0) += 1;
    }
    c.total += 1;
    Ok(Slot {
        counters: counters.clone(),
        ip,
    })
}

async fn accept(b: &Bound) -> io::Result<(Stream, Origin)> {
    match b {
        Bound::Tcp(l) => {
            let (s, peer) = l.accept().await?;
            // Linux copies TCP_NODELAY from the listening socket; elsewhere, set it.
            #[cfg(not(target_os = "linux"))]
            let _ = s.set_nodelay(true);
            Ok((Stream::Tcp(s), Origin::Inet(peer)))
        }
        Bound::Unix(l) => {
            let (s, _) = l.accept().await?;
            Ok((Stream::Unix(s), Origin::Local))
        }
    }
}

async fn refuse(ctx: Arc<ConnCtx>, mut stream: Stream, origin: Origin, why: Refusal) {
    let (limit, address) = match (why, &origin) {
        (Refusal::Sessions, _) => ("max-sessions", None),
        (Refusal::SessionsPerIp, Origin::Inet(sa)) => ("max-sessions-per-ip", Some(sa.ip())),
        (Refusal::ConnRate, Origin::Inet(sa)) => ("max-conn-rate", Some(sa.ip())),
        (_, Origin::Local) => ("max-sessions", None),
    };
    let address = address.map_or_else(|| "local".to_string(), |ip| ip.to_string());
    tracing::info!(target: "smtp", "smtp refused address={address} reason=too-many-connections limit={limit}");
    // RFC 5321 §3.8: a server may refuse at connect with 421 and close.
    let r = Reply::new(
        421,
        "4.7.0",
        format!(
            "{} Too many connections, try again later",
            ctx.listener.session.hostname
        ),
    );
    let _ = stream.write_all(r.to_wire().as_bytes()).await;
    close(&mut stream).await;
}

struct ConnCtx {
    listener: Listener,
    backend: Arc<dyn Backend>,
    limits: Limits,
    clock: Arc<dyn Clock>,
    shutdown: watch::Receiver<bool>,
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Transient, while the handshake owns the socket.
    Gone,
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Gone => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Gone => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Gone => Poll::Ready(Ok(())),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Gone => Poll::Ready(Ok(())),
        }
    }
}

fn session_id() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

/// Runs the handshake, replacing the plain stream by the TLS one.
async fn handshake(ctx: &ConnCtx, stream: &mut Stream) -> Option<crate::session::TlsInfo> {
    let cfg = ctx.listener.tls.clone()?;
    let Stream::Tcp(tcp) = std::mem::replace(stream, Stream::Gone) else {
        return None;
    };
    let accept = TlsAcceptor::from(cfg).accept(tcp);
    let tls = tokio::time::timeout(ctx.limits.tls_handshake_timeout, accept)
        .await
        .ok()?
        .ok()?;
    let info = tls::tls_info(tls.get_ref().1);
    *stream = Stream::Tls(Box::new(tls));
    Some(info)
}

/// What ended a session's wait for its client.
enum Wake {
    /// The session took what was read (its actions are queued), or the read failed.
    Read(io::Result<()>),
    Timeout,
    Shutdown,
}

/// A session's task, spawned as it is: wrapping it in another future would keep a second
/// copy of its arguments in every session's task.
async fn connection(
    ctx: Arc<ConnCtx>,
    stream: Stream,
    origin: Origin,
    slot: Result<Slot, Refusal>,
) {
    let slot = match slot {
        Ok(slot) => slot,
        // Boxed: a refusal is rare, and its state would otherwise be part of every task.
        Err(why) => return Box::pin(refuse(ctx, stream, origin, why)).await,
    };
    // Boxed, and freed before the conversation: what opening a session awaits (the
    // implicit-TLS handshake, the access check, reverse DNS, the filters' connect
    // phase) would otherwise keep its slots in every session's task for its whole life.
    let Some(mut open) = Box::pin(open(&ctx, stream, origin)).await else {
        return;
    };
    converse(&ctx, &mut open).await;
    drop(slot);
}

/// A session past its banner checks, about to greet its client.
struct Opened {
    stream: Stream,
    session: Session,
    first: Vec<Action>,
    filters: crate::filter::SessionFilters,
    client_ip: Option<IpAddr>,
}

/// Everything before the banner; `None` when the client was turned away.
async fn open(ctx: &ConnCtx, mut stream: Stream, origin: Origin) -> Option<Opened> {
    let sid = session_id();
    let mut peer = Peer {
        session_id: sid,
        origin,
        rdns: None,
        tls: None,
    };
    if ctx.listener.session.tls == TlsPolicy::Implicit {
        match Box::pin(handshake(ctx, &mut stream)).await {
            Some(info) => peer.tls = Some(Box::new(info)),
            None => {
                tracing::info!(target: "smtp", "{sid:016x} smtp disconnected reason=tls-accept-failed");
                return None;
            }
        }
    }
    let client_ip = match &peer.origin {
        Origin::Inet(sa) => Some(sa.ip()),
        Origin::Local => None,
    };
    if let Some(ip) = client_ip
        && let Some(r) = ctx
            .backend
            .check_connect(ip, ctx.listener.session.listener)
            .await
    {
        let _ = stream.write_all(r.to_wire().as_bytes()).await;
        close(&mut stream).await;
        return None;
    }
    // OpenSMTPD resolves the client before the banner: the name is in the `connected`
    // log line, the Received header and `match from rdns`; whether it is confirmed is the
    // filters' `fcrdns`.
    let mut reverse = crate::rdns::ReverseName::default();
    if let Some(ip) = client_ip {
        reverse = ctx.backend.reverse_name(ip).await;
        peer.rdns = reverse.name.clone();
    }
    let src = match &peer.origin {
        Origin::Inet(sa) => Some(*sa),
        Origin::Local => None,
    };
    // Only filters hear the local address (`link-connect`): no system call otherwise.
    let dest = match &stream {
        _ if ctx.listener.filters.is_none() => None,
        Stream::Tcp(s) => s.local_addr().ok(),
        Stream::Tls(s) => s.get_ref().0.local_addr().ok(),
        Stream::Unix(_) | Stream::Gone => None,
    };
    let mut filters = crate::filter::SessionFilters::connect(
        ctx.listener.filters.clone(),
        sid,
        src,
        dest,
        reverse,
    )
    .await;
    if let Verdict::Reject(r) | Verdict::Disconnect(r) = filters.connect_phase().await {
        let _ = stream.write_all(r.to_wire().as_bytes()).await;
        close(&mut stream).await;
        return None;
    }
    filters.greeting(&ctx.listener.session.hostname);
    let (session, first) = Session::new(ctx.listener.session.clone(), peer, ctx.clock.clone());
    Some(Opened {
        stream,
        session,
        first,
        filters,
        client_ip,
    })
}

/// The SMTP conversation, from the banner to the close.
async fn converse(ctx: &ConnCtx, open: &mut Opened) {
    let Opened {
        stream,
        session,
        first,
        filters,
        client_ip,
    } = open;
    let mut shell = Shell {
        ctx,
        stream,
        session,
        filters,
        client_ip: *client_ip,
        pending: std::mem::take(first).into(),
        out: Vec::new(),
        writer: None,
    };
    let deadline = tokio::time::Instant::now() + ctx.limits.total_timeout;
    let mut shutdown = ctx.shutdown.clone();
    loop {
        loop {
            match shell.perform_next().await {
                Performed::Action => {}
                Performed::Nothing => break,
                Performed::Closed => return,
            }
        }
        let Shell {
            stream,
            session,
            filters,
            pending,
            out,
            ..
        } = &mut shell;
        if session.is_closed() {
            let _ = flush(stream, out).await;
            break;
        }
        // About to wait for the client: the replies so far leave together.
        if flush(stream, out).await.is_err() {
            session.handle_into(Event::Disconnected, pending);
            continue;
        }
        // Both are empty now, and a waiting session keeps no buffers: a thousand waiting
        // sessions would hold 0.6 MB in them. The next input allocates again (two
        // allocations per exchange with the client, against its two system calls).
        *out = Vec::new();
        *pending = VecDeque::new();
        // One timer for both limits (a timer is 112 bytes of every waiting session).
        let limit = deadline.min(tokio::time::Instant::now() + ctx.limits.idle_timeout);
        let woken = tokio::select! {
            r = read_with(stream, |input| match input {
                [] => session.handle_into(Event::Disconnected, pending),
                input => session.handle_into(Event::Input(input), pending),
            }) => Wake::Read(r),
            _ = tokio::time::sleep_until(limit) => Wake::Timeout,
            _ = shutdown.changed() => Wake::Shutdown,
        };
        match woken {
            Wake::Read(Ok(())) => {}
            Wake::Read(Err(_)) => session.handle_into(Event::Disconnected, pending),
            Wake::Timeout => {
                filters.timeout();
                session.handle_into(Event::Timeout, pending)
            }
            Wake::Shutdown => session.handle_into(Event::Shutdown, pending),
        }
    }
    if let Some(w) = shell.writer.take() {
        w.abort();
    }
}

/// The shell's side of a conversation: the session's actions still to carry out, the
/// replies not yet sent and the message being written.
///
/// Carrying out an action is a future of its own ([`Shell::perform_next`]) so that what its
/// awaits hold (the action, a lookup's state) shares its bytes in the session's task with
/// what the wait for the client holds: a thousand waiting sessions are a thousand tasks.
struct Shell<'a> {
    ctx: &'a ConnCtx,
    stream: &'a mut Stream,
    session: &'a mut Session,
    filters: &'a mut crate::filter::SessionFilters,
    client_ip: Option<IpAddr>,
    pending: VecDeque<Action>,
    out: Vec<u8>,
    writer: Option<Box<dyn MessageWriter>>,
}

/// What [`Shell::perform_next`] did.
enum Performed {
    Action,
    /// No action was pending.
    Nothing,
    /// The connection is closed.
    Closed,
}

impl Shell<'_> {
    /// Carries out the session's next action. It takes the action from the queue itself:
    /// an action passed in would be held twice in the future, as argument and as local.
    async fn perform_next(&mut self) -> Performed {
        let Some(action) = self.pending.pop_front() else {
            return Performed::Nothing;
        };
        let Shell {
            ctx,
            stream,
            session,
            filters,
            client_ip,
            pending,
            out,
            writer,
        } = self;
        match action {
            Action::Reply(r) => {
                if let Some(ip) = *client_ip
                    && r.is_error()
                    && r.code != 421
                {
                    let failure = if r.code == 535 {
                        crate::access::Failure::Auth
                    } else {
                        crate::access::Failure::Command
                    };
                    ctx.backend.record_failure(ip, failure);
                }
                filters.server_reply(&r);
                r.write_wire(out);
            }
            Action::StartTls => {
                if flush(stream, out).await.is_err() {
                    session.handle_into(Event::Disconnected, pending)
                } else {
                    // Boxed: the handshake's state (1.4 KiB) would otherwise be
                    // part of every session's future, STARTTLS or not.
                    match Box::pin(handshake(ctx, stream)).await {
                        Some(info) => {
                            filters.tls(&info.version, &info.cipher, info.bits);
                            session.handle_into(Event::TlsEstablished(info), pending)
                        }
                        None => session.handle_into(Event::TlsFailed, pending),
                    }
                }
            }
            Action::ClientLine(line) => filters.client_line(&line),
            Action::FilterPhase { phase, param } => {
                let v = filters.command(phase, &param).await;
                session.handle_into(Event::FilterVerdict(v), pending)
            }
            Action::CheckSender { address, context } => {
                let (backend, addr) = (&*ctx.backend, address.as_deref());
                let v = crate::filter::shell::check_sender(filters, backend, addr, &context).await;
                session.handle_into(Event::SenderVerdict(v), pending)
            }
            Action::CheckRecipient { address, context } => {
                let backend = &*ctx.backend;
                let v = crate::filter::shell::check_recipient(filters, backend, &address, &context)
                    .await;
                session.handle_into(Event::RecipientVerdict(v), pending)
            }
            Action::VerifyCredentials { user, password } => {
                let v = ctx
                    .backend
                    .verify_credentials(&user, &password, ctx.listener.session.listener)
                    .await;
                filters.auth(&user, crate::filter::auth_result(v));
                session.handle_into(Event::AuthVerdict(v), pending)
            }
            Action::MessageBegin(envelope) => {
                // The filters' verdict is done with before the queue is awaited, so the
                // task does not keep it (88 bytes) through that wait.
                match filters.data().await {
                    Verdict::Reject(r) => {
                        session.handle_into(Event::MessageFailed(r), pending);
                        return Performed::Action;
                    }
                    Verdict::Disconnect(r) => {
                        filter_disconnect(session, r, pending);
                        return Performed::Action;
                    }
                    Verdict::Proceed | Verdict::Rewrite(_) => {}
                }
                match ctx
                    .backend
                    .begin_message_on(*envelope, ctx.listener.session.listener)
                    .await
                {
                    Ok(w) => *writer = Some(w),
                    Err(r) => session.handle_into(Event::MessageFailed(r), pending),
                }
            }
            Action::MessageChunk(chunk) => match (writer.as_mut(), filters.chunk(chunk)) {
                (_, None) | (None, Some(_)) => {}
                (Some(w), Some(chunk)) => match w.write(&chunk).await {
                    Ok(()) => {}
                    Err(r) => {
                        if let Some(w) = writer.take() {
                            w.abort();
                        }
                        session.handle_into(Event::MessageFailed(r), pending)
                    }
                },
            },
            Action::MessageEnd => match writer.take() {
                Some(w) => match crate::filter::shell::finish_message(filters, w).await {
                    Ok(queue_id) => {
                        session.handle_into(Event::MessageCommitted { queue_id }, pending)
                    }
                    Err(r) => session.handle_into(Event::MessageFailed(r), pending),
                },
                None => session.handle_into(Event::MessageFailed(reply::queue_tempfail()), pending),
            },
            Action::MessageAbort => {
                if let Some(w) = writer.take() {
                    w.abort();
                    filters.rollback();
                }
            }
            Action::Close => {
                let _ = flush(stream, out).await;
                close(stream).await;
                return Performed::Closed;
            }
        }
        Performed::Action
    }
}

/// A filter ended the session: its reply goes out, then the connection closes.
fn filter_disconnect(session: &mut Session, r: Reply, actions: &mut VecDeque<Action>) {
    session.handle_into(Event::Disconnected, actions);
    actions.push_back(Action::Reply(r));
    actions.push_back(Action::Close);
}

/// TLS ends with its close_notify. A plain socket is closed when dropped (a FIN all the
/// same); a `shutdown` first would be one more system call per session, and mostly a
/// failing one, the client having gone after the 221.
async fn close(stream: &mut Stream) {
    if let Stream::Tls(_) = stream {
        let _ = stream.shutdown().await;
    }
}

async fn flush(stream: &mut Stream, out: &mut Vec<u8>) -> io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    stream.write_all(out).await?;
    stream.flush().await?;
    out.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_sockets_send_without_delay() {
        let listener = tcp_listener("127.0.0.1:0".parse().unwrap(), 8).unwrap();
        let addr = listener.local_addr().unwrap();
        let bound = Bound::Tcp(listener);
        let _client = TcpStream::connect(addr).await.unwrap();
        let (stream, origin) = accept(&bound).await.unwrap();
        assert!(matches!(origin, Origin::Inet(_)));
        let Stream::Tcp(s) = stream else {
            panic!("not a TCP stream")
        };
        assert!(s.nodelay().unwrap());
    }

    fn counters() -> Arc<Mutex<Counters>> {
        Arc::new(Mutex::new(Counters {
            total: 0,
            per_ip: HashMap::new(),
            rate: rate::ConnRate::new(0),
        }))
    }

    #[test]
    fn the_default_per_address_cap_spares_loopback_but_an_explicit_one_does_not() {
        let limits = Limits {
            max_sessions_per_ip: 2,
            ..Limits::default()
        };
        let c = counters();
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let remote: IpAddr = "192.0.2.7".parse().unwrap();
        let mut held = Vec::new();
        for _ in 0..5 {
            held.push(take_slot(&c, Some(local), &limits).ok().unwrap());
        }
        held.push(take_slot(&c, Some(remote), &limits).ok().unwrap());
        held.push(take_slot(&c, Some(remote), &limits).ok().unwrap());
        assert!(matches!(
            take_slot(&c, Some(remote), &limits),
            Err(Refusal::SessionsPerIp)
        ));

        let explicit = Limits {
            per_ip_covers_loopback: true,
            ..limits
        };
        assert!(matches!(
            take_slot(&c, Some(local), &explicit),
            Err(Refusal::SessionsPerIp)
        ));
        drop(held);
        assert!(take_slot(&c, Some(local), &explicit).is_ok());
    }
}
