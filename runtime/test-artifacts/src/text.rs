//! Images of known text, rendered with DejaVu Sans (Debian's
//! `fonts-dejavu-core`, which `scripts/test.sh` installs), for OCR tests.

use ab_glyph::{Font, FontVec, GlyphId, PxScale, PxScaleFont, ScaleFont};

/// Three lines of known text the OCR tests and benchmark render and read.
pub const OCR_LINES: [&str; 3] = [
    "Verifiable inference for everyone",
    "Receipts replay on any host",
    "Fuel 4096 and digest 7f3a9c",
];

/// Where Debian installs DejaVu Sans; `$TALLY_FONT` overrides it.
pub const DEJAVU_SANS: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

fn font() -> FontVec {
    let path = std::env::var("TALLY_FONT").unwrap_or_else(|_| DEJAVU_SANS.into());
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!("{path}: {e}; install it with `apt-get install fonts-dejavu-core` (scripts/test.sh does)")
    });
    FontVec::try_from_vec(bytes).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The glyphs of `line` with their pen positions (kerned) from `start`,
/// and where the pen ends.
fn layout(font: &PxScaleFont<&FontVec>, line: &str, start: f32) -> (Vec<(GlyphId, f32)>, f32) {
    let (mut x, mut prev) = (start, None);
    let mut glyphs = Vec::new();
    for c in line.chars() {
        let id = font.glyph_id(c);
        if let Some(p) = prev {
            x += font.kern(p, id);
        }
        glyphs.push((id, x));
        x += font.h_advance(id);
        prev = Some(id);
    }
    (glyphs, x)
}

/// Black `lines` on white at `px` pixels per em, one line every 2 em, with
/// a 1 em margin; returns the image and each line's box `(x0, y0, x1, y1)`
/// (its inked extent).
pub fn render(lines: &[&str], px: f32) -> (image::GrayImage, Vec<(u32, u32, u32, u32)>) {
    let font = font();
    let scaled = font.as_scaled(PxScale::from(px));
    let margin = px;
    let width = lines
        .iter()
        .map(|l| layout(&scaled, l, 0.0).1)
        .fold(0.0, f32::max)
        + 2.0 * margin;
    let height = lines.len() as f32 * 2.0 * px + margin;
    let mut img = image::GrayImage::from_pixel(
        width.ceil() as u32,
        height.ceil() as u32,
        image::Luma([255]),
    );
    let mut boxes = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let baseline = margin + i as f32 * 2.0 * px + scaled.ascent();
        let mut ink = (u32::MAX, u32::MAX, 0, 0);
        for (id, x) in layout(&scaled, line, margin).0 {
            let glyph = id.with_scale_and_position(px, ab_glyph::point(x, baseline));
            let Some(outline) = font.outline_glyph(glyph) else {
                continue; // a space
            };
            let b = outline.px_bounds();
            outline.draw(|gx, gy, coverage| {
                let (px_, py) = (b.min.x as i64 + gx as i64, b.min.y as i64 + gy as i64);
                if px_ < 0 || py < 0 || px_ >= img.width() as i64 || py >= img.height() as i64 {
                    return;
                }
                let (px_, py) = (px_ as u32, py as u32);
                let v = (255.0 * (1.0 - coverage.clamp(0.0, 1.0))).round() as u8;
                let cur = img.get_pixel(px_, py).0[0];
                img.put_pixel(px_, py, image::Luma([cur.min(v)]));
                if coverage > 0.5 {
                    ink = (
                        ink.0.min(px_),
                        ink.1.min(py),
                        ink.2.max(px_ + 1),
                        ink.3.max(py + 1),
                    );
                }
            });
        }
        boxes.push(ink);
    }
    (img, boxes)
}

/// [`render`] as PNG bytes.
pub fn render_png(lines: &[&str], px: f32) -> Vec<u8> {
    let (img, _) = render(lines, px);
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .expect("encoding to memory");
    out.into_inner()
}
