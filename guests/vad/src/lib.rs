//! Voice activity detection with silero VAD, as two pipeline stages.
//!
//! - `vad-probs`: a 16 kHz mono WAV on stdin; runs the graph `vad`
//!   (`silero_vad_openvino_16k.onnx`) through wasi-nn on 512-sample windows
//!   (each prefixed with the previous window's last 64 samples, the
//!   recurrent state carried from call to call); writes the speech
//!   probability of every window as the safetensors tensor `probs`.
//! - `vad-segments`: turns the probabilities into speech segments with
//!   hysteresis rules ([`segments`], after silero's `get_speech_timestamps`;
//!   parameters from `--threshold`, `--neg-threshold`, `--min-speech-ms`,
//!   `--min-silence-ms`, `--pad-ms`) and writes one JSON line per
//!   segment: `{"start_ms":…,"end_ms":…}`.

use tally_guest::{flag_value, parse_flags, unknown_flag};

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
    /// Padding added on both sides of a segment, in ms (silero pads 30 ms;
    /// the default here is 0: segments as tight as the model resolves).
    pub pad_ms: u32,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            threshold: 0.5,
            neg_threshold: 0.35,
            min_speech_ms: 250,
            min_silence_ms: 100,
            pad_ms: 0,
        }
    }
}

/// Speech segments `(start, end)` in samples from per-window probabilities
/// over `total` samples: speech starts at the first window at or above
/// `threshold` and ends after the last window at or above `threshold`, once
/// the probability has stayed below `neg_threshold` for `min_silence_ms`;
/// segments no longer than `min_speech_ms` are dropped, the rest padded by
/// `pad_ms`.
pub fn segments(probs: &[f32], total: usize, p: &Params) -> Vec<(usize, usize)> {
    let ms = |v: u32| v as usize * SAMPLE_RATE as usize / 1000;
    let (min_speech, min_silence, pad) = (ms(p.min_speech_ms), ms(p.min_silence_ms), ms(p.pad_ms));
    let mut out = Vec::new();
    // `last` is the end of the last window at or above `threshold`: where
    // speech ends once the probability stays below `neg_threshold` for
    // `min_silence`. (silero ends at the first window below
    // `neg_threshold`; its probability decays over ~3 windows after speech,
    // so that end is late by ~100 ms.)
    let (mut triggered, mut start, mut last) = (false, 0usize, 0usize);
    for (i, &prob) in probs.iter().enumerate() {
        let cur = i * WINDOW;
        if !triggered {
            if prob >= p.threshold {
                (triggered, start, last) = (true, cur, cur + WINDOW);
            }
            continue;
        }
        if prob >= p.threshold {
            last = cur + WINDOW;
        } else if prob >= p.neg_threshold {
            continue;
        } else if cur + WINDOW - last >= min_silence {
            if last - start > min_speech {
                out.push((start, last));
            }
            triggered = false;
        }
    }
    if triggered && total.min(last) - start > min_speech {
        out.push((start, total.min(last)));
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
        assert_eq!(s[0], (16 * WINDOW, 47 * WINDOW));
        // A short blip is not speech.
        let mut blip = vec![0.0; 16];
        blip.extend(vec![0.9; 3]);
        blip.extend(vec![0.0; 16]);
        assert!(segments(&blip, blip.len() * WINDOW, &p).is_empty());
    }
}

impl Params {
    /// Defaults overridden by `--name value` pairs from `args`.
    pub fn from_args(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut p = Params::default();
        parse_flags(args, |flag, v| {
            match flag {
                "--threshold" => p.threshold = flag_value(flag, v)?,
                "--neg-threshold" => p.neg_threshold = flag_value(flag, v)?,
                "--min-speech-ms" => p.min_speech_ms = flag_value(flag, v)?,
                "--min-silence-ms" => p.min_silence_ms = flag_value(flag, v)?,
                "--pad-ms" => p.pad_ms = flag_value(flag, v)?,
                other => return Err(unknown_flag(other)),
            }
            Ok(())
        })?;
        Ok(p)
    }
}
