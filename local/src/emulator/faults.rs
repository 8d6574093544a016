//! A fault-injecting [`Interceptor`] for [`super::proxy`], and a proxy built on it: it answers
//! some requests with S3's `500 InternalError` or `503 SlowDown`, drops the connection before
//! or after the request reached the upstream, holds some requests for a latency spike, at
//! chosen rates; adds a fixed latency and a jitter to every request; or makes the upstream
//! unreachable altogether until told otherwise. The fault tests put it in front of the
//! function's S3 traffic; a benchmark can put it in front of anything that speaks HTTP/1, and
//! serve it over TLS ([`FaultProxy::start_tls`]) so that the function pays for HTTPS as on S3.
//!
//! Decisions are deterministic: the fault for a request is drawn from a SplitMix64 generator
//! seeded with the seed, the request's method and path (hashed with FNV-1a), and how many
//! times that same request was seen before. Running the same requests with the same seed
//! injects the same faults into the same requests, whatever order concurrent requests arrive
//! in; a retry of a request (its next occurrence) gets a fresh draw. The README's Reliability
//! figures come from these seeds: the generator and the draws are pinned by tests below, and
//! the jitter is a draw of its own after them, so it changes no fault.
//!
//! Counters say what was injected, so callers can assert that the faults happened.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::{Request, Response, StatusCode};

use super::proxy::{
    full_body, BoxFuture, Intercepted, Interceptor, ProxyBody, ReverseProxy, Upstream,
};
use super::tls::TlsIdentity;

/// SplitMix64 (Steele, Lea and Flood 2014; the seeding generator of xoshiro): tiny, fast, and
/// statistically good enough for choosing faults.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform draw from [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        // The top 53 bits: every value exactly representable.
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// FNV-1a over `bytes`: a stable hash (std's `DefaultHasher` may change between releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xCBF2_9CE4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

/// How often each fault is injected, as probabilities per request. The four failures exclude
/// each other (their sum must not exceed 1); a latency spike is drawn separately and may come
/// with any of them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FaultRates {
    /// `500 InternalError`, S3's XML error body; the request does not reach the upstream.
    pub internal_error: f64,
    /// `503 SlowDown`, S3's throttling answer; the request does not reach the upstream.
    pub slow_down: f64,
    /// The connection is dropped before the request reaches the upstream.
    pub reset: f64,
    /// The request reaches the upstream and is applied, then the connection is dropped before
    /// the answer: the caller cannot tell it apart from a reset, and retries an operation that
    /// already happened.
    pub lost_response: f64,
    /// The request is held for [`FaultConfig::spike`] before anything else happens.
    pub latency: f64,
}

impl FaultRates {
    /// No faults at all.
    pub const NONE: FaultRates = FaultRates {
        internal_error: 0.0,
        slow_down: 0.0,
        reset: 0.0,
        lost_response: 0.0,
        latency: 0.0,
    };

    /// `total` of the requests fail, spread evenly over the four kinds of failure.
    pub fn failing(total: f64) -> FaultRates {
        FaultRates {
            internal_error: total / 4.0,
            slow_down: total / 4.0,
            reset: total / 4.0,
            lost_response: total / 4.0,
            latency: 0.0,
        }
    }

    /// The probability that a request fails.
    pub fn failure_total(&self) -> f64 {
        self.internal_error + self.slow_down + self.reset + self.lost_response
    }

    fn check(&self) {
        let all = [
            self.internal_error,
            self.slow_down,
            self.reset,
            self.lost_response,
            self.latency,
        ];
        assert!(
            all.iter().all(|rate| (0.0..=1.0).contains(rate)),
            "fault rates are probabilities from 0 to 1: {self:?}"
        );
        assert!(
            self.failure_total() <= 1.0 + 1e-9,
            "the failure rates add up to more than 1: {self:?}"
        );
    }
}

/// A jitter range must not be upside down.
fn check_jitter(jitter: Option<(Duration, Duration)>) {
    if let Some((low, high)) = jitter {
        assert!(
            low <= high,
            "the jitter range runs from its low to its high end: {low:?} > {high:?}"
        );
    }
}

/// The injector's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FaultConfig {
    pub seed: u64,
    pub rates: FaultRates,
    /// How long a request picked by [`FaultRates::latency`] is held (on top of `latency` and
    /// `jitter`).
    pub spike: Duration,
    /// Latency added to every request, before its fault (if any) happens.
    pub latency: Option<Duration>,
    /// A further latency for every request, drawn uniformly from `[low, high)` by the
    /// request's own generator (so the same request of the same seed gets the same jitter).
    pub jitter: Option<(Duration, Duration)>,
}

