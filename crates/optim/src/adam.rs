//! Adam (Kingma & Ba 2015, "Adam: a method for stochastic optimization",
//! Algorithm 1) on flat parameter vectors, and global gradient-norm clipping.
//!
//! klrl keeps the optimiser on the host instead of using `candle_nn::AdamW`:
//! its moments are plain vectors that checkpoints save and restore exactly
//! (candle's are private), there is no weight decay to forget to turn off
//! (candle's AdamW defaults to 0.01), and clipping the global norm of the
//! policy and value gradients together is one pass over one vector.

use candle_core::{backprop::GradStore, Var};
use klrl_policy::flat;
use serde::{Deserialize, Serialize};

use crate::error::{OptimError, Result};

/// Adam's state and hyperparameters for one flat parameter vector.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Adam {
    /// β₁, decay of the first-moment estimate; default 0.9.
    pub beta1: f64,
    /// β₂, decay of the second-moment estimate; default 0.999.
    pub beta2: f64,
    /// ε added to the denominator; default 1e-5 (the PPO implementations'
    /// choice, Huang et al. 2022 detail 3; PyTorch's default is 1e-8).
    pub eps: f64,
    /// First-moment estimate m, kept in f32 (as PyTorch keeps it for f32
    /// parameters; each step computes the update in f64 and rounds it), for
    /// f64 networks too: a moment is a running statistic of noisy
    /// gradients, and 2⁻²⁴ relative is far below its noise. Half the memory
    /// traffic of f64 moments, and the step is memory-bound (a 256-256 PPO
    /// pair's 134k parameters and their moments do not fit a 2 MiB L2).
    pub m: Vec<f32>,
    /// Second-moment estimate v, in f32 like m.
    pub v: Vec<f32>,
    /// Steps taken (t in the paper).
    pub t: u64,
    /// Where [`Adam::try_step_vars`] writes the new moments and parameters
    /// before it commits them (not state: excluded from equality and
    /// serialisation).
    #[serde(skip)]
    scratch: Scratch,
}

/// [`Adam::try_step_vars`]'s buffers: the new moments, and the new
/// parameters in the variables' dtype: for f32 CPU variables one vector per
/// variable, swapped in for its storage ([`flat::swap_values_f32`]: no copy,
/// and the old parameters become the next step's buffers), for others one
/// f64 vector (written back by [`flat::set_flat`]).
#[derive(Debug, Clone, Default)]
struct Scratch {
    m: Vec<f32>,
    v: Vec<f32>,
    theta_f32: Vec<Vec<f32>>,
    theta_f64: Vec<f64>,
}

/// Equal hyperparameters and state (the scratch space is not compared).
impl PartialEq for Adam {
    fn eq(&self, other: &Self) -> bool {
        (self.beta1, self.beta2, self.eps, self.t, &self.m, &self.v)
            == (
                other.beta1,
                other.beta2,
                other.eps,
                other.t,
                &other.m,
                &other.v,
            )
    }
}

impl Adam {
    /// Zero moments for `n` parameters with the given ε and β₁ = 0.9, β₂ = 0.999.
    pub fn new(n: usize, eps: f64) -> Self {
        Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps,
            m: vec![0.0; n],
            v: vec![0.0; n],
            t: 0,
            scratch: Scratch::default(),
        }
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.m.len()
    }

    /// Whether there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.m.is_empty()
    }

    /// One descent step θ ← θ − lr · m̂ / (√v̂ + ε) for gradient `grad` of the
    /// loss (PyTorch's step, in Kingma & Ba's efficient form: see `coefs`).
    ///
    /// # Panics
    /// If the lengths differ from [`Adam::len`] (a programming error: the
    /// optimiser is built for the network it steps).
    pub fn step(&mut self, theta: &mut [f64], grad: &[f64], lr: f64) {
        assert_eq!(theta.len(), self.len(), "Adam: parameter length");
        assert_eq!(grad.len(), self.len(), "Adam: gradient length");
        self.t += 1;
        let k = self.coefs(self.t, lr);
        adam_in_place(theta, grad, &mut self.m, &mut self.v, &k);
    }

    /// The step's constants at step `t`.
    fn coefs(&self, t: u64, lr: f64) -> Coefs {
        let t = t.min(i32::MAX as u64) as i32;
        let bc2_sqrt = (1.0 - self.beta2.powi(t)).sqrt();
        Coefs {
            grad_scale: 1.0,
            beta1: self.beta1,
            beta2: self.beta2,
            // Kingma & Ba's efficient form (§2, the paragraph after
            // Algorithm 1): both bias corrections folded into the step size
            // and ε. m̂ / (√v̂ + ε) = [√(1 − β₂ᵗ) / (1 − β₁ᵗ)] · m / (√v + ε̂)
            // with ε̂ = ε √(1 − β₂ᵗ) — exactly PyTorch's step (it divides √v
            // by √(1 − β₂ᵗ) and adds ε), one square root and one division
            // per coordinate instead of one and two.
            step_size: lr * bc2_sqrt / (1.0 - self.beta1.powi(t)),
            eps_hat: self.eps * bc2_sqrt,
        }
    }
}

impl Adam {
    /// One Adam step on network variables from the gradients of a backward
    /// pass: reads the flat gradient of `vars`, clips its global norm to
    /// `max_grad_norm`, steps, and writes the parameters back. Returns the
    /// gradient norm before clipping.
    ///
    /// Errors: a non-finite gradient, or new parameters that are not finite
    /// or do not fit the variables' dtype ([`OptimError::NonFinite`]), leave
    /// the parameters and the moments unchanged.
    pub fn step_vars(
        &mut self,
        vars: &[Var],
        grads: &GradStore,
        lr: f64,
        max_grad_norm: f64,
        update: u64,
    ) -> Result<f64> {
        let grad = flat::flat_grad_from_store(vars, grads)?;
        self.step_flat(vars, &grad, lr, max_grad_norm, update)
    }

