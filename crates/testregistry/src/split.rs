//! Cut a GGUF into the parts `llama-gguf-split` makes, for tests of split
//! models: the first part keeps all metadata, every part gets `split.no`,
//! `split.count` and `split.tensors.count`, and the tensors are shared out
//! in order.

use shelf_gguf::Gguf;

const DEFAULT_ALIGNMENT: u64 = 32;

/// `parts` GGUF files that llama.cpp loads as one model.
pub fn split_gguf(bytes: &[u8], parts: usize) -> Vec<Vec<u8>> {
    let gguf = Gguf::parse_bytes(bytes).expect("a valid GGUF to split");
    let alignment = gguf
        .get("general.alignment")
        .and_then(shelf_gguf::Value::as_u64)
        .unwrap_or(DEFAULT_ALIGNMENT);
    let kv_end = metadata_end(bytes);
    let per_part = gguf.tensors.len().div_ceil(parts);
    let total = gguf.tensors.len();
    (0..parts)
        .map(|part| {
            let tensors =
                &gguf.tensors[(part * per_part).min(total)..((part + 1) * per_part).min(total)];
            let mut out = b"GGUF".to_vec();
            out.extend(3u32.to_le_bytes());
            out.extend((tensors.len() as u64).to_le_bytes());
            let kv_count = if part == 0 {
                gguf.metadata.len() + 3
            } else {
                3
            };
            out.extend((kv_count as u64).to_le_bytes());
            if part == 0 {
                out.extend(&bytes[24..kv_end]);
            }
            put_kv(&mut out, "split.no", 2, &(part as u16).to_le_bytes());
            put_kv(&mut out, "split.count", 2, &(parts as u16).to_le_bytes());
            put_kv(
                &mut out,
                "split.tensors.count",
                5,
                &(total as i32).to_le_bytes(),
            );
            let mut offset = 0u64;
            for tensor in tensors {
                put_str(&mut out, &tensor.name);
                out.extend((tensor.dims.len() as u32).to_le_bytes());
                for dim in &tensor.dims {
                    out.extend(dim.to_le_bytes());
                }
                out.extend(tensor.ty.id.to_le_bytes());
                out.extend(offset.to_le_bytes());
                offset = (offset + tensor.bytes).div_ceil(alignment) * alignment;
            }
            pad(&mut out, alignment);
            for tensor in tensors {
                let start = (gguf.data_offset + tensor.offset) as usize;
                out.extend(&bytes[start..start + tensor.bytes as usize]);
                pad(&mut out, alignment);
            }
            out
        })
        .collect()
}

fn pad(out: &mut Vec<u8>, alignment: u64) {
    let len = out.len() as u64;
    out.resize((len.div_ceil(alignment) * alignment) as usize, 0);
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    out.extend((text.len() as u64).to_le_bytes());
    out.extend(text.as_bytes());
}

fn put_kv(out: &mut Vec<u8>, key: &str, ty: u32, value: &[u8]) {
    put_str(out, key);
    out.extend(ty.to_le_bytes());
    out.extend(value);
}

/// Where the key/value section ends: walk it, since the reader does not keep
/// long arrays.
fn metadata_end(bytes: &[u8]) -> usize {
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    fn value_end(bytes: &[u8], ty: u32, at: usize) -> usize {
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
        match ty {
            0 | 1 | 7 => at + 1,
            2 | 3 => at + 2,
            4..=6 => at + 4,
            10..=12 => at + 8,
            8 => at + 8 + u64_at(at),
            9 => {
                let inner = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
                let count = u64_at(at + 4);
                (0..count).fold(at + 12, |pos, _| value_end(bytes, inner, pos))
            }
            other => panic!("GGUF value type {other}"),
        }
    }
    let kv_count = u64_at(16);
    let mut at = 24;
    for _ in 0..kv_count {
        at += 8 + u64_at(at);
        let ty = u32_at(at);
        at = value_end(bytes, ty, at + 4);
    }
    at
}
