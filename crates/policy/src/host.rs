//! The arithmetic of the MLP's hand-written passes on host memory: one
//! matrix product, the activation and its derivative, for f32 and f64.
//!
//! [`crate::MlpLinearization`] on the CPU runs on these instead of candle
//! tensor ops. For the small networks of reinforcement learning (64–256
//! wide, minibatches of 64–2048 rows) candle's per-op costs — a zeroed
//! allocation per result, one pass per element-wise op, the dispatch and a
//! `getenv` in every matrix product — took as long as the products
//! themselves. Here the bias, the activation and its derivative are one
//! pass over a layer's output, and the products are the same `gemm` calls
//! candle 0.11's CPU backend makes, with the same arguments (no
//! parallelism inside a product: klrl runs the policy and value networks on
//! two threads instead). So every result is bit for bit the one of the
//! tensor implementation, which stays as the test oracle and the path for
//! other devices (`tests/host_linearization.rs`).

use candle_core::{Device, Tensor};

use crate::error::{Context, Result};

/// An element type of the host passes: f32 or f64.
pub(crate) trait HostFloat:
    Copy
    + Send
    + Sync
    + PartialOrd
    + std::fmt::Debug
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::AddAssign
    + std::ops::MulAssign
    + candle_core::WithDType
    + 'static
{
    const ZERO: Self;
    const ONE: Self;

    /// `tanh` of every element, in place, as the tensor path computes it:
    /// [`crate::tanh`]'s vectorised Cephes `tanhf` for f32, libm's `tanh`
    /// (candle's op) for f64.
    fn tanh_in_place(xs: &mut [Self]);

    /// `max(x, 0)` as candle's `relu` computes it (`f32::max`: NaN → 0).
    fn relu(self) -> Self;

    /// `x as Self` (round to nearest for f32).
    fn narrow(x: f64) -> Self;
}

impl HostFloat for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;

    fn tanh_in_place(xs: &mut [f32]) {
        crate::tanh::tanh_in_place(xs);
    }

    fn relu(self) -> f32 {
        self.max(0.0)
    }

    fn narrow(x: f64) -> f32 {
        x as f32
    }
}

impl HostFloat for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;

    fn tanh_in_place(xs: &mut [f64]) {
        for x in xs {
            *x = x.tanh();
        }
    }

    fn relu(self) -> f64 {
        self.max(0.0)
    }

    fn narrow(x: f64) -> f64 {
        x
    }
}

/// A matrix in host memory, read through strides: element `(i, j)` is
/// `data[i * rs + j * cs]` (a transposed view swaps the two).
#[derive(Debug, Clone, Copy)]
pub(crate) struct View<'a, T> {
    pub data: &'a [T],
    pub rows: usize,
    pub cols: usize,
    /// Row stride.
    pub rs: usize,
    /// Column stride.
    pub cs: usize,
}

impl<'a, T> View<'a, T> {
    /// A contiguous row-major `rows × cols` matrix.
    pub fn new(data: &'a [T], rows: usize, cols: usize) -> Self {
        View {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose (no copy): candle's `t()`.
    pub fn t(self) -> Self {
        View {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// Whether every element the strides address lies inside `data`.
    fn in_bounds(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// `a · b` as a new contiguous row-major `[a.rows, b.cols]` matrix: the call
/// candle 0.11's CPU `matmul` makes (`read_dst` false, α = 0, β = 1, no
/// parallelism), so the result is bit for bit candle's with
/// `RAYON_NUM_THREADS=1`.
///
/// # Panics
/// If the inner sizes differ or a view reaches outside its slice (a
/// programming error in this crate: the shapes come from the network).
pub(crate) fn matmul<T: HostFloat>(a: View<T>, b: View<T>) -> Vec<T> {
    let (m, n) = (a.rows, b.cols);
    let mut dst: Vec<T> = Vec::with_capacity(m * n);
    // SAFETY: dst has room for m × n elements and does not overlap a or b
    // (it is fresh); gemm_into writes all of them without reading any.
    unsafe {
        gemm_into(a, b, dst.as_mut_ptr());
        dst.set_len(m * n);
    }
    dst
}

/// [`matmul`] written into `dst` (`[a.rows, b.cols]` row-major, its old
/// values neither read nor kept): the same call, so the same bits, without
/// a new vector (e.g. straight into a flat gradient).
///
/// # Panics
/// As [`matmul`], and if `dst` does not hold exactly `a.rows × b.cols`
/// elements.
pub(crate) fn matmul_into<T: HostFloat>(a: View<T>, b: View<T>, dst: &mut [T]) {
    assert_eq!(dst.len(), a.rows * b.cols, "host matmul: destination size");
    // SAFETY: dst holds m × n elements (checked) and, as a unique borrow,
    // overlaps neither a nor b.
    unsafe { gemm_into(a, b, dst.as_mut_ptr()) }
}

/// gemm's `dst = a · b` with candle's arguments (see [`matmul`]), every
/// element of `dst` written (zeros when the inner size is 0).
///
/// # Safety
/// `dst` must be valid for writing `a.rows × b.cols` elements at row stride
/// `b.cols` and must not overlap `a.data` or `b.data`.
///
/// # Panics
/// If the inner sizes differ or a view reaches outside its slice.
unsafe fn gemm_into<T: HostFloat>(a: View<T>, b: View<T>, dst: *mut T) {
    assert_eq!(a.cols, b.rows, "host matmul: inner sizes");
    assert!(a.in_bounds() && b.in_bounds(), "host matmul: view bounds");
    let (m, n, k) = (a.rows, b.cols, a.cols);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // SAFETY: the caller's promise: m × n writable elements.
        unsafe { std::ptr::write_bytes(dst, 0, m * n) };
        return;
    }
    // SAFETY: the caller's promise for dst (room for m × n elements at row
    // stride n, no overlap); every element of a and b the strides address
    // is inside its slice (checked above). With α = 0 and read_dst false
    // gemm writes every element of dst without reading it.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            n as isize,
            false,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            T::ZERO,
            T::ONE,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// The elements of `t` in row-major order, as `T` (the tensor must already
/// be of `T`'s dtype).
pub(crate) fn to_host<T: HostFloat>(t: &Tensor, what: &'static str) -> Result<Vec<T>> {
    t.flatten_all().and_then(|f| f.to_vec1::<T>()).ctx(what)
}

/// A tensor of `shape` from host data.
pub(crate) fn to_tensor<T: HostFloat>(
    data: Vec<T>,
    shape: &[usize],
    device: &Device,
    what: &'static str,
) -> Result<Tensor> {
    Tensor::from_vec(data, shape, device).ctx(what)
}
