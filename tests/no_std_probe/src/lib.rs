//! Exercises the no_std API so that it is linked into the static library.
#![no_std]

use sd_attention::split::energies;

/// Routing fraction of a 2 x 2 kernel, exported so the crate's code is kept.
#[no_mangle]
pub extern "C" fn probe_routing_fraction(a: f32, b: f32, c: f32, d: f32) -> f32 {
    match energies(2, &[a, b, c, d]) {
        Ok(e) => e.routing_fraction(),
        Err(_) => -1.0,
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// With `alloc`, a global allocator must exist; this one never hands out memory.
#[cfg(feature = "alloc")]
mod no_heap {
    use core::alloc::{GlobalAlloc, Layout};
    struct NoHeap;
    unsafe impl GlobalAlloc for NoHeap {
        unsafe fn alloc(&self, _: Layout) -> *mut u8 {
            core::ptr::null_mut()
        }
        unsafe fn dealloc(&self, _: *mut u8, _: Layout) {}
    }
    #[global_allocator]
    static HEAP: NoHeap = NoHeap;
}
