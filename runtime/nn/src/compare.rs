//! Recomputed inference outputs against recorded ones.

use serde::{Deserialize, Serialize};
use tally_manifest::Tolerance;
use tally_nn_tract::Tensor;

/// How one recomputed output compares with the recorded one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct OutputCheck {
    /// Largest absolute difference over the elements.
    pub max_abs: f64,
    /// Largest difference relative to the recorded magnitude, over the
    /// elements that fail the absolute bound.
    pub max_rel: f64,
    /// For argmax tolerances: rows whose argmax differs.
    pub argmax_mismatches: u64,
    /// Whether the output is within tolerance (types and shapes equal too).
    pub within: bool,
    /// Why not, when not.
    pub reason: Option<String>,
}

/// Compares `found` (recomputed) with `expected` (recorded) under `tol`.
pub fn compare(expected: &Tensor, found: &Tensor, tol: &Tolerance) -> OutputCheck {
    let mut check = OutputCheck {
        max_abs: 0.0,
        max_rel: 0.0,
        argmax_mismatches: 0,
        within: true,
        reason: None,
    };
    if expected.ty() != found.ty() || expected.dims() != found.dims() {
        check.within = false;
        check.reason = Some(format!(
            "recorded {}{:?}, recomputed {}{:?}",
            expected.ty().name(),
            expected.dims(),
            found.ty().name(),
            found.dims()
        ));
        return check;
    }
    let (a, b) = (expected.to_f64(), found.to_f64());
    if tol.argmax {
        let row = expected.dims().last().copied().unwrap_or(1).max(1) as usize;
        for (x, y) in a.chunks(row).zip(b.chunks(row)) {
            if argmax(x) != argmax(y) {
                check.argmax_mismatches += 1;
            }
        }
        check.within = check.argmax_mismatches == 0;
        if !check.within {
            check.reason = Some(format!(
                "{} rows disagree on argmax",
                check.argmax_mismatches
            ));
        }
    }
    for (x, y) in a.iter().zip(&b) {
        let d = (x - y).abs();
        if d.is_nan() {
            if x.is_nan() != y.is_nan() {
                check.max_abs = f64::INFINITY;
                if !tol.argmax {
                    check.within = false;
                }
            }
            continue;
        }
        check.max_abs = check.max_abs.max(d);
        if d > tol.abs {
            let rel = d / x.abs().max(f64::MIN_POSITIVE);
            check.max_rel = check.max_rel.max(rel);
            if !tol.argmax && rel > tol.rel {
                check.within = false;
            }
        }
    }
    if !check.within && check.reason.is_none() {
        check.reason = Some(format!(
            "max abs error {:.3e} > {:.1e} and max rel error {:.3e} > {:.1e}",
            check.max_abs, tol.abs, check.max_rel, tol.rel
        ));
    }
    check
}

fn argmax(xs: &[f64]) -> usize {
    let mut best = 0;
    for (i, x) in xs.iter().enumerate() {
        if *x > xs[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_nn_tract::ElemType;

    fn t(v: &[f32], dims: Vec<u32>) -> Tensor {
        let data = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        Tensor::new(ElemType::F32, dims, data, 1 << 20).unwrap()
    }

    #[test]
    fn tolerances_pass_and_fail_as_declared() {
        let tol = Tolerance::default();
        let a = t(&[1.0, 2.0, 3.0], vec![3]);
        assert!(compare(&a, &t(&[1.00001, 2.0, 3.0], vec![3]), &tol).within);
        let far = compare(&a, &t(&[1.5, 2.0, 3.0], vec![3]), &tol);
        assert!(!far.within);
        assert!((far.max_abs - 0.5).abs() < 1e-12);
        assert!(!compare(&a, &t(&[1.0, 2.0], vec![2]), &tol).within);
        let mut arg = tol;
        arg.argmax = true;
        assert!(compare(&a, &t(&[1.5, 2.0, 3.1], vec![3]), &arg).within);
        assert!(!compare(&a, &t(&[3.5, 2.0, 3.0], vec![3]), &arg).within);
    }
}
