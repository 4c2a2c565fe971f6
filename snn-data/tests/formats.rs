//! The dataset readers against small files written here in each real format: every parsed
//! value is checked exactly, and every kind of bad input is a specific error naming the
//! file at fault.

// Fixture writers are helpers, not `#[test]` functions, so clippy.toml's test allowance
// does not reach them; a failed write should just fail the test.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use snn_data::dvs_gesture::{read_aedat, read_labels};
use snn_data::nmnist::read_events;
use snn_data::{
    Cifar10, DataError, DvsGesture, Event, EventError, EventStream, GestureSpan, ImageDataset,
    Mnist, NMnist, Split,
};
use tempfile::TempDir;

mod support;

use support::{aedat_packet, aedat_polarity, idx, nmnist_bytes};

/// Asserts that the message names `path` and returns it for further checks.
fn names(err: &DataError, path: &Path) -> String {
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "message does not name {}: {msg}",
        path.display()
    );
    assert_eq!(err.path(), path, "{msg}");
    msg
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

// ------------------------------------------------------------------------------------
// MNIST
// ------------------------------------------------------------------------------------

/// `n` images of `rows x cols` with pixels that depend on `seed`, as an IDX file, and the
/// pixels.
fn idx_images(n: usize, rows: usize, cols: usize, seed: u8) -> (Vec<u8>, Vec<u8>) {
    let pixels: Vec<u8> = (0..n * rows * cols)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
        .collect();
    (idx(&[n, rows, cols], &pixels), pixels)
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    idx(&[labels.len()], labels)
}

/// Train split gzipped, test split plain, as users have them after `gunzip` or not.
fn mnist_dir() -> (TempDir, Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let (train, train_pixels) = idx_images(3, 28, 28, 11);
    fs::write(dir.path().join("train-images-idx3-ubyte.gz"), gzip(&train)).unwrap();
    fs::write(
        dir.path().join("train-labels-idx1-ubyte.gz"),
        gzip(&idx_labels(&[5, 0, 9])),
    )
    .unwrap();
    let (test, test_pixels) = idx_images(2, 28, 28, 200);
    fs::write(dir.path().join("t10k-images-idx3-ubyte"), test).unwrap();
    fs::write(
        dir.path().join("t10k-labels-idx1-ubyte"),
        idx_labels(&[7, 2]),
    )
    .unwrap();
    (dir, train_pixels, test_pixels)
}

#[test]
fn mnist_reads_gzipped_and_plain_idx_exactly() {
    let (dir, train_pixels, test_pixels) = mnist_dir();
    let train = Mnist::load(dir.path(), Split::Train).unwrap();
    assert_eq!(train.len(), 3);
    assert_eq!(train.shape(), [1, 28, 28]);
    assert_eq!(train.classes(), 10);
    assert_eq!(train.labels(), &[5, 0, 9]);
    assert_eq!(train.images(), &train_pixels[..]);
    assert_eq!(train.image(1).unwrap(), &train_pixels[784..1568]);
    assert_eq!(train.label(2), Some(9));
    assert_eq!(train.image(3), None);
    // Pixel (row 3, col 5) of image 2, computed from the generator's formula.
    let i = 2 * 784 + 3 * 28 + 5;
    assert_eq!(
        train.image(2).unwrap()[3 * 28 + 5],
        (i as u8).wrapping_mul(7).wrapping_add(11)
    );

    let test = Mnist::load(dir.path(), Split::Test).unwrap();
    assert_eq!(test.labels(), &[7, 2]);
    assert_eq!(test.images(), &test_pixels[..]);
}

#[test]
fn mnist_accepts_a_gzip_file_without_the_gz_suffix() {
    let dir = tempfile::tempdir().unwrap();
    let (images, pixels) = idx_images(1, 28, 28, 1);
    fs::write(dir.path().join("t10k-images-idx3-ubyte"), gzip(&images)).unwrap();
    fs::write(dir.path().join("t10k-labels-idx1-ubyte"), idx_labels(&[3])).unwrap();
    let test = Mnist::load(dir.path(), Split::Test).unwrap();
    assert_eq!(test.images(), &pixels[..]);
    assert_eq!(test.labels(), &[3]);
}

