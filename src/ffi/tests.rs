//! Unit tests of the panic boundary and helpers (the C side is tested by tests/c_abi.rs).

use std::os::raw::c_int;

use super::*;

#[test]
fn panic_becomes_an_error_code() {
    let r: c_int = ffi!(code_int, {
        if std::hint::black_box(true) {
            panic!("boom");
        }
        Ok(LISTO_OK)
    });
    assert_eq!(r, listo_err::Panic as c_int);
}

#[test]
fn a_panic_poisons_the_node() {
    unsafe {
        let mut cfg = std::mem::zeroed::<listo_config>();
        assert_eq!(listo_config_init(&mut cfg), LISTO_OK);
        let node = listo_node_new(&cfg);
        assert!(!node.is_null());
        let r: c_int = ffi!(code_int, {
            let _h = node_mut(node)?;
            if std::hint::black_box(true) {
                panic!("boom");
            }
            Ok(LISTO_OK)
        });
        assert_eq!(r, listo_err::Panic as c_int);
        assert_eq!(listo_node_handle_timeout(node, 0), listo_err::Panic as c_int);
        assert_eq!(listo_node_timeout_ns(node), u64::MAX);
        let mut buf = [0 as std::os::raw::c_char; 64];
        assert!(listo_node_last_error(node, buf.as_mut_ptr(), buf.len()) > 0);
        listo_node_free(node);
        listo_node_free(node); // unknown now: ignored
    }
}

#[test]
fn strerror_knows_every_code() {
    let all = [
        listo_err::Null,
        listo_err::Invalid,
        listo_err::UnknownId,
        listo_err::BufferTooSmall,
        listo_err::UnknownChannel,
        listo_err::TooManyChannels,
        listo_err::InvalidState,
        listo_err::Panic,
    ];
    let mut seen = std::collections::HashSet::new();
    for e in all {
        let s = config::strerror(e as c_int);
        assert!(s.ends_with('\0') && s != config::strerror(i32::MIN), "{e:?}");
        assert!(seen.insert(s), "{e:?} shares its text");
    }
    for c in [i32::MIN, -3, -9, -18, -1000, 1, i32::MAX, LISTO_DONE, LISTO_CLOSE, LISTO_OK] {
        assert!(config::strerror(c).ends_with('\0'));
    }
}

#[test]
fn fill_chars_cuts_at_char_boundary() {
    let mut a = [1 as std::os::raw::c_char; 3];
    assert!(fill_chars(&mut a, "aé€"), "é needs 2 bytes, 1 left before the NUL");
    assert_eq!(&a[..2], &[b'a' as std::os::raw::c_char, 0]);
    assert!(!fill_chars(&mut a, "ab"));
    assert_eq!(a, [b'a' as std::os::raw::c_char, b'b' as std::os::raw::c_char, 0]);
    assert!(fill_chars(&mut [], "x"));
}
