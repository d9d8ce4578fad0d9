//! Boxes people buy to run models: memory, bandwidth, compute, price, power.
//! Sources and caveats are in docs/planner.md.

use serde::Serialize;

/// Which llama.cpp backend the box runs, which sets the efficiency constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Metal,
    Cuda,
    Vulkan,
    Cpu,
}

/// One box.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hardware {
    /// Stable name for scripts, e.g. `m4-max-64`.
    pub name: String,
    pub description: String,
    pub backend: Backend,
    /// Memory the model lives in: unified memory, or the GPU's VRAM.
    pub memory_bytes: u64,
    /// Whether CPU and GPU share `memory_bytes`.
    pub unified: bool,
    /// Of that memory, what a model may use (OS, driver and default GPU limits taken off).
    pub usable_bytes: u64,
    pub bandwidth_gbs: f64,
    /// Dense FP16 throughput of the GPU (or the CPU, for CPU boxes), TFLOPS.
    pub fp16_tflops: f64,
    /// List price in USD (the GPU alone for discrete cards).
    pub price_usd: f64,
    pub watts_load: f64,
    pub watts_idle: f64,
    /// Share of bandwidth decode reaches, where it differs from the backend's
    /// usual (llama.cpp's kernels reach less of an HBM GPU's bandwidth).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decode_efficiency: Option<f64>,
    /// For CPU boxes: the threads decoding, which cap how fast the CPU's
    /// kernels get through the weights.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_threads: Option<u32>,
}

const GB: u64 = 1_000_000_000;
const GIB: u64 = 1 << 30;

/// macOS lets the GPU wire about 2/3 of RAM up to 36 GB, 3/4 above
/// (`recommendedMaxWorkingSetSize`; raise it with `iogpu.wired_limit_mb`).
fn apple_usable(ram_gib: u64) -> u64 {
    let ram = ram_gib * GIB;
    if ram_gib <= 36 {
        ram * 2 / 3
    } else {
        ram * 3 / 4
    }
}

#[allow(clippy::too_many_arguments)]
fn apple(
    chip: &str,
    gpu_cores: u32,
    ram_gib: u64,
    bandwidth: f64,
    tflops: f64,
    price: f64,
    watts: (f64, f64),
    product: &str,
) -> Hardware {
    let name = format!("{}-{ram_gib}", chip.to_lowercase().replace(' ', "-"));
    Hardware {
        name,
        description: format!("{product}, Apple {chip} ({gpu_cores}-core GPU), {ram_gib} GB"),
        backend: Backend::Metal,
        memory_bytes: ram_gib * GIB,
        unified: true,
        usable_bytes: apple_usable(ram_gib),
        bandwidth_gbs: bandwidth,
        fp16_tflops: tflops,
        price_usd: price,
        watts_load: watts.0,
        watts_idle: watts.1,
        decode_efficiency: None,
        cpu_threads: None,
    }
}

#[allow(clippy::too_many_arguments)]
fn gpu(
    name: &str,
    description: &str,
    vram_gb: u64,
    bandwidth: f64,
    tflops: f64,
    price: f64,
    watts: (f64, f64),
) -> Hardware {
    Hardware {
        name: name.into(),
        description: description.into(),
        backend: Backend::Cuda,
        memory_bytes: vram_gb * GB,
        unified: false,
        // The CUDA context and cuBLAS workspace take about half a GiB.
        usable_bytes: vram_gb * GB - GIB / 2,
        bandwidth_gbs: bandwidth,
        fp16_tflops: tflops,
        price_usd: price,
        watts_load: watts.0,
        watts_idle: watts.1,
        decode_efficiency: None,
        cpu_threads: None,
    }
}

/// RAM in GiB, and the list price at that tier.
type Tier = (u64, f64);
/// (chip, GPU cores, tiers, bandwidth GB/s, FP16 TFLOPS, watts at load and idle, product).
type AppleLine = (
    &'static str,
    u32,
    &'static [Tier],
    f64,
    f64,
    (f64, f64),
    &'static str,
);

