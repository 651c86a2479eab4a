//! The markers the firmware executes around each inference and each layer's work, for the
//! cycle estimate: the firmware has a table of [`COUNT`] return instructions, one per marker,
//! and calls entry `k` to say "marker k happens now". A QEMU plugin (`xtask/qemu-plugin`) sees
//! which entry ran and files every instruction executed after it under that marker, until the
//! next one. Only the meaning of the numbers is shared here; nothing is sent.

/// Layers a marker can name (the firmware's `model_format::network::MAX_LAYERS`).
pub const LAYERS: u32 = 8;

/// What happens at a marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// Work for layer `n` starts (streamed layers start and end several times per inference).
    LayerStart(u32),
    /// The current layer's work ends: what follows is the inference's own overhead.
    LayerEnd,
    /// An inference (one image through the engine) starts.
    InferenceStart,
    /// The inference ends: what follows is the firmware's own work (reporting, timing).
    InferenceEnd,
}

/// Entries in the marker table.
pub const COUNT: u32 = LAYERS + 3;

impl Marker {
    /// The table entry.
    pub const fn index(self) -> u32 {
        match self {
            Marker::LayerStart(n) => n,
            Marker::LayerEnd => LAYERS,
            Marker::InferenceStart => LAYERS + 1,
            Marker::InferenceEnd => LAYERS + 2,
        }
    }

    /// The marker at table entry `index`, if there is one.
    pub const fn from_index(index: u32) -> Option<Marker> {
        match index {
            n if n < LAYERS => Some(Marker::LayerStart(n)),
            n if n == LAYERS => Some(Marker::LayerEnd),
            n if n == LAYERS + 1 => Some(Marker::InferenceStart),
            n if n == LAYERS + 2 => Some(Marker::InferenceEnd),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_is_one_marker() {
        for i in 0..COUNT {
            let m = Marker::from_index(i).unwrap();
            assert_eq!(m.index(), i);
        }
        assert_eq!(Marker::from_index(COUNT), None);
        assert_eq!(Marker::LayerStart(LAYERS - 1).index(), LAYERS - 1);
    }
}
