//! Flat parameter vectors: all parameters of a network as one `Vec<f64>`.
//!
//! TRPO, NPG and the conjugate-gradient solver work on one flat vector θ
//! (Schulman et al. 2015, Appendix C). The order is the order of the `&[Var]`
//! slice handed in: each variable's elements in row-major order, one variable
//! after the other. The networks of this crate document their order in their
//! `vars()` methods (for an [`crate::Mlp`]: layer 0 weight `[out, in]`, layer 0
//! bias, layer 1 weight, ...; a Gaussian policy appends `log_std`).
//!
//! Values are exchanged as f64 whatever the network's dtype; writing into an
//! f32 network rounds to nearest, and reading f32 values back is exact.

use candle_core::{backprop::GradStore, CpuStorage, DType, Device, Storage, Tensor, Var};

use crate::error::{check_finite, Context, PolicyError, Result};

/// Number of scalars in `vars` (the length of their flat vector).
pub fn flat_len(vars: &[Var]) -> usize {
    vars.iter().map(|v| v.elem_count()).sum()
}

/// The current values of `vars` as one flat vector (see the module doc for the order).
///
/// Errors: [`PolicyError::Candle`] if a tensor cannot be read back.
pub fn get_flat(vars: &[Var]) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(flat_len(vars));
    for v in vars {
        extend_f64(&mut out, v.as_tensor())?;
    }
    Ok(out)
}

/// Overwrites `vars` with the values of `flat` (same order as [`get_flat`]).
///
/// All checks happen before the first variable is written: on error the
/// variables are unchanged. f32 and f64 CPU variables are written in place,
/// straight into their storage (no tensor is built: an optimiser does this
/// 10⁴ times per run), large ones on two threads when the current rayon
/// pool has them; others through a tensor of their dtype and `Var::set`.
///
/// Errors: [`PolicyError::FlatLength`] when `flat.len()` differs from
/// [`flat_len`]; [`PolicyError::NonFinite`] for a NaN or infinite value.
pub fn set_flat(vars: &[Var], flat: &[f64]) -> Result<()> {
    let n = flat_len(vars);
    if flat.len() != n {
        return Err(PolicyError::FlatLength {
            what: "set_flat",
            expected: n,
            got: flat.len(),
        });
    }
    check_finite("set_flat", flat)?;
    let on_host = |v: &Var| v.device().is_cpu() && matches!(v.dtype(), DType::F32 | DType::F64);
    if vars.iter().all(on_host) {
        let mut offset = 0;
        for v in vars {
            let k = v.elem_count();
            v.inplace_op1(&WriteF64(&flat[offset..offset + k]))
                .ctx("set_flat")?;
            offset += k;
        }
        return Ok(());
    }
    let mut values = Vec::with_capacity(vars.len());
    let mut offset = 0;
    for v in vars {
        let k = v.elem_count();
        values.push(tensor_from_f64(
            &flat[offset..offset + k],
            v.dims(),
            v.dtype(),
            v.device(),
        )?);
        offset += k;
    }
    for (v, t) in vars.iter().zip(&values) {
        v.set(t).ctx("set_flat")?;
    }
    Ok(())
}

/// Overwrites a CPU tensor's elements (row-major) with f64 values, rounded
/// to nearest for f32 as [`tensor_from_f64`] does.
struct WriteF64<'a>(&'a [f64]);

impl candle_core::InplaceOp1 for WriteF64<'_> {
    fn name(&self) -> &'static str {
        "klrl-write-f64"
    }

    fn cpu_fwd(
        &self,
        storage: &mut CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<()> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            return Err(candle_core::Error::Msg(
                "set_flat: a non-contiguous variable".to_string(),
            ));
        };
        if end - start != self.0.len() {
            return Err(candle_core::Error::Msg(format!(
                "set_flat: {} values for a variable of {}",
                self.0.len(),
                end - start
            )));
        }
        match storage {
            CpuStorage::F32(d) => on_halves(&mut d[start..end], self.0, |dst, src| {
                for (x, &y) in dst.iter_mut().zip(src) {
                    *x = y as f32;
                }
            }),
            CpuStorage::F64(d) => on_halves(&mut d[start..end], self.0, |dst, src| {
                dst.copy_from_slice(src)
            }),
            _ => {
                return Err(candle_core::Error::Msg(
                    "set_flat: only f32 and f64 variables are supported".to_string(),
                ))
            }
        }
        Ok(())
    }
}