/// A damaged file of an image dataset: the file and its split, how it is damaged, the
/// error loading the split must give and what its message must say besides the path.
struct Damage {
    file: &'static str,
    split: Split,
    damage: fn(Vec<u8>) -> Vec<u8>,
    is: fn(&DataError) -> bool,
    says: &'static [&'static str],
}

fn truncated(e: &DataError) -> bool {
    matches!(e, DataError::Truncated { .. })
}

fn corrupt(e: &DataError) -> bool {
    matches!(e, DataError::Corrupt { .. })
}

/// Applies each damage to a fresh dataset from `make` (its folder, and the folder of its
/// files) and checks the error of `load`ing the damaged file's split.
fn check_damages(
    cases: &[Damage],
    make: impl Fn() -> (TempDir, PathBuf),
    load: fn(&Path, Split) -> Result<ImageDataset, DataError>,
) {
    for case in cases {
        let (dir, files) = make();
        let path = files.join(case.file);
        fs::write(&path, (case.damage)(fs::read(&path).unwrap())).unwrap();
        let err = load(dir.path(), case.split).unwrap_err();
        assert!((case.is)(&err), "{}: {err:?}", case.file);
        let msg = names(&err, &path);
        for text in case.says {
            assert!(msg.contains(text), "{}: {msg}", case.file);
        }
    }
}

#[test]
fn mnist_damaged_files_are_named_in_the_error() {
    let cases = [
        // A label file under the image file's name.
        Damage {
            file: "t10k-images-idx3-ubyte",
            split: Split::Test,
            damage: |_| idx_labels(&[1, 2]),
            is: |e| matches!(e, DataError::BadMagic { .. }),
            says: &["0x00000803", "0x00000801 (IDX labels)"],
        },
        Damage {
            file: "t10k-images-idx3-ubyte",
            split: Split::Test,
            damage: |b| b[..b.len() - 100].to_vec(),
            is: truncated,
            says: &["item 1 is incomplete"],
        },
        // A truncated header.
        Damage {
            file: "t10k-labels-idx1-ubyte",
            split: Split::Test,
            damage: |_| vec![0, 0, 8, 1, 0, 0],
            is: truncated,
            says: &[],
        },
        Damage {
            file: "train-images-idx3-ubyte.gz",
            split: Split::Train,
            damage: |b| b[..b.len() / 2].to_vec(),
            is: truncated,
            says: &[],
        },
        // The CRC-32 of the gzip trailer.
        Damage {
            file: "train-labels-idx1-ubyte.gz",
            split: Split::Train,
            damage: |mut b| {
                let n = b.len();
                b[n - 8] ^= 0xff;
                b
            },
            is: corrupt,
            says: &[],
        },
        // Trailing bytes.
        Damage {
            file: "t10k-labels-idx1-ubyte",
            split: Split::Test,
            damage: |_| [idx_labels(&[7, 2]), vec![4]].concat(),
            is: corrupt,
            says: &[],
        },
        // A label out of range.
        Damage {
            file: "t10k-labels-idx1-ubyte",
            split: Split::Test,
            damage: |_| idx_labels(&[7, 10]),
            is: corrupt,
            says: &["label 10 of image 1"],
        },
    ];
    check_damages(
        &cases,
        || {
            let (dir, _, _) = mnist_dir();
            let files = dir.path().to_path_buf();
            (dir, files)
        },
        |dir, split| Mnist::load(dir, split),
    );
}

