//! Kernels, one module per operator. They take validated model views and trust their shapes.

pub mod activation;
pub mod conv;
#[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
mod conv_arm;
pub mod conv_i8;
#[cfg(feature = "dense-kernels")]
mod conv_i8_dense;
mod conv_i8_image;
mod conv_i8_loops;
pub mod dsp;
pub mod linear;
pub mod linear_i8;

/// `row_ptr[i]` (0 past the end): `Indices::get` inlined into the kernels, since the firmware
/// compiles model-format for size and a call per row cost 2% of a sparse inference. Kernels read
/// row pointers through it rather than being generic over their width: fewer copies of each
/// kernel in the image.
#[inline(always)]
pub(crate) fn row_pointer(row_ptr: &model_format::Indices<'_>, i: usize) -> usize {
    use model_format::Indices;
    match row_ptr {
        Indices::U8(s) => s.get(i).map_or(0, |&v| usize::from(v)),
        Indices::U16(s) => s.get(i).map_or(0, |&v| usize::from(v)),
        Indices::U32(s) => s.get(i).map_or(0, |&v| v as usize),
    }
}

/// Column indices of a CSR matrix, at any stored width.
pub trait ColumnIndex: Copy {
    fn index(self) -> usize;
}

impl ColumnIndex for u8 {
    #[inline(always)]
    fn index(self) -> usize {
        usize::from(self)
    }
}

impl ColumnIndex for u16 {
    #[inline(always)]
    fn index(self) -> usize {
        usize::from(self)
    }
}

impl ColumnIndex for u32 {
    #[inline(always)]
    fn index(self) -> usize {
        self as usize
    }
}
