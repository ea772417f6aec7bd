//! CPU cost of each image step per request, per class of input: the sample photos as
//! they are, and a sample photo enlarged to phone-camera JPEGs (12 MP and 24 MP,
//! baseline and progressive), a large PNG and a large WebP. Beside each JPEG it prints
//! the floor: what libjpeg-turbo takes to decode the same file through `vips` (Debian's
//! libvips-tools), in full and at half scale, when `vips` is installed. Then two
//! tables behind the choices made: each JPEG decoder at each DCT scale, and PNG's
//! compression and filter on a 12 MP photo's cut-out.
//!
//!   cargo bench -p matte-inference --bench pipeline
//! (needs MATTE_SAMPLE_IMAGES from scripts/setup.sh)
//!
//! Figures are process CPU milliseconds (all threads), the median of a few rounds after
//! one warm-up, so a shared machine's noise shows less.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use image::codecs::png::{CompressionType, FilterType as PngFilter};
use image::{DynamicImage, ImageFormat, ImageReader, RgbImage};
use matte_inference::imaging::{self, OutputFormat, Preprocess, jpeg::shrunk_size};

const MAX_DIMENSION: u32 = 2048;
const MODEL_SIDE: u32 = 1024;

/// CPU time of the whole process, every thread included: a decoder that fans out onto
/// threads is charged for all of them.
fn process_cpu() -> Duration {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec it is given.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut now) };
    assert_eq!(status, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID)");
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// Median CPU milliseconds of `rounds` runs of `step` after one warm-up, and its result.
fn cpu_ms<T>(rounds: usize, mut step: impl FnMut() -> T) -> (f64, T) {
    cpu_ms_on(rounds, || (), |()| step())
}

/// Like [`cpu_ms`] for a step that consumes its input: `prepare` makes a fresh one for
/// each run, outside the time taken.
fn cpu_ms_on<I, T>(rounds: usize, mut prepare: impl FnMut() -> I, mut step: impl FnMut(I) -> T) -> (f64, T) {
    let mut last = step(prepare());
    let mut samples: Vec<f64> = (0..rounds)
        .map(|_| {
            let input = prepare();
            let started = process_cpu();
            last = step(input);
            (process_cpu() - started).as_secs_f64() * 1e3
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    (samples[samples.len() / 2], last)
}

/// One input the pod may be sent.
struct Input {
    class: String,
    bytes: Vec<u8>,
    jpeg: bool,
}

/// A sample photo enlarged to `width`×`height` with a little deterministic grain, as a
/// phone photo has: an enlarged smooth picture would compress, and so decode, far more
/// cheaply than a real one.
fn enlarged(photo: &RgbImage, width: u32, height: u32) -> RgbImage {
    let mut large = RgbImage::new(width, height);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::CatmullRom));
    Resizer::new().resize(photo, &mut large, &options).expect("RGB to RGB");
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    for value in large.iter_mut() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *value = value.saturating_add((state % 25) as u8).saturating_sub(12);
    }
    large
}

fn jpeg(image: &RgbImage, progressive: bool) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut encoder = jpeg_encoder::Encoder::new(&mut bytes, 90);
    encoder.set_progressive(progressive);
    encoder.set_sampling_factor(jpeg_encoder::SamplingFactor::F_2_2); // 4:2:0, as cameras write
    let (width, height) = (image.width() as u16, image.height() as u16);
    encoder.encode(image.as_raw(), width, height, jpeg_encoder::ColorType::Rgb).expect("encode JPEG");
    bytes
}

/// `jpeg` with an EXIF block whose orientation tag says "rotate 90° clockwise".
fn with_exif_rotate_90(jpeg: &[u8]) -> Vec<u8> {
    let tiff: Vec<u8> = [
        b"MM\0\x2a\0\0\0\x08".as_slice(),            // big-endian TIFF header, first IFD at 8
        &[0, 1],                                     // one entry
        &[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0], // Orientation, SHORT, 1, value 6
        &[0, 0, 0, 0],                               // no next IFD
    ]
    .concat();
    let mut app1 = vec![0xFF, 0xE1];
    app1.extend_from_slice(&((2 + 6 + tiff.len()) as u16).to_be_bytes());
    app1.extend_from_slice(b"Exif\0\0");
    app1.extend_from_slice(&tiff);
    [&jpeg[..2], &app1, &jpeg[2..]].concat()
}

