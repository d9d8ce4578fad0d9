//! One blob: take its lock, resume what an earlier try left, fetch the rest
//! in parallel ranges, hash as the contiguous prefix grows, verify, commit.
//!
//! Beside `tmp/<key>.partial` sits `tmp/<key>.resume` (see `resume`), which
//! counts the bytes of each range as they are written, after them. After a
//! `kill -9` a new pull fetches exactly what it lacks. The final sha256 check
//! catches anything else (a power cut, a lying server).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{CONTENT_RANGE, RANGE};
use reqwest::StatusCode;
use sha2::{Digest as _, Sha256};
use shelf_store::lock::{self, LockFile};
use shelf_store::{Digest, Store, StoreError};

use crate::error::PullError;
use crate::http::{self, Clients};
use crate::resume::{ResumeFile, Saved};
use crate::{BlobSource, Progress, PullOptions};

const TICK: Duration = Duration::from_millis(100);
/// Bytes gathered from the network before each write.
const WRITE_BUFFER: usize = 1 << 20;
/// Start writing back to disk once this much is dirty, so the final fsync
/// before the rename has little left to do.
const FLUSH_EVERY_BYTES: u64 = 64 << 20;
const LOCK_POLL: Duration = Duration::from_millis(250);

/// Shared by the range workers, the hasher and the saver.
struct Transfer {
    file: File,
    resume: ResumeFile,
    size: u64,
    chunk: u64,
    done: Vec<AtomicU64>,
    next: AtomicUsize,
    /// Set when the server answered a range with the whole file.
    ranges_ignored: AtomicBool,
    stop: AtomicBool,
}

impl Transfer {
    fn range(&self, index: usize) -> (u64, u64) {
        let start = index as u64 * self.chunk;
        (start, (start + self.chunk).min(self.size))
    }

    /// End of the prefix written without gaps: what the hasher may read.
    fn frontier(&self) -> u64 {
        for (index, done) in self.done.iter().enumerate() {
            let (start, end) = self.range(index);
            let done = done.load(Ordering::Acquire);
            if start + done < end {
                return start + done;
            }
        }
        self.size
    }
}

struct Paths {
    lock: PathBuf,
    partial: PathBuf,
    state: PathBuf,
    /// For blobs whose digest is only known at the end: where the winner writes it.
    learned: PathBuf,
}

impl Paths {
    fn new(tmp: &Path, blob: &BlobSource) -> Self {
        let key = match &blob.expected {
            Some(digest) => digest.file_name(),
            None => {
                let url_hash = Digest::from_hasher(Sha256::new_with_prefix(blob.url.as_bytes()));
                format!("url-{}", &url_hash.hex()[..32])
            }
        };
        Self {
            lock: tmp.join(format!("{key}.lock")),
            partial: tmp.join(format!("{key}.partial")),
            state: tmp.join(format!("{key}.resume")),
            learned: tmp.join(format!("{key}.digest")),
        }
    }
}

/// Refuse before downloading anything if the blobs still missing won't fit.
pub(crate) fn check_space(store: &Store, blobs: &[BlobSource]) -> Result<(), PullError> {
    let tmp = store.tmp_dir()?;
    let mut needed = 0u64;
    for blob in blobs {
        if blob.expected.as_ref().is_some_and(|d| store.has_blob(d)) {
            continue;
        }
        let size = blob.size.unwrap_or(0);
        let have = ResumeFile::read(&Paths::new(&tmp, blob).state)
            .filter(|s| s.size == size)
            .map_or(0, |s| s.done.iter().sum());
        needed += size.saturating_sub(have);
    }
    let available = store.available_space()?;
    if needed > available {
        return Err(PullError::NotEnoughSpace {
            root: store.root().display().to_string(),
            needed,
            available,
        });
    }
    Ok(())
}