    /// [`Adam::step_vars`] with the gradient already a flat vector (in the
    /// order of `vars`), e.g. assembled from several backward passes.
    pub fn step_flat(
        &mut self,
        vars: &[Var],
        grad: &[f64],
        lr: f64,
        max_grad_norm: f64,
        update: u64,
    ) -> Result<f64> {
        let squares = SquaredNorm::of(grad);
        self.step_parts(
            vars,
            &[GradPart::F64(grad)],
            squares,
            lr,
            max_grad_norm,
            update,
        )
    }

    /// [`Adam::step_flat`] with the flat gradient given as consecutive
    /// parts (each variable's gradient within one part; e.g. the policy's
    /// and the value network's, computed on two threads) and Σ g² already
    /// summed over them, in order ([`SquaredNorm`]: the same sum as over
    /// their concatenation, so the same step). Summing a part as soon as it
    /// is computed, while the other is still being computed, takes that
    /// part's sum off the critical path.
    ///
    /// Errors: as [`Adam::step_flat`]; [`OptimError::Mismatch`] when
    /// `squares` did not sum as many entries as the parts hold.
    pub fn step_parts(
        &mut self,
        vars: &[Var],
        parts: &[GradPart],
        squares: SquaredNorm,
        lr: f64,
        max_grad_norm: f64,
        update: u64,
    ) -> Result<f64> {
        let held: usize = parts.iter().map(|p| p.len()).sum();
        if squares.len() != held {
            return Err(OptimError::Mismatch(format!(
                "the squared gradient norm sums {} entries, the gradient has {held}",
                squares.len()
            )));
        }
        let norm = squares.norm();
        if !norm.is_finite() {
            return Err(OptimError::NonFinite {
                what: "gradient",
                update,
            });
        }
        // The clipping scale is applied inside the step (g · s, the same
        // product clip_grad_norm forms), not in a pass of its own.
        let scale = clip_scale(norm, max_grad_norm).unwrap_or(1.0);
        if !self.try_step_parts(vars, parts, scale, lr, largest_value(vars))? {
            return Err(OptimError::NonFinite {
                what: "new parameters",
                update,
            });
        }
        Ok(norm)
    }

    /// [`Adam::step`] on the variables themselves, only if every new
    /// parameter is finite and at most `limit` in magnitude (the largest
    /// value their dtype holds, see [`largest_value`]), for the gradient
    /// `scale · grad` (`scale` = 1 leaves it as it is, exactly): θ is read
    /// from their storage, the new values are computed into a buffer in the
    /// variables' dtype (f32 for f32 CPU variables, else f64) and written
    /// back in place ([`flat::set_flat_f32`] / [`flat::set_flat`]), with no
    /// flat copy of θ and no new tensors. From [`flat::PARALLEL_MIN`]
    /// parameters in all, the two halves of the flat vector are stepped on
    /// two threads when the current rayon pool has them, one hand-off per
    /// step (the step is element-wise: the same bits). Returns whether the
    /// step was taken (every new parameter finite and within `limit`, and
    /// every new moment finite in its f32); otherwise nothing changed.
    ///
    /// Errors: [`OptimError::Mismatch`] for lengths that do not match the
    /// optimiser; a variable that cannot be read or written.
    pub fn try_step_vars(
        &mut self,
        vars: &[Var],
        grad: &[f64],
        scale: f64,
        lr: f64,
        limit: f64,
    ) -> Result<bool> {
        self.try_step_parts(vars, &[GradPart::F64(grad)], scale, lr, limit)
    }

    /// [`Adam::try_step_vars`] with the gradient in consecutive parts (see
    /// [`Adam::step_parts`]).
    ///
    /// Errors: also [`OptimError::Mismatch`] when a variable's gradient
    /// would span two parts.
    pub fn try_step_parts(
        &mut self,
        vars: &[Var],
        parts: &[GradPart],
        scale: f64,
        lr: f64,
        limit: f64,
    ) -> Result<bool> {
        let n = self.len();
        let held: usize = parts.iter().map(|p| p.len()).sum();
        if flat::flat_len(vars) != n || held != n {
            return Err(OptimError::Mismatch(format!(
                "Adam over {n} parameters got {} variables' worth and a gradient of {held}",
                flat::flat_len(vars),
            )));
        }
        let grads = per_variable(vars, parts)?;
        let k = Coefs {
            grad_scale: scale,
            ..self.coefs(self.t + 1, lr)
        };
        let Scratch {
            m: m_new,
            v: v_new,
            theta_f32,
            theta_f64,
        } = &mut self.scratch;
        m_new.resize(n, 0.0);
        v_new.resize(n, 0.0);
        let all_f32 = vars
            .iter()
            .all(|v| v.device().is_cpu() && v.dtype() == candle_core::DType::F32);
        let (m, v) = (&self.m[..], &self.v[..]);
        let fits = flat::with_all_values(vars, |values| {
            if values
                .iter()
                .zip(vars)
                .any(|(x, v)| x.len() != v.elem_count())
            {
                return Err(OptimError::Mismatch(
                    "Adam read a variable whose values do not match its size".to_string(),
                ));
            }
            let theta = Theta {
                values,
                grads: &grads,
                n,
            };
            if all_f32 {
                theta_f32.resize_with(vars.len(), Vec::new);
                for (buffer, var) in theta_f32.iter_mut().zip(vars) {
                    buffer.resize(var.elem_count(), 0.0);
                }
                let pieces = theta_f32.iter_mut().map(|b| &mut b[..]).collect();
                Ok(theta.step(m, v, Next::new(m_new, v_new, pieces), &k, limit))
            } else {
                theta_f64.resize(n, 0.0);
                let pieces = per_variable_mut(vars, theta_f64);
                Ok(theta.step(m, v, Next::new(m_new, v_new, pieces), &k, limit))
            }
        })??;
        if !fits {
            return Ok(false);
        }
        if all_f32 {
            // Every new value was checked finite and within range above.
            flat::swap_values_f32(vars, theta_f32)?;
        } else {
            flat::set_flat(vars, theta_f64)?;
        }
        std::mem::swap(&mut self.m, m_new);
        std::mem::swap(&mut self.v, v_new);
        self.t += 1;
        Ok(true)
    }
}

