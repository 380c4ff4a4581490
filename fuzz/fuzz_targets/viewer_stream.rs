#![no_main]
//! cargo-fuzz target `viewer_stream`: see `listo_fuzz::targets::viewer_stream` for the input format and invariants.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    listo_fuzz::targets::viewer_stream(data);
});