/// Make `blob` present in the store; returns its digest and size.
pub(crate) async fn fetch_blob(
    clients: &Clients,
    store: &Store,
    blob: &BlobSource,
    auth: Option<&str>,
    options: &PullOptions,
    progress: &dyn Progress,
) -> Result<(Digest, u64), PullError> {
    let paths = Paths::new(&store.tmp_dir()?, blob);
    let (_lock, already) = acquire(store, blob, &paths, progress).await?;
    if let Some(digest) = already {
        progress.message(&format!("{}: already in the store", blob.label));
        return sized(store, digest);
    }
    let job = Job {
        clients: clients.clone(),
        url: blob.url.clone(),
        label: blob.label.clone(),
        auth: auth.map(str::to_string),
        options: options.clone(),
    };
    let size = match blob.size {
        Some(size) => Some(size),
        None => job.probe_size().await?,
    };
    let actual = match size {
        Some(size) => job.ranged(&paths, size, progress).await?,
        None => job.streamed(&paths, progress).await?,
    };
    let digest = finish(store, blob, &paths, actual, progress)?;
    sized(store, digest)
}

fn sized(store: &Store, digest: Digest) -> Result<(Digest, u64), PullError> {
    let path = store.blob_path(&digest);
    let size = fs::metadata(&path)
        .map_err(|source| PullError::Store(StoreError::Io { path, source }))?
        .len();
    Ok((digest, size))
}

/// Take the blob's lock, or find that another process finished it meanwhile.
async fn acquire(
    store: &Store,
    blob: &BlobSource,
    paths: &Paths,
    progress: &dyn Progress,
) -> Result<(Option<LockFile>, Option<Digest>), PullError> {
    let present = || {
        let digest = blob.expected.clone().or_else(|| {
            let hex = fs::read_to_string(&paths.learned).ok()?;
            Digest::from_hex(hex.trim())
        })?;
        store.has_blob(&digest).then_some(digest)
    };
    let mut told = false;
    loop {
        if let Some(digest) = present() {
            return Ok((None, Some(digest)));
        }
        let io_err = |e| {
            PullError::Store(StoreError::Io {
                path: paths.lock.clone(),
                source: e,
            })
        };
        if let Some(lock) = LockFile::try_acquire(&paths.lock, vec![]).map_err(io_err)? {
            let done = present();
            return Ok((Some(lock), done));
        }
        if lock::break_if_stale(&paths.lock).map_err(io_err)? {
            progress.message(&format!("{}: resuming an abandoned download", blob.label));
            continue;
        }
        if !told {
            progress.message(&format!(
                "{}: another pull is downloading it; waiting",
                blob.label
            ));
            told = true;
        }
        tokio::time::sleep(LOCK_POLL).await;
    }
}

/// Verify, check the GGUF, fsync and rename into `blobs/`.
fn finish(
    store: &Store,
    blob: &BlobSource,
    paths: &Paths,
    actual: Digest,
    progress: &dyn Progress,
) -> Result<Digest, PullError> {
    let discard = || {
        let _ = fs::remove_file(&paths.partial);
        let _ = fs::remove_file(&paths.state);
    };
    if let Some(expected) = &blob.expected {
        if *expected != actual {
            discard();
            return Err(PullError::DigestMismatch {
                what: blob.label.clone(),
                expected: expected.to_string(),
                actual: actual.to_string(),
            });
        }
    }
    if blob.is_gguf {
        if let Err(e) = shelf_gguf::Gguf::open(&paths.partial) {
            discard();
            let reason = e.to_string();
            let reason = reason.rsplit(": ").next().unwrap_or(&reason).to_string();
            return Err(PullError::NotGguf {
                what: blob.label.clone(),
                reason,
            });
        }
    }
    let io_err = |source| {
        PullError::Store(StoreError::Io {
            path: paths.partial.clone(),
            source,
        })
    };
    File::open(&paths.partial)
        .and_then(|f| f.sync_all())
        .map_err(io_err)?;
    store.commit_blob(&paths.partial, &actual)?;
    let _ = fs::remove_file(&paths.state);
    if blob.expected.is_none() {
        let _ =
            shelf_store::write_atomic(&store.tmp_dir()?, &paths.learned, actual.hex().as_bytes());
    }
    progress.blob_finished(&blob.label);
    Ok(actual)
}

