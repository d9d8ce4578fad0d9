//! Writing GGUF files with random weights in a real model's shapes and quant
//! formats, streamed, so a box can be measured on a 70B before downloading
//! one. The values are noise; the sizes, layouts and types are real.

use std::io::{self, Write};

/// The quant mixes a synthetic file can be written in, as llama.cpp's
/// `llama-quantize` lays them out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyntheticQuant {
    F16,
    Q8_0,
    Q6K,
    Q5KM,
    Q4KM,
    Q5_0,
    Q4_0,
}

impl SyntheticQuant {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name.to_ascii_uppercase().as_str() {
            "F16" => Self::F16,
            "Q8_0" => Self::Q8_0,
            "Q6_K" => Self::Q6K,
            "Q5_K_M" => Self::Q5KM,
            "Q4_K_M" => Self::Q4KM,
            "Q5_0" => Self::Q5_0,
            "Q4_0" => Self::Q4_0,
            _ => return None,
        })
    }

    /// `general.file_type`.
    fn file_type(self) -> u32 {
        match self {
            Self::F16 => 1,
            Self::Q8_0 => 7,
            Self::Q6K => 18,
            Self::Q5KM => 17,
            Self::Q4KM => 15,
            Self::Q5_0 => 8,
            Self::Q4_0 => 2,
        }
    }
}

/// A model shape to fill with noise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntheticSpec {
    /// `llama` or `qwen2` (which adds Q/K/V biases).
    pub architecture: String,
    pub layers: u32,
    pub embedding: u32,
    pub feed_forward: u32,
    pub heads: u32,
    pub kv_heads: u32,
    pub head_dim: u32,
    pub vocab: u32,
    pub context_length: u32,
    /// 0 for a dense model.
    pub experts: u32,
    pub experts_used: u32,
    pub quant: SyntheticQuant,
}

/// ggml element types used here: (id, elements per block, bytes per block).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    F32,
    F16,
    Q4_0,
    Q5_0,
    Q8_0,
    Q4K,
    Q5K,
    Q6K,
}

impl Ty {
    fn id(self) -> u32 {
        match self {
            Ty::F32 => 0,
            Ty::F16 => 1,
            Ty::Q4_0 => 2,
            Ty::Q5_0 => 6,
            Ty::Q8_0 => 8,
            Ty::Q4K => 12,
            Ty::Q5K => 13,
            Ty::Q6K => 14,
        }
    }

    fn block(self) -> (u64, u64) {
        match self {
            Ty::F32 => (1, 4),
            Ty::F16 => (1, 2),
            Ty::Q4_0 => (32, 18),
            Ty::Q5_0 => (32, 22),
            Ty::Q8_0 => (32, 34),
            Ty::Q4K => (256, 144),
            Ty::Q5K => (256, 176),
            Ty::Q6K => (256, 210),
        }
    }

    /// Byte offsets of the f16 scales in a block, which must hold sane numbers.
    fn scale_offsets(self) -> &'static [usize] {
        match self {
            Ty::Q4_0 | Ty::Q5_0 | Ty::Q8_0 => &[0],
            Ty::Q4K | Ty::Q5K => &[0, 2],
            Ty::Q6K => &[208],
            Ty::F32 | Ty::F16 => &[],
        }
    }
}

struct Tensor {
    name: String,
    dims: Vec<u64>,
    ty: Ty,
    /// For F32: the constant every element holds (norm weights 1, biases 0).
    fill: f32,
}

impl Tensor {
    fn bytes(&self) -> u64 {
        let elements: u64 = self.dims.iter().product();
        let (per_block, block_bytes) = self.ty.block();
        elements / per_block * block_bytes
    }
}

const ALIGNMENT: u64 = 32;

/// llama.cpp's `use_more_bits`: the layers `_M` mixes give more bits.
fn more_bits(layer: u32, layers: u32) -> bool {
    let first = layers / 8;
    layer < first || layer >= 7 * layers / 8 || (layer - first) % 3 == 2
}

