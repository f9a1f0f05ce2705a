//! Image pre-processing as a library, so that the same code runs as a Tally
//! stage (`src/bin/preprocess.rs`, compiled to wasm32-wasip1) and natively
//! (the host's benchmark compares the two).
//!
//! [`preprocess`] decodes a PNG or JPEG, converts it to RGB, resizes it to
//! [`Options::width`] × [`Options::height`] with a triangle (bilinear)
//! filter, and normalises each channel as `(v / 255 - mean) / std` into an
//! f32 tensor of shape `[1, 3, height, width]` (NCHW), named `input`.

use image::imageops::FilterType;
use tally_guest::Tensor;

/// Pre-processing options.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Output width in pixels (default 224).
    pub width: u32,
    /// Output height in pixels (default 224).
    pub height: u32,
    /// Per-channel mean, RGB (default ImageNet: 0.485, 0.456, 0.406).
    pub mean: [f32; 3],
    /// Per-channel standard deviation, RGB (default ImageNet: 0.229, 0.224, 0.225).
    pub std: [f32; 3],
    /// Largest accepted input dimension, either side (default 8192).
    pub max_side: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            width: 224,
            height: 224,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            max_side: 8192,
        }
    }
}

impl Options {
    /// Parses `--width N --height N --mean a,b,c --std a,b,c --max-side N`.
    pub fn from_args(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
        let mut o = Options::default();
        let mut it = args.into_iter();
        while let Some(flag) = it.next() {
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let int = |v: &str| {
                v.parse::<u32>()
                    .map_err(|_| format!("{flag}: `{v}` is not a positive integer"))
            };
            match flag.as_str() {
                "--width" => o.width = int(&value)?,
                "--height" => o.height = int(&value)?,
                "--max-side" => o.max_side = int(&value)?,
                "--mean" | "--std" => {
                    let parts: Vec<f32> = value
                        .split(',')
                        .map(|p| p.trim().parse::<f32>())
                        .collect::<Result<_, _>>()
                        .map_err(|_| format!("{flag}: expected three numbers like 0.5,0.5,0.5"))?;
                    let triple: [f32; 3] = parts
                        .try_into()
                        .map_err(|_| format!("{flag}: expected exactly three numbers"))?;
                    if flag == "--mean" {
                        o.mean = triple
                    } else {
                        o.std = triple
                    }
                }
                _ => return Err(format!("unknown option {flag}")),
            }
        }
        if o.width == 0 || o.height == 0 || o.width > 4096 || o.height > 4096 {
            return Err("--width and --height must be between 1 and 4096".into());
        }
        if o.std.iter().any(|s| *s == 0.0 || !s.is_finite()) {
            return Err("--std values must be finite and non-zero".into());
        }
        Ok(o)
    }
}

/// Decodes a PNG or JPEG into RGB, refusing (before decoding) an image
/// with a side longer than `max_side`.
pub fn decode_rgb(bytes: &[u8], max_side: u32) -> Result<image::RgbImage, String> {
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| format!("cannot read image: {e}"))?;
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| format!("input is not a PNG or JPEG image: {e}"))?;
    if w > max_side || h > max_side {
        return Err(format!(
            "image is {w}x{h}; the largest side allowed is {max_side}"
        ));
    }
    let img = image::load_from_memory(bytes).map_err(|e| format!("cannot decode image: {e}"))?;
    Ok(img.to_rgb8())
}

/// Decodes, resizes and normalises one image.
pub fn preprocess(bytes: &[u8], o: &Options) -> Result<Tensor, String> {
    let rgb = decode_rgb(bytes, o.max_side)?;
    let resized = image::imageops::resize(&rgb, o.width, o.height, FilterType::Triangle);
    let (w, h) = (o.width as usize, o.height as usize);
    let mut data = vec![0f32; 3 * w * h];
    for (x, y, px) in resized.enumerate_pixels() {
        for c in 0..3 {
            let v = px.0[c] as f32 / 255.0;
            data[c * w * h + y as usize * w + x as usize] = (v - o.mean[c]) / o.std[c];
        }
    }
    Ok(Tensor::new("input", vec![1, 3, h, w], data))
}