/// What every range request of one blob shares.
#[derive(Clone)]
struct Job {
    clients: Clients,
    url: String,
    label: String,
    auth: Option<String>,
    options: PullOptions,
}

impl Job {
    async fn ranged(
        &self,
        paths: &Paths,
        size: u64,
        progress: &dyn Progress,
    ) -> Result<Digest, PullError> {
        let chunk = self.options.chunk_size.max(1 << 20);
        match self.ranged_with(paths, size, chunk, progress).await {
            Err(PullError::RangesIgnored { .. }) => {
                progress.message(&format!(
                    "{}: server ignores ranges; one stream",
                    self.label
                ));
                let _ = fs::remove_file(&paths.state);
                self.ranged_with(paths, size, size.max(1), progress).await
            }
            other => other,
        }
    }

    async fn ranged_with(
        &self,
        paths: &Paths,
        size: u64,
        chunk: u64,
        progress: &dyn Progress,
    ) -> Result<Digest, PullError> {
        let transfer = Arc::new(open_partial(paths, size, chunk).map_err(|source| {
            PullError::Store(StoreError::Io {
                path: paths.partial.clone(),
                source,
            })
        })?);
        let already = transfer
            .done
            .iter()
            .map(|d| d.load(Ordering::Relaxed))
            .sum();
        progress.blob_started(&self.label, size, already);

        let hasher = {
            let transfer = transfer.clone();
            tokio::task::spawn_blocking(move || hash_frontier(&transfer))
        };
        let result = self.run_workers(&transfer, progress).await;
        transfer.stop.store(true, Ordering::Release);
        let hashed = hasher.await.map_err(PullError::task)?;
        result?;
        hashed
            .map_err(|source| {
                PullError::Store(StoreError::Io {
                    path: paths.partial.clone(),
                    source,
                })
            })?
            .ok_or_else(|| PullError::Internal("hashing stopped early".into()))
    }

    /// Range workers, plus the early writeback, until every range is written or one fails.
    async fn run_workers(
        &self,
        transfer: &Arc<Transfer>,
        progress: &dyn Progress,
    ) -> Result<(), PullError> {
        let ranges = transfer.done.len();
        let workers = self.options.connections.clamp(1, 64).min(ranges.max(1));
        let mut tasks = futures::stream::FuturesUnordered::new();
        for _ in 0..workers {
            tasks.push(self.worker(transfer.clone(), progress));
        }
        let mut ticker = tokio::time::interval(TICK);
        let mut flusher = Flusher::default();
        let mut outcome = Ok(());
        use futures::StreamExt;
        loop {
            tokio::select! {
                next = tasks.next() => match next {
                    None => break,
                    Some(Ok(())) => {}
                    Some(Err(e)) => {
                        transfer.stop.store(true, Ordering::Release);
                        if outcome.is_ok() {
                            outcome = Err(e);
                        }
                    }
                },
                _ = ticker.tick() => flusher.maybe_flush(transfer),
            }
        }
        if transfer.ranges_ignored.load(Ordering::Acquire) {
            return Err(PullError::RangesIgnored {
                url: self.url.clone(),
            });
        }
        outcome
    }

    async fn worker(
        &self,
        transfer: Arc<Transfer>,
        progress: &dyn Progress,
    ) -> Result<(), PullError> {
        loop {
            let index = transfer.next.fetch_add(1, Ordering::AcqRel);
            if index >= transfer.done.len() || transfer.stop.load(Ordering::Acquire) {
                return Ok(());
            }
            self.fetch_range(&transfer, index, progress).await?;
        }
    }

