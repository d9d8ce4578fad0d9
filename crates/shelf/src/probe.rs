//! What this box is: memory, GPUs (through the engine's device list), CPU
//! cores, memory bandwidth from a quick read probe, and the store disk's
//! read speed.

use std::path::{Path, PathBuf};
use std::time::Instant;

use shelf_planner::{Backend, Hardware};

/// This machine as the planner sees it.
pub fn this_box(threads: Option<u32>) -> Hardware {
    if let Some(gpu) = detected_gpu() {
        return gpu;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = threads.map_or(cores, |t| t as usize);
    cpu_box(threads, read_bandwidth_gbs(threads))
}

/// This machine's memory as the planner sees it, without timing anything:
/// for the server's memory budget.
pub fn memory_only(threads: Option<u32>) -> Hardware {
    if let Some(gpu) = detected_gpu() {
        return gpu;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cpu_box(threads.map_or(cores, |t| t as usize), 0.0)
}

/// A GPU llama.cpp sees that the catalog knows.
fn detected_gpu() -> Option<Hardware> {
    let memory = total_memory().unwrap_or(0);
    let devices = shelf_engine_llama::devices().unwrap_or_default();
    let gpu = devices.iter().find(|d| d.is_gpu)?;
    let known = known_gpu(&gpu.description, memory)?;
    Some(Hardware {
        name: format!("this-box ({})", known.name),
        description: format!("{} (detected)", gpu.description),
        memory_bytes: gpu
            .memory_total
            .max(known.memory_bytes.min(gpu.memory_total)),
        ..known
    })
}

/// This machine as a CPU box.
fn cpu_box(threads: usize, bandwidth: f64) -> Hardware {
    let memory = total_memory().unwrap_or(0);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Quantized prefill runs int8 dot products. Measured on this project's
    // x86-64 box (2 threads, Qwen2.5-Coder 0.5B and 1.5B at pp512: 0.33
    // and 0.37 TOPS reached), which the planner's CPU share of 0.5 makes
    // 0.35 a thread.
    let tflops = threads as f64 * 0.35;
    let mut hardware = Hardware::custom(
        "this-box",
        &format!(
            "this machine: {cores} cores, {} of memory, {bandwidth:.1} GB/s measured with {threads} threads",
            crate::store_cmds::human_bytes(memory)
        ),
        Backend::Cpu,
        memory,
        true,
        bandwidth,
        tflops,
    );
    hardware.cpu_threads = u32::try_from(threads).ok();
    hardware
}

/// A catalog GPU matching a device description, e.g. `NVIDIA H100 80GB HBM3`.
fn known_gpu(description: &str, system_memory: u64) -> Option<Hardware> {
    let d = description.to_ascii_lowercase();
    let name = if d.contains("h200") {
        "h200"
    } else if d.contains("h100") && d.contains("pcie") {
        "h100-pcie"
    } else if d.contains("h100") {
        "h100-sxm"
    } else if d.contains("a100") && d.contains("40") {
        "a100-40"
    } else if d.contains("a100") {
        "a100-80"
    } else if d.contains("5090") {
        "rtx-5090"
    } else if d.contains("4090") {
        "rtx-4090"
    } else if d.contains("3090") {
        "rtx-3090"
    } else if d.contains("apple") {
        // "Apple M4 Max": the catalog entry with this much memory.
        let chip = d.trim_start_matches("apple ").replace(' ', "-");
        let gib = system_memory >> 30;
        return Hardware::named(&format!("{chip}-{gib}"));
    } else {
        return None;
    };
    Hardware::named(name)
}

fn total_memory() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
        let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }
    #[cfg(target_os = "macos")]
    {
        let out = std::process::Command::new("sysctl")
            .args(["-n", "hw.memsize"])
            .output()
            .ok()?;
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    }
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    {
        None
    }
}

/// GB/s reading a 512 MiB buffer with `threads` threads: the median of
/// nine passes, which is steadier than the best on a shared machine.
pub fn read_bandwidth_gbs(threads: usize) -> f64 {
    const WORDS: usize = 64 << 20;
    let buffer: Vec<u64> = (0..WORDS as u64).collect();
    let threads = threads.clamp(1, 256);
    let chunk = WORDS.div_ceil(threads);
    let mut passes = Vec::new();
    for _ in 0..9 {
        let start = Instant::now();
        let total: u64 = std::thread::scope(|scope| {
            let handles: Vec<_> = buffer
                .chunks(chunk)
                .map(|part| scope.spawn(move || part.iter().fold(0u64, |a, &x| a.wrapping_add(x))))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(0))
                .fold(0, u64::wrapping_add)
        });
        let seconds = start.elapsed().as_secs_f64();
        std::hint::black_box(total);
        passes.push((WORDS * 8) as f64 / seconds / 1e9);
    }
    passes.sort_by(f64::total_cmp);
    passes[passes.len() / 2]
}

/// Most a disk read probe reads: past a drive's own cache, over in moments.
const DISK_PROBE_BYTES: u64 = 256 << 20;

/// How fast the store's disk gives up a model: 256 MiB of the largest file
/// the stores hold (or `file`, when given), read in 8 MiB chunks from a
/// place that moves from run to run, in GB/s, with the file probed. A file
/// read recently comes from the page cache, as a model loaded recently
/// does; on a NAS it is what the network gives.
pub fn disk_read_gbs(stores: &[PathBuf], file: Option<&Path>) -> Option<(f64, PathBuf)> {
    let file = match file {
        Some(file) => file.to_path_buf(),
        None => {
            stores
                .iter()
                .filter_map(|dir| largest_file(dir, 4))
                .max_by_key(|(size, _)| *size)?
                .1
        }
    };
    let mut reader = std::fs::File::open(&file).ok()?;
    // Each probe starts somewhere else in a large file, so it does not time
    // the page cache its own last run filled.
    let size = reader.metadata().ok()?.len();
    if size > 2 * DISK_PROBE_BYTES {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::from(d.subsec_nanos()));
        let chunks = (size - DISK_PROBE_BYTES) / (8 << 20);
        let start = (nanos % chunks.max(1)) * (8 << 20);
        std::io::Seek::seek(&mut reader, std::io::SeekFrom::Start(start)).ok()?;
    }
    let mut buffer = vec![0u8; 8 << 20];
    let started = Instant::now();
    let mut read = 0u64;
    while read < DISK_PROBE_BYTES {
        match std::io::Read::read(&mut reader, &mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => read += n as u64,
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    // Too little to time: a small file says nothing of the disk.
    (read >= 16 << 20 && seconds > 0.0).then(|| (read as f64 / seconds / 1e9, file))
}

/// The largest regular file under `dir`, looking `depth` folders down.
fn largest_file(dir: &Path, depth: u32) -> Option<(u64, PathBuf)> {
    let mut best: Option<(u64, PathBuf)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let found = if kind.is_file() {
            entry.metadata().ok().map(|m| (m.len(), entry.path()))
        } else if kind.is_dir() && depth > 0 {
            largest_file(&entry.path(), depth - 1)
        } else {
            None
        };
        if let Some(found) = found {
            if best.as_ref().is_none_or(|b| found.0 > b.0) {
                best = Some(found);
            }
        }
    }
    best
}
