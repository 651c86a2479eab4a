//! The l1sparse firmware: validates the model in its flash slot at boot, runs the batch of test
//! images in the inputs slot through the engine for the model's precision (f32 or int8, as the
//! file says), and reports each image's logits (exactly: f32 bit patterns or int8 models' `i32`
//! values, for comparison with the host), the per-layer cost and peak RAM as typed
//! `protocol::Record`s over defmt, with a one-line summary for people.
//!
//! Any problem with the model or the images is a defmt error naming it and, under QEMU, a
//! non-zero exit: never a HardFault.
#![no_std]
#![no_main]

/// The board's facts, from `firmware/boards/<board>/board.toml` (see build.rs).
mod board {
    include!(concat!(env!("OUT_DIR"), "/board.rs"));
}
/// The network the engine's buffers are sized for (see build.rs).
#[allow(unused_imports)]
mod network {
    include!(concat!(env!("OUT_DIR"), "/network.rs"));
}
#[cfg(feature = "f32")]
mod f32;
#[cfg(feature = "int8")]
mod int8;
mod marks;
mod panic;
mod regions;
mod stack;
mod timer;

use cortex_m_rt::{entry, exception, ExceptionFrame};
use model_format::{Model, Precision};
use protocol::batch::Batch;
use protocol::marker::Marker;
use protocol::slot::{read_slot, SlotKind};
use protocol::Record;
use sparse_engine::{EngineError, Probe, Stats};

#[cfg(not(any(feature = "f32", feature = "int8")))]
compile_error!("enable a precision: feature f32, int8 or both (the default)");

#[cfg(feature = "rtt")]
use defmt_rtt as _;
#[cfg(feature = "qemu")]
use defmt_semihosting as _;

/// Classes the logit buffers hold: the network's (a model with more is refused by name), at
/// most what a report record carries.
const MAX_CLASSES: usize = {
    let classes = match network::NETWORK.layers.last() {
        Some(last) => last.outputs,
        None => network::NETWORK.input.len(),
    };
    if classes < protocol::MAX_CLASSES {
        classes
    } else {
        protocol::MAX_CLASSES
    }
};
const MAX_LAYERS: usize = model_format::network::MAX_LAYERS;

/// Sends one report record (postcard bytes in a defmt message, see `protocol`).
fn send(record: &Record) {
    let mut buf = [0u8; protocol::MAX_RECORD];
    match record.encode(&mut buf) {
        Some(bytes) => defmt::println!("{=str} {=[u8]:x}", protocol::TAG, bytes),
        None => defmt::error!("report record too large"),
    }
}

/// Ends the program: a semihosting exit status under QEMU, a breakpoint (probe-rs stops) on boards.
fn finish(success: bool) -> ! {
    #[cfg(feature = "qemu")]
    {
        use cortex_m_semihosting::debug;
        debug::exit(if success {
            debug::EXIT_SUCCESS
        } else {
            debug::EXIT_FAILURE
        });
    }
    let _ = success;
    loop {
        cortex_m::asm::bkpt();
    }
}

/// Sums the counter over each layer's work (streamed layers report several spans).
struct LayerCost {
    started: u64,
    cost: [u64; MAX_LAYERS],
}

impl Probe for LayerCost {
    fn layer_start(&mut self, layer: usize) {
        marks::mark(Marker::LayerStart(layer as u32));
        self.started = timer::now();
    }
    fn layer_end(&mut self, layer: usize) {
        if let Some(c) = self.cost.get_mut(layer) {
            *c += timer::now().saturating_sub(self.started);
        }
        marks::mark(Marker::LayerEnd);
    }
}

#[entry]
fn main() -> ! {
    let (ram_start, free_start, stack_top) = regions::ram_layout();
    stack::paint(free_start);
    let Some(peripherals) = cortex_m::Peripherals::take() else {
        defmt::error!("peripherals already taken");
        finish(false)
    };
    #[cfg(feature = "qemu")]
    timer::start(peripherals.SYST);
    #[cfg(feature = "rtt")]
    timer::start(peripherals.DCB, peripherals.DWT);

    let model_bytes = match read_slot(regions::model(), SlotKind::Model) {
        Ok(bytes) => bytes,
        Err(e) => {
            defmt::error!("model slot: {}", e);
            finish(false)
        }
    };
    let before = timer::now();
    // Only the precisions this image runs (the other's validation code is left out). Borrowed
    // where the parse left it, not moved out of the `Result`: the model's 2.3 KB are on the
    // stack once while the batch runs, not twice.
    let parsed = Model::parse_accepting::<{ cfg!(feature = "f32") }, { cfg!(feature = "int8") }>(
        model_bytes,
    );
    let model = match &parsed {
        Ok(model) => model,
        Err(e) => {
            defmt::error!("model invalid: {}", e);
            finish(false)
        }
    };
    let validation = timer::to_unit(timer::now() - before);
    send_model(model, model_bytes.len(), validation);
    let batch = match read_slot(regions::inputs(), SlotKind::Batch).and_then(Batch::parse) {
        Ok(b) => b,
        Err(e) => {
            defmt::error!("test images: {}", e);
            finish(false)
        }
    };

    // Validation's deeper frames are gone: measure them, then repaint for the run.
    let boot_stack = stack::high_water(free_start, stack_top);
    stack::paint(free_start);
    let outcome = run(model, &batch);
    let run_stack = stack::high_water(free_start, stack_top);
    let Some(outcome) = outcome else {
        finish(false)
    };
    send_outcome(outcome, free_start - ram_start, (boot_stack, run_stack));
    finish(true)
}

