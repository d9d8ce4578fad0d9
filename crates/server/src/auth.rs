//! API keys on the request path: who is calling, what the route needs, the
//! key's request and token rates, and slowing down an address that keeps
//! guessing. Storage and hashing are `shelf-keys`' business.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use shelf_keys::{Check, KeyInfo, Refusal, Scope, Verifier};

use crate::dialect::{self, Dialect};
use crate::{AppError, AppState};

tokio::task_local! {
    /// The key a request was let in with; unset when the server is open.
    static GRANT: Arc<KeyInfo>;
}

/// The key of the request being handled, if keys are on.
pub fn grant() -> Option<Arc<KeyInfo>> {
    GRANT.try_with(Arc::clone).ok()
}

/// 403 unless the request's key may use `model`; the audit line names it.
pub fn check_model(model: &str) -> Result<(), AppError> {
    if let Some(ledger) = crate::audit::Ledger::current() {
        ledger.set_model(model);
    }
    match grant() {
        Some(key) if !key.allows_model(model) => Err(AppError::Forbidden {
            message: format!("This API key may not use the model '{model}'"),
            code: "model_not_allowed",
        }),
        _ => Ok(()),
    }
}

/// Whether the request's key may see `model` in a listing.
pub fn may_see(model: &str) -> bool {
    grant().is_none_or(|key| key.allows_model(model))
}

/// What a route needs from a key. `None`: open to all, even with keys on.
fn needs(route: &str, method: &axum::http::Method) -> Option<Option<Scope>> {
    match route {
        // The web chat's files: nothing private, and the page must load to
        // ask for a key.
        "/health" | "/ui" | "/ui/" | "/ui/{*path}" => None,
        "/" if method == axum::http::Method::GET || method == axum::http::Method::HEAD => None,
        "/v1/chat/completions"
        | "/v1/completions"
        | "/v1/responses"
        | "/v1/messages"
        | "/v1/messages/count_tokens"
        | "/api/chat"
        | "/api/generate"
        | "/api/conversations"
        | "/api/conversations/{id}"
        | "/api/conversations/{id}/messages"
        | "/api/assistant/lines" => Some(Some(Scope::Chat)),
        "/v1/embeddings" | "/api/embed" | "/api/embeddings" => Some(Some(Scope::Embed)),
        "/api/pull" | "/api/copy" | "/api/delete" | "/metrics" => Some(Some(Scope::Admin)),
        // Listings and everything unmatched: any valid key. Unknown paths
        // still need one, so a stranger can't map the routes.
        _ => Some(None),
    }
}

/// The server's key checking: the database, rate buckets and failures.
pub struct Auth {
    verifier: Verifier,
    limits: Mutex<HashMap<i64, Buckets>>,
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").finish_non_exhaustive()
    }
}

