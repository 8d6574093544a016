//! A loopback HTTP/1 reverse proxy in front of one upstream. Requests pass through unchanged
//! unless its [`Interceptor`] takes them: the emulator's front rewrites `BatchWriteItem`
//! (`emulator::front`), and the fault injector (`emulator::faults`) fails,
//! delays or cuts requests.
//!
//! Bodies are streamed, not buffered, so passing through costs one loopback hop.
//!
//! It listens in plain HTTP, or with TLS and a throwaway certificate (`emulator::tls`) in front
//! of a plain-HTTP upstream, for clients that must pay HTTPS's costs as they do on AWS.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::uri::{Authority, Scheme, Uri};
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::tls::TlsIdentity;

/// Any body the proxy sends or receives.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// A boxed future, as interceptors return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A body of `bytes`.
pub fn full_body(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// What an [`Interceptor`] does with a request.
pub enum Intercepted {
    /// Send this request (perhaps changed) on to the upstream.
    Forward(Request<ProxyBody>),
    /// Answer it without the upstream.
    Respond(Response<ProxyBody>),
    /// Close the connection without an answer, as a failing network would.
    Reset,
}

/// Decides, request by request, what the proxy does.
pub trait Interceptor: Send + Sync + 'static {
    fn intercept<'a>(
        &'a self,
        request: Request<ProxyBody>,
        upstream: &'a Upstream,
    ) -> BoxFuture<'a, Intercepted>;
}

/// Forwards everything unchanged.
pub struct PassThrough;

impl Interceptor for PassThrough {
    fn intercept<'a>(
        &'a self,
        request: Request<ProxyBody>,
        _upstream: &'a Upstream,
    ) -> BoxFuture<'a, Intercepted> {
        Box::pin(async move { Intercepted::Forward(request) })
    }
}

/// The server behind the proxy, and a pooled client to it.
pub struct Upstream {
    authority: Authority,
    client: Client<HttpConnector, ProxyBody>,
}

/// The upstream did not answer.
#[derive(Debug, thiserror::Error)]
#[error("failed to reach the upstream {authority}")]
pub struct UpstreamError {
    authority: String,
    #[source]
    source: hyper_util::client::legacy::Error,
}

impl Upstream {
    fn new(addr: SocketAddr) -> Result<Self, io::Error> {
        let authority = Authority::try_from(addr.to_string())
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Ok(Self {
            authority,
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// Sends `request` (its URI's path and query; scheme and host are the upstream's).
    pub async fn send(
        &self,
        mut request: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut parts = request.uri().clone().into_parts();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(self.authority.clone());
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some("/".parse().expect("`/` is a valid path"));
        }
        *request.uri_mut() = Uri::from_parts(parts).expect("scheme, authority and path are set");
        self.client
            .request(request)
            .await
            .map_err(|source| UpstreamError {
                authority: self.authority.to_string(),
                source,
            })
    }
}

/// A running proxy; it stops when dropped.
pub struct ReverseProxy {
    addr: SocketAddr,
    tls: bool,
    accept: JoinHandle<()>,
}

/// Why the proxy dropped a connection without an answer.
#[derive(Debug, thiserror::Error)]
#[error("the connection was reset on purpose")]
struct ResetOnPurpose;

impl ReverseProxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream` through `interceptor`.
    pub async fn start(
        upstream: SocketAddr,
        interceptor: Arc<dyn Interceptor>,
    ) -> io::Result<ReverseProxy> {
        Self::listen(upstream, interceptor, None).await
    }

    /// The same, with clients speaking TLS to the proxy under `identity`'s certificate (the
    /// upstream is still spoken to in plain HTTP).
    pub async fn start_tls(
        upstream: SocketAddr,
        interceptor: Arc<dyn Interceptor>,
        identity: &TlsIdentity,
    ) -> io::Result<ReverseProxy> {
        Self::listen(upstream, interceptor, Some(identity.acceptor())).await
    }

    async fn listen(
        upstream: SocketAddr,
        interceptor: Arc<dyn Interceptor>,
        tls: Option<TlsAcceptor>,
    ) -> io::Result<ReverseProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let upstream = Arc::new(Upstream::new(upstream)?);
        let serves_tls = tls.is_some();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let upstream = Arc::clone(&upstream);
                let interceptor = Arc::clone(&interceptor);
                let tls = tls.clone();
                // The handshake runs in the connection's own task, so a slow client holds up
                // no other. A failed handshake concerns only its client, which sees the failure.
                tokio::spawn(async move {
                    match tls {
                        None => serve(stream, upstream, interceptor).await,
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                serve(stream, upstream, interceptor).await;
                            }
                        }
                    }
                });
            }
        });
        Ok(ReverseProxy {
            addr,
            tls: serves_tls,
            accept,
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`, or `https://<addr>` with TLS (the certificate names 127.0.0.1).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }
}

