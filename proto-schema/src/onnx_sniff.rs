//! A cheap structural check that a file is an ONNX model, without a protobuf dependency.
//!
//! An ONNX file is one serialized `ModelProto`. The check walks its top-level protobuf
//! fields (never into the graph: a length-delimited field is skipped by its length), so
//! it costs a few reads and seeks whatever the model's size. It requires:
//! - every top-level tag to be well formed (field number >= 1, wire type 0, 1, 2 or 5;
//!   groups do not occur in ONNX) and every length to fit in the file;
//! - field 1 `ir_version`, a varint between 1 and [`MAX_IR_VERSION`];
//! - field 7 `graph`, length-delimited and not empty.
//!
//! A text file fails on its first bytes (ASCII letters are tags with invalid wire types
//! or absurd lengths), an empty file has no `ir_version`, a truncated model has a field
//! whose length runs past the end. This is not a full parse: ONNX Runtime may still
//! refuse a file that passes (an unsupported operator, a broken graph).

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Highest `ir_version` accepted (ONNX 1.17 writes 10; room for growth).
pub const MAX_IR_VERSION: u64 = 100;

/// Why a file does not look like an ONNX model.
#[derive(Debug, thiserror::Error)]
pub enum OnnxSniffError {
    /// The file could not be opened or read.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The file is empty.
    #[error("{path}: empty file, not an ONNX model")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The bytes are not a protobuf message (a text file, another format).
    #[error("{path}: not an ONNX model (byte {offset}: {reason})")]
    NotProtobuf {
        /// The file.
        path: PathBuf,
        /// Where the structure broke.
        offset: u64,
        /// What was found there.
        reason: String,
    },
    /// A field runs past the end of the file.
    #[error("{path}: truncated ONNX model (field {field} at byte {offset} needs {needed} bytes, {left} left)")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Field number.
        field: u64,
        /// Where the field starts.
        offset: u64,
        /// Bytes the field says it has.
        needed: u64,
        /// Bytes left in the file.
        left: u64,
    },
    /// A required `ModelProto` field is missing or wrong.
    #[error("{path}: not an ONNX model ({reason})")]
    MissingField {
        /// The file.
        path: PathBuf,
        /// Which field, and what is wrong.
        reason: String,
    },
}

/// Checks that `path` looks like an ONNX `ModelProto`; see the module documentation.
/// Returns the `ir_version`.
pub fn check_onnx_file(path: &Path) -> Result<u64, OnnxSniffError> {
    let io = |source| OnnxSniffError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    check_onnx(BufReader::new(file), len, path)
}

/// [`check_onnx_file`] over any seekable reader of `len` bytes (`path` names it in
/// errors).
pub fn check_onnx(mut r: impl Read + Seek, len: u64, path: &Path) -> Result<u64, OnnxSniffError> {
    let p = || path.to_path_buf();
    if len == 0 {
        return Err(OnnxSniffError::Empty { path: p() });
    }
    let mut pos = 0u64;
    let mut ir_version = None;
    let mut graph = false;
    while pos < len {
        let start = pos;
        let not_pb = |reason: String| OnnxSniffError::NotProtobuf {
            path: p(),
            offset: start,
            reason,
        };
        let tag = read_varint(&mut r, &mut pos, len, path)?
            .ok_or_else(|| not_pb("a tag that does not end".into()))?;
        let (field, wire) = (tag >> 3, tag & 7);
        if field == 0 {
            return Err(not_pb("field number 0".into()));
        }
        let skip = match wire {
            0 => {
                let v = read_varint(&mut r, &mut pos, len, path)?
                    .ok_or_else(|| not_pb(format!("field {field}: varint does not end")))?;
                if field == 1 {
                    ir_version = Some(v);
                }
                0
            }
            1 => 8,
            5 => 4,
            2 => {
                let n = read_varint(&mut r, &mut pos, len, path)?
                    .ok_or_else(|| not_pb(format!("field {field}: length does not end")))?;
                if field == 7 && n > 0 {
                    graph = true;
                }
                n
            }
            w => return Err(not_pb(format!("field {field} has wire type {w}"))),
        };
        if field == 1 && wire != 0 {
            return Err(not_pb(format!("ir_version has wire type {wire}")));
        }
        if field == 7 && wire != 2 {
            return Err(not_pb(format!("graph has wire type {wire}")));
        }
        let left = len - pos;
        if skip > left {
            return Err(OnnxSniffError::Truncated {
                path: p(),
                field,
                offset: start,
                needed: skip,
                left,
            });
        }
        if skip > 0 {
            r.seek(SeekFrom::Current(skip as i64))
                .map_err(|source| OnnxSniffError::Io { path: p(), source })?;
            pos += skip;
        }
    }
    let missing = |reason: &str| OnnxSniffError::MissingField {
        path: p(),
        reason: reason.to_owned(),
    };
    let ir = ir_version.ok_or_else(|| missing("no ir_version field"))?;
    if !(1..=MAX_IR_VERSION).contains(&ir) {
        return Err(missing(&format!(
            "ir_version {ir} outside 1..={MAX_IR_VERSION}"
        )));
    }
    if !graph {
        return Err(missing("no graph field"));
    }
    Ok(ir)
}

/// Reads one varint; `None` when it is longer than 10 bytes or the file ends inside it.
fn read_varint(
    r: &mut impl Read,
    pos: &mut u64,
    len: u64,
    path: &Path,
) -> Result<Option<u64>, OnnxSniffError> {
    let mut v = 0u64;
    for i in 0..10 {
        if *pos >= len {
            return Ok(None);
        }
        let mut b = [0u8; 1];
        r.read_exact(&mut b).map_err(|source| OnnxSniffError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        *pos += 1;
        v |= u64::from(b[0] & 0x7f) << (7 * i);
        if b[0] & 0x80 == 0 {
            return Ok(Some(v));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn check(bytes: &[u8]) -> Result<u64, OnnxSniffError> {
        check_onnx(Cursor::new(bytes), bytes.len() as u64, Path::new("m.onnx"))
    }

    /// ir_version 8, producer "x", graph of 3 bytes.
    const TINY: &[u8] = &[0x08, 0x08, 0x12, 0x01, b'x', 0x3a, 0x03, 1, 2, 3];

    #[test]
    fn a_minimal_model_passes() {
        assert_eq!(check(TINY).unwrap(), 8);
    }

    #[test]
    fn text_empty_and_truncated_files_fail() {
        assert!(matches!(check(b""), Err(OnnxSniffError::Empty { .. })));
        let e = check(b"this is not an ONNX model").unwrap_err();
        assert!(e.to_string().contains("not an ONNX model"), "{e}");
        let e = check(&TINY[..TINY.len() - 1]).unwrap_err();
        assert!(
            matches!(e, OnnxSniffError::Truncated { field: 7, .. }),
            "{e}"
        );
        // No graph / no ir_version.
        assert!(matches!(
            check(&TINY[..5]),
            Err(OnnxSniffError::MissingField { .. })
        ));
        assert!(matches!(
            check(&TINY[2..]),
            Err(OnnxSniffError::MissingField { .. })
        ));
        // An absurd ir_version.
        assert!(check(&[0x08, 0xff, 0x01, 0x3a, 0x01, 0]).is_err());
        // A JSON file.
        assert!(check(b"{\"ir_version\": 8}").is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 0x1234_5678u32;
        for n in 0..2000 {
            let bytes: Vec<u8> = (0..(n % 64))
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (seed >> 16) as u8
                })
                .collect();
            let _ = check(&bytes);
        }
    }
}
