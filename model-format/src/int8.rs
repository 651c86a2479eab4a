//! Int8 layers (format 1.3, SPEC §4.1): their validated views and how the reader builds them.

use crate::container::Dtype;
use crate::error::{Error, Part};
use crate::model::{Indices, LayerBuilder};
use crate::network::LayerKind;
use crate::quant::{accumulator_fits, MAX_WEIGHT, SHIFTS};

/// Compressed sparse rows with one-byte column steps: row `r`'s entries are
/// `values[row_ptr[r]..row_ptr[r+1]]`; an entry's column is the previous entry's plus its
/// `col_delta` (the first entry of a row: 0 plus its delta). Validated: columns strictly increase
/// within a row and stay below `cols`; values are in −127..=127. Entries may be zero (the writer
/// inserts zero entries to bridge gaps longer than 255 columns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsrI8<'a> {
    pub rows: usize,
    pub cols: usize,
    pub row_ptr: Indices<'a>,
    pub col_delta: &'a [u8],
    pub values: &'a [i8],
}

impl<'a> CsrI8<'a> {
    /// Stored entries, zero-valued bridges included.
    pub fn entries(&self) -> usize {
        self.values.len()
    }

    /// Row `row`'s (column, value) pairs in order.
    pub fn row(&self, row: usize) -> impl Iterator<Item = (usize, i8)> + 'a {
        let (from, to) = (
            self.row_ptr.get(row).unwrap_or(0),
            self.row_ptr.get(row + 1).unwrap_or(0),
        );
        let deltas = self.col_delta.get(from..to).unwrap_or(&[]);
        let values = self.values.get(from..to).unwrap_or(&[]);
        deltas.iter().zip(values).scan(0usize, |col, (&d, &v)| {
            *col += usize::from(d);
            Some((*col, v))
        })
    }
}

/// An int8 layer's weight matrix (`rows x cols`, columns as [`Layer::cols`] says).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsI8<'a> {
    /// Row-major, `rows · cols` values.
    Dense(&'a [i8]),
    Csr(CsrI8<'a>),
}

impl WeightsI8<'_> {
    /// Non-zero weights.
    pub fn nnz(&self) -> usize {
        match self {
            WeightsI8::Dense(v) => v.iter().filter(|&&w| w != 0).count(),
            WeightsI8::Csr(c) => c.values.iter().filter(|&&w| w != 0).count(),
        }
    }
}

/// An int8 layer's parameters (its shape is the network's layer of the same index): weights,
/// `i32` bias in accumulator units (input scale × the row's weight scale) and the per-row
/// requantization of the accumulator to the layer's output. (The real
/// scales, for densifying, follow from the requantization and the `output_scales` metadata:
/// [`crate::quant::weight_scale`].)
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerParamsI8<'a> {
    pub weights: WeightsI8<'a>,
    pub bias: &'a [i32],
    pub multiplier: &'a [i32],
    pub shift: &'a [u8],
}

