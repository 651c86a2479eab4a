//! A checked front to the `gemm` crate (the matrix kernels Candle itself uses): strided views
//! whose every element is verified to lie in its slice before the unchecked kernel runs.

use num_traits::{One, Zero};

/// The contiguous values of a custom op's three inputs, all `f32` or all `f64`.
pub enum Inputs3<'a> {
    F32([&'a [f32]; 3]),
    F64([&'a [f64]; 3]),
}

/// [`Inputs3`] of three CPU storages; `op` names the op in errors.
pub fn inputs3<'a>(
    op: &str,
    [(s1, l1), (s2, l2), (s3, l3)]: [(&'a candle_core::CpuStorage, &candle_core::Layout); 3],
) -> candle_core::Result<Inputs3<'a>> {
    use candle_core::CpuStorage::{F32, F64};
    let range = |l: &candle_core::Layout| {
        l.contiguous_offsets()
            .map(|(a, b)| a..b)
            .ok_or_else(|| candle_core::Error::Msg(format!("{op}: inputs must be contiguous")))
    };
    let (r1, r2, r3) = (range(l1)?, range(l2)?, range(l3)?);
    Ok(match (s1, s2, s3) {
        (F32(a), F32(b), F32(c)) => Inputs3::F32([&a[r1], &b[r2], &c[r3]]),
        (F64(a), F64(b), F64(c)) => Inputs3::F64([&a[r1], &b[r2], &c[r3]]),
        _ => candle_core::bail!("{op}: f32 or f64, all three alike"),
    })
}

/// A three-input op's gradients for input `x`, kernel `w` and bias `b`, as tensors of their
/// shapes, from the values `(kernel, bias, input if wanted)`.
pub fn grad_tensors<T: candle_core::WithDType>(
    (grad_w, grad_b, grad_x): (Vec<T>, Vec<T>, Option<Vec<T>>),
    [x, w, b]: [&candle_core::Tensor; 3],
) -> candle_core::Result<(
    Option<candle_core::Tensor>,
    Option<candle_core::Tensor>,
    Option<candle_core::Tensor>,
)> {
    let tensor = |v: Vec<T>, like: &candle_core::Tensor| {
        candle_core::Tensor::from_vec(v, like.shape(), like.device())
    };
    Ok((
        grad_x.map(|v| tensor(v, x)).transpose()?,
        Some(tensor(grad_w, w)?),
        Some(tensor(grad_b, b)?),
    ))
}

/// A CPU tensor's values, in order (a copy).
pub fn values<T: candle_core::WithDType>(t: &candle_core::Tensor) -> candle_core::Result<Vec<T>> {
    t.flatten_all()?.to_vec1::<T>()
}

/// Runs `f` on three CPU tensors' values, in order: read in place from their storage when they
/// are contiguous (a custom op's inputs and incoming gradient in its backward pass are), so the
/// backward passes copy no activations; copied otherwise.
pub fn with_values3<T: candle_core::WithDType, R>(
    tensors: [&candle_core::Tensor; 3],
    f: impl FnOnce([&[T]; 3]) -> R,
) -> candle_core::Result<R> {
    // Copies first: a copy takes the storage's lock itself.
    let copies = tensors
        .iter()
        .map(|t| (!t.is_contiguous()).then(|| values::<T>(t)).transpose())
        .collect::<candle_core::Result<Vec<_>>>()?;
    let guards = tensors.map(|t| t.storage_and_layout());
    let mut slices: Vec<&[T]> = Vec::with_capacity(3);
    for ((storage, layout), copy) in guards.iter().zip(&copies) {
        slices.push(match (copy, &**storage, layout.contiguous_offsets()) {
            (Some(copy), _, _) => copy,
            (None, candle_core::Storage::Cpu(cpu), Some((start, end))) => cpu
                .as_slice::<T>()?
                .get(start..end)
                .ok_or_else(|| candle_core::Error::Msg("layout outside its storage".into()))?,
            _ => candle_core::bail!("the trainer's ops run on the CPU"),
        });
    }
    match slices[..] {
        [a, b, c] => Ok(f([a, b, c])),
        _ => candle_core::bail!("three tensors"),
    }
}

/// A `rows × cols` matrix inside `data`: element (i, j) at `i·row_stride + j·col_stride`.
#[derive(Clone, Copy)]
pub struct MatRef<'a, T> {
    pub data: &'a [T],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a, T> MatRef<'a, T> {
    /// Row-major, contiguous.
    pub fn rows(data: &'a [T], rows: usize, cols: usize) -> Self {
        MatRef {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose (no copy).
    pub fn t(self) -> Self {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    /// Whether every element lies inside `data`.
    fn in_bounds(&self) -> bool {
        if self.rows == 0 || self.cols == 0 {
            return true;
        }
        let last = (self.rows - 1)
            .checked_mul(self.row_stride)
            .zip((self.cols - 1).checked_mul(self.col_stride))
            .and_then(|(a, b)| a.checked_add(b));
        last.is_some_and(|l| l < self.data.len())
            && isize::try_from(self.row_stride.max(self.col_stride)).is_ok()
    }
}

/// `dst = a · b` (or `dst += a · b` when `accumulate`), `dst` row-major `a.rows × b.cols`,
/// on every core.
pub fn matmul<T: 'static + Copy + Zero + One>(
    dst: &mut [T],
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    accumulate: bool,
) -> candle_core::Result<()> {
    matmul_on(dst, a, b, accumulate, true)
}

/// [`matmul`] on every core when `parallel`, else on the calling thread only.
pub fn matmul_on<T: 'static + Copy + Zero + One>(
    dst: &mut [T],
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    accumulate: bool,
    parallel: bool,
) -> candle_core::Result<()> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if b.rows != k || dst.len() != m * n || !a.in_bounds() || !b.in_bounds() {
        candle_core::bail!(
            "matmul: shapes ({m}x{k}) · ({}x{n}) into {} values",
            b.rows,
            dst.len()
        );
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let threads = rayon::current_num_threads();
    let parallelism = if parallel && threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: `dst` holds exactly m·n elements addressed as row-major (row stride n, column
    // stride 1); `in_bounds` checked that every element (i, j) of `a` (m×k) and `b` (k×n) lies
    // inside its slice, with strides that fit `isize`. `dst` is a unique borrow and does not
    // overlap the shared `a` and `b`. gemm reads `dst` only when `read_dst` is set, and it is
    // initialised memory either way.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            parallelism,
        );
    }
    Ok(())
}