/// Every named box, Apple first.
pub fn hardware_catalog() -> Vec<Hardware> {
    let mut boxes = Vec::new();
    let apple_lines: &[AppleLine] = &[
        (
            "M1 Pro",
            16,
            &[(16, 1999.0), (32, 2399.0)],
            200.0,
            5.2,
            (60.0, 8.0),
            "MacBook Pro 14",
        ),
        (
            "M1 Max",
            32,
            &[(32, 1999.0), (64, 2399.0)],
            400.0,
            10.4,
            (90.0, 12.0),
            "Mac Studio",
        ),
        (
            "M1 Ultra",
            64,
            &[(64, 3999.0), (128, 4799.0)],
            800.0,
            21.0,
            (180.0, 20.0),
            "Mac Studio",
        ),
        (
            "M2 Pro",
            19,
            &[(16, 1299.0), (32, 1699.0)],
            200.0,
            6.8,
            (60.0, 7.0),
            "Mac mini",
        ),
        (
            "M2 Max",
            38,
            &[(32, 1999.0), (64, 2399.0), (96, 2799.0)],
            400.0,
            13.6,
            (100.0, 12.0),
            "Mac Studio",
        ),
        (
            "M2 Ultra",
            76,
            &[(64, 5199.0), (128, 5999.0), (192, 6599.0)],
            800.0,
            27.2,
            (215.0, 20.0),
            "Mac Studio",
        ),
        (
            "M3 Pro",
            18,
            &[(18, 1999.0), (36, 2399.0)],
            150.0,
            7.4,
            (60.0, 7.0),
            "MacBook Pro 14",
        ),
        (
            "M3 Max",
            40,
            &[(48, 3699.0), (64, 3899.0), (128, 4699.0)],
            400.0,
            16.4,
            (110.0, 10.0),
            "MacBook Pro 16",
        ),
        (
            "M3 Ultra",
            80,
            &[(96, 5499.0), (256, 7099.0), (512, 9499.0)],
            819.0,
            32.8,
            (270.0, 15.0),
            "Mac Studio",
        ),
        (
            "M4 Pro",
            20,
            &[(24, 1399.0), (48, 1799.0), (64, 1999.0)],
            273.0,
            9.2,
            (65.0, 5.0),
            "Mac mini",
        ),
        (
            "M4 Max",
            40,
            &[(48, 2299.0), (64, 2500.0), (128, 3499.0)],
            546.0,
            18.4,
            (130.0, 25.0),
            "Mac Studio",
        ),
    ];
    for (chip, cores, tiers, bandwidth, tflops, watts, product) in apple_lines {
        for (ram, price) in *tiers {
            boxes.push(apple(
                chip, *cores, *ram, *bandwidth, *tflops, *price, *watts, product,
            ));
        }
    }
    // The 30-core M3 Max and 32-core M4 Max have less bandwidth.
    boxes.push(apple(
        "M3 Max",
        30,
        36,
        300.0,
        12.3,
        3199.0,
        (100.0, 10.0),
        "MacBook Pro 14",
    ));
    boxes.push(apple(
        "M4 Max",
        32,
        36,
        410.0,
        14.7,
        1999.0,
        (120.0, 20.0),
        "Mac Studio",
    ));
    boxes.extend([
        gpu(
            "rtx-3090",
            "NVIDIA GeForce RTX 3090, 24 GB",
            24,
            936.0,
            71.0,
            1499.0,
            (350.0, 25.0),
        ),
        gpu(
            "rtx-4090",
            "NVIDIA GeForce RTX 4090, 24 GB",
            24,
            1008.0,
            165.2,
            1599.0,
            (450.0, 20.0),
        ),
        gpu(
            "rtx-5090",
            "NVIDIA GeForce RTX 5090, 32 GB",
            32,
            1792.0,
            209.5,
            1999.0,
            (575.0, 30.0),
        ),
    ]);
    // Measured on an H100 SXM (docs/benchmarks.md): llama.cpp's decode
    // kernels reach about half of HBM's bandwidth.
    let hbm = |h: Hardware| Hardware {
        decode_efficiency: Some(0.5),
        cpu_threads: None,
        ..h
    };
    boxes.extend(
        [
            (
                "a100-40",
                "NVIDIA A100 SXM, 40 GB",
                40,
                1555.0,
                312.0,
                10000.0,
                (400.0, 50.0),
            ),
            (
                "a100-80",
                "NVIDIA A100 SXM, 80 GB",
                80,
                2039.0,
                312.0,
                15000.0,
                (400.0, 50.0),
            ),
            (
                "h100-pcie",
                "NVIDIA H100 PCIe, 80 GB",
                80,
                2039.0,
                756.0,
                25000.0,
                (350.0, 50.0),
            ),
            (
                "h100-sxm",
                "NVIDIA H100 SXM, 80 GB",
                80,
                3350.0,
                989.0,
                30000.0,
                (700.0, 70.0),
            ),
            (
                "h200",
                "NVIDIA H200 SXM, 141 GB",
                141,
                4800.0,
                989.0,
                32000.0,
                (700.0, 70.0),
            ),
        ]
        .into_iter()
        .map(|(name, desc, vram, bw, tf, price, watts)| {
            hbm(gpu(name, desc, vram, bw, tf, price, watts))
        }),
    );
    boxes.push(Hardware {
        name: "dgx-spark".into(),
        description: "NVIDIA DGX Spark (GB10), 128 GB unified LPDDR5x".into(),
        backend: Backend::Cuda,
        memory_bytes: 128 * GIB,
        unified: true,
        usable_bytes: 120 * GIB,
        bandwidth_gbs: 273.0,
        fp16_tflops: 125.0,
        price_usd: 3999.0,
        watts_load: 240.0,
        watts_idle: 30.0,
        decode_efficiency: None,
        cpu_threads: None,
    });
    boxes.push(Hardware {
        name: "strix-halo-128".into(),
        description: "AMD Ryzen AI Max+ 395 (Strix Halo, Radeon 8060S), 128 GB unified LPDDR5x"
            .into(),
        backend: Backend::Vulkan,
        memory_bytes: 128 * GIB,
        unified: true,
        // Linux lets the iGPU address all but ~16 GB (GTT); Windows caps it at 96 GB.
        usable_bytes: 112 * GIB,
        bandwidth_gbs: 256.0,
        fp16_tflops: 59.4,
        price_usd: 1999.0,
        watts_load: 140.0,
        watts_idle: 10.0,
        decode_efficiency: None,
        cpu_threads: None,
    });
    boxes
}