fn encoded(image: &RgbImage, format: ImageFormat) -> Vec<u8> {
    let mut bytes = Vec::new();
    DynamicImage::ImageRgb8(image.clone())
        .write_to(&mut std::io::Cursor::new(&mut bytes), format)
        .expect("encode the input");
    bytes
}

fn inputs(dir: &Path) -> Vec<Input> {
    let mut inputs = Vec::new();
    for name in ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg"] {
        let bytes = std::fs::read(dir.join(name)).expect("sample image");
        inputs.push(Input { class: name.to_owned(), jpeg: name.ends_with(".jpg"), bytes });
    }
    let photo = image::open(dir.join("coffee.png")).expect("sample image").into_rgb8();
    for (megapixels, width, height) in [(12, 4000, 3000), (24, 6000, 4000)] {
        let large = enlarged(&photo, width, height);
        for progressive in [false, true] {
            let kind = if progressive { "progressive" } else { "baseline" };
            inputs.push(Input {
                class: format!("{megapixels} MP JPEG {kind}"),
                bytes: jpeg(&large, progressive),
                jpeg: true,
            });
        }
    }
    let large = enlarged(&photo, 4000, 3000);
    // A portrait phone photo: stored landscape, turned upright by its EXIF block.
    let portrait = with_exif_rotate_90(&jpeg(&large, false));
    inputs.push(Input { class: "12 MP JPEG EXIF 90°".into(), bytes: portrait, jpeg: true });
    inputs.push(Input { class: "12 MP PNG".into(), bytes: encoded(&large, ImageFormat::Png), jpeg: false });
    inputs.push(Input { class: "12 MP WebP".into(), bytes: encoded(&large, ImageFormat::WebP), jpeg: false });
    inputs
}

