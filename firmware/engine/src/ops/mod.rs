//! Kernels, one module per operator. They take validated model views and trust their shapes.

pub mod activation;
pub mod conv;
#[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
mod conv_arm;
pub mod conv_i8;
#[cfg(feature = "dense-kernels")]
mod conv_i8_dense;
mod conv_i8_loops;
pub mod dsp;
pub mod linear;
pub mod linear_i8;

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