impl Auth {
    pub fn new(verifier: Verifier) -> Self {
        Self {
            verifier,
            limits: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Whether any key exists: then every API request needs one.
    pub fn closed(&self) -> bool {
        self.verifier.closed()
    }

    /// Charge a finished request's tokens to its key's per-minute budget.
    pub fn charge(&self, key: &KeyInfo, tokens: u64) {
        if tokens == 0 || key.tpm.is_none() {
            return;
        }
        let mut limits = self.limits.lock().unwrap_or_else(PoisonError::into_inner);
        let buckets = limits
            .entry(key.id)
            .or_insert_with(|| Buckets::for_key(key));
        if let Some(tpm) = &mut buckets.tpm {
            tpm.debit(tokens as f64, Instant::now());
        }
    }
}

/// The key middleware: 401 for a missing or wrong key, 403 for a route
/// outside its scopes, 429 over its rates; otherwise the handler runs with
/// the key in [`GRANT`] and the response carries the key's rate headers.
pub async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(auth) = state.auth.clone() else {
        return next.run(request).await;
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(String::new, |p| p.as_str().to_string());
    let Some(scope) = needs(&route, request.method()) else {
        return next.run(request).await;
    };
    let path = request.uri().path().to_string();
    let dialect = Dialect::of(&path, request.headers());
    let key = match auth
        .verifier
        .check(presented(request.headers()), unix_now())
    {
        Check::Open => return next.run(request).await,
        Check::Granted(key) => key,
        Check::Refused(why) => {
            state.metrics.auth_failure(why.as_str());
            let peer = request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip());
            if let Some(delay) = peer.map(|ip| auth.failed(ip)) {
                tokio::time::sleep(delay).await;
            }
            return unauthorized(&path, request.headers(), why);
        }
    };
    if let Some(ledger) = crate::audit::Ledger::current() {
        ledger.set_key(Arc::clone(&key));
    }
    if let Some(scope) = scope.filter(|s| !key.allows(*s)) {
        return dialect::render(
            &path,
            request.headers(),
            AppError::Forbidden {
                message: format!("This API key does not have the '{scope}' scope"),
                code: "insufficient_scope",
            },
        );
    }
    let rates = match auth.admit(&key) {
        Ok(rates) => rates,
        Err(refusal) => {
            let (refused, rates) = *refusal;
            let mut response = dialect::render(&path, request.headers(), refused);
            rates.write(dialect, response.headers_mut(), true);
            return response;
        }
    };
    let mut response = GRANT.scope(Arc::clone(&key), next.run(request)).await;
    if let Some(rates) = rates {
        rates.write(dialect, response.headers_mut(), false);
    }
    response
}

/// The key a request carries: `x-api-key` (Anthropic's clients) or a bearer
/// token (OpenAI's and Ollama's).
fn presented(headers: &HeaderMap) -> Option<&str> {
    if let Some(key) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(key.trim());
    }
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

fn unauthorized(path: &str, headers: &HeaderMap, why: Refusal) -> Response {
    let mut response = dialect::render(
        path,
        headers,
        AppError::Unauthorized {
            missing: why == Refusal::Missing,
        },
    );
    let headers = response.headers_mut();
    headers.insert("www-authenticate", HeaderValue::from_static("Bearer"));
    headers.insert("x-should-retry", HeaderValue::from_static("false"));
    response
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A token bucket: `cap` per minute, refilled continuously.
#[derive(Debug, Clone)]
struct Bucket {
    cap: f64,
    level: f64,
    at: Instant,
}

impl Bucket {
    fn new(per_minute: u32) -> Self {
        Self {
            cap: f64::from(per_minute),
            level: f64::from(per_minute),
            at: Instant::now(),
        }
    }

    fn per_sec(&self) -> f64 {
        self.cap / 60.0
    }

    fn refill(&mut self, now: Instant) {
        let gained = now.saturating_duration_since(self.at).as_secs_f64() * self.per_sec();
        self.level = (self.level + gained).min(self.cap);
        self.at = now;
    }

    /// How long until `n` is available, if it is not now.
    fn wait_for(&self, n: f64) -> Option<Duration> {
        (self.level < n).then(|| secs((n - self.level) / self.per_sec()))
    }

    /// Spend after the fact (tokens): the level may go into debt, which
    /// the key then waits out before its next request.
    fn debit(&mut self, n: f64, now: Instant) {
        self.refill(now);
        self.level -= n;
    }

    /// Until the bucket is full again, as OpenAI's reset headers mean it.
    fn reset_in(&self) -> Duration {
        secs((self.cap - self.level).max(0.0) / self.per_sec())
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.clamp(0.0, 3600.0))
}

#[derive(Debug)]
struct Buckets {
    rpm: Option<Bucket>,
    tpm: Option<Bucket>,
}

impl Buckets {
    fn for_key(key: &KeyInfo) -> Self {
        Self {
            rpm: key.rpm.filter(|n| *n > 0).map(Bucket::new),
            tpm: key.tpm.filter(|n| *n > 0).map(Bucket::new),
        }
    }
}

/// A key's buckets after admission, for the response headers.
#[derive(Debug, Clone)]
struct Rates {
    rpm: Option<Bucket>,
    tpm: Option<Bucket>,
    /// On a refusal: how long to wait.
    retry_after: Option<Duration>,
}

impl Auth {
    /// Take one request from the key's rpm, if its tpm is not in debt.
    /// Tokens are checked first, so a refusal for tokens costs no request.
    fn admit(&self, key: &KeyInfo) -> Result<Option<Rates>, Box<(AppError, Rates)>> {
        if key.rpm.is_none() && key.tpm.is_none() {
            return Ok(None);
        }
        let now = Instant::now();
        let mut limits = self.limits.lock().unwrap_or_else(PoisonError::into_inner);
        let buckets = limits
            .entry(key.id)
            .or_insert_with(|| Buckets::for_key(key));
        for bucket in [&mut buckets.rpm, &mut buckets.tpm].into_iter().flatten() {
            bucket.refill(now);
        }
        let snapshot = |buckets: &Buckets, retry_after| Rates {
            rpm: buckets.rpm.clone(),
            tpm: buckets.tpm.clone(),
            retry_after,
        };
        if let Some(wait) = buckets
            .tpm
            .as_ref()
            .and_then(|b| b.wait_for(f64::MIN_POSITIVE))
        {
            let limit = key.tpm.unwrap_or(0);
            return Err(Box::new((
                AppError::RateLimited {
                    message: format!("Rate limit reached for this API key on tokens per minute (TPM): limit {limit}. Please try again in {}.", go_duration(wait)),
                    kind: "tokens",
                },
                snapshot(buckets, Some(wait)),
            )));
        }
        if let Some(wait) = buckets.rpm.as_ref().and_then(|b| b.wait_for(1.0)) {
            let limit = key.rpm.unwrap_or(0);
            return Err(Box::new((
                AppError::RateLimited {
                    message: format!("Rate limit reached for this API key on requests per minute (RPM): limit {limit}. Please try again in {}.", go_duration(wait)),
                    kind: "requests",
                },
                snapshot(buckets, Some(wait)),
            )));
        }
        if let Some(rpm) = &mut buckets.rpm {
            rpm.level -= 1.0;
        }
        Ok(Some(snapshot(buckets, None)))
    }
}

impl Rates {
    /// OpenAI's `x-ratelimit-*` headers (Ollama's clients read the same), or
    /// Anthropic's `anthropic-ratelimit-*`; `retry-after` on a refusal.
    fn write(&self, dialect: Dialect, headers: &mut HeaderMap, refused: bool) {
        let mut put = |name: String, value: String| {
            if let (Ok(name), Ok(value)) =
                (HeaderName::try_from(name), HeaderValue::try_from(value))
            {
                headers.insert(name, value);
            }
        };
        for (kind, bucket) in [("requests", &self.rpm), ("tokens", &self.tpm)] {
            let Some(bucket) = bucket else { continue };
            let limit = (bucket.cap as u64).to_string();
            let remaining = (bucket.level.max(0.0) as u64).to_string();
            if dialect == Dialect::Anthropic {
                let reset =
                    humantime::format_rfc3339_seconds(SystemTime::now() + bucket.reset_in());
                put(format!("anthropic-ratelimit-{kind}-limit"), limit);
                put(format!("anthropic-ratelimit-{kind}-remaining"), remaining);
                put(
                    format!("anthropic-ratelimit-{kind}-reset"),
                    reset.to_string(),
                );
            } else {
                put(format!("x-ratelimit-limit-{kind}"), limit);
                put(format!("x-ratelimit-remaining-{kind}"), remaining);
                put(
                    format!("x-ratelimit-reset-{kind}"),
                    go_duration(bucket.reset_in()),
                );
            }
        }
        if let (true, Some(wait)) = (refused, self.retry_after) {
            put(
                "retry-after".into(),
                wait.as_secs_f64().ceil().max(1.0).to_string(),
            );
            put("retry-after-ms".into(), wait.as_millis().max(1).to_string());
        }
    }
}

/// A duration as OpenAI writes it in its reset headers: `12ms`, `3.89s`, `6m0s`.
fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        let text = format!("{:.3}", d.as_secs_f64());
        format!("{}s", text.trim_end_matches('0').trim_end_matches('.'))
    } else {
        format!("{}m{}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

/// Recent failed attempts from one address.
#[derive(Debug)]
struct Failures {
    count: u32,
    since: Instant,
}

/// Failures within this window count together.
const FAILURE_WINDOW: Duration = Duration::from_secs(600);
/// Failures answered at once before slowing down.
const FREE_FAILURES: u32 = 10;
/// The slowest a refusal gets.
const MAX_FAILURE_DELAY: Duration = Duration::from_secs(1);
/// Addresses remembered at most.
const MAX_TRACKED: usize = 10_000;

impl Auth {
    /// Count a failure from `ip` and say how long to hold its answer: a
    /// guesser gets one try a second per connection, while a valid key from
    /// the same address is never slowed.
    fn failed(&self, ip: IpAddr) -> Duration {
        let ip = network_of(ip);
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if failures.len() >= MAX_TRACKED {
            failures.retain(|_, f| now.duration_since(f.since) < FAILURE_WINDOW);
        }
        if failures.len() >= MAX_TRACKED {
            // Forget the oldest half: clearing all would let a guesser with
            // many addresses wipe its own record.
            let mut starts: Vec<Instant> = failures.values().map(|f| f.since).collect();
            starts.sort_unstable();
            let cutoff = starts[starts.len() / 2];
            failures.retain(|_, f| f.since > cutoff);
        }
        let entry = failures.entry(ip).or_insert(Failures {
            count: 0,
            since: now,
        });
        if now.duration_since(entry.since) >= FAILURE_WINDOW {
            *entry = Failures {
                count: 0,
                since: now,
            };
        }
        entry.count += 1;
        if entry.count == FREE_FAILURES + 1 {
            tracing::warn!(address = %ip, "repeated API key failures: slowing this address down");
        }
        let over = entry.count.saturating_sub(FREE_FAILURES);
        if over == 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(25u64.saturating_mul(1 << over.min(10))).min(MAX_FAILURE_DELAY)
    }
}

/// IPv6 clients are counted by their /64: one host usually owns a whole one.
fn network_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::from(octets)
        }
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_openai_writes_them() {
        assert_eq!(go_duration(Duration::from_millis(12)), "12ms");
        assert_eq!(go_duration(Duration::from_millis(3890)), "3.89s");
        assert_eq!(go_duration(Duration::from_secs(1)), "1s");
        assert_eq!(go_duration(Duration::from_secs(360)), "6m0s");
    }

    #[test]
    fn a_bucket_refills_at_its_rate_and_runs_into_debt() {
        let start = Instant::now();
        let mut bucket = Bucket::new(60);
        bucket.at = start;
        bucket.debit(150.0, start);
        assert_eq!(bucket.level, -90.0);
        let wait = bucket.wait_for(1.0).unwrap();
        assert_eq!(wait, Duration::from_secs(91));
        bucket.refill(start + Duration::from_secs(91));
        assert!(bucket.wait_for(1.0).is_none());
        assert_eq!(bucket.reset_in(), Duration::from_secs(59));
    }

    #[test]
    fn ipv6_addresses_count_by_their_network() {
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::2:3".parse().unwrap();
        assert_eq!(network_of(a), network_of(b));
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(network_of(v4), v4);
    }
}
