//! The five C-ABI host hooks that sqlite-wasm-rs (the SQLite inside
//! `davsync-core` on `wasm32-unknown-unknown`) links against when built
//! without its `wasm-bindgen` feature. Their signatures are declared in
//! `sqlite-wasm-rs-0.6.3/src/host/mod.rs` (`mod ffi`); the linker resolves
//! them by name, so the names and signatures below must match those exactly.
//!
//! Time goes to this component's own `clock` import, so SQLite sees the same
//! (possibly virtual) time as the engine; randomness comes from a fixed
//! stream local to the component, so SQLite never consumes the engine's
//! random stream. The component needs no WASI import at all.
//!
//! The core only uses in-memory databases (`deserialize`/`serialize`), so in
//! practice SQLite asks for time (`CURRENT_TIMESTAMP`, `datetime('now')`) and
//! randomness (temporary names, `random()`) at most.

// The hooks must be `#[unsafe(no_mangle)] extern "C"` functions that write
// through raw pointers handed over by C: there is no safe way to define a
// C-ABI symbol. The workspace denies `unsafe_code`; it is allowed in this
// module only, and every block says what it relies on.
#![allow(unsafe_code)]

use sqlite_wasm_rs::host::{Error, LocalTime, OK};

use crate::bindings::davsync::sync::clock;

/// Sleeps through the `clock` import (virtual time under the simulator).
#[unsafe(no_mangle)]
pub extern "C" fn rust_sqlite_wasm_host_sleep(seconds: u64, nanoseconds: u32) {
    let ms = seconds.saturating_mul(1000).saturating_add(u64::from(nanoseconds).div_ceil(1_000_000));
    if ms > 0 {
        clock::sleep_ms(ms);
    }
}

/// Fills `buf[..len]` from SQLite's own fixed stream (see
/// [`fill_sqlite_randomness`]); returns `len`.
///
/// # Safety
///
/// For `len > 0`, `buf` must be valid for writes of `len` bytes (the contract
/// of sqlite-wasm-rs' `WasmOsCallback::random`, which passes a Rust slice).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rust_sqlite_wasm_host_random(buf: *mut u8, len: usize) -> usize {
    if len == 0 || buf.is_null() {
        return 0;
    }
    // SAFETY: non-null and writable for `len` bytes per the caller's contract.
    let out = unsafe { core::slice::from_raw_parts_mut(buf, len) };
    fill_sqlite_randomness(out);
    len
}

/// Writes the `clock` import's now (ms since the Unix epoch, UTC) to `out`.
///
/// # Safety
///
/// `out` must be aligned and writable for one `i64`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rust_sqlite_wasm_host_epoch_timestamp_in_ms(out: *mut i64) -> i32 {
    if out.is_null() {
        return Error::Unavailable as i32;
    }
    // SAFETY: non-null, aligned and writable per the caller's contract.
    unsafe { out.write(clock::now_ms()) };
    OK
}

/// Fills `buf[..len]` from the `random` import.
///
/// sqlite-wasm-rs asks this hook for *cryptographically secure* entropy, but
/// only for its encryption backends (SQLite3MC, SQLCipher), which this build
/// does not include. The `random` import is what the host makes it (the
/// simulator seeds it for determinism); the component has no other source and
/// must import nothing else, so this hook uses it too.
///
/// # Safety
///
/// For `len > 0`, `buf` must be valid for writes of `len` bytes (contents may
/// be uninitialized).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rust_sqlite_wasm_host_fill_entropy(buf: *mut u8, len: usize) -> i32 {
    if len == 0 {
        return OK;
    }
    if buf.is_null() || len > isize::MAX as usize {
        return Error::Unavailable as i32;
    }
    // SAFETY: non-null and writable for `len` bytes per the caller's contract;
    // zeroed first so the slice never exposes uninitialized bytes.
    let out = unsafe {
        buf.write_bytes(0, len);
        core::slice::from_raw_parts_mut(buf, len)
    };
    fill_sqlite_randomness(out);
    OK
}

/// Converts `unix_seconds` to calendar fields.
///
/// The component has no time zone: "local" time is UTC (offset 0, no DST).
/// SQLite only uses this for the `localtime` modifier of its date functions,
/// which the core never uses; results stay identical on every host.
///
/// # Safety
///
/// `out` must be aligned and writable for one [`LocalTime`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rust_sqlite_wasm_host_localtime(unix_seconds: i64, out: *mut LocalTime) -> i32 {
    if out.is_null() {
        return Error::Unavailable as i32;
    }
    let Some(local) = utc_calendar(unix_seconds) else {
        return Error::InvalidTime as i32;
    };
    // SAFETY: non-null, aligned and writable per the caller's contract.
    unsafe { out.write(local) };
    OK
}

/// SQLite's own randomness: a fixed splitmix64 stream local to the component.
///
/// SQLite seeds its internal PRNG from this once; with in-memory databases and
/// no `random()` in our SQL, nothing the engine decides depends on it. Drawing
/// it from the `random` import instead would consume the engine's random
/// stream, and the component would then make different ids than the native
/// core for the same seed (the differential test catches exactly that).
fn fill_sqlite_randomness(out: &mut [u8]) {
    use core::sync::atomic::{AtomicU64, Ordering};
    static STATE: AtomicU64 = AtomicU64::new(0x5EED_DA75_17C0_FFEE);
    for chunk in out.chunks_mut(8) {
        let mut z =
            STATE.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        let bytes = (z ^ (z >> 31)).to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}

/// UTC calendar fields of `unix_seconds` (proleptic Gregorian, Howard
/// Hinnant's `civil_from_days`); `None` when the year does not fit an `i32`.
fn utc_calendar(unix_seconds: i64) -> Option<LocalTime> {
    let days = unix_seconds.div_euclid(86_400);
    let second_of_day = unix_seconds.rem_euclid(86_400);
    // Shift so that day 0 is 0000-03-01 (leap day at the end of the year).
    let z = days.checked_add(719_468)?;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy_from_march = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy_from_march + 2) / 153;
    let day = doy_from_march - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era.checked_mul(400)? + i64::from(month <= 2);

    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    // Days before the 1st of each month (January = index 0).
    const BEFORE: [i64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let month_index = usize::try_from(month - 1).ok()?;
    let yearday = BEFORE[month_index] + i64::from(leap && month > 2) + day - 1;
    // 1970-01-01 was a Thursday (Sunday = 0).
    let weekday = (days + 4).rem_euclid(7);

    let small = |v: i64| i32::try_from(v).ok();
    Some(LocalTime {
        year: small(year)?,
        month: small(month)?,
        day: small(day)?,
        hour: small(second_of_day / 3600)?,
        minute: small(second_of_day % 3600 / 60)?,
        second: small(second_of_day % 60)?,
        weekday: small(weekday)?,
        yearday: small(yearday)?,
        is_dst: 0,
        utc_offset_seconds: 0,
    })
}