/// `f(dst, src)` over the two slices, in two halves on two threads when
/// they hold at least [`PARALLEL_MIN`] elements and the current rayon pool
/// has a second thread (an element-wise copy or conversion: the same result
/// either way).
fn on_halves<T: Send, S: Sync>(dst: &mut [T], src: &[S], f: impl Fn(&mut [T], &[S]) + Sync) {
    if dst.len() < PARALLEL_MIN || rayon::current_num_threads() < 2 {
        return f(dst, src);
    }
    let mid = dst.len() / 2;
    let (d1, d2) = dst.split_at_mut(mid);
    let (s1, s2) = src.split_at(mid);
    rayon::join(|| f(d1, s1), || f(d2, s2));
}

/// Element counts from which [`set_flat`] and [`set_flat_f32`] work on a
/// variable on two threads (and klrl-optim's Adam on its whole parameter
/// vector): below it a thread hand-off costs more than the pass.
pub const PARALLEL_MIN: usize = 1 << 14;

/// Overwrites f32 CPU variables with f32 values (same order as
/// [`get_flat`]), copied straight into their storage: the write-back for
/// values already rounded to the variables' dtype, e.g. an optimiser's new
/// parameters computed in f64 and stored as f32 in the same pass.
///
/// All checks happen before the first variable is written: on error the
/// variables are unchanged.
///
/// Errors: [`PolicyError::FlatLength`] when `flat.len()` differs from
/// [`flat_len`]; [`PolicyError::NonFinite`] for a NaN or infinite value;
/// [`PolicyError::InvalidParameter`] for a variable that is not an f32 CPU
/// tensor; [`PolicyError::Candle`] if writing it fails (a non-contiguous
/// variable).
pub fn set_flat_f32(vars: &[Var], flat: &[f32]) -> Result<()> {
    let n = flat_len(vars);
    if flat.len() != n {
        return Err(PolicyError::FlatLength {
            what: "set_flat_f32",
            expected: n,
            got: flat.len(),
        });
    }
    let finite = |x: &[f32]| x.iter().fold(true, |all, x| all & x.is_finite());
    let all_finite = if flat.len() < PARALLEL_MIN || rayon::current_num_threads() < 2 {
        finite(flat)
    } else {
        let (a, b) = flat.split_at(flat.len() / 2);
        let (a, b) = rayon::join(|| finite(a), || finite(b));
        a && b
    };
    if !all_finite {
        let index = flat.iter().position(|x| !x.is_finite()).unwrap_or(0);
        return Err(PolicyError::NonFinite {
            what: "set_flat_f32",
            index,
            value: f64::from(flat[index]),
        });
    }
    if let Some(v) = vars
        .iter()
        .find(|v| !(v.device().is_cpu() && v.dtype() == DType::F32))
    {
        return Err(PolicyError::InvalidParameter {
            param: "set_flat_f32 variables",
            reason: format!(
                "a {:?} variable on {:?}: only f32 CPU variables take f32 values",
                v.dtype(),
                v.device()
            ),
        });
    }
    let mut offset = 0;
    for v in vars {
        let k = v.elem_count();
        v.inplace_op1(&WriteF32(&flat[offset..offset + k]))
            .ctx("set_flat_f32")?;
        offset += k;
    }
    Ok(())
}

/// Exchanges the elements of f32 CPU variables with `values`, one vector
/// per variable holding its number of elements: afterwards each variable
/// holds what its vector held and the vector what the variable held. A
/// variable whose storage is exactly its own elements (contiguous from
/// offset 0, as every `Var` made from a tensor of its own) exchanges the
/// storage's vector itself, with no copy; any other exchanges the elements
/// one by one. The values are not checked: this is for a caller that
/// computed and checked them itself (Adam's step writes new parameters
/// into buffers it then swaps in, instead of copying them over, and the
/// old parameters become its next buffers).
///
/// Errors: [`PolicyError::FlatLength`] when the vectors do not match the
/// variables in number or size; [`PolicyError::InvalidParameter`] for a
/// variable that is not an f32 CPU tensor; [`PolicyError::Candle`] for a
/// non-contiguous one. Nothing is exchanged unless every check passes.
pub fn swap_values_f32(vars: &[Var], values: &mut [Vec<f32>]) -> Result<()> {
    let sizes_match = vars.len() == values.len()
        && vars
            .iter()
            .zip(values.iter())
            .all(|(v, x)| v.elem_count() == x.len());
    if !sizes_match {
        return Err(PolicyError::FlatLength {
            what: "swap_values_f32",
            expected: flat_len(vars),
            got: values.iter().map(Vec::len).sum(),
        });
    }
    if let Some(v) = vars
        .iter()
        .find(|v| !(v.device().is_cpu() && v.dtype() == DType::F32 && v.is_contiguous()))
    {
        return Err(PolicyError::InvalidParameter {
            param: "swap_values_f32 variables",
            reason: format!(
                "a {:?} variable on {:?} (contiguous: {}): only contiguous f32 CPU variables",
                v.dtype(),
                v.device(),
                v.is_contiguous()
            ),
        });
    }
    for (v, x) in vars.iter().zip(values.iter_mut()) {
        v.inplace_op1(&SwapF32(std::cell::RefCell::new(x)))
            .ctx("swap_values_f32")?;
    }
    Ok(())
}

