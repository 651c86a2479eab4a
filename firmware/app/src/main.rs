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
mod marks;
mod regions;
mod stack;
mod timer;

use cortex_m_rt::{entry, exception, ExceptionFrame};
use model_format::{Model, Precision};
use panic_probe as _;
use protocol::batch::Batch;
use protocol::marker::Marker;
use protocol::slot::{read_slot, SlotKind};
use protocol::Record;
use sparse_engine::{
    argmax, BufferPlan, Cursor, Engine, EngineError, Int8Engine, Int8Memory, Int8Plan, Probe, Stats,
};

#[cfg(feature = "rtt")]
use defmt_rtt as _;
#[cfg(feature = "qemu")]
use defmt_semihosting as _;

/// Engine memory, from the engine's bound for the network this firmware is built for (the
/// recipe's CNN unless built with `L1SPARSE_NETWORK`; a smaller network fits too, a larger one
/// is refused by `Engine::new` by name).
/// It lives on the stack of `run_f32` or `run_int8`, which start after validation has returned, so
/// the two phases share RAM.
const PLAN: BufferPlan = match BufferPlan::for_spec(&network::NETWORK) {
    Ok(plan) => plan,
    Err(_) => panic!("the network has no buffer plan"),
};
/// The same bound for int8 models.
const INT8_PLAN: Int8Plan = match Int8Plan::for_spec(&network::NETWORK) {
    Ok(plan) => plan,
    Err(_) => panic!("the network has no int8 buffer plan"),
};
const ACTIVATIONS: usize = PLAN.activations;
const TAP_OFFSETS: usize = PLAN.tap_offsets;
const MAX_CLASSES: usize = protocol::MAX_CLASSES;
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
    let model = match Model::parse(model_bytes) {
        Ok(m) => m,
        Err(e) => {
            defmt::error!("model invalid: {}", e);
            finish(false)
        }
    };
    let validation = timer::to_unit(timer::now() - before);
    send(&Record::Model {
        bytes: model_bytes.len() as u32,
        layers: model.network.layers.len() as u8,
        precision: match model.precision {
            Precision::F32 => protocol::Precision::F32,
            Precision::Int8 => protocol::Precision::Int8,
        },
        validation_cost: validation,
        unit: timer::UNIT,
        core_hz: board::CORE_HZ,
    });
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
    let outcome = run(&model, &batch);
    let run_stack = stack::high_water(free_start, stack_top);
    let Some((images, correct, cost_per_image, engine_bytes)) = outcome else {
        finish(false)
    };
    let static_bytes = free_start - ram_start;
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
        cost_per_image,
    });
    defmt::println!(
        "done on {=str} ({=str}): {=usize} images, {=usize} correct, {=u64} per image",
        board::NAME,
        board::DESCRIPTION,
        images,
        correct,
        cost_per_image
    );
    finish(true)
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
    ) -> Result<(usize, Stats), EngineError>;
}

impl Runner for Engine<'_, '_> {
    fn classes(&self) -> usize {
        Engine::classes(self)
    }
    fn run(
        &mut self,
        image: &[u8],
        bits: &mut [u32],
        probe: &mut LayerCost,
    ) -> Result<(usize, Stats), EngineError> {
        let mut logits = [0f32; MAX_CLASSES];
        let logits = logits.get_mut(..bits.len()).unwrap_or_default();
        let stats = self.infer(image, logits, probe)?;
        bits.iter_mut()
            .zip(&*logits)
            .for_each(|(b, l)| *b = l.to_bits());
        Ok((argmax(logits), stats))
    }
}

impl Runner for Int8Engine<'_, '_> {
    fn classes(&self) -> usize {
        Int8Engine::classes(self)
    }
    fn run(
        &mut self,
        image: &[u8],
        bits: &mut [u32],
        probe: &mut LayerCost,
    ) -> Result<(usize, Stats), EngineError> {
        let mut logits = [0i32; MAX_CLASSES];
        let logits = logits.get_mut(..bits.len()).unwrap_or_default();
        let stats = self.infer(image, logits, probe)?;
        bits.iter_mut()
            .zip(&*logits)
            .for_each(|(b, &l)| *b = l as u32);
        Ok((argmax(logits), stats))
    }
}

/// Images run, correct predictions, average cost per image, and the engine's memory in bytes.
type Outcome = (usize, usize, u64, usize);

/// Runs the batch on the engine for the model's precision, its memory on the stack of that
/// engine's own function (so each precision's peak is its own). `None` after an error.
fn run(model: &Model<'_>, batch: &Batch<'_>) -> Option<Outcome> {
    match model.precision {
        Precision::F32 => run_f32(model, batch),
        Precision::Int8 => run_int8(model, batch),
    }
}

#[inline(never)]
fn run_f32(model: &Model<'_>, batch: &Batch<'_>) -> Option<Outcome> {
    let mut activations = [0f32; ACTIVATIONS];
    let mut tap_offsets = [0u16; TAP_OFFSETS];
    let outcome = match Engine::new(model, &mut activations, &mut tap_offsets) {
        Ok(mut engine) => {
            run_batch(&mut engine, model, batch).map(|(n, c, cost)| (n, c, cost, PLAN.bytes()))
        }
        Err(e) => {
            defmt::error!("model cannot run: {}", e);
            None
        }
    };
    outcome
}

#[inline(never)]
fn run_int8(model: &Model<'_>, batch: &Batch<'_>) -> Option<Outcome> {
    let mut activations = [0i16; INT8_PLAN.activations];
    let mut accumulators = [0i32; INT8_PLAN.accumulators];
    let mut tap_offsets = [0u16; INT8_PLAN.tap_offsets];
    let mut cursors = [Cursor::default(); INT8_PLAN.cursors];
    let mut scratch = [0u32; INT8_PLAN.scratch];
    let memory = Int8Memory {
        activations: &mut activations,
        accumulators: &mut accumulators,
        tap_offsets: &mut tap_offsets,
        cursors: &mut cursors,
        scratch: &mut scratch,
    };
    let outcome = match Int8Engine::new(model, memory) {
        Ok(mut engine) => run_batch(&mut engine, model, batch)
            .map(|(n, c, cost)| (n, c, cost, INT8_PLAN.total_bytes())),
        Err(e) => {
            defmt::error!("model cannot run: {}", e);
            None
        }
    };
    outcome
}

/// Runs every image of the batch; prints each image's result and the per-layer cost. Returns
/// (images, correct, average cost per image).
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
    let mut last = [0u64; MAX_LAYERS];
    let mut last_macs = [0u64; MAX_LAYERS];
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
        let (predicted, stats) = match result {
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
        last = cost.cost;
        last_macs = stats.layer_macs;
    }
    for (i, layer) in model.network.layers.iter().enumerate() {
        send(&Record::Layer {
            index: i as u8,
            name: heapless::String::try_from(layer.name).unwrap_or_default(),
            macs: last_macs.get(i).copied().unwrap_or(0),
            cost: timer::to_unit(last.get(i).copied().unwrap_or(0)),
        });
    }
    let images = batch.len();
    Some((images, correct, total_cost / images.max(1) as u64))
}

#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    defmt::error!("HardFault at pc {=u32:08x}", frame.pc());
    finish(false)
}