#[test]
fn mnist_count_mismatch_names_both_files() {
    let (dir, _, _) = mnist_dir();
    let labels = dir.path().join("t10k-labels-idx1-ubyte");
    fs::write(&labels, idx_labels(&[7, 2, 1])).unwrap();
    let err = Mnist::load(dir.path(), Split::Test).unwrap_err();
    let DataError::CountMismatch {
        images, labels: n, ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!((*images, *n), (2, 3));
    let msg = names(&err, &dir.path().join("t10k-images-idx3-ubyte"));
    assert!(msg.contains(&labels.display().to_string()), "{msg}");
}

#[test]
fn mnist_missing_file_says_where_to_put_it() {
    let (dir, _, _) = mnist_dir();
    fs::remove_file(dir.path().join("train-labels-idx1-ubyte.gz")).unwrap();
    let err = Mnist::load(dir.path(), Split::Train).unwrap_err();
    assert!(matches!(err, DataError::Missing { .. }), "{err:?}");
    let msg = names(&err, &dir.path().join("train-labels-idx1-ubyte"));
    assert!(msg.contains("train-labels-idx1-ubyte.gz"), "{msg}");
}

// ------------------------------------------------------------------------------------
// CIFAR-10
// ------------------------------------------------------------------------------------

fn cifar_pixel(batch: usize, record: usize, byte: usize) -> u8 {
    (batch * 31 + record * 17 + byte * 3) as u8
}

fn cifar_batch(batch: usize, labels: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    for (r, &l) in labels.iter().enumerate() {
        f.push(l);
        f.extend((0..3072).map(|b| cifar_pixel(batch, r, b)));
    }
    f
}

const CIFAR_TRAIN_LABELS: [[u8; 2]; 5] = [[6, 9], [9, 4], [1, 1], [2, 7], [8, 3]];

/// Batches in `<dir>/cifar-10-batches-bin`, two records per training batch, three in the
/// test batch.
fn cifar_dir() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("cifar-10-batches-bin");
    fs::create_dir(&bin).unwrap();
    for (b, labels) in CIFAR_TRAIN_LABELS.iter().enumerate() {
        fs::write(
            bin.join(format!("data_batch_{}.bin", b + 1)),
            cifar_batch(b, labels),
        )
        .unwrap();
    }
    fs::write(bin.join("test_batch.bin"), cifar_batch(9, &[3, 8, 0])).unwrap();
    (dir, bin)
}

#[test]
fn cifar_reads_every_batch_exactly() {
    let (dir, bin) = cifar_dir();
    let train = Cifar10::load(dir.path(), Split::Train).unwrap();
    assert_eq!(train.len(), 10);
    assert_eq!(train.shape(), [3, 32, 32]);
    assert_eq!(train.classes(), 10);
    let want: Vec<u8> = CIFAR_TRAIN_LABELS.concat();
    assert_eq!(train.labels(), &want[..]);
    for i in 0..10 {
        let (b, r) = (i / 2, i % 2);
        let want: Vec<u8> = (0..3072).map(|byte| cifar_pixel(b, r, byte)).collect();
        assert_eq!(train.image(i).unwrap(), &want[..], "image {i}");
    }
    // Channel-major: the green value of pixel (row 2, col 5) of image 3 sits at
    // 1024 + 2 * 32 + 5, as in the file.
    assert_eq!(
        train.image(3).unwrap()[1024 + 69],
        cifar_pixel(1, 1, 1024 + 69)
    );

    // The batches folder itself works as well as its parent.
    let test = Cifar10::load(&bin, Split::Test).unwrap();
    assert_eq!(test.labels(), &[3, 8, 0]);
    let want: Vec<u8> = (0..3)
        .flat_map(|r| (0..3072).map(move |b| cifar_pixel(9, r, b)))
        .collect();
    assert_eq!(test.images(), &want[..]);

    let one = Cifar10::read_batch(bin.join("data_batch_2.bin")).unwrap();
    assert_eq!(one.labels(), &[9, 4]);
}

#[test]
fn cifar_missing_batch_names_it() {
    let (dir, bin) = cifar_dir();
    let path = bin.join("data_batch_3.bin");
    fs::remove_file(&path).unwrap();
    let err = Cifar10::load(dir.path(), Split::Train).unwrap_err();
    assert!(matches!(err, DataError::Missing { .. }), "{err:?}");
    let msg = names(&err, &path);
    assert!(msg.contains("cifar-10-binary.tar.gz"), "{msg}");
    // The test split does not need it.
    Cifar10::load(dir.path(), Split::Test).unwrap();
}

#[test]
fn cifar_missing_directory_is_a_missing_batch() {
    let dir = tempfile::tempdir().unwrap();
    let err = Cifar10::load(dir.path(), Split::Test).unwrap_err();
    assert!(matches!(err, DataError::Missing { .. }), "{err:?}");
    names(&err, &dir.path().join("test_batch.bin"));
}

