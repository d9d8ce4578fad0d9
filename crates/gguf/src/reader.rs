//! Parsing the GGUF header, metadata and tensor table with bounded reads.

use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::types::{GgmlType, Value};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
const MAX_DIMS: u32 = 4;

/// A parsed GGUF file: metadata in file order and the tensor table.
#[derive(Debug, Clone, PartialEq)]
pub struct Gguf {
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata key/value pairs, in file order.
    pub metadata: Vec<(String, Value)>,
    /// Tensors, in file order.
    pub tensors: Vec<TensorInfo>,
    /// Offset of the tensor data section from the start of the file.
    pub data_offset: u64,
    /// Total file size.
    pub file_size: u64,
}

/// One entry of the tensor table.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Offset within the data section.
    pub offset: u64,
    /// Bytes of data.
    pub bytes: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// Why a file is not a usable GGUF.
#[derive(Debug)]
#[non_exhaustive]
pub enum GgufError {
    /// The file could not be read.
    Io { path: PathBuf, source: io::Error },
    /// The file does not start with the GGUF magic.
    NotGguf { path: PathBuf },
    /// A GGUF version this reader does not know.
    UnsupportedVersion { path: PathBuf, version: u32 },
    /// The file ends before its header, metadata or tensor data does.
    Truncated { path: PathBuf, what: String },
    /// The structure is inconsistent.
    Invalid { path: PathBuf, reason: String },
}

impl fmt::Display for GgufError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Self::NotGguf { path } => write!(
                f,
                "{}: not a GGUF file (it does not start with the GGUF magic bytes)",
                path.display()
            ),
            Self::UnsupportedVersion { path, version } => write!(
                f,
                "{}: unsupported GGUF version {version} (supported: 2 and 3)",
                path.display()
            ),
            Self::Truncated { path, what } => {
                write!(f, "{}: truncated GGUF file: {what}", path.display())
            }
            Self::Invalid { path, reason } => {
                write!(f, "{}: invalid GGUF file: {reason}", path.display())
            }
        }
    }
}

impl std::error::Error for GgufError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A problem found while parsing, before the path is attached.
enum Problem {
    Io(io::Error),
    NotGguf,
    Version(u32),
    Truncated(String),
    Invalid(String),
}

impl Problem {
    fn at(self, path: &Path) -> GgufError {
        let path = path.to_path_buf();
        match self {
            Problem::Io(source) => GgufError::Io { path, source },
            Problem::NotGguf => GgufError::NotGguf { path },
            Problem::Version(version) => GgufError::UnsupportedVersion { path, version },
            Problem::Truncated(what) => GgufError::Truncated { path, what },
            Problem::Invalid(reason) => GgufError::Invalid { path, reason },
        }
    }
}

impl Gguf {
    /// Read and check a GGUF file's header, metadata and tensor table.
    pub fn open(path: &Path) -> Result<Gguf, GgufError> {
        let io_err = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        if meta.is_dir() {
            return Err(GgufError::Io {
                path: path.to_path_buf(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "is a directory"),
            });
        }
        parse(BufReader::with_capacity(1 << 16, file), meta.len()).map_err(|p| p.at(path))
    }

    /// Parse a whole GGUF held in memory (tests and fuzzing).
    pub fn parse_bytes(bytes: &[u8]) -> Result<Gguf, GgufError> {
        parse(bytes, bytes.len() as u64).map_err(|p| p.at(Path::new("<memory>")))
    }

    /// The metadata value for `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The metadata string for `key`.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    /// The architecture named in `general.architecture`.
    pub fn architecture(&self) -> Option<&str> {
        self.get_str(crate::KEY_ARCHITECTURE)
    }

    /// Total parameters across all tensors.
    pub fn parameter_count(&self) -> u64 {
        self.tensors.iter().map(TensorInfo::elements).sum()
    }
}

