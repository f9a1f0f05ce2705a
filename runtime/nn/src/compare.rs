//! Recomputed inference outputs against recorded ones: the definition of
//! "within tolerance".
//!
//! In a cross-backend replay the guests are fed the outputs the original
//! host *recorded*, so a recorded tensor is accepted only if it is a sound
//! substitute for the verifier's own recomputation, element by element:
//!
//! * types and shapes are equal;
//! * integer elements (`u8`, `i32`, `i64`) are equal: no tolerance applies;
//! * a non-finite float is matched only by the same kind at the same
//!   position (NaN ↔ NaN, +inf ↔ +inf, −inf ↔ −inf); a finite value never
//!   stands in for a non-finite one or the other way round;
//! * finite floats `r` (recorded) and `c` (recomputed) agree when
//!   `|r − c| ≤ abs` or `|r − c| ≤ rel · |c|`. The relative bound is taken
//!   on the verifier's own value, never on the attacker-supplied one;
//! * with `argmax`, every row (the last axis) must also have the same
//!   argmax (the first largest element, NaN skipped) — *in addition* to the
//!   value bound, since argmax alone would let every other element of the
//!   row be anything.
//!
//! Anything within these bounds is, by definition, an output an honest
//! backend could have produced (a signed zero or a subnormal within `abs`
//! included); guests must tolerate such differences.

use serde::{Deserialize, Serialize};
use tally_manifest::Tolerance;
use tally_nn_tract::{ElemType, Tensor};

/// How one recomputed output compares with the recorded one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct OutputCheck {
    /// Largest absolute difference over the finite elements (infinite when
    /// a non-finite element is unmatched).
    pub max_abs: f64,
    /// Largest difference relative to the recomputed magnitude, over the
    /// elements that fail the absolute bound.
    pub max_rel: f64,
    /// For argmax tolerances: rows whose argmax differs.
    pub argmax_mismatches: u64,
    /// Whether the output is within tolerance (types and shapes equal too).
    pub within: bool,
    /// Why not, when not: the first offending element or row.
    pub reason: Option<String>,
}

/// Compares `found` (recomputed by the verifier) with `expected` (recorded
/// by the original host) under `tol`; see the module docs for the rule.
pub fn compare(expected: &Tensor, found: &Tensor, tol: &Tolerance) -> OutputCheck {
    let mut check = OutputCheck {
        max_abs: 0.0,
        max_rel: 0.0,
        argmax_mismatches: 0,
        within: true,
        reason: None,
    };
    let fail = |check: &mut OutputCheck, why: String| {
        if check.within {
            check.within = false;
            check.reason = Some(why);
        }
    };
    if expected.ty() != found.ty() || expected.dims() != found.dims() {
        fail(
            &mut check,
            format!(
                "recorded {}{:?}, recomputed {}{:?}",
                expected.ty().name(),
                expected.dims(),
                found.ty().name(),
                found.dims()
            ),
        );
        return check;
    }
    let (a, b) = (expected.to_f64(), found.to_f64());
    let integer = matches!(expected.ty(), ElemType::U8 | ElemType::I32 | ElemType::I64);
    if integer {
        // Exact, on the bytes (i64 does not fit f64's mantissa).
        let size = expected.ty().size();
        let pairs = expected
            .data()
            .chunks_exact(size)
            .zip(found.data().chunks_exact(size));
        for (i, (x, y)) in pairs.enumerate() {
            if x != y {
                check.max_abs = check
                    .max_abs
                    .max((a[i] - b[i]).abs().max(f64::MIN_POSITIVE));
                fail(
                    &mut check,
                    format!(
                        "element {i}: recorded {}, recomputed {} (integers must be equal)",
                        a[i], b[i]
                    ),
                );
            }
        }
    } else {
        for (i, (&r, &c)) in a.iter().zip(&b).enumerate() {
            if !r.is_finite() || !c.is_finite() {
                let same_kind = (r.is_nan() && c.is_nan()) || r == c;
                if !same_kind {
                    check.max_abs = f64::INFINITY;
                    check.max_rel = f64::INFINITY;
                    fail(
                        &mut check,
                        format!("element {i}: recorded {r}, recomputed {c} (non-finite values must match in kind)"),
                    );
                }
                continue;
            }
            let d = (r - c).abs();
            check.max_abs = check.max_abs.max(d);
            if d > tol.abs {
                let rel = if c == 0.0 { f64::INFINITY } else { d / c.abs() };
                check.max_rel = check.max_rel.max(rel);
                // Never NaN: `d` is finite and positive, `c` finite.
                if rel > tol.rel {
                    fail(
                        &mut check,
                        format!(
                            "element {i}: recorded {r:e}, recomputed {c:e}: abs error {d:.3e} > {:.1e} and rel error {rel:.3e} > {:.1e}",
                            tol.abs, tol.rel
                        ),
                    );
                }
            }
        }
    }
    if tol.argmax {
        let row = expected.dims().last().copied().unwrap_or(1).max(1) as usize;
        for (n, (x, y)) in a.chunks(row).zip(b.chunks(row)).enumerate() {
            let (ax, ay) = (argmax(x), argmax(y));
            if ax != ay {
                check.argmax_mismatches += 1;
                fail(
                    &mut check,
                    format!("row {n}: recorded argmax {ax:?}, recomputed argmax {ay:?}"),
                );
            }
        }
    }
    check
}