#[test]
fn cifar_damaged_batches_are_named_in_the_error() {
    let cases = [
        Damage {
            file: "test_batch.bin",
            split: Split::Test,
            damage: |b| b[..b.len() - 1000].to_vec(),
            is: truncated,
            says: &["record 2 is cut off after 2073 bytes"],
        },
        // A batch shorter than the others.
        Damage {
            file: "data_batch_4.bin",
            split: Split::Train,
            damage: |_| cifar_batch(3, &[2]),
            is: truncated,
            says: &["holds 1 records while"],
        },
        Damage {
            file: "test_batch.bin",
            split: Split::Test,
            damage: |_| Vec::new(),
            is: truncated,
            says: &[],
        },
        Damage {
            file: "test_batch.bin",
            split: Split::Test,
            damage: |_| cifar_batch(9, &[3, 200]),
            is: corrupt,
            says: &["record 1 has label 200"],
        },
    ];
    check_damages(&cases, cifar_dir, |dir, split| Cifar10::load(dir, split));
}

// ------------------------------------------------------------------------------------
// N-MNIST
// ------------------------------------------------------------------------------------

fn nmnist_events(digit: u8, id: u32) -> Vec<(u8, u8, bool, u32)> {
    vec![
        (digit, 33, true, id),
        (33, digit * 3, false, id + 0x01_0203),
        (0, 0, true, 0x7f_ffff),
    ]
}

/// Two files per digit in Train (ids 2 and 10, written in reverse order), one in Test,
/// plus a stray non-.bin file.
fn nmnist_dir() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (split, ids) in [("Train", &[10u32, 2][..]), ("Test", &[7][..])] {
        for digit in 0..10u8 {
            let d = dir.path().join(split).join(digit.to_string());
            fs::create_dir_all(&d).unwrap();
            for &id in ids {
                fs::write(
                    d.join(format!("{id:05}.bin")),
                    nmnist_bytes(&nmnist_events(digit, id)),
                )
                .unwrap();
            }
            fs::write(d.join("notes.txt"), "not a sample").unwrap();
        }
    }
    dir
}

#[test]
fn nmnist_lists_samples_sorted_and_decodes_events_exactly() {
    let dir = nmnist_dir();
    let train = NMnist::open(dir.path(), Split::Train).unwrap();
    assert_eq!(train.len(), 20);
    assert_eq!(train.split(), Split::Train);
    for (i, s) in train.samples().iter().enumerate() {
        assert_eq!(s.label as usize, i / 2);
        let id = if i % 2 == 0 { "00002.bin" } else { "00010.bin" };
        assert_eq!(
            s.path,
            dir.path().join("Train").join((i / 2).to_string()).join(id)
        );
    }
    let (stream, label) = train.read(15).unwrap(); // digit 7, id 10
    assert_eq!(label, 7);
    assert_eq!((stream.width(), stream.height()), (34, 34));
    assert_eq!(
        stream.events(),
        &[
            Event {
                t: 10,
                x: 7,
                y: 33,
                p: true
            },
            Event {
                t: 10 + 0x01_0203,
                x: 33,
                y: 21,
                p: false
            },
            Event {
                t: 0x7f_ffff,
                x: 0,
                y: 0,
                p: true
            },
        ]
    );
    assert_eq!(stream.time_span(), Some((10, 0x7f_ffff)));
    assert!(train.read(20).is_err());

    let test = NMnist::open(dir.path(), Split::Test).unwrap();
    assert_eq!(test.len(), 10);
    assert_eq!(test.samples()[4].label, 4);
    let events = read_events(&test.samples()[4].path).unwrap();
    assert_eq!(
        events.events()[1],
        Event {
            t: 7 + 0x01_0203,
            x: 33,
            y: 12,
            p: false
        }
    );
}

#[test]
fn nmnist_timestamp_overflow_marker_extends_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("overflow.bin");
    let mut bytes = nmnist_bytes(&[(1, 2, true, 0x7f_fff0)]);
    bytes.extend_from_slice(&[0, 240, 0, 0, 0]);
    bytes.extend(nmnist_bytes(&[(3, 4, false, 5)]));
    fs::write(&path, bytes).unwrap();
    let stream = read_events(&path).unwrap();
    assert_eq!(
        stream.events(),
        &[
            Event {
                t: 0x7f_fff0,
                x: 1,
                y: 2,
                p: true
            },
            Event {
                t: (1 << 23) + 5,
                x: 3,
                y: 4,
                p: false
            },
        ]
    );
}