/// A box described by what was detected or given, for `Hardware::custom`.
impl Hardware {
    #[allow(clippy::too_many_arguments)]
    pub fn custom(
        name: &str,
        description: &str,
        backend: Backend,
        memory_bytes: u64,
        unified: bool,
        bandwidth_gbs: f64,
        fp16_tflops: f64,
    ) -> Self {
        let reserve = if backend == Backend::Cuda && !unified {
            GIB / 2
        } else {
            // The OS and other programs.
            (memory_bytes / 10).max(2 * GIB)
        };
        Self {
            name: name.into(),
            description: description.into(),
            backend,
            memory_bytes,
            unified,
            usable_bytes: memory_bytes.saturating_sub(reserve),
            bandwidth_gbs,
            fp16_tflops,
            price_usd: 0.0,
            watts_load: 0.0,
            watts_idle: 0.0,
            decode_efficiency: None,
            cpu_threads: None,
        }
    }

    /// The catalog entry called `name` (case-insensitive).
    pub fn named(name: &str) -> Option<Self> {
        hardware_catalog()
            .into_iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_scripts_rely_on_exist_and_are_unique() {
        for name in [
            "m4-max-64",
            "m4-max-128",
            "m3-ultra-512",
            "m2-ultra-192",
            "m3-max-128",
            "m4-pro-48",
            "rtx-4090",
            "rtx-3090",
            "a100-80",
            "h100-sxm",
            "h100-pcie",
            "h200",
            "dgx-spark",
            "strix-halo-128",
            "rtx-5090",
        ] {
            assert!(Hardware::named(name).is_some(), "{name}");
        }
        let catalog = hardware_catalog();
        let mut names: Vec<&str> = catalog.iter().map(|h| h.name.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), catalog.len(), "duplicate names");
        let seed = Hardware::named("m4-max-64").unwrap();
        assert_eq!(
            (seed.price_usd, seed.watts_load, seed.watts_idle),
            (2500.0, 130.0, 25.0)
        );
        assert_eq!(seed.bandwidth_gbs, 546.0);
    }
}
