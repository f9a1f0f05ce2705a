//! The Tally guest SDK, for stages compiled to `wasm32-wasip1`.
//!
//! A stage is a WASI command: its input is stdin, its output is stdout, and
//! a stage's stdout becomes the next stage's stdin. This crate gives stages
//! the three things they all need:
//!
//! * [`read_input`] / [`write_output`]: the whole stdin, the whole stdout.
//! * [`Tensor`]: a named f32 tensor, encoded between stages as
//!   [safetensors](https://github.com/huggingface/safetensors) so that any
//!   stage (or a tool outside Tally) can read what another wrote.
//! * [`fail`]: print a message on stderr and exit with a code, the way a
//!   stage reports bad input (the receipt records the exit code).
//!
//! Everything here is deterministic: no clocks, no randomness, no threads.

use std::io::{Read, Write};

/// Reads all of stdin (the run input, or the previous stage's output).
pub fn read_input() -> Vec<u8> {
    let mut buf = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut buf) {
        fail(3, &format!("cannot read stdin: {e}"));
    }
    buf
}

/// Writes `bytes` to stdout and flushes it.
///
/// Straight to file descriptor 1, not through `std::io::stdout()`: that is
/// line-buffered, and a line writer splits a write at its last newline
/// byte, so binary output (tensors) would take a number of host calls, and
/// of fuel, that depends on its values. Values may differ, within the
/// manifest's tolerance, between inference backends; what a stage pays to
/// write them should not.
pub fn write_output(bytes: &[u8]) {
    use std::os::fd::FromRawFd;
    // SAFETY: descriptor 1 is the process's stdout, open for its whole
    // life; `ManuallyDrop` leaves it open when `out` goes.
    let mut out = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(1) });
    if let Err(e) = out.write_all(bytes).and_then(|_| out.flush()) {
        fail(3, &format!("cannot write stdout: {e}"));
    }
}

/// Prints `msg` on stderr and exits with `code`.
pub fn fail(code: i32, msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(code)
}

/// Parses a stage's `--name value` arguments: `set(name, value)` applies
/// one pair and returns an error for an unknown name or a bad value (see
/// [`flag_value`]). A name without a value is an error too.
pub fn parse_flags(
    args: impl IntoIterator<Item = String>,
    mut set: impl FnMut(&str, &str) -> Result<(), String>,
) -> Result<(), String> {
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        set(&flag, &value)?;
    }
    Ok(())
}

/// `value` parsed as a `T`, or `"{flag} {value}: {why}"`.
pub fn flag_value<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e| format!("{flag} {value}: {e}"))
}

/// The error for a flag a stage does not know.
pub fn unknown_flag(flag: &str) -> String {
    format!("unknown option {flag}")
}

/// A named, dense, row-major f32 tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Tensor name (the safetensors key).
    pub name: String,
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values.
    pub data: Vec<f32>,
}

/// Why bytes are not a tensor file this SDK can read.
#[derive(Debug)]
pub struct TensorError(pub String);

impl std::fmt::Display for TensorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TensorError {}

impl Tensor {
    /// A tensor; panics if `data` does not have `product(shape)` values.
    pub fn new(name: impl Into<String>, shape: Vec<usize>, data: Vec<f32>) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "tensor data does not match its shape"
        );
        Tensor {
            name: name.into(),
            shape,
            data,
        }
    }

    /// Encodes tensors as one safetensors file (little-endian f32).
    pub fn encode_all(tensors: &[Tensor]) -> Vec<u8> {
        let bytes: Vec<Vec<u8>> = tensors
            .iter()
            .map(|t| t.data.iter().flat_map(|v| v.to_le_bytes()).collect())
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
            .iter()
            .zip(&bytes)
            .map(|(t, b)| {
                let view = safetensors::tensor::TensorView::new(
                    safetensors::Dtype::F32,
                    t.shape.clone(),
                    b,
                )
                .expect("shape and data agree by construction");
                (t.name.clone(), view)
            })
            .collect();
        safetensors::serialize(views, None).expect("serializing in-memory tensors cannot fail")
    }

    /// Decodes every f32 tensor of a safetensors file, sorted by name.
    pub fn decode_all(bytes: &[u8]) -> Result<Vec<Tensor>, TensorError> {
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| TensorError(format!("input is not a safetensors file: {e}")))?;
        let mut names: Vec<String> = st.names().into_iter().map(|n| n.to_string()).collect();
        names.sort();
        names
            .into_iter()
            .map(|name| {
                let view = st.tensor(&name).map_err(|e| TensorError(e.to_string()))?;
                if view.dtype() != safetensors::Dtype::F32 {
                    return Err(TensorError(format!(
                        "tensor `{name}` is {:?}, expected F32",
                        view.dtype()
                    )));
                }
                let data = view
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                Ok(Tensor {
                    name,
                    shape: view.shape().to_vec(),
                    data,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_round_trip() {
        let t = Tensor::new("x", vec![2, 3], vec![0.0, 1.0, 2.0, 3.0, 4.0, -5.5]);
        let back = Tensor::decode_all(&Tensor::encode_all(std::slice::from_ref(&t))).unwrap();
        assert_eq!(back, vec![t]);
    }

    #[test]
    fn flags_come_in_pairs_and_name_what_is_wrong() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut n = 0u32;
        let mut set = |f: &str, v: &str| match f {
            "--n" => flag_value(f, v).map(|x| n = x),
            _ => Err(unknown_flag(f)),
        };
        assert_eq!(parse_flags(args(&["--n", "7"]), &mut set), Ok(()));
        assert_eq!(
            parse_flags(args(&["--n"]), &mut set),
            Err("--n needs a value".into())
        );
        assert_eq!(
            parse_flags(args(&["--n", "x"]), &mut set),
            Err("--n x: invalid digit found in string".into())
        );
        assert_eq!(
            parse_flags(args(&["--m", "1"]), &mut set),
            Err("unknown option --m".into())
        );
        assert_eq!(n, 7);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(Tensor::decode_all(b"not a tensor").is_err());
    }
}