/// The validated model's record.
fn send_model(model: &Model<'_>, bytes: usize, validation: u64) {
    send(&Record::Model {
        bytes: bytes as u32,
        layers: model.network.layers.len() as u8,
        precision: match model.precision() {
            Precision::F32 => protocol::Precision::F32,
            Precision::Int8 => protocol::Precision::Int8,
        },
        validation_cost: validation,
        unit: timer::UNIT,
        core_hz: board::CORE_HZ,
    });
}

/// The batch's RAM and totals, as records and a line for people.
fn send_outcome(
    (images, correct, total_cost, engine_bytes): Outcome,
    static_bytes: usize,
    (boot_stack, run_stack): (usize, usize),
) {
    send(&Record::Ram {
        static_bytes: static_bytes as u32,
        activation_bytes: engine_bytes as u32,
        boot_stack: boot_stack as u32,
        run_stack: run_stack as u32,
        peak: (static_bytes + boot_stack.max(run_stack)) as u32,
    });
    send(&Record::Done {
        images: images as u16,
        correct: correct as u16,
        total_cost,
    });
    defmt::println!(
        "done on {=str} ({=str}): {=usize} images, {=usize} correct, cost {=u64} in all",
        board::NAME,
        board::DESCRIPTION,
        images,
        correct,
        total_cost
    );
}

/// One engine, either precision, as the batch loop sees it.
trait Runner {
    fn classes(&self) -> usize;
    /// Runs one image; writes its logits exactly into `bits` and returns the predicted class.
    fn run(
        &mut self,
        image: &[u8],
        bits: &mut [u32],
        probe: &mut LayerCost,
    ) -> Result<usize, EngineError>;
    /// The engine's per-layer MACs of one inference.
    fn stats(&self) -> Stats;
}

/// Runs `infer` on `bits.len()` logits of type `L`, writes them exactly into `bits` and returns
/// the predicted class: what both precisions' [`Runner`]s do around their engine.
#[inline(always)]
fn exact_logits<L: Copy + Default + PartialOrd, const N: usize>(
    bits: &mut [u32],
    to_bits: impl Fn(L) -> u32,
    infer: impl FnOnce(&mut [L]) -> Result<(), EngineError>,
) -> Result<usize, EngineError> {
    let mut logits = [L::default(); N];
    let logits = logits.get_mut(..bits.len()).unwrap_or_default();
    infer(logits)?;
    bits.iter_mut()
        .zip(&*logits)
        .for_each(|(b, &l)| *b = to_bits(l));
    Ok(sparse_engine::argmax(logits))
}

/// Images run, correct predictions, their total cost, and the engine's memory in bytes.
type Outcome = (usize, usize, u64, usize);

/// Runs the batch on the engine for the model's precision, its memory on the stack of that
/// engine's own function (so each precision's peak is its own). `None` after an error.
fn run(model: &Model<'_>, batch: &Batch<'_>) -> Option<Outcome> {
    match model.precision() {
        #[cfg(feature = "f32")]
        Precision::F32 => f32::run(model, batch),
        #[cfg(feature = "int8")]
        Precision::Int8 => int8::run(model, batch),
        #[allow(unreachable_patterns)]
        _ => {
            defmt::error!(
                "this image runs no {} models: build it with that precision's feature",
                model.precision()
            );
            None
        }
    }
}

/// Runs every image of the batch; prints each image's result and the per-layer cost. Returns
/// (images, correct, total cost).
fn run_batch(
    engine: &mut impl Runner,
    model: &Model<'_>,
    batch: &Batch<'_>,
) -> Option<(usize, usize, u64)> {
    let classes = engine.classes();
    if classes > MAX_CLASSES {
        defmt::error!(
            "model has {=usize} classes, firmware supports {=usize}",
            classes,
            MAX_CLASSES
        );
        return None;
    }
    let mut correct = 0;
    let mut total_cost: u64 = 0;
    for i in 0..batch.len() {
        let (image, label) = batch.get(i)?;
        let mut bits = [0u32; MAX_CLASSES];
        let mut cost = LayerCost {
            started: 0,
            cost: [0; MAX_LAYERS],
        };
        let start = timer::now();
        marks::mark(Marker::InferenceStart);
        let result = engine.run(image, &mut bits[..classes], &mut cost);
        marks::mark(Marker::InferenceEnd);
        let predicted = match result {
            Ok(r) => r,
            Err(e) => {
                defmt::error!("image {=usize}: {}", i, e);
                return None;
            }
        };
        let spent = timer::to_unit(timer::now() - start);
        total_cost += spent;
        correct += usize::from(predicted == usize::from(label));
        send(&Record::Image {
            index: i as u16,
            label,
            predicted: predicted as u8,
            cost: spent,
            logit_bits: heapless::Vec::from_slice(&bits[..classes]).unwrap_or_default(),
        });
        // The last image's per-layer cost and MACs, sent while they are at hand (no copies
        // kept on the stack across the batch).
        if i + 1 == batch.len() {
            send_layers(model, &cost.cost, &engine.stats().layer_macs);
        }
    }
    Some((batch.len(), correct, total_cost))
}

/// One record per layer: its MACs and cost (in the timer's unit) for one image.
fn send_layers(model: &Model<'_>, cost: &[u64], macs: &[u64]) {
    for (i, layer) in model.network.layers.iter().enumerate() {
        send(&Record::Layer {
            index: i as u8,
            name: heapless::String::try_from(layer.name).unwrap_or_default(),
            macs: macs.get(i).copied().unwrap_or(0),
            cost: timer::to_unit(cost.get(i).copied().unwrap_or(0)),
        });
    }
}

#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    defmt::error!("HardFault at pc {=u32:08x}", frame.pc());
    finish(false)
}