/// CPU milliseconds `vips copy` takes to decode `jpeg` with libjpeg-turbo on one
/// thread, less what it takes on a 16×16 JPEG (process start and library set-up), at
/// each `shrink`; `None` when `vips` is not installed.
fn vips_floor(jpeg: &[u8], shrinks: &[u32]) -> Option<Vec<f64>> {
    let dir = std::env::temp_dir().join(format!("matte-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let input = dir.join("in.jpg");
    let tiny = dir.join("tiny.jpg");
    std::fs::write(&input, jpeg).ok()?;
    std::fs::write(&tiny, self::jpeg(&RgbImage::new(16, 16), false)).ok()?;
    let output = dir.join("out.v");
    let run = |source: String| -> Option<f64> {
        let (ms, status) = children_cpu_ms(|| {
            Command::new("vips").arg("copy").arg(&source).arg(&output).env("VIPS_CONCURRENCY", "1").status()
        });
        status.ok()?.success().then_some(ms)
    };
    let start_up = run(tiny.display().to_string())?;
    let floors = shrinks
        .iter()
        .map(|shrink| Some((run(format!("{}[shrink={shrink}]", input.display()))? - start_up).max(0.0)))
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    floors
}

/// CPU milliseconds of the child processes `spawn` waits for: the median of five runs.
fn children_cpu_ms<T>(mut spawn: impl FnMut() -> T) -> (f64, T) {
    let children = || {
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: getrusage fills the struct it is given.
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr()) };
        // SAFETY: zeroed is a valid rusage, and getrusage only writes into it.
        let usage = unsafe { usage.assume_init() };
        let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        (seconds(usage.ru_utime) + seconds(usage.ru_stime)) * 1e3
    };
    let mut last = spawn();
    let mut samples: Vec<f64> = (0..5)
        .map(|_| {
            let before = children();
            last = spawn();
            children() - before
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    (samples[2], last)
}

/// The per-step table: the pipeline `http` runs, step by step, on each input.
fn steps(inputs: &[Input], vips: bool) {
    let preprocess = Preprocess { width: MODEL_SIDE, height: MODEL_SIDE, mean: [0.5; 3], std: [1.0; 3] };
    let model_mask: Vec<f32> =
        (0..MODEL_SIDE * MODEL_SIDE).map(|i| (i % MODEL_SIDE) as f32 / MODEL_SIDE as f32).collect();
    println!("CPU ms per request and step, output ≤ {MAX_DIMENSION} px, model input {MODEL_SIDE}²");
    println!("  decode: to pixels at the output size, upright; total: decode to PNG, all but inference");
    println!(
        "{:<23}{:>7}{:>11}{:>11}{:>8}{:>9}{:>10}{:>9}{:>8}{:>8}{:>9}{:>8}{:>11}{:>10}",
        "image",
        "KiB",
        "decoded",
        "output",
        "decode",
        "to-model",
        "mask-back",
        "compose",
        "png",
        "total",
        "webp",
        "jpeg*",
        "vips full",
        "vips 1/2"
    );
    for input in inputs {
        let rounds = if input.bytes.len() > 256 * 1024 { 5 } else { 15 };
        let decoded = imaging::decode(&input.bytes, 50_000_000, MAX_DIMENSION).expect("decode");
        let (decoded_width, decoded_height) = decoded.decoded_size();
        let (decode, image) =
            cpu_ms(rounds, || imaging::decode(&input.bytes, 50_000_000, MAX_DIMENSION).expect("decode").into_upright());
        let (to_model, _) = cpu_ms(rounds, || imaging::to_model_input(&image, &preprocess));
        let (width, height) = image.dimensions();
        let (mask_back, mask) =
            cpu_ms(rounds, || imaging::mask_to_image(&model_mask, MODEL_SIDE, MODEL_SIDE, width, height));
        let (compose, cut_out) = cpu_ms_on(rounds, || image.clone(), |copy| imaging::compose(copy, &mask, None));
        let (png, _) = cpu_ms(rounds, || imaging::encode(&cut_out, OutputFormat::Png).expect("PNG"));
        let (webp, _) = cpu_ms(rounds, || imaging::encode(&cut_out, OutputFormat::Webp).expect("WebP"));
        let on_white = imaging::compose(image.clone(), &mask, Some([255; 3]));
        let (jpeg, _) = cpu_ms(rounds, || imaging::encode(&on_white, OutputFormat::Jpeg).expect("JPEG"));
        let total = decode + to_model + mask_back + compose + png;
        let floor = match (input.jpeg, vips) {
            (true, true) => match vips_floor(&input.bytes, &[1, 2]) {
                Some(floors) => format!("{:>11.1}{:>10.1}", floors[0], floors[1]),
                None => format!("{:>21}", "vips failed"),
            },
            (true, false) => format!("{:>21}", "no vips"),
            (false, _) => String::new(),
        };
        println!(
            "{:<23}{:>7}{:>11}{:>11}{decode:>8.1}{to_model:>9.1}{mask_back:>10.1}{compose:>9.1}{png:>8.1}{total:>8.1}{webp:>9.1}{jpeg:>8.1}{floor}",
            input.class,
            input.bytes.len() / 1024,
            format!("{decoded_width}x{decoded_height}"),
            format!("{width}x{height}"),
        );
    }
    println!("  * jpeg: the cut-out composited on white (format=jpeg&bg_color=ffffff)");
}

/// The JPEG decoders at each DCT scale: zune-jpeg (through `image`, full size only),
/// jpeg-decoder (shrink-on-load), and libjpeg-turbo through `vips` as the floor.
fn decoders(inputs: &[Input], vips: bool) {
    println!();
    println!("CPU ms to decode each JPEG, by decoder and DCT scale (pixels only, no resizing)");
    println!(
        "{:<23}{:>10}{:>9}{:>9}{:>9}{:>9}{:>9}{:>9}{:>9}{:>9}",
        "image", "zune 1/1", "jd 1/1", "jd 1/2", "jd 1/4", "jd 1/8", "vips 1/1", "vips 1/2", "vips 1/4", "vips 1/8"
    );
    for input in inputs.iter().filter(|input| input.jpeg && input.bytes.len() > 256 * 1024) {
        let (zune, _) = cpu_ms(5, || {
            ImageReader::with_format(std::io::Cursor::new(&input.bytes), ImageFormat::Jpeg).decode().expect("zune")
        });
        let shrunk: Vec<f64> = [1, 2, 4, 8]
            .into_iter()
            .map(|shrink| {
                cpu_ms(5, || {
                    let mut decoder = jpeg_decoder::Decoder::new(input.bytes.as_slice());
                    decoder.read_info().expect("header");
                    let info = decoder.info().expect("header");
                    let (width, height) = shrunk_size(u32::from(info.width), u32::from(info.height), shrink);
                    decoder.scale(width as u16, height as u16).expect("scale");
                    decoder.decode().expect("jpeg-decoder")
                })
                .0
            })
            .collect();
        let floors = match vips.then(|| vips_floor(&input.bytes, &[1, 2, 4, 8])).flatten() {
            Some(floors) => floors.iter().map(|ms| format!("{ms:>9.1}")).collect(),
            None => format!("{:>36}", "no vips"),
        };
        println!(
            "{:<23}{zune:>10.1}{:>9.1}{:>9.1}{:>9.1}{:>9.1}{floors}",
            input.class, shrunk[0], shrunk[1], shrunk[2], shrunk[3]
        );
    }
}

/// PNG's compression and filter on the cut-out of the 12 MP photo at the output size.
fn png_levels(input: &Input) {
    let image = imaging::decode(&input.bytes, 50_000_000, MAX_DIMENSION).expect("decode").into_upright();
    let (width, height) = image.dimensions();
    let mask_values: Vec<f32> = (0..MODEL_SIDE * MODEL_SIDE)
        .map(|i| {
            // A centred ellipse, the shape of a typical subject, with a soft edge.
            let (x, y) =
                ((i % MODEL_SIDE) as f32 / MODEL_SIDE as f32 - 0.5, (i / MODEL_SIDE) as f32 / MODEL_SIDE as f32 - 0.5);
            ((0.16 - (x * x + y * y)) * 40.0).clamp(0.0, 1.0)
        })
        .collect();
    let mask = imaging::mask_to_image(&mask_values, MODEL_SIDE, MODEL_SIDE, width, height);
    let cut_out = imaging::compose(image, &mask, None);
    println!();
    println!("PNG of the {} cut-out ({width}x{height} RGBA), by compression and filter", input.class);
    println!("{:<26}{:>10}{:>9}", "compression, filter", "KiB", "CPU ms");
    let choices = [
        ("none", CompressionType::Uncompressed, PngFilter::NoFilter),
        ("fdeflate, no filter", CompressionType::Fast, PngFilter::NoFilter),
        ("fdeflate, Sub", CompressionType::Fast, PngFilter::Sub),
        ("fdeflate, Up", CompressionType::Fast, PngFilter::Up),
        ("fdeflate, Paeth", CompressionType::Fast, PngFilter::Paeth),
        ("fdeflate, adaptive", CompressionType::Fast, PngFilter::Adaptive),
        ("zlib 1, Up", CompressionType::Level(1), PngFilter::Up),
        ("zlib 1, adaptive", CompressionType::Level(1), PngFilter::Adaptive),
        ("zlib 6, adaptive", CompressionType::Default, PngFilter::Adaptive),
    ];
    for (name, compression, filter) in choices {
        let (ms, bytes) = cpu_ms(5, || imaging::encode_png(&cut_out, compression, filter).expect("PNG"));
        let chosen =
            if (compression, filter) == (imaging::PNG_COMPRESSION, imaging::PNG_FILTER) { "  (used)" } else { "" };
        println!("{name:<26}{:>10}{ms:>9.1}{chosen}", bytes.len() / 1024);
    }
}

fn main() {
    let Some(dir) = std::env::var_os("MATTE_SAMPLE_IMAGES") else {
        eprintln!("MATTE_SAMPLE_IMAGES is not set: source ~/.cache/matte/env.sh after scripts/setup.sh");
        std::process::exit(2);
    };
    let inputs = inputs(Path::new(&dir));
    let vips = Command::new("vips").arg("--version").output().is_ok();
    steps(&inputs, vips);
    decoders(&inputs, vips);
    png_levels(inputs.iter().find(|input| input.class == "12 MP JPEG baseline").expect("the 12 MP JPEG"));
    if !vips {
        println!("(no `vips` on this machine: apt-get install libvips-tools for the libjpeg-turbo floor)");
    }
}
