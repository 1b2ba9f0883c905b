//! The thin tokio + rustls shell around [`client::Session`]: connect (from a chosen
//! source address), feed replies in, write what the session says, and run the TLS
//! handshake when it asks.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::client::{Action, Event, Params, ReplyReader, Session, Transaction};
use crate::queue::Outcome;

/// RFC 5321 §4.5.3.2: the client waits minutes, not seconds; 5 minutes for each reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(300);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where to connect: the name (for SNI, certificate checks and logs) and the address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub host: String,
    pub addr: SocketAddr,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} [{}]:{}", self.host, self.addr.ip(), self.addr.port())
    }
}

/// A connection-level failure: the text says which host and what went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnError {
    pub text: String,
    pub permanent: bool,
    /// The TLS handshake failed (opportunistic TLS may then go on in clear text).
    pub tls_handshake: bool,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Gone,
}

pub struct Conn {
    pub target: Target,
    stream: Stream,
    reader: ReplyReader,
    session: Session,
    tls: Option<Arc<ClientConfig>>,
    /// The local address of the connection, as `source=` in logs shows it (written once
    /// here, not for every message).
    pub source: String,
}

enum Stop {
    Ready,
    Done(Vec<Outcome>),
    Closed,
}

impl Conn {
    /// Connects and runs the session up to [`Action::Ready`] (greeting, EHLO, TLS, AUTH).
    /// `tls` is the client configuration for STARTTLS or implicit TLS.
    pub async fn open(
        target: Target,
        params: Params,
        tls: Option<Arc<ClientConfig>>,
        src: Option<IpAddr>,
    ) -> Result<Conn, ConnError> {
        let tcp = connect(&target, src).await?;
        let source = tcp
            .local_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        let implicit = params.implicit_tls;
        let mut conn = Conn {
            target,
            stream: Stream::Plain(tcp),
            reader: ReplyReader::default(),
            session: Session::new(params),
            tls,
            source,
        };
        if implicit {
            conn.handshake().await?;
        }
        match conn.drive(Vec::new()).await? {
            Stop::Ready => Ok(conn),
            _ => Err(conn.err("the session ended before it was ready")),
        }
    }

    pub fn tls_active(&self) -> bool {
        self.session.tls_active()
    }

    pub fn messages(&self) -> usize {
        self.session.messages
    }

    /// Whether the connection can carry another message.
    pub fn reusable(&self) -> bool {
        self.session.is_idle() && !matches!(self.stream, Stream::Gone)
    }

    /// Sends one message; one outcome per recipient.
    pub async fn send(&mut self, t: Transaction) -> Result<Vec<Outcome>, ConnError> {
        let actions = self.session.submit(t);
        match self.drive(actions).await? {
            Stop::Done(o) => Ok(o),
            _ => Err(self.err("the session ended during the transaction")),
        }
    }

    /// QUIT, politely; errors do not matter any more.
    pub async fn quit(mut self) {
        let actions = self.session.quit();
        let _ = timeout(Duration::from_secs(10), self.drive(actions)).await;
        if let Stream::Tls(mut s) = std::mem::replace(&mut self.stream, Stream::Gone) {
            let _ = s.shutdown().await;
        }
    }

    fn err(&mut self, what: impl std::fmt::Display) -> ConnError {
        self.stream = Stream::Gone;
        ConnError {
            text: format!("{}: {what}", self.target),
            permanent: false,
            tls_handshake: false,
        }
    }

    async fn handshake(&mut self) -> Result<(), ConnError> {
        let Some(config) = self.tls.clone() else {
            return Err(self.err("TLS is needed but no TLS configuration was given"));
        };
        let tcp = match std::mem::replace(&mut self.stream, Stream::Gone) {
            Stream::Plain(s) => s,
            _ => return Err(self.err("TLS requested twice")),
        };
        // RFC 3207 §5 / the STARTTLS injection trap: nothing read before the handshake
        // may be taken as a reply after it.
        self.reader.discard_buffered();
        let name = match self.target.host.parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => match ServerName::try_from(self.target.host.clone()) {
                Ok(n) => n,
                Err(e) => return Err(self.err(format!("bad TLS server name: {e}"))),
            },
        };
        match timeout(
            CONNECT_TIMEOUT,
            TlsConnector::from(config).connect(name, tcp),
        )
        .await
        {
            Ok(Ok(s)) => {
                self.stream = Stream::Tls(Box::new(s));
                Ok(())
            }
            Ok(Err(e)) => Err(ConnError {
                tls_handshake: true,
                ..self.err(format!("TLS handshake failed: {e}"))
            }),
            Err(_) => Err(ConnError {
                tls_handshake: true,
                ..self.err("TLS handshake timed out")
            }),
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match &mut self.stream {
            Stream::Plain(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
            Stream::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
            Stream::Gone => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    /// Reads what the server sent into the reply reader; 0 is the end of the stream.
    async fn read(&mut self) -> std::io::Result<usize> {
        let buf = self.reader.spare();
        match &mut self.stream {
            Stream::Plain(s) => s.read_buf(buf).await,
            Stream::Tls(s) => s.read_buf(buf).await,
            Stream::Gone => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    /// Carries out actions and feeds replies until the session stops for the caller.
    async fn drive(&mut self, mut actions: Vec<Action>) -> Result<Stop, ConnError> {
        loop {
            let mut stop = None;
            for a in std::mem::take(&mut actions) {
                match a {
                    Action::Send(bytes) => {
                        if let Err(e) = self.write(&bytes).await {
                            return Err(self.err(format!("write failed: {e}")));
                        }
                    }
                    Action::StartTls => {
                        // Boxed: the handshake's future is over 1 KiB, and a message's
                        // transaction on an open connection never needs it.
                        Box::pin(self.handshake()).await?;
                        actions.extend(self.session.handle(Event::TlsUp));
                    }
                    Action::Ready => stop = Some(Stop::Ready),
                    Action::Done(o) => stop = Some(Stop::Done(o)),
                    Action::Closed => stop = Some(Stop::Closed),
                    Action::Fail(f) => {
                        let mut e = self.err(f.text);
                        e.permanent = f.permanent;
                        return Err(e);
                    }
                }
            }
            if !actions.is_empty() {
                continue;
            }
            if let Some(s) = stop {
                return Ok(s);
            }
            let reply = loop {
                match self.reader.next_reply() {
                    Ok(Some(r)) => break r,
                    Ok(None) => {}
                    Err(e) => return Err(self.err(e)),
                }
                match timeout(REPLY_TIMEOUT, self.read()).await {
                    Ok(Ok(0)) => return Err(self.err("connection closed by the server")),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(self.err(format!("read failed: {e}"))),
                    Err(_) => return Err(self.err("timed out waiting for a reply")),
                }
            };
            actions = self.session.handle(Event::Reply(reply));
        }
    }
}

async fn connect(target: &Target, src: Option<IpAddr>) -> Result<TcpStream, ConnError> {
    let fail = |what: String| ConnError {
        text: format!("connection to {target} {what}"),
        permanent: false,
        tls_handshake: false,
    };
    let socket = if target.addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| fail(format!("failed: {e}")))?;
    if let Some(ip) = src {
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(|e| fail(format!("failed: cannot bind source {ip}: {e}")))?;
    }
    match timeout(CONNECT_TIMEOUT, socket.connect(target.addr)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Err(fail("refused".into()))
        }
        Ok(Err(e)) => Err(fail(format!("failed: {e}"))),
        Err(_) => Err(fail("timed out".into())),
    }
}