#[test]
fn nmnist_event_out_of_range_names_file_and_index() {
    let dir = nmnist_dir();
    let path = dir.path().join("Test/3/00007.bin");
    fs::write(
        &path,
        nmnist_bytes(&[(1, 1, true, 1), (2, 2, true, 2), (34, 5, false, 3)]),
    )
    .unwrap();
    let test = NMnist::open(dir.path(), Split::Test).unwrap();
    let err = test.read(3).unwrap_err();
    let DataError::Events {
        source: EventError::OutOfRange { index, x, y, .. },
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!((*index, *x, *y), (2, 34, 5));
    let msg = names(&err, &path);
    assert!(msg.contains("event 2") && msg.contains("34x34"), "{msg}");
}

#[test]
fn nmnist_events_out_of_order_name_file_and_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.bin");
    fs::write(&path, nmnist_bytes(&[(1, 1, true, 100), (2, 2, true, 99)])).unwrap();
    let err = read_events(&path).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::Events {
                source: EventError::OutOfOrder {
                    index: 1,
                    t: 99,
                    previous: 100
                },
                ..
            }
        ),
        "{err:?}"
    );
    names(&err, &path);
}

#[test]
fn nmnist_truncated_file_names_it() {
    let dir = nmnist_dir();
    let path = dir.path().join("Train/0/00002.bin");
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() - 2]).unwrap();
    let err = read_events(&path).unwrap_err();
    assert!(matches!(err, DataError::Truncated { .. }), "{err:?}");
    let msg = names(&err, &path);
    assert!(msg.contains("event 2 is cut off after 3 bytes"), "{msg}");

    fs::write(&path, b"").unwrap();
    let err = read_events(&path).unwrap_err();
    assert!(matches!(err, DataError::Truncated { .. }), "{err:?}");
    names(&err, &path);
}

#[test]
fn nmnist_missing_split_folder_says_how_to_get_it() {
    let dir = nmnist_dir();
    fs::remove_dir_all(dir.path().join("Test")).unwrap();
    let err = NMnist::open(dir.path(), Split::Test).unwrap_err();
    assert!(matches!(err, DataError::Missing { .. }), "{err:?}");
    let msg = names(&err, &dir.path().join("Test"));
    assert!(msg.contains("Test.zip") && msg.contains("n-mnist"), "{msg}");
}

#[test]
fn nmnist_missing_or_empty_digit_folder_names_it() {
    let dir = nmnist_dir();
    let six = dir.path().join("Train/6");
    fs::remove_dir_all(&six).unwrap();
    let err = NMnist::open(dir.path(), Split::Train).unwrap_err();
    assert!(matches!(err, DataError::Missing { .. }), "{err:?}");
    names(&err, &six);

    fs::create_dir(&six).unwrap();
    let err = NMnist::open(dir.path(), Split::Train).unwrap_err();
    assert!(matches!(err, DataError::Missing { .. }), "{err:?}");
    names(&err, &six);
}

// ------------------------------------------------------------------------------------
// DVS128 Gesture
// ------------------------------------------------------------------------------------

/// A header as jAER writes it, with lines the reader skips.
const JAER_HEADER: &str = "#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n\
                            #Start-Time: 2017-01-01 00:00:00 (TZ+0000)\r\n#!END-HEADER\r\n";

/// A recording of three packets: polarity events, a special-event packet to skip, and
/// polarity events after a timestamp overflow (one of them invalid).
fn recording(x0: u16) -> Vec<u8> {
    let mut f = JAER_HEADER.as_bytes().to_vec();
    f.extend(aedat_packet(
        1,
        8,
        0,
        &[
            aedat_polarity(x0, 0, true, 1000, true),
            aedat_polarity(127, 127, false, 1999, true),
            aedat_polarity(5, 64, true, 2000, true),
        ],
    ));
    f.extend(aedat_packet(0, 8, 0, &[vec![0xff; 8], vec![0xee; 8]]));
    f.extend(aedat_packet(
        1,
        8,
        1,
        &[
            aedat_polarity(10, 20, false, 3, true),
            aedat_polarity(11, 21, true, 4, false),
            aedat_polarity(12, 22, true, 5, true),
        ],
    ));
    f
}

const BIG: u64 = 1 << 31;