/// The index of the first largest non-NaN element, if any.
fn argmax(xs: &[f64]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, &x) in xs.iter().enumerate() {
        if x.is_nan() {
            continue;
        }
        if best.is_none_or(|b| x > xs[b]) {
            best = Some(i);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(v: &[f32], dims: Vec<u32>) -> Tensor {
        let data = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        Tensor::new(ElemType::F32, dims, data, 1 << 20).unwrap()
    }

    fn tol(abs: f64, rel: f64, argmax: bool) -> Tolerance {
        let mut t = Tolerance::default();
        t.abs = abs;
        t.rel = rel;
        t.argmax = argmax;
        t
    }

    #[test]
    fn tolerances_pass_and_fail_as_declared() {
        let tol = Tolerance::default();
        let a = t(&[1.0, 2.0, 3.0], vec![3]);
        assert!(compare(&a, &t(&[1.00001, 2.0, 3.0], vec![3]), &tol).within);
        let far = compare(&a, &t(&[1.5, 2.0, 3.0], vec![3]), &tol);
        assert!(!far.within);
        assert!((far.max_abs - 0.5).abs() < 1e-12);
        assert!(far.reason.unwrap().starts_with("element 0:"));
        assert!(!compare(&a, &t(&[1.0, 2.0], vec![2]), &tol).within);
        let mut arg = tol;
        arg.argmax = true;
        // Argmax agrees, but a value is out of tolerance: refused.
        assert!(!compare(&a, &t(&[1.5, 2.0, 3.1], vec![3]), &arg).within);
        assert!(compare(&a, &t(&[1.0, 2.0, 3.00001], vec![3]), &arg).within);
        assert!(!compare(&a, &t(&[3.5, 2.0, 3.0], vec![3]), &arg).within);
    }

    #[test]
    fn non_finite_values_match_only_in_kind_and_position() {
        let tol = Tolerance::default();
        let honest = t(&[4.8e-7, 1.0, f32::NAN, f32::INFINITY], vec![4]);
        assert!(compare(&honest, &honest, &tol).within);
        for (i, v) in [
            (0, f32::INFINITY),
            (0, f32::NEG_INFINITY),
            (0, f32::NAN),
            (2, 0.0),
            (2, f32::INFINITY),
            (3, f32::NEG_INFINITY),
            (3, f32::NAN),
            (3, f32::MAX),
        ] {
            let mut forged = [4.8e-7, 1.0, f32::NAN, f32::INFINITY];
            forged[i] = v;
            let c = compare(&t(&forged, vec![4]), &honest, &tol);
            assert!(!c.within, "{v} at {i} passed");
            assert!(
                c.reason
                    .as_deref()
                    .unwrap()
                    .starts_with(&format!("element {i}:")),
                "{:?}",
                c.reason
            );
        }
    }

    #[test]
    fn argmax_alone_cannot_be_steered_by_nan() {
        // The forgery: NaN in column 0 pins a naive argmax to 0,
        // while a guest that skips NaN picks the injected class 2.
        let arg = tol(1e-4, 1e-3, true);
        let honest = t(&[0.9, 0.05, 0.05], vec![1, 3]);
        let forged = t(&[f32::NAN, 0.05, 0.95], vec![1, 3]);
        let c = compare(&forged, &honest, &arg);
        assert!(!c.within);
    }

    #[test]
    fn integers_are_exact() {
        let i64s = |v: &[i64]| {
            Tensor::new(
                ElemType::I64,
                vec![v.len() as u32],
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                1 << 20,
            )
            .unwrap()
        };
        let loose = tol(10.0, 10.0, false);
        // 2^53 + 1 and 2^53 are one f64 apart from nothing.
        let a = i64s(&[1 << 53, 5]);
        let b = i64s(&[(1 << 53) + 1, 5]);
        assert!(!compare(&a, &b, &loose).within);
        assert!(compare(&a, &a, &loose).within);
    }

    #[test]
    fn relative_bound_is_on_the_recomputed_value() {
        // Recording a huge value cannot make its own error look small.
        let c = compare(
            &t(&[1e30], vec![1]),
            &t(&[1.0], vec![1]),
            &tol(0.0, 0.5, false),
        );
        assert!(!c.within);
        // Zero recomputed: only `abs` can pass.
        let z = compare(
            &t(&[1e-3], vec![1]),
            &t(&[0.0], vec![1]),
            &tol(1e-4, 1e9, false),
        );
        assert!(!z.within);
    }

    fn arb_f32() -> impl Strategy<Value = f32> {
        prop_oneof![
            4 => -1e3f32..1e3,
            1 => Just(f32::NAN),
            1 => Just(f32::INFINITY),
            1 => Just(f32::NEG_INFINITY),
            1 => Just(-0.0f32),
            1 => Just(f32::MIN_POSITIVE / 4.0),
            1 => any::<f32>(),
        ]
    }

    proptest! {
        #[test]
        fn every_element_of_an_accepted_tensor_is_within_bounds(
            pairs in prop::collection::vec((arb_f32(), arb_f32()), 1..24),
            abs in 0.0f64..1.0,
            rel in 0.0f64..1.0,
            argmax in any::<bool>(),
        ) {
            let (r, c): (Vec<f32>, Vec<f32>) = pairs.iter().copied().unzip();
            let n = r.len() as u32;
            let tol = tol(abs, rel, argmax);
            let check = compare(&t(&r, vec![n]), &t(&c, vec![n]), &tol);
            let sound = r.iter().zip(&c).all(|(&r, &c)| {
                let (r, c) = (r as f64, c as f64);
                if !r.is_finite() || !c.is_finite() {
                    (r.is_nan() && c.is_nan()) || r == c
                } else {
                    (r - c).abs() <= abs || (r - c).abs() <= rel * c.abs()
                }
            });
            let rows_agree = !argmax || argmax_of(&r) == argmax_of(&c);
            prop_assert_eq!(check.within, sound && rows_agree);
            prop_assert_eq!(check.reason.is_none(), check.within);
        }

        #[test]
        fn a_tensor_is_within_tolerance_of_itself(
            v in prop::collection::vec(arb_f32(), 1..24),
            argmax in any::<bool>(),
        ) {
            let x = t(&v, vec![v.len() as u32]);
            prop_assert!(compare(&x, &x, &tol(0.0, 0.0, argmax)).within);
        }
    }

    fn argmax_of(v: &[f32]) -> Option<usize> {
        argmax(&v.iter().map(|&x| x as f64).collect::<Vec<_>>())
    }
}
