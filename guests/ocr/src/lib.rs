//! OCR with PP-OCRv4 (the detector and recogniser of `rapidocr-onnxruntime`
//! 1.4.4), as two pipeline stages over one library.
//!
//! - `ocr-detect`: a PNG or JPEG on stdin. [`det_input`] scales it so its
//!   longer side is at most [`DetParams::max_side`], pads it to a side from
//!   [`DET_SIDES`] (a bounded set of shapes, so a backend builds a bounded
//!   number of plans) and normalises it; the graph `det` gives a text
//!   probability map; [`boxes`] turns the map into text boxes (DB
//!   post-processing: threshold, 2×2 dilation, 8-connected components, box
//!   score, unclip); [`rec_input`] crops each box from the original image
//!   and prepares it for recognition (height [`REC_HEIGHT`], width padded
//!   to one of [`REC_WIDTHS`]). Output: safetensors `boxes` `[n, 5]`
//!   (x0, y0, x1, y1, score, in input pixels) and one `line.NNNN`
//!   `[1, 3, 48, W]` per box, in reading order.
//! - `ocr-recognize`: runs the graph `rec` on each line and decodes it
//!   ([`ctc_decode`], greedy CTC over the model's [`Charset`], read from a
//!   package file); writes one JSON line per text line:
//!   `{"text":…,"confidence":…,"box":[x0,y0,x1,y1]}`.
//!
//! The pipeline functions ([`detect`], [`recognize`]) take inference as a
//! closure, so the stages call wasi-nn and the host's benchmark calls the
//! same engines directly, on the same code.
//!
//! Boxes are axis-aligned: rotated or vertical text is boxed by its extent
//! and read as horizontal. The angle classifier (cls) is not used; text is
//! taken as upright.

use image::imageops::FilterType;
use image::RgbImage;
use tally_guest::{flag_value, parse_flags, unknown_flag};

/// Padded side lengths the detector sees (each side independently).
pub const DET_SIDES: [u32; 6] = [320, 480, 640, 800, 960, 1280];
/// Height of a recognition input.
pub const REC_HEIGHT: u32 = 48;
/// Padded widths a recognition input may have; a longer line is squeezed
/// into the last.
pub const REC_WIDTHS: [u32; 6] = [320, 480, 640, 960, 1280, 1920];

/// Detection parameters (rapidocr's defaults unless noted).
#[derive(Debug, Clone, PartialEq)]
pub struct DetParams {
    /// Largest side accepted on input, in pixels (default 4096).
    pub max_input_side: u32,
    /// The image is scaled down so its longer side is at most this
    /// (default 960; at most the last of [`DET_SIDES`]).
    pub max_side: u32,
    /// A map pixel above this is text (default 0.3).
    pub thresh: f32,
    /// A box whose mean probability is below this is dropped (default 0.5).
    pub box_thresh: f32,
    /// How far a box grows: area × ratio / perimeter on each side
    /// (default 1.6).
    pub unclip_ratio: f32,
    /// Most components considered (default 1000).
    pub max_candidates: usize,
}

impl Default for DetParams {
    fn default() -> Self {
        DetParams {
            max_input_side: 4096,
            max_side: 960,
            thresh: 0.3,
            box_thresh: 0.5,
            unclip_ratio: 1.6,
            max_candidates: 1000,
        }
    }
}

impl DetParams {
    /// Defaults overridden by `--name value` pairs (`--max-input-side`,
    /// `--max-side`, `--thresh`, `--box-thresh`, `--unclip-ratio`,
    /// `--max-candidates`).
    pub fn from_args(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut p = DetParams::default();
        parse_flags(args, |flag, v| {
            match flag {
                "--max-input-side" => p.max_input_side = flag_value(flag, v)?,
                "--max-side" => p.max_side = flag_value(flag, v)?,
                "--thresh" => p.thresh = flag_value(flag, v)?,
                "--box-thresh" => p.box_thresh = flag_value(flag, v)?,
                "--unclip-ratio" => p.unclip_ratio = flag_value(flag, v)?,
                "--max-candidates" => p.max_candidates = flag_value(flag, v)?,
                other => return Err(unknown_flag(other)),
            }
            Ok(())
        })?;
        let last = DET_SIDES[DET_SIDES.len() - 1];
        if p.max_side < 32 || p.max_side > last {
            return Err(format!("--max-side must be between 32 and {last}"));
        }
        Ok(p)
    }
}