impl<'a> LayerBuilder<'_, 'a> {
    /// A layer of an int8 model (`last`: the network's last layer, the only one allowed
    /// without ReLU).
    pub(crate) fn build_int8(mut self, last: bool) -> Result<LayerParamsI8<'a>, Error> {
        let (index, rows, cols) = (self.index, self.layer.rows(), self.layer.cols());
        let relu = match self.layer.kind {
            LayerKind::Conv3x3ReluMaxPool2 => true,
            LayerKind::Linear { relu, .. } => relu,
        };
        if !relu && !last {
            return Err(Error::Int8NeedsRelu { layer: index });
        }
        let bias: &[i32] = self.typed(".bias", Part::Bias, Dtype::I32, &[rows])?;
        let multiplier: &[i32] =
            self.typed(".output.multiplier", Part::Multiplier, Dtype::I32, &[rows])?;
        let shift: &[u8] = self.typed(".output.shift", Part::Shift, Dtype::U8, &[rows])?;
        let out_of_range = |part, index| Error::ValueOutOfRange {
            layer: self.index,
            part,
            index,
        };
        if let Some(i) = multiplier.iter().position(|&m| m < 0) {
            return Err(out_of_range(Part::Multiplier, i));
        }
        if let Some(i) = shift.iter().position(|s| !SHIFTS.contains(s)) {
            return Err(out_of_range(Part::Shift, i));
        }
        let weights = match self.encoding()? {
            "dense" => {
                let (shape, rank) = self.layer.weight_shape();
                WeightsI8::Dense(self.typed(".weight", Part::Weight, Dtype::I8, &shape[..rank])?)
            }
            "csr-delta" => WeightsI8::Csr(self.csr_i8(rows, cols)?),
            _ => {
                return Err(Error::UnknownEncoding {
                    layer: index,
                    part: Part::Weight,
                })
            }
        };
        check_weights(index, rows, cols, &weights, bias)?;
        Ok(LayerParamsI8 {
            weights,
            bias,
            multiplier,
            shift,
        })
    }

    /// A tensor of one exact dtype, viewed in place.
    fn typed<T: bytemuck::Pod>(
        &mut self,
        suffix: &str,
        part: Part,
        dtype: Dtype,
        shape: &[usize],
    ) -> Result<&'a [T], Error> {
        let (t, raw) = self.tensor(suffix, part, shape)?;
        if raw.dtype != dtype {
            return Err(Error::WrongDtype {
                layer: self.index,
                part,
            });
        }
        bytemuck::try_cast_slice(raw.data).map_err(|_| Error::Misaligned { tensor: t })
    }

    fn csr_i8(&mut self, rows: usize, cols: usize) -> Result<CsrI8<'a>, Error> {
        let layer = self.index;
        let mut buf = heapless::String::new();
        let values_name = self.name(&mut buf, ".weight.values");
        let nnz = self
            .container
            .tensor(values_name)
            .map(|(_, r)| r.shape().first().copied().unwrap_or(0))
            .ok_or(Error::MissingTensor {
                layer,
                part: Part::Values,
            })?;
        let values: &[i8] = self.typed(".weight.values", Part::Values, Dtype::I8, &[nnz])?;
        let row_ptr = self.indices(".weight.row_ptr", Part::RowPtr, rows + 1)?;
        let col_delta: &[u8] =
            self.typed(".weight.col_delta", Part::ColDelta, Dtype::U8, &[nnz])?;
        if row_ptr.get(0) != Some(0) || row_ptr.get(rows) != Some(nnz) {
            return Err(Error::BadRowPointers { layer, row: 0 });
        }
        for row in 0..rows {
            let (start, end) = match (row_ptr.get(row), row_ptr.get(row + 1)) {
                (Some(s), Some(e)) if s <= e && e <= nnz => (s, e),
                _ => return Err(Error::BadRowPointers { layer, row }),
            };
            let deltas = col_delta.get(start..end).unwrap_or(&[]);
            if deltas.iter().skip(1).any(|&d| d == 0) {
                return Err(Error::IndicesNotIncreasing { layer, row });
            }
            let last = deltas.iter().map(|&d| usize::from(d)).sum::<usize>();
            if end > start && last >= cols {
                return Err(Error::IndexOutOfRange { layer, row });
            }
        }
        Ok(CsrI8 {
            rows,
            cols,
            row_ptr,
            col_delta,
            values,
        })
    }
}

/// Weights in −127..=127 and every row's accumulator within `i32` (SPEC §4.1).
fn check_weights(
    layer: usize,
    rows: usize,
    cols: usize,
    weights: &WeightsI8<'_>,
    bias: &[i32],
) -> Result<(), Error> {
    let values = match weights {
        WeightsI8::Dense(v) => v,
        WeightsI8::Csr(c) => c.values,
    };
    if let Some(index) = values.iter().position(|&w| i32::from(w).abs() > MAX_WEIGHT) {
        return Err(Error::ValueOutOfRange {
            layer,
            part: Part::Weight,
            index,
        });
    }
    for (row, &b) in bias.iter().enumerate().take(rows) {
        let fits = match weights {
            WeightsI8::Dense(v) => {
                let w = v.get(row * cols..(row + 1) * cols).unwrap_or(&[]);
                accumulator_fits(b, w.iter().copied())
            }
            WeightsI8::Csr(c) => accumulator_fits(b, c.row(row).map(|(_, w)| w)),
        };
        if !fits {
            return Err(Error::AccumulatorRange { layer, row });
        }
    }
    Ok(())
}