/// Exchanges an f32 CPU tensor's elements with a vector of as many.
struct SwapF32<'a>(std::cell::RefCell<&'a mut Vec<f32>>);

impl candle_core::InplaceOp1 for SwapF32<'_> {
    fn name(&self) -> &'static str {
        "klrl-swap-f32"
    }

    fn cpu_fwd(
        &self,
        storage: &mut CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<()> {
        let mut x = self.0.borrow_mut();
        match (storage, layout.contiguous_offsets()) {
            (CpuStorage::F32(d), Some((0, end))) if end == d.len() && end == x.len() => {
                std::mem::swap(d, &mut **x);
                Ok(())
            }
            (CpuStorage::F32(d), Some((start, end))) if end - start == x.len() => {
                d[start..end].swap_with_slice(&mut x[..]);
                Ok(())
            }
            _ => Err(candle_core::Error::Msg(
                "swap_values_f32: not a contiguous f32 variable of the expected size".to_string(),
            )),
        }
    }
}

/// Copies f32 values into an f32 CPU tensor's elements (row-major).
struct WriteF32<'a>(&'a [f32]);

impl candle_core::InplaceOp1 for WriteF32<'_> {
    fn name(&self) -> &'static str {
        "klrl-write-f32"
    }

    fn cpu_fwd(
        &self,
        storage: &mut CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<()> {
        match (storage, layout.contiguous_offsets()) {
            (CpuStorage::F32(d), Some((start, end))) if end - start == self.0.len() => {
                on_halves(&mut d[start..end], self.0, |dst, src| {
                    dst.copy_from_slice(src)
                });
                Ok(())
            }
            _ => Err(candle_core::Error::Msg(
                "set_flat_f32: not a contiguous f32 variable of the expected size".to_string(),
            )),
        }
    }
}

/// `f` of the elements of every variable of `vars` at once, row-major:
/// contiguous f32 and f64 CPU variables straight from their storage
/// (read-locked while `f` runs), others from copies converted to f64.
///
/// Errors: [`PolicyError::Candle`] if a tensor cannot be read back.
pub fn with_all_values<R>(vars: &[Var], f: impl FnOnce(&[HostValues]) -> R) -> Result<R> {
    // Lock the host variables; a variable read through a copy is not kept
    // locked (reading a tensor back locks it again).
    let guards: Vec<_> = vars
        .iter()
        .map(|v| {
            let (storage, layout) = v.as_tensor().storage_and_layout();
            match (&*storage, layout.contiguous_offsets()) {
                (Storage::Cpu(CpuStorage::F32(_) | CpuStorage::F64(_)), Some(range)) => {
                    Some((storage, range))
                }
                _ => None,
            }
        })
        .collect();
    let copies = vars
        .iter()
        .zip(&guards)
        .map(|(v, guard)| match guard {
            Some(_) => Ok(Vec::new()),
            None => tensor_to_f64(v.as_tensor()),
        })
        .collect::<Result<Vec<_>>>()?;
    let values: Vec<HostValues> = guards
        .iter()
        .zip(&copies)
        .map(|(guard, copy)| match guard {
            Some((storage, (start, end))) => match &**storage {
                Storage::Cpu(CpuStorage::F32(d)) => HostValues::F32(&d[*start..*end]),
                Storage::Cpu(CpuStorage::F64(d)) => HostValues::F64(&d[*start..*end]),
                // Not kept above: the guard is of an f32 or f64 CPU storage.
                _ => HostValues::F64(copy),
            },
            None => HostValues::F64(copy),
        })
        .collect();
    Ok(f(&values))
}

