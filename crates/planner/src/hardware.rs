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
    /// Dense FP16 matrix throughput with FP32 accumulation, TFLOPS: NVIDIA's
    /// "FP16 Tensor, FP32 accumulate" without sparsity, AMD's WMMA rate,
    /// Apple's GPU FP32 rate (FP16 runs at the same rate and Apple GPUs up
    /// to M4 have no matrix units); for CPU boxes, an int8 dot-product rate.
    pub fp16_tflops: f64,
    /// What llama.cpp's prompt kernels for quantized weights can use, TOPS:
    /// on NVIDIA, SMs × boost clock × 1,024 int8 operations a clock (MMQ's
    /// `mma.sync` int8 rate as it runs on every generation measured; A100
    /// and H100 have twice that per SM, which these kernels do not reach);
    /// elsewhere `fp16_tflops`.
    pub matmul_tops: f64,
    /// List price in USD (the GPU alone for discrete cards).
    pub price_usd: f64,
    pub watts_load: f64,
    pub watts_idle: f64,
    /// Share of bandwidth decode reaches, where it differs from the backend's
    /// usual (llama.cpp's kernels reach less of an HBM GPU's bandwidth).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decode_efficiency: Option<f64>,
    /// Fixed cost per layer per decoded token, where it differs from the
    /// backend's usual (Apple's chip classes), seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_layer_seconds: Option<f64>,
    /// For CPU boxes: the threads decoding, which cap how fast the CPU's
    /// kernels get through the weights.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_threads: Option<u32>,
    /// Where each figure comes from (an uncertain one says so).
    pub sources: Vec<Figure>,
}

/// One catalog figure's source.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figure {
    /// The field it is for, e.g. `matmul_tops`.
    pub figure: &'static str,
    pub source: String,
}

fn figure(figure: &'static str, source: impl Into<String>) -> Figure {
    Figure {
        figure,
        source: source.into(),
    }
}

/// Apple's decode constants by chip class, fitted on the M1 and M2 rows of
/// llama.cpp's Apple Silicon discussion (docs/planner.md): an Ultra (two
/// dies joined) reaches less of its bandwidth.
pub(crate) const APPLE_PRO_MAX: (f64, f64) = (0.91, 170e-6);
const APPLE_ULTRA: (f64, f64) = (0.83, 171e-6);

/// MMQ's int8 rate: SMs × boost clock (GHz) × 1,024 operations a clock.
fn mmq_tops(sms: u32, boost_ghz: f64) -> f64 {
    f64::from(sms) * boost_ghz * 1024.0 / 1000.0
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
    let (efficiency, per_layer) = if chip.contains("Ultra") {
        APPLE_ULTRA
    } else {
        APPLE_PRO_MAX
    };
    let published = chip.starts_with("M1") || chip.starts_with("M2");
    let rate = if published {
        "Apple's published GPU TFLOPS (FP32; FP16 runs at the same rate, measured by philipturner/metal-benchmarks)"
    } else {
        "derived: GPU cores × 128 ALUs × 2 × clock (Apple publishes none for M3/M4; clocks from GPU databases, uncertain by ±10%)"
    };
    Hardware {
        name,
        description: format!("{product}, Apple {chip} ({gpu_cores}-core GPU), {ram_gib} GB"),
        backend: Backend::Metal,
        memory_bytes: ram_gib * GIB,
        unified: true,
        usable_bytes: apple_usable(ram_gib),
        bandwidth_gbs: bandwidth,
        fp16_tflops: tflops,
        matmul_tops: tflops,
        price_usd: price,
        watts_load: watts.0,
        watts_idle: watts.1,
        decode_efficiency: Some(efficiency),
        per_layer_seconds: Some(per_layer),
        cpu_threads: None,
        sources: vec![
            figure("bandwidth_gbs", "Apple's technical specifications"),
            figure("fp16_tflops", rate),
            figure(
                "matmul_tops",
                "= fp16_tflops: llama.cpp's Metal kernels use the plain ALUs",
            ),
            figure(
                "price_usd",
                "Apple's list price at launch for this memory tier with this GPU",
            ),
            figure(
                "decode_efficiency",
                "fitted on the M1 and M2 rows of llama.cpp discussion #4167, by chip class",
            ),
        ],
    }
}