/// One consecutive part of a flat gradient, as [`Adam::step_parts`] and
/// [`SquaredNorm::add_part`] take it.
#[derive(Debug, Clone, Copy)]
pub enum GradPart<'a> {
    /// f64 entries, taken as they are.
    F64(&'a [f64]),
    /// f32 entries times a factor: entry g is taken as `f64::from(g) ·
    /// scale` (rounded to f64), the value the gradient would hold had it
    /// been widened and scaled in f64 first (e.g. the value network's part
    /// times the loss's c_v), so the same step, from half the memory. A
    /// scale of 1 takes the entries exactly.
    F32 {
        /// The entries, as computed.
        grad: &'a [f32],
        /// Their factor.
        scale: f64,
    },
}

impl<'a> GradPart<'a> {
    /// The number of entries.
    pub fn len(&self) -> usize {
        match self {
            GradPart::F64(g) => g.len(),
            GradPart::F32 { grad, .. } => grad.len(),
        }
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entries `range` (with the same factor).
    fn slice(self, range: std::ops::Range<usize>) -> Self {
        match self {
            GradPart::F64(g) => GradPart::F64(&g[range]),
            GradPart::F32 { grad, scale } => GradPart::F32 {
                grad: &grad[range],
                scale,
            },
        }
    }

    /// The first `k` entries and the rest.
    fn split_at(self, k: usize) -> (Self, Self) {
        let n = self.len();
        (self.slice(0..k), self.slice(k..n))
    }
}

/// `flat` (of [`flat::flat_len`] entries) cut into one slice per variable.
fn per_variable_mut<'a, T>(vars: &[Var], mut flat: &'a mut [T]) -> Vec<&'a mut [T]> {
    vars.iter()
        .map(|v| {
            let (mine, rest) = std::mem::take(&mut flat).split_at_mut(v.elem_count());
            flat = rest;
            mine
        })
        .collect()
}

/// Each variable's gradient, cut from the consecutive `parts` (whose
/// lengths add up to the variables').
fn per_variable<'a>(vars: &[Var], parts: &[GradPart<'a>]) -> Result<Vec<GradPart<'a>>> {
    let mut parts = parts.iter().copied().filter(|p| !p.is_empty());
    let mut part = GradPart::F64(&[]);
    let mut out = Vec::with_capacity(vars.len());
    for var in vars {
        let k = var.elem_count();
        if part.is_empty() && k > 0 {
            part = parts.next().unwrap_or(GradPart::F64(&[]));
        }
        if part.len() < k {
            return Err(OptimError::Mismatch(
                "a variable's gradient spans two parts of the gradient".to_string(),
            ));
        }
        let (mine, rest) = part.split_at(k);
        out.push(mine);
        part = rest;
    }
    Ok(out)
}

/// The largest magnitude the dtype of `vars` holds (f32's for an f32
/// network: a larger f64 value would be stored as infinity).
pub fn largest_value(vars: &[Var]) -> f64 {
    match vars.first().map(|v| v.dtype()) {
        Some(candle_core::DType::F64) | None => f64::MAX,
        Some(candle_core::DType::F16) => 65504.0,
        Some(candle_core::DType::BF16) => 3.389_531_389_251_535e38,
        Some(_) => f64::from(f32::MAX),
    }
}

/// f32 moments as the f64 values a checkpoint's vectors hold (exact).
pub fn widen(moments: &[f32]) -> Vec<f64> {
    moments.iter().map(|&x| f64::from(x)).collect()
}

/// Scale `grad` so its Euclidean norm is at most `max_norm` (PyTorch's
/// `clip_grad_norm_`); returns the norm before clipping. A non-finite
/// `max_norm` disables clipping.
pub fn clip_grad_norm(grad: &mut [f64], max_norm: f64) -> f64 {
    let norm = grad_norm(grad);
    if let Some(scale) = clip_scale(norm, max_norm) {
        for g in grad.iter_mut() {
            *g *= scale;
        }
    }
    norm
}

/// The Euclidean norm of `grad` ([`SquaredNorm`]: a fixed summation order,
/// so the result does not depend on the machine or the thread count).
pub fn grad_norm(grad: &[f64]) -> f64 {
    SquaredNorm::of(grad).norm()
}

/// How many partial sums [`SquaredNorm`] keeps: entry i of the gradient is
/// added to lane i mod `LANES`. Sixteen independent f64 additions in flight
/// hide the adder's latency (one accumulator: one addition per ≈ 4 cycles,
/// ≈ 0.1 ms for a 256-256 value network's 67k parameters, on the critical
/// path of every minibatch step) and map onto two AVX-512 or four AVX2
/// registers; the lanes are explicit, so the order is the same on every
/// machine.
const LANES: usize = 16;

/// Σ gᵢ² of a gradient in f64, entry i added to partial sum i mod 16 in
/// index order, the partial sums then added pairwise in a fixed tree; parts
/// added one after the other continue the lanes where the last part left
/// them, so they give the same bits as the whole vector at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SquaredNorm {
    lanes: [f64; LANES],
    len: usize,
}

impl Default for SquaredNorm {
    /// Nothing summed yet: every partial sum −0, as `Iterator::sum` starts
    /// (an empty gradient's norm is −0, equal to 0).
    fn default() -> Self {
        SquaredNorm {
            lanes: [-0.0; LANES],
            len: 0,
        }
    }
}

impl SquaredNorm {
    /// The sum over `grad`.
    pub fn of(grad: &[f64]) -> Self {
        let mut s = SquaredNorm::default();
        s.add(grad);
        s
    }

    /// Adds the squares of the next part.
    pub fn add(&mut self, part: &[f64]) {
        self.add_from(part, |g| g);
    }

    /// Adds the squares of the next part, its entries taken as
    /// [`GradPart`] says (the same sum as over those f64 values).
    pub fn add_part(&mut self, part: GradPart) {
        match part {
            GradPart::F64(g) => self.add(g),
            GradPart::F32 { grad, scale } => self.add_from(grad, |g| f64::from(g) * scale),
        }
    }