/// The element type of a weight matrix whose rows are `row` long.
fn weight_type(quant: SyntheticQuant, row: u64, wants_more_bits: bool, output: bool) -> Ty {
    let ty = match quant {
        SyntheticQuant::F16 => Ty::F16,
        SyntheticQuant::Q8_0 => Ty::Q8_0,
        SyntheticQuant::Q6K => Ty::Q6K,
        SyntheticQuant::Q4_0 | SyntheticQuant::Q5_0 if output => Ty::Q6K,
        SyntheticQuant::Q4_0 => Ty::Q4_0,
        SyntheticQuant::Q5_0 => Ty::Q5_0,
        SyntheticQuant::Q5KM | SyntheticQuant::Q4KM if output || wants_more_bits => Ty::Q6K,
        SyntheticQuant::Q5KM => Ty::Q5K,
        SyntheticQuant::Q4KM => Ty::Q4K,
    };
    // K-quant blocks span 256 elements; rows that don't divide fall back, as llama-quantize does.
    if !row.is_multiple_of(ty.block().0) {
        Ty::Q8_0
    } else {
        ty
    }
}

fn tensors(spec: &SyntheticSpec) -> Vec<Tensor> {
    let (embd, ffn, vocab) = (
        u64::from(spec.embedding),
        u64::from(spec.feed_forward),
        u64::from(spec.vocab),
    );
    let q_width = u64::from(spec.heads * spec.head_dim);
    let kv_width = u64::from(spec.kv_heads * spec.head_dim);
    let quant = spec.quant;
    let matrix = |name: String, dims: Vec<u64>, more: bool| Tensor {
        ty: weight_type(quant, dims[0], more, false),
        name,
        dims,
        fill: 0.0,
    };
    let vector = |name: String, len: u64, fill: f32| Tensor {
        name,
        dims: vec![len],
        ty: Ty::F32,
        fill,
    };
    let mut out = vec![
        matrix("token_embd.weight".into(), vec![embd, vocab], false),
        vector("output_norm.weight".into(), embd, 1.0),
        Tensor {
            ty: weight_type(quant, embd, false, true),
            name: "output.weight".into(),
            dims: vec![embd, vocab],
            fill: 0.0,
        },
    ];
    for layer in 0..spec.layers {
        let more = more_bits(layer, spec.layers);
        let name = |part: &str| format!("blk.{layer}.{part}");
        out.push(vector(name("attn_norm.weight"), embd, 1.0));
        out.push(matrix(name("attn_q.weight"), vec![embd, q_width], false));
        out.push(matrix(name("attn_k.weight"), vec![embd, kv_width], false));
        out.push(matrix(name("attn_v.weight"), vec![embd, kv_width], more));
        if spec.architecture == "qwen2" {
            out.push(vector(name("attn_q.bias"), q_width, 0.0));
            out.push(vector(name("attn_k.bias"), kv_width, 0.0));
            out.push(vector(name("attn_v.bias"), kv_width, 0.0));
        }
        out.push(matrix(
            name("attn_output.weight"),
            vec![q_width, embd],
            false,
        ));
        out.push(vector(name("ffn_norm.weight"), embd, 1.0));
        if spec.experts > 0 {
            let experts = u64::from(spec.experts);
            out.push(vector(name("ffn_gate_inp.weight"), embd * experts, 0.01));
            if let Some(gate) = out.last_mut() {
                gate.dims = vec![embd, experts];
            }
            out.push(matrix(
                name("ffn_gate_exps.weight"),
                vec![embd, ffn, experts],
                false,
            ));
            out.push(matrix(
                name("ffn_up_exps.weight"),
                vec![embd, ffn, experts],
                false,
            ));
            out.push(matrix(
                name("ffn_down_exps.weight"),
                vec![ffn, embd, experts],
                more,
            ));
        } else {
            out.push(matrix(name("ffn_gate.weight"), vec![embd, ffn], false));
            out.push(matrix(name("ffn_up.weight"), vec![embd, ffn], false));
            out.push(matrix(name("ffn_down.weight"), vec![ffn, embd], more));
        }
    }
    out
}

/// Bytes the file will take, before writing it.
pub fn synthetic_size(spec: &SyntheticSpec) -> u64 {
    tensors(spec)
        .iter()
        .map(|t| t.bytes().div_ceil(ALIGNMENT) * ALIGNMENT)
        .sum::<u64>()
        + u64::from(spec.vocab) * 24
}