/// `DvsGesture/` inside the temp dir: users 01 and 02 train, user 24 test.
fn gesture_dir() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("DvsGesture");
    fs::create_dir(&root).unwrap();
    for (name, x0) in [
        ("user01_fluorescent", 1),
        ("user02_lab", 2),
        ("user24_led", 3),
    ] {
        fs::write(root.join(format!("{name}.aedat")), recording(x0)).unwrap();
        fs::write(
            root.join(format!("{name}_labels.csv")),
            format!(
                "class,startTime_usec,endTime_usec\r\n1,1000,2000\r\n11,2000,{}\r\n5,{},{}\r\n",
                BIG + 5,
                BIG + 5,
                BIG + 100
            ),
        )
        .unwrap();
    }
    fs::write(
        root.join("trials_to_train.txt"),
        "user01_fluorescent.aedat\nuser02_lab.aedat\n\n",
    )
    .unwrap();
    fs::write(root.join("trials_to_test.txt"), "user24_led.aedat\r\n").unwrap();
    (dir, root)
}

fn ev(t: u64, x: u16, y: u16, p: bool) -> Event {
    Event { t, x, y, p }
}

#[test]
fn gesture_reads_split_labels_and_cuts_samples_exactly() {
    let (dir, root) = gesture_dir();
    // Both the parent folder and the DvsGesture folder itself are accepted.
    let ds = DvsGesture::open(dir.path()).unwrap();
    assert_eq!(ds.root(), root);
    assert_eq!(DvsGesture::open(&root).unwrap().root(), root);

    let train = ds.recordings(Split::Train).unwrap();
    let names: Vec<&str> = train.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["user01_fluorescent", "user02_lab"]);
    assert_eq!(train[1].aedat, root.join("user02_lab.aedat"));
    assert_eq!(train[1].labels, root.join("user02_lab_labels.csv"));
    let test = ds.recordings(Split::Test).unwrap();
    assert_eq!(test.len(), 1);
    assert_eq!(test[0].name, "user24_led");

    let all = read_aedat(&test[0].aedat).unwrap();
    assert_eq!((all.width(), all.height()), (128, 128));
    assert_eq!(
        all.events(),
        &[
            ev(1000, 3, 0, true),
            ev(1999, 127, 127, false),
            ev(2000, 5, 64, true),
            ev(BIG + 3, 10, 20, false),
            ev(BIG + 5, 12, 22, true),
        ]
    );

    let samples = ds.samples(&test[0]).unwrap();
    assert_eq!(samples.len(), 3);
    let spans: Vec<GestureSpan> = samples.iter().map(|s| s.span).collect();
    assert_eq!(
        spans,
        [
            GestureSpan {
                label: 0,
                start: 1000,
                end: 2000
            },
            GestureSpan {
                label: 10,
                start: 2000,
                end: BIG + 5
            },
            GestureSpan {
                label: 4,
                start: BIG + 5,
                end: BIG + 100
            },
        ]
    );
    // start <= t < end: the event at 2000 belongs to the second gesture, the one at
    // 2^31 + 5 to the third.
    assert_eq!(
        samples[0].events.events(),
        &[ev(1000, 3, 0, true), ev(1999, 127, 127, false)]
    );
    assert_eq!(
        samples[1].events.events(),
        &[ev(2000, 5, 64, true), ev(BIG + 3, 10, 20, false)]
    );
    assert_eq!(samples[2].events.events(), &[ev(BIG + 5, 12, 22, true)]);
}

#[test]
fn gesture_accepts_the_jaer_header_terminator() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.aedat");
    let mut f = b"#!AER-DAT3.1\r\n#End Of ASCII Header\r\n".to_vec();
    f.extend(aedat_packet(
        1,
        8,
        0,
        &[aedat_polarity(9, 8, true, 7, true)],
    ));
    fs::write(&path, f).unwrap();
    assert_eq!(read_aedat(&path).unwrap().events(), &[ev(7, 9, 8, true)]);
}

#[test]
fn gesture_missing_dataset_says_where_to_get_it_and_where_to_put_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere");
    let err = DvsGesture::open(&missing).unwrap_err();
    assert!(matches!(err, DataError::Missing { .. }), "{err:?}");
    let msg = names(&err, &missing);
    for needle in [
        "DvsGesture.tar.gz",
        "research.ibm.com/interactive/dvsgesture",
        "cannot be downloaded automatically",
        "trials_to_train.txt",
        "trials_to_test.txt",
        "user01_fluorescent_labels.csv",
    ] {
        assert!(msg.contains(needle), "{needle} not in: {msg}");
    }
    assert!(
        msg.contains(
            &missing
                .join("DvsGesture")
                .join("trials_to_train.txt")
                .display()
                .to_string()
        ),
        "{msg}"
    );
}