    /// [`SquaredNorm::add`] with each entry read by `load`.
    #[inline(always)]
    fn add_from<G: Copy>(&mut self, part: &[G], load: impl Fn(G) -> f64) {
        // Entries up to the next multiple of LANES in the flat index, one by
        // one; then whole rows of LANES (vectorised: the lanes are
        // independent); then the rest.
        let lead = ((LANES - self.len % LANES) % LANES).min(part.len());
        let (head, body) = part.split_at(lead);
        for &g in head {
            let g = load(g);
            self.lanes[self.len % LANES] += g * g;
            self.len += 1;
        }
        let (rows, tail) = body.as_chunks::<LANES>();
        let lanes = self.lanes;
        self.lanes = on_widest_unit(
            #[inline(always)]
            || {
                // A local copy and whole rows of a known length: the partial
                // sums stay in registers.
                rows.iter().fold(lanes, |mut lanes, row| {
                    for (s, &g) in lanes.iter_mut().zip(row) {
                        let g = load(g);
                        *s += g * g;
                    }
                    lanes
                })
            },
        );
        self.len += rows.len() * LANES;
        for &g in tail {
            let g = load(g);
            self.lanes[self.len % LANES] += g * g;
            self.len += 1;
        }
    }

    /// The number of entries summed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing has been summed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Σ gᵢ²: the sixteen partial sums added pairwise, (0 + 8, 1 + 9, …),
    /// then (0 + 4, …), (0 + 2, 1 + 3), 0 + 1.
    pub fn sum(&self) -> f64 {
        let mut s = self.lanes;
        let mut width = LANES;
        while width > 1 {
            width /= 2;
            for i in 0..width {
                s[i] += s[i + width];
            }
        }
        s[0]
    }

    /// √Σ gᵢ².
    pub fn norm(&self) -> f64 {
        self.sum().sqrt()
    }
}

/// The factor [`clip_grad_norm`] scales a gradient of norm `norm` by, or
/// `None` when it leaves it alone (`norm ≤ max_norm`, or `max_norm` not
/// finite): `max_norm / (norm + 1e-6)`, PyTorch's `clip_grad_norm_`.
pub fn clip_scale(norm: f64, max_norm: f64) -> Option<f64> {
    (max_norm.is_finite() && norm > max_norm).then(|| max_norm / (norm + 1e-6))
}

/// The constants of one Adam step.
struct Coefs {
    /// The gradient's factor (the clipping scale; 1 for none).
    grad_scale: f64,
    beta1: f64,
    beta2: f64,
    /// α_t = lr · √(1 − β₂ᵗ) / (1 − β₁ᵗ).
    step_size: f64,
    /// ε̂ = ε · √(1 − β₂ᵗ).
    eps_hat: f64,
}

/// One coordinate: (m′, v′, θ′) from (θ, g, m, v): the moments' updates in
/// f64, rounded to the f32 they are kept in; θ′ = θ − α_t · m′ / (√v′ + ε̂)
/// with the ratio from the kept moments in the precision `O` of the new
/// parameter ([`Store::ratio`]) and the rest in f64.
#[inline(always)]
fn coordinate<O: Store>(t: f64, g: f64, m: f32, v: f32, k: &Coefs) -> (f32, f32, f64) {
    // g · 1 = g exactly (g is finite here), so an unclipped step is unchanged.
    let g = g * k.grad_scale;
    let m = (k.beta1 * f64::from(m) + (1.0 - k.beta1) * g) as f32;
    let v = (k.beta2 * f64::from(v) + (1.0 - k.beta2) * g * g) as f32;
    (m, v, t - k.step_size * O::ratio(m, v, k.eps_hat))
}

/// `f()` compiled for the widest vector unit the CPU has (AVX-512F, AVX2,
/// or the baseline): `f` is inlined into a function built with that target
/// feature, so its loops are vectorised for it. The element-wise IEEE
/// operations are the same on every unit: so is the result.
#[inline(always)]
fn on_widest_unit<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        #[target_feature(enable = "avx2")]
        unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just above).
            return unsafe { avx512(f) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { avx2(f) };
        }
    }
    f()
}

/// The in-place step over every coordinate.
fn adam_in_place(theta: &mut [f64], grad: &[f64], m: &mut [f32], v: &mut [f32], k: &Coefs) {
    on_widest_unit(
        #[inline(always)]
        || {
            for (((t, &g), m), v) in theta.iter_mut().zip(grad).zip(m).zip(v) {
                (*m, *v, *t) = coordinate::<f64>(*t, g, *m, *v, k);
            }
        },
    )
}

/// The current parameters of the variables an Adam step is over: their
/// values as stored, one slice per variable, `n` in all.
struct Theta<'a> {
    values: &'a [flat::HostValues<'a>],
    /// Each variable's gradient.
    grads: &'a [GradPart<'a>],
    n: usize,
}

