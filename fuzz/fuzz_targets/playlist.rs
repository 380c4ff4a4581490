#![no_main]
//! cargo-fuzz target `playlist`: see `listo_fuzz::targets::playlist` for the input format and invariants.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    listo_fuzz::targets::playlist(data);
});