/// Write the whole file to `out`; `progress` gets the bytes written so far.
pub fn write_synthetic(
    spec: &SyntheticSpec,
    out: &mut impl Write,
    mut progress: impl FnMut(u64),
) -> io::Result<u64> {
    let tensors = tensors(spec);
    let mut head = Header::default();
    head.metadata(spec);
    let mut infos = Vec::new();
    let mut offset = 0u64;
    for tensor in &tensors {
        put_str(&mut infos, &tensor.name);
        infos.extend((tensor.dims.len() as u32).to_le_bytes());
        for dim in &tensor.dims {
            infos.extend(dim.to_le_bytes());
        }
        infos.extend(tensor.ty.id().to_le_bytes());
        infos.extend(offset.to_le_bytes());
        offset += tensor.bytes().div_ceil(ALIGNMENT) * ALIGNMENT;
    }
    let mut bytes = b"GGUF".to_vec();
    bytes.extend(3u32.to_le_bytes());
    bytes.extend((tensors.len() as u64).to_le_bytes());
    bytes.extend(head.count.to_le_bytes());
    bytes.extend(head.bytes);
    bytes.extend(infos);
    bytes.resize(
        (bytes.len() as u64).div_ceil(ALIGNMENT) as usize * ALIGNMENT as usize,
        0,
    );
    out.write_all(&bytes)?;
    let mut written = bytes.len() as u64;
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    let mut buffer = vec![0u8; 8 << 20];
    for tensor in &tensors {
        let total = tensor.bytes();
        let (_, block_bytes) = tensor.ty.block();
        // Whole blocks per buffer, so scale offsets line up.
        let per_fill = (buffer.len() as u64 / block_bytes * block_bytes).max(block_bytes);
        let mut left = total;
        while left > 0 {
            let n = left.min(per_fill) as usize;
            fill(&mut buffer[..n], tensor, &mut noise);
            out.write_all(&buffer[..n])?;
            left -= n as u64;
        }
        let padded = total.div_ceil(ALIGNMENT) * ALIGNMENT;
        out.write_all(&vec![0u8; (padded - total) as usize])?;
        written += padded;
        progress(written);
    }
    Ok(written)
}

/// A fast xorshift generator: the weights only need to look like weights.
struct Noise(u64);