impl Theta<'_> {
    /// The checked step ([`adam_checked`]) over all parameters into `next`,
    /// in two halves of the flat vector on two threads when it holds at
    /// least [`flat::PARALLEL_MIN`] parameters and the current rayon pool
    /// has a second thread (one hand-off per step, whatever the number of
    /// variables; the step is element-wise: the same bits either way).
    /// Returns whether every new parameter is within `limit`.
    fn step<O: Store>(&self, m: &[f32], v: &[f32], next: Next<O>, k: &Coefs, limit: f64) -> bool {
        if self.n < flat::PARALLEL_MIN || rayon::current_num_threads() < 2 {
            return self.range(0, m, v, next, k, limit);
        }
        let mid = self.n / 2;
        let (first, second) = next.split_at(mid);
        let (a, b) = rayon::join(
            || self.range(0, &m[..mid], &v[..mid], first, k, limit),
            || self.range(mid, &m[mid..], &v[mid..], second, k, limit),
        );
        a && b
    }

    /// The checked step on the parameters `start..start + m.len()` of the
    /// flat vector (`m`, `v` and `next` cover exactly those).
    fn range<O: Store>(
        &self,
        start: usize,
        m: &[f32],
        v: &[f32],
        mut next: Next<O>,
        k: &Coefs,
        limit: f64,
    ) -> bool {
        let end = start + m.len();
        let mut fits = true;
        let mut offset = 0;
        for (values, grad) in self.values.iter().zip(self.grads) {
            let var = offset..offset + values.len();
            offset = var.end;
            let (lo, hi) = (var.start.max(start), var.end.min(end));
            if lo >= hi {
                continue;
            }
            let (at, here) = (lo - var.start..hi - var.start, lo - start..hi - start);
            // This variable's part of the range: one piece of `next`.
            let (out, rest) = next.split_at(hi - lo);
            next = rest;
            let (g, m, v) = (grad.slice(at.clone()), &m[here.clone()], &v[here]);
            fits &= match values {
                flat::HostValues::F32(t) => adam_checked(&t[at], g, m, v, out, k, limit),
                flat::HostValues::F64(t) => adam_checked(&t[at], g, m, v, out, k, limit),
            };
        }
        fits
    }
}

/// How a new parameter is kept: f32 (rounded to nearest) or f64; and the
/// precision its step's ratio m / (√v + ε̂) is computed in.
trait Store: Copy + Send {
    fn store(x: f64) -> Self;

    /// m / (√v + ε̂), the square root and the division in `Self`'s
    /// precision. For an f32 parameter that is PyTorch's arithmetic, and the
    /// ratio's f32 rounding (relative 2⁻²⁴ on a step of about lr) is below
    /// the parameter's own; the f32 square root and division take a third of
    /// the f64 ones' time, which bound the step.
    fn ratio(m: f32, v: f32, eps_hat: f64) -> f64;
}

impl Store for f32 {
    #[inline(always)]
    fn store(x: f64) -> Self {
        x as f32
    }

    #[inline(always)]
    fn ratio(m: f32, v: f32, eps_hat: f64) -> f64 {
        f64::from(m / (v.sqrt() + eps_hat as f32))
    }
}

impl Store for f64 {
    #[inline(always)]
    fn store(x: f64) -> Self {
        x
    }

    #[inline(always)]
    fn ratio(m: f32, v: f32, eps_hat: f64) -> f64 {
        f64::from(m) / (f64::from(v).sqrt() + eps_hat)
    }
}

/// Where [`adam_checked`] writes the new moments and parameters: a range
/// of the flat vector, the parameters as consecutive pieces (one per
/// variable the range covers, in order).
struct Next<'a, O> {
    m: &'a mut [f32],
    v: &'a mut [f32],
    theta: Vec<&'a mut [O]>,
}

impl<'a, O> Next<'a, O> {
    fn new(m: &'a mut [f32], v: &'a mut [f32], theta: Vec<&'a mut [O]>) -> Self {
        Next { m, v, theta }
    }

    /// The first `mid` entries of each buffer, and the rest (a piece that
    /// straddles `mid` is cut in two).
    fn split_at(self, mid: usize) -> (Self, Self) {
        let (m1, m2) = self.m.split_at_mut(mid);
        let (v1, v2) = self.v.split_at_mut(mid);
        let (mut t1, mut t2) = (Vec::new(), Vec::new());
        let mut left = mid;
        for piece in self.theta {
            if left == 0 {
                t2.push(piece);
            } else if piece.len() <= left {
                left -= piece.len();
                t1.push(piece);
            } else {
                let (a, b) = piece.split_at_mut(left);
                left = 0;
                t1.push(a);
                t2.push(b);
            }
        }
        (Next::new(m1, v1, t1), Next::new(m2, v2, t2))
    }

    /// The parameters of the whole range as one slice: the range must lie
    /// within one piece (it does for one variable's part of it).
    fn single_piece(self) -> (&'a mut [f32], &'a mut [f32], &'a mut [O]) {
        let len = self.m.len();
        let piece = self.theta.into_iter().find(|p| !p.is_empty() || len == 0);
        let theta = piece.unwrap_or_default();
        assert_eq!(theta.len(), len, "Adam: a variable's range spans pieces");
        (self.m, self.v, theta)
    }
}

/// The step from (θ, m, v) into `next`; returns whether every new parameter
/// is at most `limit` in magnitude (NaN never is), checked before it is
/// stored. One pass.
fn adam_checked<T: Copy + Into<f64>, O: Store>(
    theta: &[T],
    grad: GradPart,
    m: &[f32],
    v: &[f32],
    next: Next<O>,
    k: &Coefs,
    limit: f64,
) -> bool {
    let (m_out, v_out, theta_out) = next.single_piece();
    match grad {
        GradPart::F64(g) => adam_checked_f64(theta, g, m, v, (m_out, v_out, theta_out), k, limit),
        GradPart::F32 { grad, scale } => {
            // In blocks: the entries widened and scaled into an f64 buffer
            // (L1-resident), then the f64 step over the block; the f32
            // loads inside the step's loop kept it from vectorising.
            const BLOCK: usize = 512;
            let mut wide = [0.0f64; BLOCK];
            let mut fits = true;
            let blocks = theta
                .chunks(BLOCK)
                .zip(grad.chunks(BLOCK))
                .zip(m.chunks(BLOCK).zip(v.chunks(BLOCK)))
                .zip(
                    m_out
                        .chunks_mut(BLOCK)
                        .zip(v_out.chunks_mut(BLOCK))
                        .zip(theta_out.chunks_mut(BLOCK)),
                );
            for (((t, g), (m, v)), ((mo, vo), to)) in blocks {
                let w = &mut wide[..g.len()];
                on_widest_unit(
                    #[inline(always)]
                    || {
                        for (w, &g) in w.iter_mut().zip(g) {
                            *w = f64::from(g) * scale;
                        }
                    },
                );
                fits &= adam_checked_f64(t, w, m, v, (mo, vo, to), k, limit);
            }
            fits
        }
    }
}

