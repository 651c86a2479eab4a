//! The l1sparse firmware: validates the model in its flash slot at boot, runs the batch of test
//! images in the inputs slot through the sparse engine, and prints each image's logits (as f32
//! bit patterns, for exact comparison with the host), the per-layer cost and peak RAM over defmt.
//!
//! Any problem with the model or the images is a defmt error naming it and, under QEMU, a
//! non-zero exit: never a HardFault.
#![no_std]
#![no_main]

mod regions;
mod stack;
mod timer;

use core::ptr::addr_of_mut;
use cortex_m_rt::{entry, exception, ExceptionFrame};
use model_format::batch::Batch;
use model_format::slot::{read_slot, SlotKind};
use model_format::Model;
use panic_probe as _;
use sparse_engine::{argmax, BufferPlan, Engine, Probe};

#[cfg(feature = "rtt")]
use defmt_rtt as _;
#[cfg(feature = "qemu")]
use defmt_semihosting as _;

/// Activation buffers sized for the recipe's CNN: buffer 0 holds the input (784) and conv2's
/// output (64·7·7 = 3136), buffer 1 conv1's output (32·14·14 = 6272) and fc1's (128).
const BUFFER0: usize = 3136;
const BUFFER1: usize = 6272;
const MAX_CLASSES: usize = 16;
static mut ACTIVATIONS0: [f32; BUFFER0] = [0.0; BUFFER0];
static mut ACTIVATIONS1: [f32; BUFFER1] = [0.0; BUFFER1];
const MAX_LAYERS: usize = model_format::network::MAX_LAYERS;

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

/// Records the counter at each layer boundary.
struct LayerCost {
    started: u64,
    cost: [u64; MAX_LAYERS],
}

impl Probe for LayerCost {
    fn layer_start(&mut self, _layer: usize) {
        self.started = timer::now();
    }
    fn layer_end(&mut self, layer: usize, _macs: u64) {
        if let Some(c) = self.cost.get_mut(layer) {
            *c = timer::now().saturating_sub(self.started);
        }
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
    let validation = timer::now() - before;
    defmt::println!(
        "model ok: {=usize} bytes, {=usize} layers, validated in {=u64} {=str}",
        model_bytes.len(),
        model.layers.len(),
        validation,
        timer::UNIT
    );
    let batch = match read_slot(regions::inputs(), SlotKind::Batch).and_then(Batch::parse) {
        Ok(b) => b,
        Err(e) => {
            defmt::error!("test images: {}", e);
            finish(false)
        }
    };

    // SAFETY: `main` runs once and never returns, and no interrupt handler touches these
    // buffers, so these are the only references to them for the program's life.
    let (buffer0, buffer1) = unsafe {
        (
            &mut *addr_of_mut!(ACTIVATIONS0),
            &mut *addr_of_mut!(ACTIVATIONS1),
        )
    };
    let plan = match BufferPlan::for_model(&model) {
        Ok(p) => p,
        Err(e) => {
            defmt::error!("model cannot run: {}", e);
            finish(false)
        }
    };
    let mut engine = match Engine::new(&model, buffer0, buffer1) {
        Ok(e) => e,
        Err(e) => {
            defmt::error!("model cannot run: {}", e);
            finish(false)
        }
    };
    let classes = engine.classes();
    if classes > MAX_CLASSES {
        defmt::error!(
            "model has {=usize} classes, firmware supports {=usize}",
            classes,
            MAX_CLASSES
        );
        finish(false)
    }
    defmt::println!(
        "plan: activation buffers {=usize} + {=usize} f32, {=usize} bytes used",
        plan.sizes[0],
        plan.sizes[1],
        plan.bytes()
    );

    let mut correct = 0;
    let mut total_cost: u64 = 0;
    let mut last = LayerCost {
        started: 0,
        cost: [0; MAX_LAYERS],
    };
    let mut last_macs = [0u64; MAX_LAYERS];
    for i in 0..batch.len() {
        let Some((image, label)) = batch.get(i) else {
            break;
        };
        let mut logits = [0f32; MAX_CLASSES];
        let mut cost = LayerCost {
            started: 0,
            cost: [0; MAX_LAYERS],
        };
        let start = timer::now();
        let stats = match engine.infer(image, &mut logits[..classes], &mut cost) {
            Ok(s) => s,
            Err(e) => {
                defmt::error!("image {=usize}: {}", i, e);
                finish(false)
            }
        };
        let spent = timer::now() - start;
        total_cost += spent;
        let predicted = argmax(&logits[..classes]);
        correct += usize::from(predicted == usize::from(label));
        let mut bits = [0u32; MAX_CLASSES];
        for (b, l) in bits.iter_mut().zip(&logits[..classes]) {
            *b = l.to_bits();
        }
        defmt::println!(
            "image {=usize} label {=u8} predicted {=usize} cost {=u64} logits {:08x}",
            i,
            label,
            predicted,
            spent,
            &bits[..classes]
        );
        last = cost;
        last_macs = stats.layer_macs;
    }
    for (i, params) in model.layers.iter().enumerate() {
        defmt::println!(
            "layer {=usize} {=str} macs {=u64} {=str} {=u64}",
            i,
            params.layer.name,
            last_macs.get(i).copied().unwrap_or(0),
            timer::UNIT,
            last.cost.get(i).copied().unwrap_or(0)
        );
    }
    let stack_bytes = stack::high_water(free_start, stack_top);
    let static_bytes = free_start - ram_start;
    defmt::println!(
        "ram: static {=usize} bytes (activations {=usize}), stack peak {=usize} bytes, peak {=usize} bytes",
        static_bytes,
        (BUFFER0 + BUFFER1) * 4,
        stack_bytes,
        static_bytes + stack_bytes
    );
    let images = batch.len();
    defmt::println!(
        "done: {=usize} images, {=usize} correct, {=u64} {=str} per image",
        images,
        correct,
        total_cost / images.max(1) as u64,
        timer::UNIT
    );
    finish(true)
}

#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    defmt::error!("HardFault at pc {=u32:08x}", frame.pc());
    finish(false)
}