#[test]
fn gesture_archive_not_extracted_says_how_to_extract() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("DvsGesture.tar.gz"), b"...").unwrap();
    let err = DvsGesture::open(dir.path()).unwrap_err();
    assert!(matches!(err, DataError::Missing { .. }), "{err:?}");
    let msg = names(&err, dir.path());
    assert!(
        msg.contains("not extracted") && msg.contains("tar xzf"),
        "{msg}"
    );
}

#[test]
fn gesture_missing_test_list_names_it() {
    let (dir, root) = gesture_dir();
    let list = root.join("trials_to_test.txt");
    fs::remove_file(&list).unwrap();
    let err = DvsGesture::open(dir.path())
        .unwrap()
        .recordings(Split::Test)
        .unwrap_err();
    assert!(matches!(err, DataError::Missing { .. }), "{err:?}");
    names(&err, &list);
}

#[test]
fn gesture_missing_recording_or_labels_names_the_file() {
    let (dir, root) = gesture_dir();
    let ds = DvsGesture::open(dir.path()).unwrap();
    let csv = root.join("user02_lab_labels.csv");
    fs::remove_file(&csv).unwrap();
    let err = ds.recordings(Split::Train).unwrap_err();
    assert!(matches!(err, DataError::Missing { .. }), "{err:?}");
    names(&err, &csv);

    let aedat = root.join("user24_led.aedat");
    fs::remove_file(&aedat).unwrap();
    let err = ds.recordings(Split::Test).unwrap_err();
    assert!(matches!(err, DataError::Missing { .. }), "{err:?}");
    names(&err, &aedat);
}

#[test]
fn gesture_bad_list_line_names_the_list_and_line() {
    let (dir, root) = gesture_dir();
    let list = root.join("trials_to_test.txt");
    fs::write(&list, "user24_led.aedat\nuser25_led.txt\n").unwrap();
    let err = DvsGesture::open(dir.path())
        .unwrap()
        .recordings(Split::Test)
        .unwrap_err();
    assert!(matches!(err, DataError::BadRow { line: 2, .. }), "{err:?}");
    names(&err, &list);
}

#[test]
fn gesture_bad_csv_rows_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("user01_led_labels.csv");
    let header = "class,startTime_usec,endTime_usec\n";
    for (body, line, needle) in [
        ("1,10,20\n12,30,40\n", 3, "class 12 is not in 1-11"),
        ("0,10,20\n", 2, "class 0 is not in 1-11"),
        ("x,10,20\n", 2, "class `x` is not a number"),
        ("1,10\n", 2, "2 fields instead of 3"),
        ("1,10,20,30\n", 2, "4 fields instead of 3"),
        ("1,-5,20\n", 2, "start `-5`"),
        ("1,10,2o\n", 2, "end `2o`"),
        ("1,20,20\n", 2, "the span 20..20 is empty"),
    ] {
        fs::write(&path, format!("{header}{body}")).unwrap();
        let err = read_labels(&path).unwrap_err();
        assert!(
            matches!(err, DataError::BadRow { line: l, .. } if l == line),
            "{body:?}: {err:?}"
        );
        let msg = names(&err, &path);
        assert!(msg.contains(needle), "{needle} not in: {msg}");
    }

    fs::write(&path, "label,start,end\n1,10,20\n").unwrap();
    let err = read_labels(&path).unwrap_err();
    assert!(matches!(err, DataError::BadRow { line: 1, .. }), "{err:?}");
    let msg = names(&err, &path);
    assert!(msg.contains("class,startTime_usec,endTime_usec"), "{msg}");

    fs::write(&path, "").unwrap();
    let err = read_labels(&path).unwrap_err();
    assert!(matches!(err, DataError::Truncated { .. }), "{err:?}");
    names(&err, &path);
}

