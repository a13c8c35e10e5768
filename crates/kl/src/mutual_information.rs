//! Mutual information of two discrete variables from their joint table.

use crate::discrete::{kl_normalized, normalize};
use crate::error::{InputProblem, KlError};

/// Mutual information in nats from a joint table of X (rows) and Y (columns):
/// I(X; Y) = Σₓ Σᵧ p(x, y) ln[p(x, y) / (p(x) p(y))] = KL(P_XY ‖ P_X ⊗ P_Y)
/// (Cover & Thomas, eq. 2.28), with p(x) = Σᵧ p(x, y), p(y) = Σₓ p(x, y).
///
/// I ≥ 0, with equality iff X and Y are independent (the table is the outer
/// product of its margins); I ≤ min(H(X), H(Y)). Cells with p(x, y) = 0
/// contribute 0. Convert to bits with [`crate::to_bits`].
///
/// `joint`: rows of non-negative weights (counts are fine), all rows of the same
/// length, normalised by the total. Accepts `Vec<Vec<f64>>`, `&[[f64; N]]`, ….
///
/// # Errors
/// [`KlError::Invalid`] with `arg = "joint"`: [`InputProblem::Empty`] for no
/// rows or empty rows, [`InputProblem::RaggedRow`], or the errors of
/// [`normalize`] (index = row-major flat index, row · cols + col).
pub fn mutual_information<R: AsRef<[f64]>>(joint: &[R]) -> Result<f64, KlError> {
    let err = KlError::invalid("joint");
    let cols = match joint.first() {
        Some(row) => row.as_ref().len(),
        None => return Err(err(InputProblem::Empty)),
    };
    if cols == 0 {
        return Err(err(InputProblem::Empty));
    }
    let mut flat = Vec::with_capacity(joint.len() * cols);
    for (row, r) in joint.iter().enumerate() {
        let r = r.as_ref();
        if r.len() != cols {
            return Err(err(InputProblem::RaggedRow {
                row,
                expected: cols,
                got: r.len(),
            }));
        }
        flat.extend_from_slice(r);
    }
    let p = normalize(&flat).map_err(err)?;
    let rows = joint.len();
    let px: Vec<f64> = (0..rows)
        .map(|i| p[i * cols..(i + 1) * cols].iter().sum())
        .collect();
    let py: Vec<f64> = (0..cols)
        .map(|j| (0..rows).map(|i| p[i * cols + j]).sum())
        .collect();
    let product: Vec<f64> = (0..rows * cols)
        .map(|idx| px[idx / cols] * py[idx % cols])
        .collect();
    // P_X ⊗ P_Y is zero only where p(x, y) is zero too, so the sum is finite.
    Ok(kl_normalized(&p, &product).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfectly_dependent_bits_have_one_bit() {
        let mi = mutual_information(&[[0.5, 0.0], [0.0, 0.5]]).unwrap();
        assert!((mi - std::f64::consts::LN_2).abs() < 1e-15);
    }

    #[test]
    fn independent_table_has_zero_information() {
        let mi = mutual_information(&[vec![2.0, 6.0], vec![1.0, 3.0]]).unwrap();
        assert!(mi.abs() < 1e-15);
    }

    #[test]
    fn bad_tables_are_errors() {
        let empty: [[f64; 0]; 0] = [];
        assert!(mutual_information(&empty).is_err());
        assert!(matches!(
            mutual_information(&[vec![1.0, 2.0], vec![1.0]]),
            Err(KlError::Invalid {
                arg: "joint",
                problem: InputProblem::RaggedRow { row: 1, .. }
            })
        ));
        assert!(matches!(
            mutual_information(&[[1.0, 2.0], [-1.0, 0.0]]),
            Err(KlError::Invalid {
                problem: InputProblem::Negative { index: 2, .. },
                ..
            })
        ));
    }
}
