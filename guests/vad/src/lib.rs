//! Voice activity detection with silero VAD, as two pipeline stages.
//!
//! - `vad-probs`: a 16 kHz mono WAV on stdin; runs the graph `vad`
//!   (`silero_vad_openvino_16k.onnx`) through wasi-nn on 512-sample windows
//!   (each prefixed with the previous window's last 64 samples, the
//!   recurrent state carried from call to call); writes the speech
//!   probability of every window as the safetensors tensor `probs`.
//! - `vad-segments`: turns the probabilities into speech segments with
//!   silero's hysteresis rules ([`segments`]) and writes one JSON line per
//!   segment: `{"start_ms":…,"end_ms":…}`.

/// Sample rate the model takes.
pub const SAMPLE_RATE: u32 = 16_000;
/// Samples per window (32 ms).
pub const WINDOW: usize = 512;
/// Samples of left context the model sees before each window.
pub const CONTEXT: usize = 64;

/// Segmentation parameters (silero's `get_speech_timestamps` defaults).
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Speech starts at this probability.
    pub threshold: f32,
    /// Speech ends below this probability.
    pub neg_threshold: f32,
    /// Shorter speech is dropped, in ms.
    pub min_speech_ms: u32,
    /// Shorter silence does not end speech, in ms.
    pub min_silence_ms: u32,
    /// Padding added on both sides of a segment, in ms.
    pub pad_ms: u32,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            threshold: 0.5,
            neg_threshold: 0.35,
            min_speech_ms: 250,
            min_silence_ms: 100,
            pad_ms: 30,
        }
    }
}

/// Speech segments `(start, end)` in samples from per-window probabilities
/// over `total` samples.
pub fn segments(probs: &[f32], total: usize, p: &Params) -> Vec<(usize, usize)> {
    let ms = |v: u32| v as usize * SAMPLE_RATE as usize / 1000;
    let (min_speech, min_silence, pad) = (ms(p.min_speech_ms), ms(p.min_silence_ms), ms(p.pad_ms));
    let mut out = Vec::new();
    let (mut triggered, mut start, mut temp_end) = (false, 0usize, None::<usize>);
    for (i, &prob) in probs.iter().enumerate() {
        let cur = i * WINDOW;
        if prob >= p.threshold {
            temp_end = None;
            if !triggered {
                triggered = true;
                start = cur;
            }
            continue;
        }
        if prob < p.neg_threshold && triggered {
            let end = *temp_end.get_or_insert(cur);
            if cur - end < min_silence {
                continue;
            }
            if end - start > min_speech {
                out.push((start, end));
            }
            triggered = false;
            temp_end = None;
        }
    }
    if triggered && total - start > min_speech {
        out.push((start, total));
    }
    let mut padded: Vec<(usize, usize)> = Vec::with_capacity(out.len());
    for (i, &(s, e)) in out.iter().enumerate() {
        let lo = padded.last().map_or(0, |l| l.1);
        let hi = out.get(i + 1).map_or(total, |n| n.0);
        padded.push((s.saturating_sub(pad).max(lo), (e + pad).min(hi).min(total)));
    }
    padded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hysteresis_and_minimums() {
        let p = Params::default();
        // 0.5 s silence, 1 s speech, 0.5 s silence (in 32 ms windows).
        let mut probs = vec![0.0; 16];
        probs.extend(vec![0.9; 31]);
        probs.extend(vec![0.0; 16]);
        let total = probs.len() * WINDOW;
        let s = segments(&probs, total, &p);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].0, 16 * WINDOW - 480);
        // A short blip is not speech.
        let mut blip = vec![0.0; 16];
        blip.extend(vec![0.9; 3]);
        blip.extend(vec![0.0; 16]);
        assert!(segments(&blip, blip.len() * WINDOW, &p).is_empty());
    }
}