#[test]
fn gesture_event_out_of_range_names_file_and_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("user01_led.aedat");
    let mut f = JAER_HEADER.as_bytes().to_vec();
    f.extend(aedat_packet(
        1,
        8,
        0,
        &[aedat_polarity(1, 1, true, 1, true)],
    ));
    f.extend(aedat_packet(
        1,
        8,
        0,
        &[
            aedat_polarity(2, 2, true, 2, true),
            aedat_polarity(3, 128, true, 3, true),
        ],
    ));
    fs::write(&path, f).unwrap();
    let err = read_aedat(&path).unwrap_err();
    let DataError::Events {
        source:
            EventError::OutOfRange {
                index,
                x,
                y,
                width,
                height,
            },
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!((*index, *x, *y, *width, *height), (2, 3, 128, 128, 128));
    let msg = names(&err, &path);
    assert!(msg.contains("event 2") && msg.contains("128x128"), "{msg}");
}

#[test]
fn gesture_truncated_recording_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("user01_led.aedat");
    let full = recording(1);
    // Cut inside the last packet's events, then inside its header.
    for cut in [full.len() - 3, full.len() - 24 - 10] {
        fs::write(&path, &full[..cut]).unwrap();
        let err = read_aedat(&path).unwrap_err();
        assert!(matches!(err, DataError::Truncated { .. }), "{err:?}");
        names(&err, &path);
    }
    // A header that never ends.
    fs::write(&path, b"#!AER-DAT3.1\r\n#Format: RA").unwrap();
    let err = read_aedat(&path).unwrap_err();
    assert!(matches!(err, DataError::Truncated { .. }), "{err:?}");
    names(&err, &path);
}

#[test]
fn gesture_wrong_version_or_no_header_is_bad_magic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("user01_led.aedat");
    fs::write(&path, b"#!AER-DAT2.0\r\n#End Of ASCII Header\r\n").unwrap();
    let err = read_aedat(&path).unwrap_err();
    assert!(matches!(err, DataError::BadMagic { .. }), "{err:?}");
    let msg = names(&err, &path);
    assert!(msg.contains("#!AER-DAT2.0"), "{msg}");

    fs::write(
        &path,
        aedat_packet(1, 8, 0, &[aedat_polarity(1, 1, true, 1, true)]),
    )
    .unwrap();
    let err = read_aedat(&path).unwrap_err();
    assert!(matches!(err, DataError::BadMagic { .. }), "{err:?}");
    names(&err, &path);
}

#[test]
fn gesture_inconsistent_packet_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("user01_led.aedat");
    let mut p = aedat_packet(1, 8, 0, &[aedat_polarity(1, 1, true, 1, true)]);
    p[20..24].copy_from_slice(&5u32.to_le_bytes()); // eventNumber > eventCapacity
    fs::write(&path, [JAER_HEADER.as_bytes(), &p].concat()).unwrap();
    let err = read_aedat(&path).unwrap_err();
    assert!(matches!(err, DataError::Corrupt { .. }), "{err:?}");
    names(&err, &path);
}

// ------------------------------------------------------------------------------------
// Event streams
// ------------------------------------------------------------------------------------

#[test]
fn event_stream_checks_range_and_order() {
    let ok = EventStream::new(4, 3, vec![ev(1, 3, 2, true), ev(1, 0, 0, false)]).unwrap();
    assert_eq!(ok.len(), 2);
    assert_eq!(ok.between(1, 2).len(), 2);
    assert!(ok.between(2, 9).is_empty());
    assert_eq!(
        EventStream::new(4, 3, vec![ev(1, 0, 0, true), ev(2, 4, 0, true)]),
        Err(EventError::OutOfRange {
            index: 1,
            x: 4,
            y: 0,
            width: 4,
            height: 3
        })
    );
    assert_eq!(
        EventStream::new(4, 3, vec![ev(5, 0, 0, true), ev(4, 0, 0, true)]),
        Err(EventError::OutOfOrder {
            index: 1,
            t: 4,
            previous: 5
        })
    );
    let sorted = EventStream::new_sorted(
        4,
        3,
        vec![ev(5, 1, 0, true), ev(4, 2, 0, true), ev(5, 3, 0, false)],
    )
    .unwrap();
    assert_eq!(
        sorted.events(),
        &[ev(4, 2, 0, true), ev(5, 1, 0, true), ev(5, 3, 0, false)]
    );
    assert!(EventStream::new_sorted(4, 3, vec![ev(0, 0, 3, true)]).is_err());
}