fn parse(reader: impl Read, file_size: u64) -> Result<Gguf, Problem> {
    let mut r = Bounded {
        inner: reader,
        pos: 0,
        len: file_size,
    };
    let mut magic = [0u8; 4];
    if file_size < 4 {
        return Err(Problem::NotGguf);
    }
    r.fill(&mut magic, "magic")?;
    if &magic != MAGIC {
        return Err(Problem::NotGguf);
    }
    let version = r.u32("version")?;
    if !(2..=3).contains(&version) {
        return Err(Problem::Version(version));
    }
    let n_tensors = r.u64("tensor count")?;
    let n_kv = r.u64("metadata count")?;
    // Each entry takes at least 12 bytes (key length + type), each tensor at
    // least 24: counts the file cannot hold are rejected before allocating.
    r.check_count(n_kv, 12, "metadata count")?;
    r.check_count(n_tensors, 24, "tensor count")?;

    let mut metadata = Vec::with_capacity(n_kv as usize);
    for _ in 0..n_kv {
        let key = r.string("metadata key")?;
        let ty = r.u32("metadata type")?;
        let value = r.value(ty, &key, 0)?;
        metadata.push((key, value));
    }
    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        Some((_, v)) => match v.as_u64() {
            Some(a) if a > 0 && a.is_power_of_two() => a,
            _ => {
                return Err(Problem::Invalid(
                    "general.alignment is not a power of two".into(),
                ))
            }
        },
        None => DEFAULT_ALIGNMENT,
    };

    let mut tensors = Vec::with_capacity(n_tensors as usize);
    for _ in 0..n_tensors {
        tensors.push(r.tensor_info()?);
    }
    let data_offset = r.pos.div_ceil(alignment) * alignment;
    check_tensor_data(&tensors, data_offset, file_size, alignment)?;
    Ok(Gguf {
        version,
        metadata,
        tensors,
        data_offset,
        file_size,
    })
}

fn check_tensor_data(
    tensors: &[TensorInfo],
    data_offset: u64,
    file_size: u64,
    alignment: u64,
) -> Result<(), Problem> {
    let available = file_size.saturating_sub(data_offset);
    for t in tensors {
        if !t.offset.is_multiple_of(alignment) {
            return Err(Problem::Invalid(format!(
                "tensor {} is not aligned to {alignment} bytes",
                t.name
            )));
        }
        let end = t.offset.checked_add(t.bytes);
        if end.is_none_or(|end| end > available) {
            return Err(Problem::Truncated(format!(
                "tensor {} needs bytes up to {} but the file has {} bytes of tensor data",
                t.name,
                data_offset.saturating_add(t.offset).saturating_add(t.bytes),
                available
            )));
        }
    }
    Ok(())
}

/// A reader that knows how many bytes the file has left.
struct Bounded<R> {
    inner: R,
    pos: u64,
    len: u64,
}

impl<R: Read> Bounded<R> {
    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    fn fill(&mut self, buf: &mut [u8], what: &str) -> Result<(), Problem> {
        if (buf.len() as u64) > self.remaining() {
            return Err(Problem::Truncated(format!(
                "the file ends inside the {what}"
            )));
        }
        self.inner.read_exact(buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => {
                Problem::Truncated(format!("the file ends inside the {what}"))
            }
            _ => Problem::Io(e),
        })?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn skip(&mut self, n: u64, what: &str) -> Result<(), Problem> {
        if n > self.remaining() {
            return Err(Problem::Truncated(format!(
                "the file ends inside the {what}"
            )));
        }
        let copied =
            io::copy(&mut (&mut self.inner).take(n), &mut io::sink()).map_err(Problem::Io)?;
        if copied != n {
            return Err(Problem::Truncated(format!(
                "the file ends inside the {what}"
            )));
        }
        self.pos += n;
        Ok(())
    }

    fn check_count(&self, count: u64, min_size: u64, what: &str) -> Result<(), Problem> {
        if count.saturating_mul(min_size) > self.remaining() {
            return Err(Problem::Invalid(format!(
                "{what} of {count} cannot fit in the {} bytes left in the file",
                self.remaining()
            )));
        }
        Ok(())
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], Problem> {
        let mut buf = [0u8; N];
        self.fill(&mut buf, what)?;
        Ok(buf)
    }