impl Noise {
    fn fill(&mut self, bytes: &mut [u8]) {
        for chunk in bytes.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let word = self.0.to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

/// f16 bits of small numbers: scales that keep activations finite.
const F16_SCALE: [u8; 2] = 0x0c00u16.to_le_bytes(); // about 0.00024

fn fill(buffer: &mut [u8], tensor: &Tensor, noise: &mut Noise) {
    match tensor.ty {
        Ty::F32 => {
            for chunk in buffer.chunks_mut(4) {
                chunk.copy_from_slice(&tensor.fill.to_le_bytes());
            }
        }
        Ty::F16 => {
            noise.fill(buffer);
            // Keep the exponent small: magnitudes below about 0.002.
            for pair in buffer.chunks_mut(2) {
                pair[1] &= 0x93;
            }
        }
        ty => {
            noise.fill(buffer);
            let (_, block_bytes) = ty.block();
            for block in buffer.chunks_mut(block_bytes as usize) {
                for &at in ty.scale_offsets() {
                    block[at..at + 2].copy_from_slice(&F16_SCALE);
                }
            }
        }
    }
}

#[derive(Default)]
struct Header {
    bytes: Vec<u8>,
    count: u64,
}

impl Header {
    fn key(&mut self, key: &str, ty: u32) {
        put_str(&mut self.bytes, key);
        self.bytes.extend(ty.to_le_bytes());
        self.count += 1;
    }
    fn u32(&mut self, key: &str, value: u32) {
        self.key(key, 4);
        self.bytes.extend(value.to_le_bytes());
    }
    fn f32(&mut self, key: &str, value: f32) {
        self.key(key, 6);
        self.bytes.extend(value.to_le_bytes());
    }
    fn str(&mut self, key: &str, value: &str) {
        self.key(key, 8);
        put_str(&mut self.bytes, value);
    }

    fn metadata(&mut self, spec: &SyntheticSpec) {
        let arch = spec.architecture.as_str();
        self.str("general.architecture", arch);
        self.str("general.name", "shelf synthetic weights");
        self.u32("general.file_type", spec.quant.file_type());
        self.u32(&format!("{arch}.block_count"), spec.layers);
        self.u32(&format!("{arch}.context_length"), spec.context_length);
        self.u32(&format!("{arch}.embedding_length"), spec.embedding);
        self.u32(&format!("{arch}.feed_forward_length"), spec.feed_forward);
        self.u32(&format!("{arch}.attention.head_count"), spec.heads);
        self.u32(&format!("{arch}.attention.head_count_kv"), spec.kv_heads);
        self.u32(&format!("{arch}.rope.dimension_count"), spec.head_dim);
        self.f32(&format!("{arch}.rope.freq_base"), 500_000.0);
        self.f32(&format!("{arch}.attention.layer_norm_rms_epsilon"), 1e-5);
        if spec.experts > 0 {
            self.u32(&format!("{arch}.expert_count"), spec.experts);
            self.u32(&format!("{arch}.expert_used_count"), spec.experts_used);
        }
        self.vocab(spec.vocab);
    }

    /// A SentencePiece-style vocabulary: unknown, BOS, EOS, 256 byte tokens, then fillers.
    fn vocab(&mut self, size: u32) {
        self.str("tokenizer.ggml.model", "llama");
        self.key("tokenizer.ggml.tokens", 9);
        self.bytes.extend(8u32.to_le_bytes());
        self.bytes.extend(u64::from(size).to_le_bytes());
        for id in 0..size {
            let text = match id {
                0 => "<unk>".to_string(),
                1 => "<s>".to_string(),
                2 => "</s>".to_string(),
                3..=258 => format!("<0x{:02X}>", id - 3),
                _ => format!("t{id}"),
            };
            put_str(&mut self.bytes, &text);
        }
        self.key("tokenizer.ggml.scores", 9);
        self.bytes.extend(6u32.to_le_bytes());
        self.bytes.extend(u64::from(size).to_le_bytes());
        for id in 0..size {
            self.bytes.extend((-(id as f32)).to_le_bytes());
        }
        self.key("tokenizer.ggml.token_type", 9);
        self.bytes.extend(5u32.to_le_bytes());
        self.bytes.extend(u64::from(size).to_le_bytes());
        for id in 0..size {
            let kind: i32 = match id {
                0 => 2,
                1 | 2 => 3,
                3..=258 => 6,
                _ => 1,
            };
            self.bytes.extend(kind.to_le_bytes());
        }
        self.u32("tokenizer.ggml.bos_token_id", 1);
        self.u32("tokenizer.ggml.eos_token_id", 2);
        self.u32("tokenizer.ggml.unknown_token_id", 0);
    }
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    out.extend((text.len() as u64).to_le_bytes());
    out.extend(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(quant: SyntheticQuant, experts: u32) -> SyntheticSpec {
        SyntheticSpec {
            architecture: "llama".into(),
            layers: 2,
            embedding: 256,
            feed_forward: 512,
            heads: 4,
            kv_heads: 2,
            head_dim: 64,
            vocab: 1000,
            context_length: 512,
            experts,
            experts_used: experts.min(2),
            quant,
        }
    }

    #[test]
    fn written_files_parse_with_the_promised_shapes() {
        for quant in [
            SyntheticQuant::F16,
            SyntheticQuant::Q8_0,
            SyntheticQuant::Q4KM,
            SyntheticQuant::Q5_0,
            SyntheticQuant::Q4_0,
        ] {
            for experts in [0, 4] {
                let spec = tiny(quant, experts);
                let mut bytes = Vec::new();
                let written = write_synthetic(&spec, &mut bytes, |_| {}).unwrap();
                assert_eq!(written, bytes.len() as u64);
                let gguf = crate::Gguf::parse_bytes(&bytes).unwrap();
                let facts = gguf.facts();
                assert_eq!((facts.layers, facts.embedding, facts.vocab), (2, 256, 1000));
                assert_eq!((facts.experts, facts.kv_heads), (experts, 2));
                let size = synthetic_size(&spec);
                let ratio = size as f64 / bytes.len() as f64;
                assert!((0.9..1.1).contains(&ratio), "{ratio}");
            }
        }
    }

    #[test]
    fn the_m_mixes_give_some_layers_more_bits() {
        let layers = 32;
        let more = (0..layers).filter(|&l| more_bits(l, layers)).count();
        assert!((10..=16).contains(&more), "{more}");
        assert_eq!(
            weight_type(SyntheticQuant::Q4KM, 4096, false, false),
            Ty::Q4K
        );
        assert_eq!(
            weight_type(SyntheticQuant::Q4KM, 4096, true, false),
            Ty::Q6K
        );
        assert_eq!(
            weight_type(SyntheticQuant::Q4KM, 29568, false, false),
            Ty::Q8_0
        );
    }
}