/// A variable's elements as they are stored.
#[derive(Debug, Clone, Copy)]
pub enum HostValues<'a> {
    /// An f32 variable's elements.
    F32(&'a [f32]),
    /// An f64 variable's elements (or any other variable's, converted).
    F64(&'a [f64]),
}

impl HostValues<'_> {
    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            HostValues::F32(x) => x.len(),
            HostValues::F64(x) => x.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The gradient of the scalar `loss` with respect to `vars`, as one flat
/// vector (same order as [`get_flat`]), by one ordinary `backward()`.
///
/// Variables the loss does not depend on get zeros.
///
/// Errors: [`PolicyError::Shape`] if `loss` has more than one element;
/// [`PolicyError::Candle`] if backpropagation fails.
pub fn flat_grad(vars: &[Var], loss: &Tensor) -> Result<Vec<f64>> {
    if loss.elem_count() != 1 {
        return Err(PolicyError::Shape {
            what: "loss",
            expected: "a scalar".to_string(),
            got: loss.dims().to_vec(),
        });
    }
    let grads = loss.backward().ctx("flat_grad backward")?;
    flat_grad_from_store(vars, &grads)
}

/// Reads the gradients of `vars` out of a candle [`GradStore`] as one flat
/// vector; variables without a gradient get zeros.
///
/// Errors: [`PolicyError::Candle`] if a gradient cannot be read back.
pub fn flat_grad_from_store(vars: &[Var], grads: &GradStore) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(flat_len(vars));
    for v in vars {
        match grads.get(v.as_tensor()) {
            Some(g) => extend_f64(&mut out, g)?,
            None => out.extend(std::iter::repeat_n(0.0, v.elem_count())),
        }
    }
    Ok(out)
}

/// Builds a tensor of `dtype` (F32 or F64) and `shape` from f64 values.
pub(crate) fn tensor_from_f64(
    values: &[f64],
    shape: &[usize],
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let t = match dtype {
        DType::F32 => {
            let v: Vec<f32> = values.iter().map(|&x| x as f32).collect();
            Tensor::from_vec(v, shape, device)
        }
        DType::F64 => Tensor::from_vec(values.to_vec(), shape, device),
        other => return Err(unsupported_dtype(other)),
    };
    t.ctx("building a tensor from f64 values")
}

/// Append all elements of `t`, row-major, converted to f64, to `out`: for a
/// contiguous f32 or f64 CPU tensor straight from its storage (one pass, no
/// intermediate buffer), otherwise by reading the tensor back.
///
/// Errors: [`PolicyError::Candle`] if the tensor cannot be read back.
pub fn extend_f64(out: &mut Vec<f64>, t: &Tensor) -> Result<()> {
    {
        let (storage, layout) = t.storage_and_layout();
        if let (Storage::Cpu(cpu), Some((start, end))) = (&*storage, layout.contiguous_offsets()) {
            match cpu {
                CpuStorage::F32(d) => {
                    out.extend(d[start..end].iter().map(|&x| f64::from(x)));
                    return Ok(());
                }
                CpuStorage::F64(d) => {
                    out.extend_from_slice(&d[start..end]);
                    return Ok(());
                }
                _ => {}
            }
        }
    }
    out.extend(tensor_to_f64(t)?);
    Ok(())
}

/// All elements of `t`, row-major, converted to f64.
pub(crate) fn tensor_to_f64(t: &Tensor) -> Result<Vec<f64>> {
    let flat = t.flatten_all().ctx("reading a tensor")?;
    match flat.dtype() {
        DType::F64 => flat.to_vec1::<f64>(),
        DType::F32 => flat
            .to_vec1::<f32>()
            .map(|v| v.into_iter().map(f64::from).collect()),
        _ => flat.to_dtype(DType::F64).and_then(|t| t.to_vec1::<f64>()),
    }
    .ctx("reading a tensor")
}

/// The error for a dtype other than F32 / F64.
pub(crate) fn unsupported_dtype(dtype: DType) -> PolicyError {
    PolicyError::InvalidParameter {
        param: "dtype",
        reason: format!("{dtype:?} is not supported; use DType::F32 (default) or DType::F64"),
    }
}