impl Drop for ReverseProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Serves one client connection, plain or TLS, until it closes.
async fn serve<S>(stream: S, upstream: Arc<Upstream>, interceptor: Arc<dyn Interceptor>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request: Request<Incoming>| {
        let upstream = Arc::clone(&upstream);
        let interceptor = Arc::clone(&interceptor);
        async move { handle(&*interceptor, &upstream, request).await }
    });
    // A failed connection concerns only its client, which sees the failure.
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn handle(
    interceptor: &dyn Interceptor,
    upstream: &Upstream,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, ResetOnPurpose> {
    let request = request.map(BodyExt::boxed);
    match interceptor.intercept(request, upstream).await {
        Intercepted::Forward(request) => match upstream.send(request).await {
            Ok(response) => Ok(response.map(BodyExt::boxed)),
            Err(err) => Ok(bad_gateway(&deployer::errors::chain(&err))),
        },
        Intercepted::Respond(response) => Ok(response),
        // Returning an error makes hyper close the connection without a response.
        Intercepted::Reset => Err(ResetOnPurpose),
    }
}

/// A 502 naming why the upstream could not be reached.
pub fn bad_gateway(message: &str) -> Response<ProxyBody> {
    let mut response = Response::new(full_body(message.to_owned()));
    *response.status_mut() = http::StatusCode::BAD_GATEWAY;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny upstream that echoes the method, path and body it received.
    async fn echo_upstream() -> (SocketAddr, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let service = service_fn(|request: Request<Incoming>| async move {
                        let method = request.method().clone();
                        let path = request.uri().path_and_query().unwrap().to_string();
                        let body = request.into_body().collect().await?.to_bytes();
                        let text = format!("{method} {path} {}", String::from_utf8_lossy(&body));
                        Ok::<_, hyper::Error>(Response::new(full_body(text)))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (addr, task)
    }

    struct Teapot;

    impl Interceptor for Teapot {
        fn intercept<'a>(
            &'a self,
            request: Request<ProxyBody>,
            _upstream: &'a Upstream,
        ) -> BoxFuture<'a, Intercepted> {
            Box::pin(async move {
                match request.uri().path() {
                    "/teapot" => {
                        let mut response = Response::new(full_body("short and stout"));
                        *response.status_mut() = http::StatusCode::IM_A_TEAPOT;
                        Intercepted::Respond(response)
                    }
                    "/cut" => Intercepted::Reset,
                    _ => Intercepted::Forward(request),
                }
            })
        }
    }

    #[tokio::test]
    async fn requests_pass_through_and_interceptors_answer_or_cut() {
        let (upstream, _task) = echo_upstream().await;
        let proxy = ReverseProxy::start(upstream, Arc::new(Teapot))
            .await
            .unwrap();
        let http = reqwest::Client::new();

        let echoed = http
            .put(format!("{}/bucket/key?x=1", proxy.url()))
            .body("payload")
            .send()
            .await
            .unwrap();
        assert_eq!(echoed.status(), 200);
        assert_eq!(echoed.text().await.unwrap(), "PUT /bucket/key?x=1 payload");

        let teapot = http
            .get(format!("{}/teapot", proxy.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(teapot.status(), 418);

        let cut = http.get(format!("{}/cut", proxy.url())).send().await;
        assert!(cut.is_err(), "a reset gives the client no response");
    }

    #[tokio::test]
    async fn an_upstream_that_is_down_gives_a_bad_gateway_naming_it() {
        let closed = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let proxy = ReverseProxy::start(closed, Arc::new(PassThrough))
            .await
            .unwrap();
        let response = reqwest::get(format!("{}/", proxy.url())).await.unwrap();
        assert_eq!(response.status(), 502);
        assert!(response.text().await.unwrap().contains(&closed.to_string()));
    }
}
