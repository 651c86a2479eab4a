//! Cost counters. Under QEMU (`-icount shift=0`, one instruction per virtual nanosecond) SysTick
//! at the core clock counts instructions exactly; DWT CYCCNT reads 0 there. On real boards DWT
//! counts core cycles.

#[cfg(feature = "qemu")]
mod imp {
    use core::sync::atomic::{AtomicU32, Ordering};
    use cortex_m::peripheral::syst::SystClkSource;
    use cortex_m::peripheral::{SCB, SYST};
    use cortex_m_rt::exception;

    static WRAPS: AtomicU32 = AtomicU32::new(0);
    const RELOAD: u32 = 0x00FF_FFFF;

    /// Core clock QEMU gives SysTick on this machine (ns of virtual time per tick = 1e9 / f).
    const CORE_HZ: u64 = crate::board::CORE_HZ as u64;

    pub const UNIT: protocol::CostUnit = protocol::CostUnit::Instructions;

    #[exception]
    fn SysTick() {
        WRAPS.fetch_add(1, Ordering::Relaxed);
    }

    pub fn start(mut syst: SYST) {
        syst.set_clock_source(SystClkSource::Core);
        syst.set_reload(RELOAD);
        syst.clear_current();
        syst.enable_interrupt();
        syst.enable_counter();
        // QEMU holds the counter at 0 until its first callback and pends a spurious interrupt.
        while SYST::get_current() == 0 {}
        SCB::clear_pendst();
        WRAPS.store(0, Ordering::Relaxed);
    }

    fn ticks() -> u64 {
        loop {
            let before = WRAPS.load(Ordering::Relaxed);
            let current = SYST::get_current();
            if WRAPS.load(Ordering::Relaxed) == before {
                return u64::from(before) * u64::from(RELOAD + 1) + u64::from(RELOAD - current);
            }
        }
    }

    /// SysTick ticks since `start`: cheap to read (no 64-bit division), see [`to_unit`].
    pub fn now() -> u64 {
        ticks()
    }

    /// Ticks as instructions (resolution: one tick, 40 instructions on mps2-an386).
    pub fn to_unit(ticks: u64) -> u64 {
        // A whole number of instructions per tick (40 on mps2-an386) needs no 64-bit division,
        // which would add a kilobyte of code; the branch is decided at compile time.
        if 1_000_000_000 % CORE_HZ == 0 {
            ticks * (1_000_000_000 / CORE_HZ)
        } else {
            ticks * 1_000_000_000 / CORE_HZ
        }
    }
}

#[cfg(feature = "rtt")]
mod imp {
    use cortex_m::peripheral::{DCB, DWT};

    pub const UNIT: protocol::CostUnit = protocol::CostUnit::Cycles;

    pub fn start(mut dcb: DCB, mut dwt: DWT) {
        dcb.enable_trace();
        DWT::unlock();
        dwt.enable_cycle_counter();
    }

    /// Core cycles since `start` (wraps after 2^32; each measured span is far shorter).
    pub fn now() -> u64 {
        u64::from(DWT::cycle_count())
    }

    /// Cycles are already the unit.
    pub fn to_unit(cycles: u64) -> u64 {
        cycles
    }
}

pub use imp::*;
