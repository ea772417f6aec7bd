//! A CPU worker decodes on its own thread: `--cpu-workers` bounds the cores the image
//! work takes. jpeg-decoder, which decodes a JPEG shrunk on load, started a thread of its
//! own for each colour component of any image over 128×128, so that one worker kept
//! about three cores busy (patched: `vendor/jpeg-decoder/PATCHED.md`). Alone in its test
//! binary, so that no other test's threads count.

use matte_inference::imaging::decode;

/// CPU seconds, user and system, of the process (`libc::RUSAGE_SELF`) or of the calling
/// thread (`libc::RUSAGE_THREAD`).
fn cpu_seconds(who: i32) -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage fills the struct it is given, which lives on this stack frame.
    assert_eq!(unsafe { libc::getrusage(who, usage.as_mut_ptr()) }, 0, "getrusage");
    // SAFETY: initialized by the successful call above.
    let usage = unsafe { usage.assume_init() };
    let seconds = |time: libc::timeval| time.tv_sec as f64 + time.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

#[test]
fn a_jpeg_shrunk_on_load_is_decoded_on_the_calling_thread_alone() {
    // 24 MP of varied colour, decoded at half size for a 2048 output.
    let (width, height) = (6000u16, 4000u16);
    let pixels: Vec<u8> = (0..u32::from(height))
        .flat_map(|y| {
            (0..u32::from(width)).flat_map(move |x| [(x % 251) as u8, (y % 241) as u8, ((x ^ y) % 256) as u8])
        })
        .collect();
    let mut jpeg = Vec::new();
    jpeg_encoder::Encoder::new(&mut jpeg, 85).encode(&pixels, width, height, jpeg_encoder::ColorType::Rgb).unwrap();
    drop(pixels);

    let (process_before, thread_before) = (cpu_seconds(libc::RUSAGE_SELF), cpu_seconds(libc::RUSAGE_THREAD));
    for _ in 0..3 {
        let decoded = decode(&jpeg, 30_000_000, 2048).expect("decodes");
        assert_eq!(decoded.into_upright().dimensions(), (2048, 1365));
    }
    let process = cpu_seconds(libc::RUSAGE_SELF) - process_before;
    let this_thread = cpu_seconds(libc::RUSAGE_THREAD) - thread_before;
    println!("three decodes: {process:.2} s of CPU, {this_thread:.2} s of it on the calling thread");
    assert!(process - this_thread < 0.1 * process, "{:.2} s of {process:.2} s on other threads", process - this_thread);
}