/// A discrete NVIDIA card, its figures from NVIDIA's whitepapers and datasheets.
#[allow(clippy::too_many_arguments)]
fn gpu(
    name: &str,
    description: &str,
    vram_gb: u64,
    bandwidth: f64,
    tflops: f64,
    (sms, boost_ghz): (u32, f64),
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
        matmul_tops: mmq_tops(sms, boost_ghz),
        price_usd: price,
        watts_load: watts.0,
        watts_idle: watts.1,
        decode_efficiency: None,
        per_layer_seconds: None,
        cpu_threads: None,
        sources: vec![
            figure(
                "bandwidth_gbs",
                "NVIDIA's datasheet or architecture whitepaper",
            ),
            figure(
                "fp16_tflops",
                "NVIDIA's whitepaper: FP16 Tensor TFLOPS with FP32 accumulate, dense",
            ),
            figure(
                "matmul_tops",
                format!(
                    "derived: {sms} SMs × {boost_ghz} GHz boost × 1,024 int8 ops a clock (MMQ)"
                ),
            ),
            figure(
                "price_usd",
                "launch list price (datacenter cards: typical street price)",
            ),
        ],
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
            // The 64-core GPU was a $1,000 option over the 48-core base.
            &[(64, 4999.0), (128, 5799.0)],
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
            // The 76-core GPU was a $1,000 option over the 60-core base.
            &[(64, 4999.0), (128, 5799.0), (192, 6599.0)],
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
            // The 20-core GPU is a $200 option over the 16-core base.
            &[(24, 1599.0), (48, 1999.0), (64, 2199.0)],
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
            (82, 1.695),
            1499.0,
            (350.0, 25.0),
        ),
        gpu(
            "rtx-4090",
            "NVIDIA GeForce RTX 4090, 24 GB",
            24,
            1008.0,
            165.2,
            (128, 2.52),
            1599.0,
            (450.0, 20.0),
        ),
        gpu(
            "rtx-5090",
            "NVIDIA GeForce RTX 5090, 32 GB",
            32,
            1792.0,
            209.5,
            (170, 2.407),
            1999.0,
            (575.0, 30.0),
        ),
    ]);
    // Measured on an H100 SXM (docs/benchmarks.md): llama.cpp's decode
    // kernels reach about half of HBM's bandwidth.
    let hbm = |mut h: Hardware| {
        h.decode_efficiency = Some(0.5);
        h.sources.push(figure(
            "decode_efficiency",
            "measured on shelf's H100 SXM (docs/benchmarks.md)",
        ));
        h
    };
    boxes.extend(
        [
            (
                "a100-40",
                "NVIDIA A100 SXM, 40 GB",
                40,
                1555.0,
                312.0,
                (108, 1.41),
                10000.0,
                (400.0, 50.0),
            ),
            (
                "a100-80",
                "NVIDIA A100 SXM, 80 GB",
                80,
                2039.0,
                312.0,
                (108, 1.41),
                15000.0,
                (400.0, 50.0),
            ),
            (
                "h100-pcie",
                "NVIDIA H100 PCIe, 80 GB",
                80,
                2000.0,
                756.0,
                (114, 1.755),
                25000.0,
                (350.0, 50.0),
            ),
            (
                "h100-sxm",
                "NVIDIA H100 SXM, 80 GB",
                80,
                3350.0,
                989.4,
                (132, 1.98),
                30000.0,
                (700.0, 70.0),
            ),
            (
                "h200",
                "NVIDIA H200 SXM, 141 GB",
                141,
                4800.0,
                989.4,
                (132, 1.98),
                32000.0,
                (700.0, 70.0),
            ),
        ]
        .into_iter()
        .map(|(name, desc, vram, bw, tf, sms, price, watts)| {
            hbm(gpu(name, desc, vram, bw, tf, sms, price, watts))
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
        // NVIDIA publishes only "1 PFLOP" (FP4, with sparsity): halved
        // for density and quartered to FP16 it gives 125, but a measured
        // BF16 GEMM reaches 92.3. Uncertain either way.
        fp16_tflops: 92.3,
        matmul_tops: mmq_tops(48, 2.14),
        price_usd: 3999.0,
        watts_load: 240.0,
        watts_idle: 30.0,
        decode_efficiency: None,
        per_layer_seconds: None,
        cpu_threads: None,
        sources: vec![
            figure("bandwidth_gbs", "NVIDIA's DGX Spark specifications (273 GB/s LPDDR5x)"),
            figure(
                "fp16_tflops",
                "UNCERTAIN: no dense FP16 figure is published (the \"1 PFLOP\" is sparse FP4); 92.3 TFLOPS is a measured BF16 GEMM (huggingface/kernels PR 283)",
            ),
            figure(
                "matmul_tops",
                "UNCERTAIN: derived, 48 SMs × 2.14 GHz (NVIDIA's TileGym table) × 1,024 int8 ops a clock (MMQ)",
            ),
            figure("price_usd", "list price at launch (October 2025)"),
        ],
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
        matmul_tops: 59.4,
        price_usd: 1999.0,
        watts_load: 140.0,
        watts_idle: 10.0,
        decode_efficiency: None,
        per_layer_seconds: None,
        cpu_threads: None,
        sources: vec![
            figure("bandwidth_gbs", "AMD: 256-bit LPDDR5x-8000"),
            figure(
                "fp16_tflops",
                "derived: 40 CUs × 512 FP16 WMMA ops a clock × 2.9 GHz (peak; measured GEMMs reach about 30)",
            ),
            figure("matmul_tops", "= fp16_tflops"),
            figure("price_usd", "Framework Desktop with 128 GB (AMD publishes no chip price)"),
        ],
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
            matmul_tops: fp16_tflops,
            price_usd: 0.0,
            watts_load: 0.0,
            watts_idle: 0.0,
            decode_efficiency: None,
            per_layer_seconds: None,
            cpu_threads: None,
            sources: Vec::new(),
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
