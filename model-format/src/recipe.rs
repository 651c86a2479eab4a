//! The reference recipe's CNN: the network every stage uses unless told otherwise (the trainer's
//! `--arch`, a file's own description). This constant is the one place it is written.
//!
//! conv 1→32 3x3 pad 1, ReLU, max-pool 2; conv 32→64, ReLU, max-pool 2; fc 3136→128, ReLU;
//! fc 128→10. `fc1` reads conv2's map row by row (`linear_relu_hcw`), so the engine can stream
//! conv2's rows into it instead of storing the map; the trainer keeps PyTorch's channel-major
//! layout and the export permutes the columns.

use crate::network::{Flatten, LayerKind, LayerSpec, NetworkSpec, Shape3};

pub const RECIPE: NetworkSpec<'static> = NetworkSpec {
    input: Shape3 {
        channels: 1,
        height: 28,
        width: 28,
    },
    layers: &[
        LayerSpec {
            name: "conv1",
            kind: LayerKind::Conv3x3ReluMaxPool2,
            outputs: 32,
        },
        LayerSpec {
            name: "conv2",
            kind: LayerKind::Conv3x3ReluMaxPool2,
            outputs: 64,
        },
        LayerSpec {
            name: "fc1",
            kind: LayerKind::Linear {
                relu: true,
                order: Flatten::Hcw,
            },
            outputs: 128,
        },
        LayerSpec {
            name: "fc2",
            kind: LayerKind::Linear {
                relu: false,
                order: Flatten::Chw,
            },
            outputs: 10,
        },
    ],
};