impl FaultConfig {
    /// `rates` under `seed`, spikes of 100 ms, and no added latency or jitter.
    pub fn new(seed: u64, rates: FaultRates) -> Self {
        Self {
            seed,
            rates,
            spike: Duration::from_millis(100),
            latency: None,
            jitter: None,
        }
    }

    /// The same with `latency` added to every request.
    pub fn with_latency(self, latency: Duration) -> Self {
        Self {
            latency: Some(latency),
            ..self
        }
    }

    /// The same with a jitter from `low` up to `high` added to every request.
    ///
    /// Panics if `low > high`.
    pub fn with_jitter(self, low: Duration, high: Duration) -> Self {
        check_jitter(Some((low, high)));
        Self {
            jitter: Some((low, high)),
            ..self
        }
    }

    fn check(&self) {
        self.rates.check();
        check_jitter(self.jitter);
    }
}

/// What happens to a request, apart from its latency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    /// Passed on unchanged.
    None,
    InternalError,
    SlowDown,
    Reset,
    LostResponse,
}

/// The injector's choice for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub fault: Fault,
    /// Held this long first: the added latency, the jitter and the spike, if any of them
    /// applies.
    pub delay: Option<Duration>,
}

/// The pure part of the injector: which fault the `occurrence`-th sighting (0 for the first)
/// of the request `identity` gets under `config`.
pub fn decide(config: &FaultConfig, identity: &str, occurrence: u64) -> Decision {
    let mut rng = SplitMix64::new(
        config.seed
            ^ fnv1a(identity.as_bytes()).rotate_left(17)
            ^ occurrence.wrapping_mul(0xD6E8_FEB8_6659_FD93),
    );
    // Mixing once more decorrelates nearby seeds.
    rng.next_u64();
    let draw = rng.next_f64();
    let rates = &config.rates;
    let mut bound = 0.0;
    let mut fault = Fault::None;
    for (rate, candidate) in [
        (rates.internal_error, Fault::InternalError),
        (rates.slow_down, Fault::SlowDown),
        (rates.reset, Fault::Reset),
        (rates.lost_response, Fault::LostResponse),
    ] {
        bound += rate;
        if draw < bound {
            fault = candidate;
            break;
        }
    }
    let spike = (rng.next_f64() < rates.latency).then_some(config.spike);
    // Drawn after the fault and the spike, so that a jitter changes neither.
    let jitter = config
        .jitter
        .map(|(low, high)| low + (high - low).mul_f64(rng.next_f64()));
    let delay = [config.latency, jitter, spike]
        .into_iter()
        .flatten()
        .reduce(|total, part| total + part);
    Decision { fault, delay }
}

/// How many of each thing the injector did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Requests seen.
    pub requests: u64,
    /// Requests passed on to the upstream (lost responses included).
    pub forwarded: u64,
    pub internal_errors: u64,
    pub slow_downs: u64,
    pub resets: u64,
    pub lost_responses: u64,
    /// Requests held before anything else happened (added latency, jitter or a spike).
    pub delayed: u64,
    /// Requests cut while the upstream was made unreachable.
    pub unreachable: u64,
}