    /// One range, retried on transient failures; the count resets when bytes flow.
    async fn fetch_range(
        &self,
        transfer: &Transfer,
        index: usize,
        progress: &dyn Progress,
    ) -> Result<(), PullError> {
        let (start, end) = transfer.range(index);
        let mut attempts = 0;
        loop {
            let before = transfer.done[index].load(Ordering::Acquire);
            if start + before >= end || transfer.stop.load(Ordering::Acquire) {
                return Ok(());
            }
            match self
                .stream_range(transfer, index, start + before, end, progress)
                .await
            {
                Ok(()) => {}
                Err(e) if e.is_transient() && attempts < self.options.retries => {
                    if transfer.done[index].load(Ordering::Acquire) > before {
                        attempts = 0;
                    }
                    attempts += 1;
                    progress.message(&format!("{}: {e}; retrying", self.label));
                    tokio::time::sleep(backoff(attempts)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn request(&self, from: u64, to: u64) -> reqwest::RequestBuilder {
        let request = self.clients.follow.get(&self.url);
        let request = if to > from {
            request.header(RANGE, format!("bytes={from}-{}", to - 1))
        } else {
            request
        };
        http::with_auth(request, self.auth.as_deref())
    }

    /// Fetch `[from, to)` into the file, counting bytes as they land.
    async fn stream_range(
        &self,
        transfer: &Transfer,
        index: usize,
        from: u64,
        to: u64,
        progress: &dyn Progress,
    ) -> Result<(), PullError> {
        let send = http::send(self.request(from, to), &self.url);
        let response = tokio::time::timeout(self.options.stall_timeout, send)
            .await
            .map_err(|_| self.stalled())??;
        let response = http::check(response, &self.label, "the server wants credentials")?;
        let whole_file = from == 0 && to == transfer.size;
        match response.status() {
            StatusCode::PARTIAL_CONTENT => check_content_range(&response, from, &self.url)?,
            StatusCode::OK if whole_file => {}
            StatusCode::OK => {
                transfer.ranges_ignored.store(true, Ordering::Release);
                transfer.stop.store(true, Ordering::Release);
                return Ok(());
            }
            status => {
                return Err(PullError::Status {
                    url: self.url.clone(),
                    status: status.as_u16(),
                })
            }
        }
        let mut writer = RangeWriter {
            transfer,
            index,
            at: from,
            buffer: Vec::with_capacity(WRITE_BUFFER),
            progress,
        };
        let mut response = response;
        let result = self.copy_body(&mut response, &mut writer, to).await;
        // Whatever arrived before a failure is good: keep it.
        writer.flush()?;
        result?;
        if writer.at < to && !transfer.stop.load(Ordering::Acquire) {
            return Err(PullError::Connection {
                url: self.url.clone(),
                message: format!("connection closed {} bytes early", to - writer.at),
            });
        }
        Ok(())
    }

    /// Body bytes into `writer` until `to`. Buffered bytes are written
    /// whenever the network has nothing ready, so a stalled or killed pull
    /// has recorded everything it received.
    async fn copy_body(
        &self,
        response: &mut reqwest::Response,
        writer: &mut RangeWriter<'_>,
        to: u64,
    ) -> Result<(), PullError> {
        use futures::FutureExt;
        while writer.pending_end() < to {
            let ready = response.chunk().now_or_never();
            let next = match ready {
                None => {
                    writer.flush()?;
                    self.next_chunk(response).await
                }
                Some(ready) => ready.map_err(|e| http::connection(&self.url, &e)),
            };
            let Some(bytes) = next? else {
                break;
            };
            let take = bytes.len().min((to - writer.pending_end()) as usize);
            writer.push(&bytes[..take])?;
            if writer.transfer.stop.load(Ordering::Acquire) {
                break;
            }
        }
        Ok(())
    }

    /// The size from a one-byte range request (`Content-Range: bytes 0-0/SIZE`),
    /// or the length of a plain answer; `None` if the server says neither.
    async fn probe_size(&self) -> Result<Option<u64>, PullError> {
        let request = http::with_auth(
            self.clients
                .follow
                .get(&self.url)
                .header(RANGE, "bytes=0-0"),
            self.auth.as_deref(),
        )
        .timeout(self.options.stall_timeout);
        let response = http::send(request, &self.url).await?;
        let response = http::check(response, &self.label, "the server wants credentials")?;
        let headers = response.headers();
        let total = headers
            .get(CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit_once('/'))
            .and_then(|(_, total)| total.parse().ok());
        let length = (response.status() == StatusCode::OK)
            .then(|| response.content_length())
            .flatten();
        Ok(total.or(length))
    }

    fn stalled(&self) -> PullError {
        PullError::Stalled {
            url: self.url.clone(),
            secs: self.options.stall_timeout.as_secs(),
            attempts: 1,
        }
    }

    /// The next piece of the body, or a stall after `stall_timeout` of silence.
    async fn next_chunk(
        &self,
        response: &mut reqwest::Response,
    ) -> Result<Option<bytes::Bytes>, PullError> {
        tokio::time::timeout(self.options.stall_timeout, response.chunk())
            .await
            .map_err(|_| self.stalled())?
            .map_err(|e| http::connection(&self.url, &e))
    }

    /// No size known up front: one stream, hashed as it arrives, no resume.
    async fn streamed(&self, paths: &Paths, progress: &dyn Progress) -> Result<Digest, PullError> {
        let io_err = |source| {
            PullError::Store(StoreError::Io {
                path: paths.partial.clone(),
                source,
            })
        };
        let response = http::send(self.request(0, 0), &self.url).await?;
        let mut response = http::check(response, &self.label, "the server wants credentials")?;
        progress.blob_started(&self.label, 0, 0);
        let file = File::create(&paths.partial).map_err(io_err)?;
        let mut hasher = Sha256::new();
        let mut at = 0u64;
        while let Some(bytes) = self.next_chunk(&mut response).await? {
            file.write_all_at(&bytes, at).map_err(io_err)?;
            hasher.update(&bytes);
            at += bytes.len() as u64;
            progress.advanced(bytes.len() as u64);
        }
        Ok(Digest::from_hasher(hasher))
    }
}

/// Background `fdatasync`s while the download runs, one at a time.
#[derive(Default)]
struct Flusher {
    flushed_at: u64,
    running: Option<tokio::task::JoinHandle<()>>,
}

impl Flusher {
    fn maybe_flush(&mut self, transfer: &Arc<Transfer>) {
        if self
            .running
            .as_ref()
            .is_some_and(|task| !task.is_finished())
        {
            return;
        }
        let written: u64 = transfer
            .done
            .iter()
            .map(|d| d.load(Ordering::Relaxed))
            .sum();
        if written < self.flushed_at + FLUSH_EVERY_BYTES {
            return;
        }
        self.flushed_at = written;
        let transfer = transfer.clone();
        self.running = Some(tokio::task::spawn_blocking(move || {
            // Only an early start on the final fsync; its result is what counts.
            let _ = transfer.file.sync_data();
        }));
    }
}

/// Gathers one range's bytes and writes them in large pieces, each followed
/// by its count in the resume file.
struct RangeWriter<'a> {
    transfer: &'a Transfer,
    index: usize,
    /// Where the buffer goes in the file.
    at: u64,
    buffer: Vec<u8>,
    progress: &'a dyn Progress,
}

impl RangeWriter<'_> {
    fn pending_end(&self) -> u64 {
        self.at + self.buffer.len() as u64
    }

    fn push(&mut self, bytes: &[u8]) -> Result<(), PullError> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= WRITE_BUFFER {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), PullError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let written = self.buffer.len() as u64;
        let failed = |e: io::Error| PullError::Internal(format!("writing the download: {e}"));
        self.transfer
            .file
            .write_all_at(&self.buffer, self.at)
            .map_err(failed)?;
        let done = self.transfer.done[self.index].fetch_add(written, Ordering::AcqRel) + written;
        self.transfer
            .resume
            .record(self.index, done)
            .map_err(failed)?;
        self.at += written;
        self.buffer.clear();
        self.progress.advanced(written);
        Ok(())
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(200u64.saturating_mul(1 << attempt.min(5))).min(Duration::from_secs(5))
}

fn check_content_range(
    response: &reqwest::Response,
    from: u64,
    url: &str,
) -> Result<(), PullError> {
    let start = response
        .headers()
        .get(CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes "))
        .and_then(|v| v.split('-').next())
        .and_then(|v| v.parse::<u64>().ok());
    if start == Some(from) {
        Ok(())
    } else {
        Err(PullError::Connection {
            url: url.to_string(),
            message: format!("asked for bytes from {from}, got Content-Range {start:?}"),
        })
    }
}

/// Open the partial file, resuming when its saved state matches this download.
fn open_partial(paths: &Paths, size: u64, chunk: u64) -> io::Result<Transfer> {
    let ranges = size.div_ceil(chunk) as usize;
    let resumable = ResumeFile::read(&paths.state)
        .filter(|s| s.size == size && s.chunk == chunk && s.done.len() == ranges)
        .filter(|_| fs::metadata(&paths.partial).is_ok_and(|m| m.len() == size));
    let (file, done) = match resumable {
        Some(state) => {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&paths.partial)?;
            (file, state.done)
        }
        None => {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&paths.partial)?;
            file.set_len(size)?;
            (file, vec![0; ranges])
        }
    };
    let resume = ResumeFile::create(
        &paths.state,
        &Saved {
            size,
            chunk,
            done: done.clone(),
        },
    )?;
    let transfer = Transfer {
        file,
        resume,
        size,
        chunk,
        done: done.into_iter().map(AtomicU64::new).collect(),
        next: AtomicUsize::new(0),
        ranges_ignored: AtomicBool::new(false),
        stop: AtomicBool::new(false),
    };
    // A state that claims more than its range holds is not to be trusted.
    for index in 0..ranges {
        let (start, end) = transfer.range(index);
        if transfer.done[index].load(Ordering::Relaxed) > end - start {
            transfer.done[index].store(0, Ordering::Relaxed);
        }
    }
    Ok(transfer)
}

/// Hash the file as its gap-free prefix grows; `None` if stopped before the end.
fn hash_frontier(transfer: &Transfer) -> io::Result<Option<Digest>> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    let mut hashed = 0u64;
    while hashed < transfer.size {
        let frontier = transfer.frontier();
        if frontier > hashed {
            let n = (frontier - hashed).min(buf.len() as u64) as usize;
            transfer.file.read_exact_at(&mut buf[..n], hashed)?;
            hasher.update(&buf[..n]);
            hashed += n as u64;
        } else if transfer.stop.load(Ordering::Acquire) {
            if transfer.frontier() == hashed {
                return Ok(None);
            }
        } else {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    Ok(Some(Digest::from_hasher(hasher)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(size: u64) -> BlobSource {
        BlobSource {
            url: "http://127.0.0.1:1/x".into(),
            expected: Digest::from_hex(&"ab".repeat(32)),
            size: Some(size),
            label: "x".into(),
            is_gguf: true,
        }
    }

    #[test]
    fn a_pull_that_cannot_fit_is_refused_up_front() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let free = store.available_space().unwrap();
        let err = check_space(&store, &[blob(free + (1 << 30))]).unwrap_err();
        assert!(matches!(err, PullError::NotEnoughSpace { .. }), "{err}");
        assert!(err.to_string().contains("not enough disk space"), "{err}");
        check_space(&store, &[blob(1 << 20)]).unwrap();
    }
}