/// [`adam_checked`] for an f64 gradient, into the new moments and
/// parameters `out`.
fn adam_checked_f64<T: Copy + Into<f64>, O: Store>(
    theta: &[T],
    grad: &[f64],
    m: &[f32],
    v: &[f32],
    out: (&mut [f32], &mut [f32], &mut [O]),
    k: &Coefs,
    limit: f64,
) -> bool {
    let (m_out, v_out, theta_out) = out;
    on_widest_unit(
        #[inline(always)]
        || {
            let mut fits = true;
            let out = m_out
                .iter_mut()
                .zip(v_out.iter_mut())
                .zip(theta_out.iter_mut());
            for (((&t, &g), (&m, &v)), ((m_new, v_new), t_new)) in
                theta.iter().zip(grad).zip(m.iter().zip(v)).zip(out)
            {
                let theta;
                (*m_new, *v_new, theta) = coordinate::<O>(t.into(), g, m, v, k);
                // A finite gradient beyond ≈ 6e20 overflows v's f32 (and
                // would freeze the parameter at √v = ∞): refused like a
                // parameter out of range. NaN fails every comparison.
                fits &= (theta.abs() <= limit) & (m_new.abs() <= f32::MAX) & (*v_new <= f32::MAX);
                *t_new = O::store(theta);
            }
            fits
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first Adam step moves every coordinate by lr · g / (|g| + ε):
    /// m̂ = g, √v̂ = |g|. To the f32 rounding of the moments and the ratio
    /// (a few 2⁻²⁴ relative of the step lr = 0.1).
    #[test]
    fn first_step_is_lr_times_sign() {
        let (lr, eps) = (0.1, 1e-8);
        let mut adam = Adam::new(3, eps);
        let mut theta = vec![1.0, 2.0, 3.0];
        let grad = [0.5, -4.0, 1e-3];
        adam.step(&mut theta, &grad, lr);
        for ((t, t0), g) in theta.iter().zip([1.0, 2.0, 3.0]).zip(grad) {
            let e = t0 - lr * g / (f64::abs(g) + eps);
            assert!(
                (t - e).abs() < lr * 4.0 * f64::from(f32::EPSILON),
                "{theta:?}"
            );
        }
    }

    /// Two steps against a hand computation in f64 with β₁ = 0.9, β₂ = 0.999,
    /// in PyTorch's form (m̂ = m / (1 − β₁ᵗ), √v̂ + ε): equal up to the f32
    /// rounding of the moments and the ratio, a few 2⁻²⁴ relative of each
    /// step (lr = 0.01).
    #[test]
    fn two_steps_match_the_closed_form() {
        let mut adam = Adam::new(1, 1e-5);
        let mut theta = vec![0.0];
        adam.step(&mut theta, &[1.0], 0.01);
        adam.step(&mut theta, &[3.0], 0.01);
        let m: f64 = 0.9 * 0.1 + 0.1 * 3.0; // 0.39
        let v: f64 = 0.999 * 0.001 + 0.001 * 9.0; // 0.009999
        let m_hat = m / (1.0 - 0.81);
        let denom = v.sqrt() / (1.0 - 0.999f64 * 0.999).sqrt() + 1e-5;
        let first = 0.01 * 1.0 / (1.0 + 1e-5);
        let expected = -first - 0.01 * m_hat / denom;
        assert!(
            (theta[0] - expected).abs() < 2.0 * 0.01 * 4.0 * f64::from(f32::EPSILON),
            "{} vs {expected}",
            theta[0]
        );
    }

    /// A step that would leave the dtype's range is refused and changes
    /// nothing (moments and variables); a normal one is the same as `step`,
    /// for f64 and f32 variables.
    #[test]
    fn try_step_vars_refuses_parameters_out_of_range_and_changes_nothing() {
        use candle_core::{DType, Device, Tensor};
        let var = |v: &[f64], dtype: DType| {
            let t = Tensor::from_slice(v, v.len(), &Device::Cpu).unwrap();
            Var::from_tensor(&t.to_dtype(dtype).unwrap()).unwrap()
        };
        for dtype in [DType::F64, DType::F32] {
            let mut adam = Adam::new(2, 1e-8);
            adam.step(&mut [0.0, 0.0], &[0.3, -0.2], 0.1);
            let before = adam.clone();
            let big = [f64::from(f32::MAX) * 0.999, 1.0];
            let vars = [var(&big, dtype)];
            let limit = largest_value(&vars);
            let at = || flat::get_flat(&vars).unwrap();
            let theta = at();
            let refused = adam.try_step_vars(&vars, &[-1.0, 1.0], 1.0, 1e36, f64::from(f32::MAX));
            assert!(!refused.unwrap());
            assert_eq!((&adam, at()), (&before, theta.clone()));
            let refused = adam.try_step_vars(&vars, &[1.0, 1.0], 1.0, f64::INFINITY, limit);
            assert!(!refused.unwrap());
            assert_eq!((&adam, at()), (&before, theta.clone()));
            // A finite gradient whose square overflows v's f32 (0.001 · 1e42
            // > 3.4e38): the parameters would not move (m / √∞ = 0), but v
            // would be stored infinite; refused.
            let refused = adam.try_step_vars(&vars, &[1e21, 1.0], 1.0, 1e-3, limit);
            assert!(!refused.unwrap());
            assert_eq!((&adam, at()), (&before, theta));
            // Taken: the same parameters and moments as `step`, bit for bit
            // (rounded to the variable's dtype).
            let vars = [var(&[1.0, 2.0], dtype)];
            let mut b = vec![1.0, 2.0];
            let mut twin = adam.clone();
            assert!(adam
                .try_step_vars(&vars, &[0.5, 0.5], 1.0, 0.01, limit)
                .unwrap());
            twin.step(&mut b, &[0.5, 0.5], 0.01);
            let rounded: Vec<f64> = match dtype {
                DType::F32 => b.iter().map(|&x| f64::from(x as f32)).collect(),
                _ => b,
            };
            assert_eq!((flat::get_flat(&vars).unwrap(), adam), (rounded, twin));
        }
    }

    /// Over several variables (f32, and mixed f32 / f64) whose boundaries
    /// do not fall on the two-thread split, a step on two threads equals the
    /// step on one bit for bit, and [`Adam::step`] on the flat vector,
    /// rounded to each variable's dtype (exactly for f64 variables, to f32
    /// rounding for f32 ones).
    #[test]
    fn try_step_vars_on_two_threads_equals_the_flat_step() {
        use candle_core::{DType, Device, Tensor};
        let sizes = [
            7usize,
            flat::PARALLEL_MIN - 3,
            5,
            flat::PARALLEL_MIN + 11,
            1,
        ];
        let n: usize = sizes.iter().sum();
        let init: Vec<f64> = (0..n).map(|i| ((i as f64) * 0.37).sin()).collect();
        let grad: Vec<f64> = (0..n).map(|i| ((i as f64) * 0.11).cos() * 0.1).collect();
        let build = |dtypes: &[DType]| -> Vec<Var> {
            let mut offset = 0;
            sizes
                .iter()
                .zip(dtypes.iter().cycle())
                .map(|(&k, &dtype)| {
                    let t = Tensor::from_slice(&init[offset..offset + k], k, &Device::Cpu)
                        .and_then(|t| t.to_dtype(dtype))
                        .unwrap();
                    offset += k;
                    Var::from_tensor(&t).unwrap()
                })
                .collect()
        };
        for dtypes in [&[DType::F32][..], &[DType::F32, DType::F64]] {
            let mut results = Vec::new();
            for threads in [1, 2] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let vars = build(dtypes);
                let mut adam = Adam::new(n, 1e-5);
                pool.install(|| {
                    for scale in [1.0, 0.25] {
                        assert!(adam.try_step_vars(&vars, &grad, scale, 0.01, 1e30).unwrap());
                    }
                });
                results.push((flat::get_flat(&vars).unwrap(), adam));
            }
            assert_eq!(results[0], results[1]);
            // The flat reference: the same steps on f64 values, each
            // parameter rounded to its variable's dtype after every step.
            let vars = build(dtypes);
            let round = |theta: &mut Vec<f64>| {
                let mut offset = 0;
                for v in &vars {
                    for x in &mut theta[offset..offset + v.elem_count()] {
                        if v.dtype() == DType::F32 {
                            *x = f64::from(*x as f32);
                        }
                    }
                    offset += v.elem_count();
                }
            };
            let mut theta = flat::get_flat(&vars).unwrap();
            let mut adam = Adam::new(n, 1e-5);
            for scale in [1.0, 0.25] {
                let g: Vec<f64> = grad.iter().map(|g| g * scale).collect();
                adam.step(&mut theta, &g, 0.01);
                round(&mut theta);
            }
            // The moments do not depend on θ: equal bit for bit. The f64
            // variables step exactly as the flat f64 step; the f32 ones take
            // the ratio m / (√v + ε̂) in f32 (Store::ratio), so after two
            // steps they agree to within two f32 roundings of θ and, per
            // step, a few f32 roundings of the step (at most ≈ lr = 0.01).
            let (got, got_adam) = &results[0];
            assert_eq!(
                (&got_adam.m, &got_adam.v, got_adam.t),
                (&adam.m, &adam.v, adam.t)
            );
            let mut offset = 0;
            for var in &vars {
                let range = offset..offset + var.elem_count();
                offset = range.end;
                for (a, b) in got[range.clone()].iter().zip(&theta[range]) {
                    if var.dtype() == DType::F64 {
                        assert_eq!(a.to_bits(), b.to_bits());
                    } else {
                        let eps = f64::from(f32::EPSILON);
                        let tol = 2.0 * eps * b.abs() + 2.0 * 0.01 * 2.0 * eps;
                        assert!((a - b).abs() <= tol, "{a} vs {b}");
                    }
                }
            }
        }
    }

    /// The lanes by hand: entry i into partial sum i mod 16, then the fixed
    /// pairwise tree; and any split into parts (lengths 0–40, so parts start
    /// at every lane offset) gives the whole vector's bits.
    #[test]
    fn squared_norm_is_lane_wise_and_split_invariant() {
        let grad: Vec<f64> = (0..1234)
            .map(|i| ((i as f64) * 1.3).cos() * 10f64.powi(i % 7 - 3))
            .collect();
        let mut lanes = [-0.0f64; 16];
        for (i, g) in grad.iter().enumerate() {
            lanes[i % 16] += g * g;
        }
        let mut l8 = [0.0; 8];
        for i in 0..8 {
            l8[i] = lanes[i] + lanes[i + 8];
        }
        let l4: Vec<f64> = (0..4).map(|i| l8[i] + l8[i + 4]).collect();
        let l2 = [l4[0] + l4[2], l4[1] + l4[3]];
        let by_hand = l2[0] + l2[1];
        let whole = SquaredNorm::of(&grad);
        assert_eq!(whole.sum().to_bits(), by_hand.to_bits());
        let mut at = 0;
        let mut parts = SquaredNorm::default();
        for n in (0..).map(|i: usize| (i * 7 + 3) % 41) {
            let end = (at + n).min(grad.len());
            parts.add(&grad[at..end]);
            at = end;
            if at == grad.len() {
                break;
            }
        }
        assert_eq!(
            (parts.sum().to_bits(), parts.len()),
            (by_hand.to_bits(), grad.len())
        );
        assert_eq!(SquaredNorm::of(&[]).norm(), 0.0);
    }

    /// Σ g² added part by part is the sum over the whole vector, bit for
    /// bit, and so is the step over parts; a squared norm of the wrong
    /// length and a variable split across parts are refused unchanged.
    #[test]
    fn parts_step_like_the_whole_gradient() {
        use candle_core::{DType, Device, Tensor};
        let grad: Vec<f64> = (0..1000).map(|i| ((i as f64) * 0.7).sin() * 1e3).collect();
        let mut squares = SquaredNorm::default();
        for part in [&grad[..1], &grad[1..300], &grad[300..300], &grad[300..]] {
            squares.add(part);
        }
        let whole = SquaredNorm::of(&grad);
        assert_eq!(squares.norm().to_bits(), whole.norm().to_bits());
        // Against the plain sequential sum: equal to f64 rounding.
        let sequential = grad.iter().map(|g| g * g).sum::<f64>();
        assert!((whole.sum() - sequential).abs() <= 1e-13 * sequential);
        assert_eq!(
            (squares.len(), SquaredNorm::default().is_empty()),
            (1000, true)
        );
        let vars = |values: &[f64]| -> Vec<Var> {
            [&values[..300], &values[300..]]
                .iter()
                .map(|v| {
                    let t = Tensor::from_slice(v, v.len(), &Device::Cpu)
                        .and_then(|t| t.to_dtype(DType::F32))
                        .unwrap();
                    Var::from_tensor(&t).unwrap()
                })
                .collect()
        };
        let init = vec![0.5; 1000];
        let (a, b) = (vars(&init), vars(&init));
        let (mut adam_a, mut adam_b) = (Adam::new(1000, 1e-5), Adam::new(1000, 1e-5));
        let norm_a = adam_a.step_flat(&a, &grad, 1e-3, 0.5, 0).unwrap();
        let parts = [GradPart::F64(&grad[..300]), GradPart::F64(&grad[300..])];
        let norm_b = adam_b
            .step_parts(&b, &parts, SquaredNorm::of(&grad), 1e-3, 0.5, 0)
            .unwrap();
        assert_eq!(norm_a.to_bits(), norm_b.to_bits());
        assert_eq!(adam_a, adam_b);
        assert_eq!(flat::get_flat(&a).unwrap(), flat::get_flat(&b).unwrap());
        let before = (adam_b.clone(), flat::get_flat(&b).unwrap());
        let short = SquaredNorm::of(&grad[1..]);
        assert!(matches!(
            adam_b.step_parts(&b, &parts, short, 1e-3, 0.5, 1),
            Err(OptimError::Mismatch(_))
        ));
        let across = [GradPart::F64(&grad[..299]), GradPart::F64(&grad[299..])];
        assert!(matches!(
            adam_b.step_parts(&b, &across, SquaredNorm::of(&grad), 1e-3, 0.5, 1),
            Err(OptimError::Mismatch(_))
        ));
        assert_eq!((adam_b, flat::get_flat(&b).unwrap()), before);
    }

    /// f32 parts with a factor step exactly as the f64 gradient of their
    /// widened entries times the factor (rounded to f64), and their squared
    /// norm is that gradient's: the policy's part as computed (factor 1),
    /// the value network's times c_v.
    #[test]
    fn f32_parts_step_like_their_widened_scaled_entries() {
        use candle_core::{Device, Tensor};
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let g32: Vec<f32> = (0..1000)
            .map(|_| (rng.random::<f32>() - 0.5) * 3.0)
            .collect();
        let c_v = 0.37;
        let widened: Vec<f64> = g32
            .iter()
            .enumerate()
            .map(|(i, &g)| {
                if i < 400 {
                    f64::from(g)
                } else {
                    f64::from(g) * c_v
                }
            })
            .collect();
        let parts = [
            GradPart::F32 {
                grad: &g32[..400],
                scale: 1.0,
            },
            GradPart::F32 {
                grad: &g32[400..],
                scale: c_v,
            },
        ];
        let mut squares = SquaredNorm::default();
        for p in parts {
            squares.add_part(p);
        }
        let whole = SquaredNorm::of(&widened);
        assert_eq!(squares, whole);
        let vars = || -> Vec<Var> {
            [400, 600]
                .iter()
                .map(|&k| {
                    let t = Tensor::from_vec(vec![0.25f32; k], k, &Device::Cpu).unwrap();
                    Var::from_tensor(&t).unwrap()
                })
                .collect()
        };
        let (a, b) = (vars(), vars());
        let (mut adam_a, mut adam_b) = (Adam::new(1000, 1e-5), Adam::new(1000, 1e-5));
        for step in 0..3 {
            let na = adam_a.step_flat(&a, &widened, 1e-3, 0.5, step).unwrap();
            let nb = adam_b
                .step_parts(&b, &parts, squares, 1e-3, 0.5, step)
                .unwrap();
            assert_eq!(na.to_bits(), nb.to_bits());
            assert_eq!(adam_a, adam_b);
            let (fa, fb) = (flat::get_flat(&a).unwrap(), flat::get_flat(&b).unwrap());
            assert_eq!(fa, fb);
        }
        assert!(flat::get_flat(&a).unwrap().iter().any(|&x| x != 0.25));
    }

    #[test]
    fn minimises_a_quadratic() {
        let mut adam = Adam::new(2, 1e-8);
        let mut theta = vec![5.0, -3.0];
        for _ in 0..2000 {
            let grad = [2.0 * (theta[0] - 1.0), 20.0 * (theta[1] + 2.0)];
            adam.step(&mut theta, &grad, 0.05);
        }
        assert!(
            (theta[0] - 1.0).abs() < 1e-3 && (theta[1] + 2.0).abs() < 1e-3,
            "{theta:?}"
        );
    }

    #[test]
    fn clipping_scales_to_the_max_norm_and_reports_the_original() {
        let mut g = vec![3.0, 4.0];
        assert_eq!(clip_grad_norm(&mut g, 0.5), 5.0);
        let n = (g[0] * g[0] + g[1] * g[1]).sqrt();
        assert!((n - 0.5).abs() < 1e-6);
        assert!((g[0] / g[1] - 0.75).abs() < 1e-12);
        let mut small = vec![0.1, 0.1];
        clip_grad_norm(&mut small, 0.5);
        assert_eq!(small, vec![0.1, 0.1]);
        let mut any = vec![30.0, 40.0];
        assert_eq!(clip_grad_norm(&mut any, f64::INFINITY), 50.0);
        assert_eq!(any, vec![30.0, 40.0]);
    }
}