impl FaultCounts {
    /// Requests that failed on purpose, of every kind.
    pub fn failed(&self) -> u64 {
        self.internal_errors
            + self.slow_downs
            + self.resets
            + self.lost_responses
            + self.unreachable
    }
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    forwarded: AtomicU64,
    internal_errors: AtomicU64,
    slow_downs: AtomicU64,
    resets: AtomicU64,
    lost_responses: AtomicU64,
    delayed: AtomicU64,
    unreachable: AtomicU64,
    in_flight: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The injector; share it with the proxy as an `Arc` (or start a [`FaultProxy`]).
pub struct FaultInjector {
    config: Mutex<FaultConfig>,
    unreachable: AtomicBool,
    /// How often each request identity was seen.
    seen: Mutex<HashMap<String, u64>>,
    counters: Counters,
}

/// Decrements the in-flight gauge when a request is done, however it ends.
struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl FaultInjector {
    /// Panics if the rates are not probabilities, the failure rates add up to more than 1, or
    /// the jitter range is upside down.
    pub fn new(config: FaultConfig) -> Self {
        config.check();
        Self {
            config: Mutex::new(config),
            unreachable: AtomicBool::new(false),
            seen: Mutex::default(),
            counters: Counters::default(),
        }
    }

    fn config(&self) -> std::sync::MutexGuard<'_, FaultConfig> {
        self.config.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the rates from the next request on (the seed and what was seen stay).
    pub fn set_rates(&self, rates: FaultRates) {
        rates.check();
        self.config().rates = rates;
    }

    /// Changes the added latency and the jitter from the next request on.
    pub fn set_latency(&self, latency: Option<Duration>, jitter: Option<(Duration, Duration)>) {
        check_jitter(jitter);
        let mut config = self.config();
        config.latency = latency;
        config.jitter = jitter;
    }

    /// With `true`, every request is cut as if the upstream could not be reached, until set
    /// back.
    pub fn set_unreachable(&self, unreachable: bool) {
        self.unreachable.store(unreachable, Ordering::SeqCst);
    }

    pub fn is_unreachable(&self) -> bool {
        self.unreachable.load(Ordering::SeqCst)
    }

    /// What the injector has done so far.
    pub fn counts(&self) -> FaultCounts {
        let c = &self.counters;
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        FaultCounts {
            requests: read(&c.requests),
            forwarded: read(&c.forwarded),
            internal_errors: read(&c.internal_errors),
            slow_downs: read(&c.slow_downs),
            resets: read(&c.resets),
            lost_responses: read(&c.lost_responses),
            delayed: read(&c.delayed),
            unreachable: read(&c.unreachable),
        }
    }

    /// Requests the proxy is working on now (being delayed or waiting for the upstream).
    pub fn in_flight(&self) -> u64 {
        self.counters.in_flight.load(Ordering::Relaxed)
    }

    /// The decision for a request with this method and path, counting it as seen.
    pub fn decide_for(&self, method: &str, path_and_query: &str) -> Decision {
        let identity = format!("{method} {path_and_query}");
        let occurrence = {
            let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            let count = seen.entry(identity.clone()).or_insert(0);
            let occurrence = *count;
            *count += 1;
            occurrence
        };
        let config = *self.config();
        decide(&config, &identity, occurrence)
    }

    async fn handle(&self, request: Request<ProxyBody>, upstream: &Upstream) -> Intercepted {
        let counters = &self.counters;
        bump(&counters.requests);
        counters.in_flight.fetch_add(1, Ordering::Relaxed);
        let _in_flight = InFlight(&counters.in_flight);
        if self.is_unreachable() {
            bump(&counters.unreachable);
            return Intercepted::Reset;
        }
        let path = request
            .uri()
            .path_and_query()
            .map_or_else(|| request.uri().path().to_owned(), ToString::to_string);
        let decision = self.decide_for(request.method().as_str(), &path);
        if let Some(delay) = decision.delay {
            bump(&counters.delayed);
            tokio::time::sleep(delay).await;
            // The upstream may have gone away while the request was held.
            if self.is_unreachable() {
                bump(&counters.unreachable);
                return Intercepted::Reset;
            }
        }
        match decision.fault {
            Fault::None => {
                bump(&counters.forwarded);
                Intercepted::Forward(request)
            }
            Fault::InternalError => {
                bump(&counters.internal_errors);
                Intercepted::Respond(s3_error(&request, StatusCode::INTERNAL_SERVER_ERROR))
            }
            Fault::SlowDown => {
                bump(&counters.slow_downs);
                Intercepted::Respond(s3_error(&request, StatusCode::SERVICE_UNAVAILABLE))
            }
            Fault::Reset => {
                bump(&counters.resets);
                Intercepted::Reset
            }
            Fault::LostResponse => {
                bump(&counters.forwarded);
                bump(&counters.lost_responses);
                // The upstream answers once it has applied the request: the answer's arrival
                // means the operation happened. It is then never delivered.
                let _ = upstream.send(request).await;
                Intercepted::Reset
            }
        }
    }
}

impl Interceptor for FaultInjector {
    fn intercept<'a>(
        &'a self,
        request: Request<ProxyBody>,
        upstream: &'a Upstream,
    ) -> BoxFuture<'a, Intercepted> {
        Box::pin(self.handle(request, upstream))
    }
}

/// S3's answer for `status` (500 `InternalError` or 503 `SlowDown`). The request's body is left
/// unread, so the connection is closed after the answer.
fn s3_error(request: &Request<ProxyBody>, status: StatusCode) -> Response<ProxyBody> {
    let resource = request.uri().path().to_owned();
    let (code, message) = if status == StatusCode::SERVICE_UNAVAILABLE {
        ("SlowDown", "Please reduce your request rate.")
    } else {
        (
            "InternalError",
            "We encountered an internal error. Please try again.",
        )
    };
    let request_id = format!(
        "{:016X}",
        SplitMix64::new(fnv1a(resource.as_bytes())).next_u64()
    );
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><Resource>{resource}</Resource><RequestId>{request_id}</RequestId><HostId>faults</HostId></Error>"
    );
    let mut response = Response::new(full_body(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/xml"),
    );
    if let Ok(value) = http::HeaderValue::from_str(&request_id) {
        headers.insert("x-amz-request-id", value);
    }
    response
}

/// A fault-injecting proxy in front of an upstream (S3, or the whole emulator); stops when
/// dropped.
pub struct FaultProxy {
    proxy: ReverseProxy,
    injector: Arc<FaultInjector>,
    /// Set when clients speak TLS to the proxy.
    tls: Option<TlsIdentity>,
}