/// Checks that `dtype` is F32 or F64.
pub(crate) fn check_float_dtype(dtype: DType) -> Result<()> {
    match dtype {
        DType::F32 | DType::F64 => Ok(()),
        other => Err(unsupported_dtype(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(values: &[f64], dtype: DType) -> Var {
        let t = Tensor::from_slice(values, values.len(), &Device::Cpu)
            .and_then(|t| t.to_dtype(dtype))
            .expect("tensor");
        Var::from_tensor(&t).expect("var")
    }

    /// `swap_values_f32` exchanges the variables' elements with the
    /// vectors (tensors sharing a variable's storage see the new values);
    /// vectors that do not match the variables, or an f64 variable, are
    /// refused with nothing exchanged.
    #[test]
    fn swap_values_f32_exchanges_and_refuses_mismatches_unchanged() {
        let vars = [var(&[1.0, 2.0], DType::F32), var(&[3.0], DType::F32)];
        let alias = vars[0].as_tensor().clone();
        let mut values = vec![vec![0.5f32, -4.0], vec![1e-40]];
        swap_values_f32(&vars, &mut values).expect("swap");
        assert_eq!(
            get_flat(&vars).expect("get"),
            [0.5, -4.0, f64::from(1e-40f32)]
        );
        assert_eq!(alias.to_vec1::<f32>().expect("alias"), [0.5, -4.0]);
        assert_eq!(values, [vec![1.0f32, 2.0], vec![3.0]]);
        let before = get_flat(&vars).expect("get");
        let mut short = vec![vec![9.0f32, 9.0], vec![]];
        assert!(matches!(
            swap_values_f32(&vars, &mut short),
            Err(PolicyError::FlatLength {
                expected: 3,
                got: 2,
                ..
            })
        ));
        assert!(matches!(
            swap_values_f32(&vars[..1], &mut values),
            Err(PolicyError::FlatLength { .. })
        ));
        let mixed = [var(&[1.0, 2.0], DType::F32), var(&[3.0], DType::F64)];
        let mut two = vec![vec![7.0f32, 7.0], vec![7.0]];
        assert!(matches!(
            swap_values_f32(&mixed, &mut two),
            Err(PolicyError::InvalidParameter { .. })
        ));
        assert_eq!(get_flat(&vars).expect("get"), before);
        assert_eq!(get_flat(&mixed).expect("get"), [1.0, 2.0, 3.0]);
        assert_eq!(two, [vec![7.0f32, 7.0], vec![7.0]]);
    }

    /// f32 values are copied into f32 variables as they are; a wrong
    /// length, a non-finite value or an f64 variable is refused before
    /// anything is written.
    #[test]
    fn set_flat_f32_copies_and_refuses_bad_input_unchanged() {
        let vars = [var(&[1.0, 2.0], DType::F32), var(&[3.0], DType::F32)];
        let new = [0.1f32, -7.5e30, 1e-40];
        set_flat_f32(&vars, &new).expect("set");
        let back: Vec<f64> = new.iter().map(|&x| f64::from(x)).collect();
        assert_eq!(get_flat(&vars).expect("get"), back);
        assert!(matches!(
            set_flat_f32(&vars, &new[1..]),
            Err(PolicyError::FlatLength { got: 2, .. })
        ));
        assert!(matches!(
            set_flat_f32(&vars, &[0.0, 0.0, f32::INFINITY]),
            Err(PolicyError::NonFinite { index: 2, .. })
        ));
        let mixed = [var(&[1.0, 2.0], DType::F32), var(&[3.0], DType::F64)];
        assert!(matches!(
            set_flat_f32(&mixed, &[0.0; 3]),
            Err(PolicyError::InvalidParameter { .. })
        ));
        assert_eq!(get_flat(&vars).expect("get"), back);
        assert_eq!(get_flat(&mixed).expect("get"), vec![1.0, 2.0, 3.0]);
    }

    /// Every variable's values at once, in order: f32 and f64 from their
    /// storage, a non-contiguous view through a copy.
    #[test]
    fn with_all_values_reads_every_variable() {
        let t = Tensor::from_slice(&[1.0f64, 2.0, 3.0, 4.0], (2, 2), &Device::Cpu).expect("t");
        let transposed = Var::from_tensor(&t.t().expect("t")).expect("var");
        let vars = [
            var(&[0.5, 1.5], DType::F32),
            var(&[-2.0], DType::F64),
            transposed,
        ];
        let seen = with_all_values(&vars, |values| {
            values
                .iter()
                .map(|x| match x {
                    HostValues::F32(d) => ("f32", d.iter().map(|&y| f64::from(y)).collect()),
                    HostValues::F64(d) => ("f64", d.to_vec()),
                })
                .collect::<Vec<(&str, Vec<f64>)>>()
        })
        .expect("values");
        assert_eq!(
            seen,
            vec![
                ("f32", vec![0.5, 1.5]),
                ("f64", vec![-2.0]),
                ("f64", get_flat(&vars[2..]).expect("get")),
            ]
        );
    }
}