    fn u32(&mut self, what: &str) -> Result<u32, Problem> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64, Problem> {
        self.array(what).map(u64::from_le_bytes)
    }

    fn string(&mut self, what: &str) -> Result<String, Problem> {
        let len = self.u64(what)?;
        if len > self.remaining() {
            return Err(Problem::Truncated(format!(
                "a {what} claims {len} bytes but only {} remain",
                self.remaining()
            )));
        }
        let mut bytes = vec![0u8; len as usize];
        self.fill(&mut bytes, what)?;
        String::from_utf8(bytes).map_err(|_| Problem::Invalid(format!("a {what} is not UTF-8")))
    }

    fn value(&mut self, ty: u32, key: &str, depth: u32) -> Result<Value, Problem> {
        let what = "metadata value";
        Ok(match ty {
            0 => Value::U8(u8::from_le_bytes(self.array(what)?)),
            1 => Value::I8(i8::from_le_bytes(self.array(what)?)),
            2 => Value::U16(u16::from_le_bytes(self.array(what)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(what)?)),
            4 => Value::U32(u32::from_le_bytes(self.array(what)?)),
            5 => Value::I32(i32::from_le_bytes(self.array(what)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(what)?)),
            7 => match self.array::<1>(what)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(Problem::Invalid(format!("{key}: bool value {b}"))),
            },
            8 => Value::String(self.string(what)?),
            9 => self.array_value(key, depth)?,
            10 => Value::U64(u64::from_le_bytes(self.array(what)?)),
            11 => Value::I64(i64::from_le_bytes(self.array(what)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(what)?)),
            other => {
                return Err(Problem::Invalid(format!(
                    "{key}: unknown metadata type {other}"
                )))
            }
        })
    }

    fn array_value(&mut self, key: &str, depth: u32) -> Result<Value, Problem> {
        if depth > 0 {
            return Err(Problem::Invalid(format!(
                "{key}: nested arrays are not supported"
            )));
        }
        let ty = self.u32("array type")?;
        let len = self.u64("array length")?;
        let fixed = fixed_size(ty);
        let min = fixed.unwrap_or(8);
        self.check_count(len, min, &format!("{key}: array length"))?;
        if len > Value::MAX_KEPT_ARRAY {
            match fixed {
                Some(size) => self.skip(len * size, "array")?,
                None if ty == 8 => {
                    for _ in 0..len {
                        let n = self.u64("string length")?;
                        self.skip(n, "array string")?;
                    }
                }
                None => {
                    return Err(Problem::Invalid(format!("{key}: array of type {ty}")));
                }
            }
            return Ok(Value::Array {
                len,
                values: Vec::new(),
            });
        }
        let mut values = Vec::with_capacity(len as usize);
        for _ in 0..len {
            values.push(self.value(ty, key, depth + 1)?);
        }
        Ok(Value::Array { len, values })
    }

    fn tensor_info(&mut self) -> Result<TensorInfo, Problem> {
        let name = self.string("tensor name")?;
        let n_dims = self.u32("tensor dimension count")?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(Problem::Invalid(format!(
                "tensor {name} has {n_dims} dimensions"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(self.u64("tensor dimension")?);
        }
        let type_id = self.u32("tensor type")?;
        let ty = GgmlType::from_id(type_id)
            .ok_or_else(|| Problem::Invalid(format!("tensor {name} has unknown type {type_id}")))?;
        let offset = self.u64("tensor offset")?;
        let elements = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| Problem::Invalid(format!("tensor {name} has too many elements")))?;
        let bytes = ty.bytes_for(elements).ok_or_else(|| {
            Problem::Invalid(format!(
                "tensor {name}: {elements} elements is not a whole number of {} blocks",
                ty.name
            ))
        })?;
        Ok(TensorInfo {
            name,
            dims,
            ty,
            offset,
            bytes,
        })
    }
}

/// Size of a fixed-size metadata type, `None` for strings and arrays.
fn fixed_size(ty: u32) -> Option<u64> {
    match ty {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}