impl FaultProxy {
    /// Listens on a free loopback port and passes requests on to `upstream` through a
    /// [`FaultInjector`] with `config`.
    ///
    /// Panics as [`FaultInjector::new`] does on invalid settings.
    pub async fn start(upstream: SocketAddr, config: FaultConfig) -> std::io::Result<FaultProxy> {
        let injector = Arc::new(FaultInjector::new(config));
        let proxy =
            ReverseProxy::start(upstream, Arc::clone(&injector) as Arc<dyn Interceptor>).await?;
        Ok(FaultProxy {
            proxy,
            injector,
            tls: None,
        })
    }

    /// The same, with clients speaking TLS to the proxy under a throwaway certificate for
    /// `localhost` and 127.0.0.1, signed by a CA made for this proxy alone ([`Self::ca_pem`]);
    /// the upstream is still spoken to in plain HTTP. Faults and latency apply as without TLS,
    /// to each request once its connection's handshake is done.
    ///
    /// The function trusts the proxy when its environment has
    /// [`super::tls::TRUST_FILE_VAR`] (`SSL_CERT_FILE`) naming a file with [`Self::ca_pem`]
    /// ([`Self::write_ca_file`]).
    ///
    /// Panics as [`FaultInjector::new`] does on invalid settings.
    pub async fn start_tls(
        upstream: SocketAddr,
        config: FaultConfig,
    ) -> std::io::Result<FaultProxy> {
        let injector = Arc::new(FaultInjector::new(config));
        let identity = TlsIdentity::generate()?;
        let proxy = ReverseProxy::start_tls(
            upstream,
            Arc::clone(&injector) as Arc<dyn Interceptor>,
            &identity,
        )
        .await?;
        Ok(FaultProxy {
            proxy,
            injector,
            tls: Some(identity),
        })
    }

    /// The PEM of the CA a client must trust, for a proxy from [`Self::start_tls`].
    pub fn ca_pem(&self) -> Option<&str> {
        self.tls.as_ref().map(TlsIdentity::ca_pem)
    }

