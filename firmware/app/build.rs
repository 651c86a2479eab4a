//! Picks the board (from its feature) and reads its description in `firmware/boards/<board>/`:
//! the memory map (`memory.x`, plus the model and input regions' symbols) for the linker, and
//! the board's facts (`board.toml`) as constants in `board.rs`. Writes `network.rs`: the
//! network the engine's buffers are sized for, the recipe's unless `L1SPARSE_NETWORK` gives
//! another as `INPUT;LAYERS` in the model file's metadata syntax (SPEC §2–3).

use std::path::{Path, PathBuf};

const BOARDS: [&str; 4] = ["mps2-an386", "netduinoplus2", "nrf52840dk", "stm32f407"];

/// The facts of `board.toml` the firmware uses.
#[derive(serde::Deserialize)]
struct Board {
    description: String,
    core_hz: u64,
}

fn main() {
    let chosen: Vec<&str> = BOARDS
        .iter()
        .copied()
        .filter(|b| {
            let feature = format!("CARGO_FEATURE_{}", b.to_uppercase().replace('-', "_"));
            std::env::var_os(feature).is_some()
        })
        .collect();
    let board = match chosen.as_slice() {
        [one] => *one,
        _ => panic!("enable exactly one board feature: {}", BOARDS.join(", ")),
    };
    let dir = Path::new("../boards").join(board);
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let memory = std::fs::read_to_string(dir.join("memory.x")).expect("the board's memory.x");
    let regions = "
_model_start = ORIGIN(MODEL);
_model_len = LENGTH(MODEL);
_inputs_start = ORIGIN(INPUTS);
_inputs_len = LENGTH(INPUTS);
_ram_start = ORIGIN(RAM);
";
    std::fs::write(out.join("memory.x"), memory + regions).expect("writing memory.x");
    let facts = std::fs::read_to_string(dir.join("board.toml")).expect("the board's board.toml");
    let facts: Board = toml::from_str(&facts).expect("board.toml: description, core_hz");
    let constants = format!(
        "/// The board this image is built for.\npub const NAME: &str = {board:?};\n\
         /// {}.\npub const DESCRIPTION: &str = {:?};\n\
         /// The core clock (SysTick's under QEMU).\npub const CORE_HZ: u32 = {};\n",
        facts.description, facts.description, facts.core_hz
    );
    std::fs::write(out.join("board.rs"), constants).expect("writing board.rs");
    let model = embed(&out);
    let scratch = model_scratch_source(model.as_deref());
    std::fs::write(out.join("network.rs"), network_source() + &scratch)
        .expect("writing network.rs");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-env-changed=L1SPARSE_NETWORK");
    println!("cargo:rerun-if-changed=../boards/{board}");
    println!("cargo:rerun-if-changed=build.rs");
}

/// Slot images to embed (`cargo xtask firmware --embed` sets these): `L1SPARSE_EMBED_MODEL` and
/// `L1SPARSE_EMBED_INPUTS` name slot files (as `trainer device-files` writes them), copied into
/// `OUT_DIR` for `include_bytes!` and announced by the cfgs `embedded_model`/`embedded_inputs`.
/// Returns the embedded model's slot copy.
fn embed(out: &Path) -> Option<PathBuf> {
    let mut model = None;
    println!("cargo::rustc-check-cfg=cfg(embedded_model, embedded_inputs)");
    for (var, file, cfg) in [
        ("L1SPARSE_EMBED_MODEL", "model.slot", "embedded_model"),
        ("L1SPARSE_EMBED_INPUTS", "inputs.slot", "embedded_inputs"),
    ] {
        println!("cargo:rerun-if-env-changed={var}");
        let Some(path) = std::env::var_os(var) else {
            continue;
        };
        let path = PathBuf::from(path);
        println!("cargo:rerun-if-changed={}", path.display());
        std::fs::copy(&path, out.join(file))
            .unwrap_or_else(|e| panic!("{var}={}: {e}", path.display()));
        println!("cargo:rustc-cfg={cfg}");
        if cfg == "embedded_model" {
            model = Some(out.join(file));
        }
    }
    model
}

/// `MODEL_SCRATCH`: the int8 conv kernels' scratch (words) the embedded model needs, which an
/// image that runs only that model sizes its scratch by (`Int8Plan::with_scratch_at_most`); the
/// network's bound fits any model of it, and the longest sparse row is far shorter than a
/// dense one. `None` without an int8 model built in. The engine here is built with
/// `dense-kernels`, which bounds both kernel sets (the firmware takes the smaller of this and
/// its own network bound).
fn model_scratch_source(slot: Option<&Path>) -> String {
    let words = slot.and_then(|slot| {
        let bytes = std::fs::read(slot).expect("reading the embedded model's slot");
        let payload = protocol::slot::read_slot(&bytes, protocol::slot::SlotKind::Model)
            .unwrap_or_else(|e| panic!("the embedded model's slot: {e:?}"));
        // The reader wants the file 4-byte aligned, as in flash.
        let mut buffer = vec![0u8; payload.len() + 3];
        let at = buffer.as_ptr().align_offset(4);
        let aligned = &mut buffer[at..at + payload.len()];
        aligned.copy_from_slice(payload);
        let model = model_format::Model::parse(aligned)
            .unwrap_or_else(|e| panic!("the embedded model: {e}"));
        sparse_engine::Int8Plan::for_model(&model)
            .ok()
            .map(|plan| plan.scratch)
    });
    format!(
        "/// Int8 conv scratch (words) the built-in model needs (`None`: any model of the network).\n\
         #[cfg_attr(not(feature = \"int8\"), allow(dead_code))]\n\
         pub const MODEL_SCRATCH: Option<usize> = {words:?};\n"
    )
}

/// `NETWORK`, a `model_format::NetworkSpec` constant.
fn network_source() -> String {
    let Ok(spec) = std::env::var("L1SPARSE_NETWORK") else {
        return "pub use model_format::RECIPE as NETWORK;\n".into();
    };
    let (input, layers) = spec.split_once(';').expect(
        "L1SPARSE_NETWORK is INPUT;LAYERS, e.g. 1x28x28;conv1:conv3x3_relu_maxpool2:1:8,...",
    );
    let network = model_format::Network::parse(input, layers)
        .unwrap_or_else(|e| panic!("L1SPARSE_NETWORK: {e}"));
    let i = network.input;
    let mut code = format!(
        "use model_format::{{Flatten, LayerKind, LayerSpec, NetworkSpec, Shape3}};\n\
         pub const NETWORK: NetworkSpec<'static> = NetworkSpec {{\n\
         input: Shape3 {{ channels: {}, height: {}, width: {} }},\nlayers: &[\n",
        i.channels, i.height, i.width
    );
    for l in &network.layers {
        let kind = match l.kind {
            model_format::LayerKind::Conv3x3ReluMaxPool2 => "LayerKind::Conv3x3ReluMaxPool2".into(),
            model_format::LayerKind::Linear { relu, order } => {
                format!("LayerKind::Linear {{ relu: {relu}, order: Flatten::{order:?} }}")
            }
        };
        code += &format!(
            "LayerSpec {{ name: {:?}, kind: {kind}, outputs: {} }},\n",
            l.name, l.output.channels
        );
    }
    code + "],\n};\n"
}