/// Recognition parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct RecParams {
    /// The character list, one per line (default `/pkg/ppocr_keys.txt`).
    pub charset: String,
    /// Lines with a lower confidence are dropped (default 0.5, rapidocr's
    /// `text_score`).
    pub min_score: f32,
}

impl Default for RecParams {
    fn default() -> Self {
        RecParams {
            charset: "/pkg/ppocr_keys.txt".into(),
            min_score: 0.5,
        }
    }
}

impl RecParams {
    /// Defaults overridden by `--charset PATH` and `--min-score X`.
    pub fn from_args(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut p = RecParams::default();
        parse_flags(args, |flag, v| {
            match flag {
                "--charset" => p.charset = v.to_string(),
                "--min-score" => p.min_score = flag_value(flag, v)?,
                other => return Err(unknown_flag(other)),
            }
            Ok(())
        })?;
        Ok(p)
    }
}

/// A text box in input-image pixels, `[x0, x1) × [y0, y1)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TextBox {
    /// Left edge.
    pub x0: u32,
    /// Top edge.
    pub y0: u32,
    /// Right edge (exclusive).
    pub x1: u32,
    /// Bottom edge (exclusive).
    pub y1: u32,
    /// Mean text probability inside the box, before unclipping.
    pub score: f32,
}

/// A detector input: NCHW data and how it maps back to the image.
#[derive(Debug, Clone)]
pub struct DetInput {
    /// `[1, 3, H, W]` values, BGR (the order PaddleOCR trains on),
    /// `(v / 255 - 0.5) / 0.5`, zero (grey) in the padding.
    pub data: Vec<f32>,
    /// `[1, 3, H, W]`, H and W from [`DET_SIDES`].
    pub shape: [usize; 4],
    /// Map coordinates per image coordinate (≤ 1): map = image × scale.
    pub scale: f32,
    /// Width and height of the scaled image inside the padded input.
    pub used: (u32, u32),
}

fn bucket(v: u32, sides: &[u32]) -> u32 {
    sides
        .iter()
        .copied()
        .find(|&s| s >= v)
        .unwrap_or(sides[sides.len() - 1])
}

/// Writes `img` into `data` (`[1, 3, H, W]`, row stride `w`) as BGR,
/// normalised to `(v / 255 - 0.5) / 0.5`.
fn put_bgr(img: &RgbImage, data: &mut [f32], h: usize, w: usize) {
    for (x, y, px) in img.enumerate_pixels() {
        for (c, &v) in px.0.iter().rev().enumerate() {
            data[c * h * w + y as usize * w + x as usize] = (v as f32 / 255.0 - 0.5) / 0.5;
        }
    }
}

/// Scales, pads and normalises `img` for the detector.
pub fn det_input(img: &RgbImage, p: &DetParams) -> DetInput {
    let (w, h) = img.dimensions();
    let scale = (p.max_side as f32 / w.max(h) as f32).min(1.0);
    let sw = ((w as f32 * scale).round() as u32).clamp(1, p.max_side);
    let sh = ((h as f32 * scale).round() as u32).clamp(1, p.max_side);
    let (bw, bh) = (bucket(sw, &DET_SIDES), bucket(sh, &DET_SIDES));
    let mut data = vec![0f32; 3 * bw as usize * bh as usize];
    let scaled;
    let src = if (sw, sh) == (w, h) {
        img
    } else {
        scaled = image::imageops::resize(img, sw, sh, FilterType::Triangle);
        &scaled
    };
    put_bgr(src, &mut data, bh as usize, bw as usize);
    DetInput {
        data,
        shape: [1, 3, bh as usize, bw as usize],
        scale: sw as f32 / w as f32,
        used: (sw, sh),
    }
}