    /// Writes [`Self::ca_pem`] to `path`; fails for a proxy without TLS.
    pub fn write_ca_file(&self, path: &std::path::Path) -> std::io::Result<()> {
        match &self.tls {
            Some(identity) => identity.write_ca_file(path),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "this fault proxy serves plain HTTP: it has no CA (start it with start_tls)",
            )),
        }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.proxy.addr()
    }

    /// `http://<addr>`, or `https://<addr>` with TLS: give it to the function as
    /// `AWS_ENDPOINT_URL_S3`.
    pub fn url(&self) -> String {
        self.proxy.url()
    }

    pub fn injector(&self) -> &FaultInjector {
        &self.injector
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn splitmix64_gives_the_published_sequence() {
        // The reference values for seed 1234567 (from the generator's reference code).
        let mut rng = SplitMix64::new(1_234_567);
        let first: Vec<u64> = (0..3).map(|_| rng.next_u64()).collect();
        assert_eq!(
            first,
            [
                6_457_827_717_110_365_317,
                3_203_168_211_198_807_973,
                9_817_491_932_198_370_423
            ]
        );
        let mut rng = SplitMix64::new(7);
        for _ in 0..1000 {
            let x = rng.next_f64();
            assert!((0.0..1.0).contains(&x));
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_faults_to_the_same_requests() {
        let config = FaultConfig::new(42, FaultRates::failing(0.5));
        let requests: Vec<String> = (0..200)
            .map(|i| format!("PUT /bucket/user-{i}/userdata"))
            .collect();
        let run = |config: &FaultConfig| -> Vec<Decision> {
            requests
                .iter()
                .flat_map(|r| (0..3).map(move |n| (r, n)))
                .map(|(r, n)| decide(config, r, n))
                .collect()
        };
        assert_eq!(run(&config), run(&config));
        let other = FaultConfig::new(43, FaultRates::failing(0.5));
        assert_ne!(run(&config), run(&other), "another seed, other faults");
    }

    #[test]
    fn decisions_do_not_depend_on_arrival_order() {
        let config = FaultConfig::new(9, FaultRates::failing(0.3));
        let forward = FaultInjector::new(config);
        let backward = FaultInjector::new(config);
        let paths: Vec<String> = (0..100).map(|i| format!("/b/u{i}/userdata")).collect();
        let a: Vec<Decision> = paths.iter().map(|p| forward.decide_for("PUT", p)).collect();
        let mut b: Vec<Decision> = paths
            .iter()
            .rev()
            .map(|p| backward.decide_for("PUT", p))
            .collect();
        b.reverse();
        assert_eq!(a, b);
        // A retry of the same request is a new draw, not the same fault again.
        let retries: Vec<Decision> = paths.iter().map(|p| forward.decide_for("PUT", p)).collect();
        assert_ne!(a, retries);
    }

    #[test]
    fn faults_come_at_their_rates() {
        let rates = FaultRates {
            internal_error: 0.10,
            slow_down: 0.05,
            reset: 0.10,
            lost_response: 0.05,
            latency: 0.20,
        };
        let config = FaultConfig::new(2024, rates);
        let n = 100_000;
        let mut counts: HashMap<Fault, usize> = HashMap::new();
        let mut delayed = 0;
        for i in 0..n {
            let decision = decide(&config, &format!("PUT /b/u{i}/userdata"), 0);
            *counts.entry(decision.fault).or_default() += 1;
            delayed += usize::from(decision.delay.is_some());
        }
        let share = |fault| counts.get(&fault).copied().unwrap_or(0) as f64 / n as f64;
        // Five standard deviations of a binomial at these rates is under 0.7 percentage points.
        let close = |observed: f64, expected: f64| (observed - expected).abs() < 0.007;
        assert!(close(share(Fault::InternalError), 0.10), "{counts:?}");
        assert!(close(share(Fault::SlowDown), 0.05), "{counts:?}");
        assert!(close(share(Fault::Reset), 0.10), "{counts:?}");
        assert!(close(share(Fault::LostResponse), 0.05), "{counts:?}");
        assert!(close(share(Fault::None), 0.70), "{counts:?}");
        assert!(close(delayed as f64 / n as f64, 0.20), "{delayed}");
    }

    #[test]
    fn no_rates_no_faults_and_certain_rates_always() {
        let quiet = FaultConfig::new(1, FaultRates::NONE);
        let always = FaultConfig::new(
            1,
            FaultRates {
                reset: 1.0,
                latency: 1.0,
                ..FaultRates::NONE
            },
        );
        for i in 0..1000 {
            let request = format!("DELETE /b/u{i}/userdata");
            assert_eq!(
                decide(&quiet, &request, 0),
                Decision {
                    fault: Fault::None,
                    delay: None
                }
            );
            assert_eq!(
                decide(&always, &request, 0),
                Decision {
                    fault: Fault::Reset,
                    delay: Some(always.spike)
                }
            );
        }
    }

    #[test]
    #[should_panic(expected = "add up to more than 1")]
    fn rates_over_one_are_refused() {
        FaultInjector::new(FaultConfig::new(1, FaultRates::failing(1.2)));
    }

    /// One letter per decision: `.` none, `I` 500, `S` 503, `R` reset, `L` lost response; in
    /// lower case (`,` for none) when the request is also held.
    fn letters(decisions: impl Iterator<Item = Decision>) -> String {
        decisions
            .map(|d| {
                let letter = match d.fault {
                    Fault::None => '.',
                    Fault::InternalError => 'I',
                    Fault::SlowDown => 'S',
                    Fault::Reset => 'R',
                    Fault::LostResponse => 'L',
                };
                match (d.delay.is_some(), letter) {
                    (false, letter) => letter,
                    (true, '.') => ',',
                    (true, letter) => letter.to_ascii_lowercase(),
                }
            })
            .collect()
    }

    #[test]
    fn the_draws_are_pinned() {
        // Recorded from the generator the README's Reliability figures were measured with:
        // a change here changes which requests those seeds fail.
        let config = FaultConfig::new(0x5EED_0030, FaultRates::failing(0.30));
        let users =
            (0..40).map(|i| decide(&config, &format!("PUT /bucket/user-{i:05}/userdata"), 0));
        assert_eq!(letters(users), ".R.S.I.S.............................L.L");
        let retries = (0..40).map(|n| decide(&config, "PUT /bucket/user-00000/userdata", n));
        assert_eq!(letters(retries), ".R.S.R.LI.L...R......S..SR.....SI..S....");
        let rates = FaultRates {
            internal_error: 0.10,
            slow_down: 0.05,
            reset: 0.10,
            lost_response: 0.05,
            latency: 0.20,
        };
        let config = FaultConfig::new(2024, rates);
        let spikes = |config: FaultConfig| {
            letters((0..40).map(move |i| decide(&config, &format!("DELETE /b/u{i}/userdata"), 0)))
        };
        let pinned = ".,....IIi.L..IS.,,LS...R..S.,.RIS.,..,.r";
        assert_eq!(spikes(config), pinned);
        // Added latency holds every request and changes no fault.
        let held = spikes(config.with_latency(Duration::from_millis(5)));
        assert_eq!(held, pinned.replace('.', ",").to_ascii_lowercase());
    }

    #[test]
    fn jitter_is_drawn_in_its_range_per_request_and_changes_no_fault() {
        let rates = FaultRates {
            latency: 0.3,
            ..FaultRates::failing(0.3)
        };
        let plain = FaultConfig::new(77, rates);
        let (low, high) = (Duration::from_millis(10), Duration::from_millis(30));
        let jittery = plain
            .with_latency(Duration::from_millis(50))
            .with_jitter(low, high);
        let mut jitters = Vec::new();
        for i in 0..2000 {
            let request = format!("PUT /b/u{i}/userdata");
            let without = decide(&plain, &request, 0);
            let with = decide(&jittery, &request, 0);
            assert_eq!(with.fault, without.fault, "{request}");
            assert_eq!(with, decide(&jittery, &request, 0), "deterministic");
            let spike = without.delay.unwrap_or_default();
            let jitter = with.delay.expect("every request is held") - Duration::from_millis(50);
            let jitter = jitter - spike;
            assert!(low <= jitter && jitter < high, "{request}: {jitter:?}");
            jitters.push(jitter);
        }
        let mean = jitters.iter().sum::<Duration>() / jitters.len() as u32;
        assert!(
            mean > Duration::from_millis(18) && mean < Duration::from_millis(22),
            "uniform over the range: mean {mean:?}"
        );
        // A range of one point is a fixed jitter.
        let fixed = FaultConfig::new(1, FaultRates::NONE).with_jitter(low, low);
        assert_eq!(decide(&fixed, "GET /", 0).delay, Some(low));
    }

    #[test]
    #[should_panic(expected = "from its low to its high end")]
    fn an_upside_down_jitter_is_refused() {
        let _ = FaultConfig::new(1, FaultRates::NONE)
            .with_jitter(Duration::from_millis(20), Duration::from_millis(10));
    }

    /// An upstream that answers every request with 200 and counts the requests whose body it
    /// read (plain HTTP/1.1 with Content-Length, which is all the test sends).
    async fn counting_upstream() -> (SocketAddr, Arc<AtomicU64>) {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&hits);
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let counted = Arc::clone(&counted);
                tokio::spawn(async move {
                    let mut stream = BufReader::new(stream);
                    loop {
                        let mut length = 0usize;
                        loop {
                            let mut line = String::new();
                            if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            if line == "\r\n" {
                                break;
                            }
                            if let Some((name, value)) = line.split_once(':') {
                                if name.eq_ignore_ascii_case("content-length") {
                                    length = value.trim().parse().unwrap_or(0);
                                }
                            }
                        }
                        let mut body = vec![0; length];
                        if stream.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        counted.fetch_add(1, Ordering::Relaxed);
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if stream.get_mut().write_all(answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, hits)
    }

    #[tokio::test]
    async fn a_request_through_the_proxy_takes_at_least_the_added_latency() {
        let (upstream, hits) = counting_upstream().await;
        let latency = Duration::from_millis(200);
        let proxy = FaultProxy::start(
            upstream,
            FaultConfig::new(11, FaultRates::NONE).with_latency(latency),
        )
        .await
        .unwrap();
        let http = reqwest::Client::new();
        let timed = |url: String| {
            let http = http.clone();
            async move {
                let started = Instant::now();
                let response = http.put(url).body("{}").send().await.unwrap();
                assert_eq!(response.status(), 200);
                started.elapsed()
            }
        };
        for i in 0..3 {
            let took = timed(format!("{}/bucket/u{i}/userdata", proxy.url())).await;
            assert!(took >= latency, "request {i} took {took:?}");
        }
        let counts = proxy.injector().counts();
        assert_eq!(
            (counts.requests, counts.delayed, counts.forwarded),
            (3, 3, 3)
        );
        assert_eq!(hits.load(Ordering::Relaxed), 3);

        // With a jitter on top, every request takes at least the latency plus the jitter's low
        // end; without either, the proxy holds nothing.
        let low = Duration::from_millis(50);
        proxy
            .injector()
            .set_latency(Some(latency), Some((low, Duration::from_millis(100))));
        let took = timed(format!("{}/bucket/jittery", proxy.url())).await;
        assert!(took >= latency + low, "took {took:?}");
        proxy.injector().set_latency(None, None);
        timed(format!("{}/bucket/quick", proxy.url())).await;
        assert_eq!(proxy.injector().counts().delayed, 4);
        assert_eq!(proxy.injector().in_flight(), 0);
    }

    #[tokio::test]
    async fn the_proxy_injects_counts_and_can_make_s3_unreachable() {
        let (upstream, hits) = counting_upstream().await;
        let proxy = FaultProxy::start(upstream, FaultConfig::new(5, FaultRates::failing(0.4)))
            .await
            .unwrap();
        let http = reqwest::Client::new();
        let mut ok = 0u64;
        let mut errors = HashMap::new();
        let mut cut = 0u64;
        for i in 0..200 {
            match http
                .put(format!("{}/bucket/u{i}/userdata", proxy.url()))
                .body("{}")
                .send()
                .await
            {
                Ok(response) if response.status() == 200 => ok += 1,
                Ok(response) => {
                    let status = response.status().as_u16();
                    let body = response.text().await.unwrap();
                    let code = if status == 503 {
                        "<Code>SlowDown</Code>"
                    } else {
                        "<Code>InternalError</Code>"
                    };
                    assert!(body.contains(code), "{status}: {body}");
                    *errors.entry(status).or_insert(0u64) += 1;
                }
                Err(_) => cut += 1,
            }
        }
        let counts = proxy.injector().counts();
        assert_eq!(counts.requests, 200);
        assert_eq!(ok, counts.requests - counts.failed());
        assert_eq!(
            errors.get(&500).copied().unwrap_or(0),
            counts.internal_errors
        );
        assert_eq!(errors.get(&503).copied().unwrap_or(0), counts.slow_downs);
        assert_eq!(cut, counts.resets + counts.lost_responses);
        assert_eq!(
            hits.load(Ordering::Relaxed),
            counts.forwarded,
            "lost responses reached S3"
        );
        assert!(counts.failed() > 40 && counts.failed() < 120, "{counts:?}");

        proxy.injector().set_rates(FaultRates::NONE);
        proxy.injector().set_unreachable(true);
        for _ in 0..5 {
            assert!(http
                .get(format!("{}/bucket", proxy.url()))
                .send()
                .await
                .is_err());
        }
        assert_eq!(proxy.injector().counts().unreachable, 5);
        proxy.injector().set_unreachable(false);
        let back = http
            .get(format!("{}/bucket", proxy.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(back.status(), 200);
        assert_eq!(proxy.injector().in_flight(), 0);
    }

    type TestError = Box<dyn std::error::Error + Send + Sync>;

    /// One HTTPS request to `proxy` on a new connection, from a client that trusts `ca_pem`
    /// alone and addresses the proxy as `server_name`.
    async fn https_request(
        proxy: &FaultProxy,
        ca_pem: &str,
        server_name: &str,
        path: &str,
    ) -> Result<(StatusCode, String), TestError> {
        use http_body_util::BodyExt;
        use hyper_util::rt::TokioIo;
        use tokio_rustls::rustls::crypto::aws_lc_rs;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
        use tokio_rustls::rustls::{ClientConfig, RootCertStore};

        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert?)?;
        }
        let config = ClientConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(proxy.addr()).await?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from(server_name.to_owned())?, tcp)
            .await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(connection);
        let request = Request::put(path)
            .header(http::header::HOST, server_name)
            .body(full_body("{}"))?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    #[tokio::test]
    async fn a_tls_proxy_serves_https_under_its_own_ca_and_adds_the_latency() {
        let (upstream, hits) = counting_upstream().await;
        let latency = Duration::from_millis(200);
        let proxy = FaultProxy::start_tls(
            upstream,
            FaultConfig::new(11, FaultRates::NONE).with_latency(latency),
        )
        .await
        .unwrap();
        assert_eq!(proxy.url(), format!("https://{}", proxy.addr()));
        let ca = proxy.ca_pem().expect("a TLS proxy has a CA").to_owned();

        // The certificate is good for both names of the loopback.
        for (i, name) in ["127.0.0.1", "localhost"].into_iter().enumerate() {
            let started = Instant::now();
            let answer = https_request(&proxy, &ca, name, &format!("/bucket/u{i}/userdata"))
                .await
                .unwrap();
            let took = started.elapsed();
            assert_eq!(answer, (StatusCode::OK, "ok".to_owned()), "{name}");
            assert!(took >= latency, "{name}: took {took:?}");
        }
        let counts = proxy.injector().counts();
        assert_eq!(
            (counts.requests, counts.delayed, counts.forwarded),
            (2, 2, 2)
        );
        assert_eq!(hits.load(Ordering::Relaxed), 2);

        // A client trusting another CA fails the handshake; so does one speaking plain HTTP.
        // Neither request reaches the injector.
        let stranger = TlsIdentity::generate().unwrap();
        let refused = https_request(&proxy, stranger.ca_pem(), "localhost", "/bucket/x")
            .await
            .unwrap_err();
        assert!(
            refused.to_string().contains("UnknownIssuer"),
            "refused for another reason: {refused}"
        );
        let plain = reqwest::get(format!("http://{}/bucket/x", proxy.addr())).await;
        assert!(plain.is_err(), "plain HTTP got an answer: {plain:?}");
        assert_eq!(proxy.injector().counts().requests, 2);

        // Faults apply inside TLS as without it: an unreachable upstream cuts the connection.
        proxy.injector().set_unreachable(true);
        assert!(https_request(&proxy, &ca, "localhost", "/bucket/cut")
            .await
            .is_err());
        assert_eq!(proxy.injector().counts().unreachable, 1);
        assert_eq!(proxy.injector().in_flight(), 0);

        let plain_proxy = FaultProxy::start(upstream, FaultConfig::new(1, FaultRates::NONE))
            .await
            .unwrap();
        assert!(plain_proxy.url().starts_with("http://"));
        assert_eq!(plain_proxy.ca_pem(), None);
        let nowhere = tempfile::tempdir().unwrap().path().join("ca.pem");
        assert!(plain_proxy.write_ca_file(&nowhere).is_err());
    }

    /// Set in the child processes of the test below to the outcome each must see: `trusted`
    /// or `untrusted`.
    const SDK_CHILD_VAR: &str = "USERSYNC_TEST_TLS_SDK_CHILD";

    /// The function's own S3 client trusts a TLS fault proxy through `SSL_CERT_FILE`, and
    /// through nothing else: a `PutObject` made exactly as `bootstrap` makes it (the SDK's
    /// defaults from the environment, `s3_client_from`, `S3Store`) reaches the upstream when the
    /// variable names the proxy's CA, and fails the handshake when it names another CA. The SDK
    /// reads the variable once per process, so each case runs in a child process: this test
    /// binary running this one test, with [`SDK_CHILD_VAR`] set.
    #[tokio::test]
    async fn the_functions_s3_client_trusts_the_tls_proxy_through_ssl_cert_file() {
        if let Ok(expected) = std::env::var(SDK_CHILD_VAR) {
            put_as_the_function_does(&expected).await;
            return;
        }
        let (upstream, hits) = counting_upstream().await;
        let proxy = FaultProxy::start_tls(
            upstream,
            FaultConfig::new(3, FaultRates::NONE).with_latency(Duration::from_millis(20)),
        )
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let proxy_ca = dir.path().join("proxy-ca.pem");
        proxy.write_ca_file(&proxy_ca).unwrap();
        let other_ca = dir.path().join("other-ca.pem");
        TlsIdentity::generate()
            .unwrap()
            .write_ca_file(&other_ca)
            .unwrap();

        let full_name = concat!(
            module_path!(),
            "::the_functions_s3_client_trusts_the_tls_proxy_through_ssl_cert_file"
        );
        let (_crate, test_name) = full_name.split_once("::").unwrap();
        let child = |ca_file: &std::path::Path, expected: &str| {
            // Asynchronous, so that this runtime goes on serving the proxy meanwhile. A clean
            // environment: nothing of the caller's AWS settings or certificate paths leaks in.
            tokio::process::Command::new(std::env::current_exe().unwrap())
                .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
                .env_clear()
                .env(SDK_CHILD_VAR, expected)
                .env(super::super::tls::TRUST_FILE_VAR, ca_file)
                .env("AWS_ENDPOINT_URL", proxy.url())
                .env("AWS_REGION", "us-east-1")
                .env("AWS_ACCESS_KEY_ID", "test")
                .env("AWS_SECRET_ACCESS_KEY", "test")
                .env("AWS_EC2_METADATA_DISABLED", "true")
                .output()
        };
        let check = |output: std::process::Output, case: &str| {
            let stdout = String::from_utf8_lossy(&output.stdout);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                output.status.success() && stdout.contains("1 passed"),
                "the {case} child failed ({}):\n{stdout}\n{stderr}",
                output.status
            );
        };

        check(child(&proxy_ca, "trusted").await.unwrap(), "trusted");
        let counts = proxy.injector().counts();
        assert_eq!((counts.requests, counts.forwarded), (1, 1), "{counts:?}");
        assert_eq!(
            hits.load(Ordering::Relaxed),
            1,
            "the PUT reached the upstream"
        );

        check(child(&other_ca, "untrusted").await.unwrap(), "untrusted");
        assert_eq!(
            proxy.injector().counts().requests,
            1,
            "no request passed a handshake with an untrusted CA"
        );
        assert_eq!(hits.load(Ordering::Relaxed), 1);
    }

    /// The child's half of the test above: one `PutObject` through the function's S3 code.
    async fn put_as_the_function_does(expected: &str) {
        use usersync_function::ObjectStore;

        let shared = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let store =
            usersync_function::S3Store::new(usersync_function::s3_client_from(&shared, true), "b");
        let outcome = store
            .put("user-1/userdata", br#"{"name":"user-1"}"#.to_vec())
            .await;
        match expected {
            "trusted" => outcome.expect("the SDK trusts the proxy's CA"),
            "untrusted" => {
                let err = outcome.expect_err("the SDK refuses a certificate of another CA");
                let chain = deployer::errors::chain(&err);
                assert!(chain.contains("UnknownIssuer"), "{chain}");
            }
            other => panic!("{SDK_CHILD_VAR} is `trusted` or `untrusted`, not `{other}`"),
        }
    }
}