/// DB post-processing of the detector's probability map (`[1, 1, H, W]`,
/// `map.len() == H × W`) into boxes in the coordinates of an image of
/// `image_size`, sorted in reading order.
pub fn boxes(map: &[f32], input: &DetInput, image_size: (u32, u32), p: &DetParams) -> Vec<TextBox> {
    let (mh, mw) = (input.shape[2], input.shape[3]);
    let (uw, uh) = (input.used.0 as usize, input.used.1 as usize);
    assert_eq!(map.len(), mh * mw, "map and input shapes agree");
    // Threshold inside the image (not the padding), then dilate with a 2×2
    // kernel (a pixel is set if it or its left, upper or upper-left
    // neighbour is above the threshold, as cv2.dilate anchors it).
    let on = |x: usize, y: usize| map[y * mw + x] > p.thresh;
    let mut bit = vec![false; uw * uh];
    for y in 0..uh {
        for x in 0..uw {
            bit[y * uw + x] = on(x, y)
                || (x > 0 && on(x - 1, y))
                || (y > 0 && on(x, y - 1))
                || (x > 0 && y > 0 && on(x - 1, y - 1));
        }
    }
    let mut seen = vec![false; uw * uh];
    let mut stack = Vec::new();
    let mut out = Vec::new();
    let mut candidates = 0;
    for start in 0..uw * uh {
        if !bit[start] || seen[start] {
            continue;
        }
        if candidates == p.max_candidates {
            break;
        }
        candidates += 1;
        // One 8-connected component: its extent.
        let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
        seen[start] = true;
        stack.push(start);
        while let Some(i) = stack.pop() {
            let (x, y) = (i % uw, i / uw);
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
            for dy in -1i64..=1 {
                for dx in -1i64..=1 {
                    let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                    if nx < 0 || ny < 0 || nx >= uw as i64 || ny >= uh as i64 {
                        continue;
                    }
                    let j = ny as usize * uw + nx as usize;
                    if bit[j] && !seen[j] {
                        seen[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        // The box through the outer pixel centres, as cv2.minAreaRect
        // gives it for an axis-aligned component.
        let (bw, bh) = ((x1 - x0) as f32, (y1 - y0) as f32);
        if bw.min(bh) < 3.0 {
            continue;
        }
        let mut sum = 0f64;
        for y in y0..=y1 {
            for x in x0..=x1 {
                sum += map[y * mw + x] as f64;
            }
        }
        let score = (sum / ((x1 - x0 + 1) * (y1 - y0 + 1)) as f64) as f32;
        if score < p.box_thresh {
            continue;
        }
        // Unclip: grow by area × ratio / perimeter on every side.
        let d = bw * bh * p.unclip_ratio / (2.0 * (bw + bh));
        if (bw + 2.0 * d).min(bh + 2.0 * d) < 5.0 {
            continue;
        }
        let (iw, ih) = image_size;
        let to_image = |v: f32, max: u32| ((v / input.scale).round().max(0.0) as u32).min(max);
        let b = TextBox {
            x0: to_image(x0 as f32 - d, iw),
            y0: to_image(y0 as f32 - d, ih),
            x1: to_image(x1 as f32 + d, iw),
            y1: to_image(y1 as f32 + d, ih),
            score,
        };
        if b.x1 > b.x0 && b.y1 > b.y0 {
            out.push(b);
        }
    }
    reading_order(&mut out);
    out
}

/// Sorts boxes top to bottom, then left to right among boxes whose tops are
/// within 10 pixels (rapidocr's `sorted_boxes`).
pub fn reading_order(b: &mut [TextBox]) {
    b.sort_by_key(|t| (t.y0, t.x0));
    for i in 0..b.len().saturating_sub(1) {
        for j in (0..=i).rev() {
            if b[j + 1].y0.abs_diff(b[j].y0) < 10 && b[j + 1].x0 < b[j].x0 {
                b.swap(j, j + 1);
            } else {
                break;
            }
        }
    }
}

/// A recogniser input for one box: `[1, 3, 48, W]` values (BGR,
/// `(v / 255 - 0.5) / 0.5`, zero padding on the right) and its shape.
pub fn rec_input(img: &RgbImage, b: &TextBox) -> (Vec<f32>, [usize; 4]) {
    let crop = image::imageops::crop_imm(img, b.x0, b.y0, b.x1 - b.x0, b.y1 - b.y0).to_image();
    let ratio = crop.width() as f32 / crop.height() as f32;
    let want = (REC_HEIGHT as f32 * ratio).ceil().max(1.0) as u32;
    let width = bucket(want, &REC_WIDTHS);
    let resized = image::imageops::resize(&crop, want.min(width), REC_HEIGHT, FilterType::Triangle);
    let (h, w) = (REC_HEIGHT as usize, width as usize);
    let mut data = vec![0f32; 3 * h * w];
    put_bgr(&resized, &mut data, h, w);
    (data, [1, 3, h, w])
}

/// The recogniser's classes: index 0 is the CTC blank, then the model's
/// characters, then a space (as PaddleOCR's `use_space_char`).
#[derive(Debug, Clone)]
pub struct Charset(Vec<String>);

impl Charset {
    /// Parses a character list, one character per line (the model's
    /// `character` metadata, extracted with `tally graph-meta`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut v = vec![String::new()];
        v.extend(text.lines().map(str::to_string));
        if v.len() < 2 {
            return Err("the character list is empty".into());
        }
        v.push(" ".into());
        Ok(Charset(v))
    }

    /// Number of classes (blank and space included).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no classes (never, once parsed).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Greedy CTC decoding of `[T, classes]` probabilities: the argmax of each
/// step, repeats collapsed, blanks dropped. Returns the text and its
/// confidence (the mean probability of the kept steps; 0 for no text).
pub fn ctc_decode(probs: &[f32], charset: &Charset) -> Result<(String, f32), String> {
    let n = charset.len();
    if probs.is_empty() || !probs.len().is_multiple_of(n) {
        return Err(format!(
            "the recogniser gave {} values, not a whole number of {n}-class steps; does the character list match the model?",
            probs.len()
        ));
    }
    let (mut text, mut sum, mut kept, mut prev) = (String::new(), 0f32, 0u32, 0usize);
    for step in probs.chunks_exact(n) {
        let (best, p) =
            step.iter()
                .enumerate()
                .fold((0, f32::MIN), |a, (i, &v)| if v > a.1 { (i, v) } else { a });
        if best != 0 && best != prev {
            text.push_str(&charset.0[best]);
            sum += p;
            kept += 1;
        }
        prev = best;
    }
    let conf = if kept == 0 { 0.0 } else { sum / kept as f32 };
    Ok((text, conf))
}

/// One recognised line.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// The text.
    pub text: String,
    /// Mean probability of its characters.
    pub confidence: f32,
    /// Where it is, in input pixels.
    pub bbox: TextBox,
}

impl Line {
    /// The line as JSON: `{"text":…,"confidence":…,"box":[x0,y0,x1,y1]}`.
    pub fn to_json(&self) -> String {
        let b = &self.bbox;
        serde_json::json!({
            "text": self.text,
            "confidence": (self.confidence as f64 * 1e4).round() / 1e4,
            "box": [b.x0, b.y0, b.x1, b.y1],
        })
        .to_string()
    }
}

/// Inference as the pipeline needs it: NCHW f32 input of `shape` → the
/// first output's values.
pub type Infer<'a, E> = dyn FnMut(&[f32], [usize; 4]) -> Result<Vec<f32>, E> + 'a;

/// A detected line, ready for the recogniser.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Where it is.
    pub bbox: TextBox,
    /// Its recogniser input ([`rec_input`]).
    pub data: Vec<f32>,
    /// `[1, 3, 48, W]`.
    pub shape: [usize; 4],
}

/// Detection: the boxes of `img`, each with its recogniser input.
pub fn detect<E>(
    img: &RgbImage,
    p: &DetParams,
    det: &mut Infer<'_, E>,
) -> Result<Vec<Prepared>, E> {
    let input = det_input(img, p);
    let map = det(&input.data, input.shape)?;
    Ok(boxes(&map, &input, img.dimensions(), p)
        .into_iter()
        .map(|bbox| {
            let (data, shape) = rec_input(img, &bbox);
            Prepared { bbox, data, shape }
        })
        .collect())
}

/// Recognition of one prepared line; `Err(Ok(e))` is an inference error,
/// `Err(Err(msg))` an output that does not fit the character set.
pub fn recognize<E>(
    data: &[f32],
    shape: [usize; 4],
    bbox: TextBox,
    charset: &Charset,
    rec: &mut Infer<'_, E>,
) -> Result<Line, Result<E, String>> {
    let probs = rec(data, shape).map_err(Ok)?;
    let (text, confidence) = ctc_decode(&probs, charset).map_err(Err)?;
    Ok(Line {
        text,
        confidence,
        bbox,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctc_collapses_repeats_and_drops_blanks() {
        let cs = Charset::parse("a\nb").unwrap(); // blank, a, b, space
        assert_eq!(cs.len(), 4);
        let step = |i: usize| {
            let mut v = [0.0f32; 4];
            v[i] = 0.9;
            v
        };
        let probs: Vec<f32> = [1, 1, 0, 1, 3, 2, 2]
            .iter()
            .flat_map(|&i| step(i))
            .collect();
        let (text, conf) = ctc_decode(&probs, &cs).unwrap();
        assert_eq!(text, "aa b");
        assert!((conf - 0.9).abs() < 1e-6);
        assert!(ctc_decode(&probs[..5], &cs).is_err());
    }

    #[test]
    fn one_block_gives_one_box_grown_by_unclip() {
        let img = RgbImage::new(100, 60);
        let p = DetParams::default();
        let input = det_input(&img, &p);
        assert_eq!(input.shape, [1, 3, 320, 320]);
        let mut map = vec![0f32; 320 * 320];
        for y in 20..30 {
            for x in 10..70 {
                map[y * 320 + x] = 0.9;
            }
        }
        let b = boxes(&map, &input, (100, 60), &p);
        assert_eq!(b.len(), 1);
        // Extent 10..=70 × 20..=30 after dilation; d = 60·10·1.6/140 ≈ 6.9.
        assert_eq!((b[0].x0, b[0].y0, b[0].x1, b[0].y1), (3, 13, 77, 37));
    }

    #[test]
    fn reading_order_is_rows_then_columns() {
        let t = |x0, y0| TextBox {
            x0,
            y0,
            x1: x0 + 5,
            y1: y0 + 5,
            score: 1.0,
        };
        let mut b = vec![t(50, 12), t(0, 40), t(10, 10)];
        reading_order(&mut b);
        assert_eq!(
            b.iter().map(|b| (b.x0, b.y0)).collect::<Vec<_>>(),
            [(10, 10), (50, 12), (0, 40)]
        );
    }

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parameters_come_from_flags_and_are_bounded() {
        let p = DetParams::from_args(args(&["--max-side", "640", "--thresh", "0.4"])).unwrap();
        assert_eq!((p.max_side, p.thresh), (640, 0.4));
        for bad in ["31", "1281"] {
            assert_eq!(
                DetParams::from_args(args(&["--max-side", bad])),
                Err("--max-side must be between 32 and 1280".into())
            );
        }
        assert_eq!(
            DetParams::from_args(args(&["--dpi", "300"])),
            Err("unknown option --dpi".into())
        );
        let r =
            RecParams::from_args(args(&["--charset", "/pkg/k.txt", "--min-score", "0.8"])).unwrap();
        assert_eq!(
            r,
            RecParams {
                charset: "/pkg/k.txt".into(),
                min_score: 0.8
            }
        );
        assert!(RecParams::from_args(args(&["--min-score", "high"])).is_err());
        assert_eq!(
            RecParams::from_args(args(&[])).unwrap(),
            RecParams::default()
        );
    }

    #[test]
    fn an_empty_character_list_is_an_error() {
        assert!(Charset::parse("").is_err());
    }

    #[test]
    fn a_line_longer_than_the_widest_input_is_squeezed_into_it() {
        // 4000 × 20: 9600 px wide at height 48, beyond the last width.
        let img = RgbImage::from_pixel(4000, 20, image::Rgb([0, 0, 0]));
        let b = TextBox {
            x0: 0,
            y0: 0,
            x1: 4000,
            y1: 20,
            score: 1.0,
        };
        let (data, shape) = rec_input(&img, &b);
        assert_eq!(shape, [1, 3, 48, 1920]);
        // Black everywhere: no zero (grey) padding on the right.
        assert!(data.iter().all(|&v| v == -1.0));
    }

    #[test]
    fn shapes_come_from_the_buckets() {
        let img = RgbImage::new(1000, 100);
        let i = det_input(&img, &DetParams::default());
        assert_eq!(i.shape, [1, 3, 320, 960]);
        let b = TextBox {
            x0: 0,
            y0: 0,
            x1: 500,
            y1: 20,
            score: 1.0,
        };
        assert_eq!(rec_input(&img, &b).1, [1, 3, 48, 1280]);
    }
}
